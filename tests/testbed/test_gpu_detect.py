"""GPU detection on a real host over SSH: a test-bed host whose sysfs carries an AMD GPU's KFD topology.

The host's ``/sys/class`` is replaced (read-only bind mount) by a mirror of
the controller's, in which every class entry keeps its relative link into
the host's real ``/sys/devices``, plus a ``kfd`` tree in the layout the amdgpu
driver exports. The values are an RX 7900 XTX's, as ``rocminfo`` reported
them on a real machine (tests/fixtures/gpu/rocminfo/rx7900xtx-gfx1100.txt:
node 1, BDFID 768, chip id 0x744c, 24 GiB of VRAM); the KFD file names and
keys are those of the driver's ``kfd_topology.c``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lemfleet import testbed
from tests.testbed.conftest import PROJECT

NODES = {
    "0": {"properties": {"cpu_cores_count": 16, "simd_count": 0, "gfx_target_version": 0},
          "bank": {"heap_type": 0, "size_in_bytes": 33179353088}},
    "1": {"properties": {"cpu_cores_count": 0, "simd_count": 192, "gfx_target_version": 110000, "vendor_id": 4098,
                         "device_id": 29772, "location_id": 768, "domain": 0, "drm_render_minor": 128},
          "bank": {"heap_type": 1, "size_in_bytes": 25753026560, "flags": 0}},
}  # fmt: skip


def fake_sys_class(dest: Path) -> Path:
    for entry in Path("/sys/class").iterdir():
        mirror = dest / entry.name
        mirror.mkdir(parents=True)
        for link in entry.iterdir():
            if link.is_symlink():
                (mirror / link.name).symlink_to(os.readlink(link))
    for node, values in NODES.items():
        base = dest / "kfd" / "kfd" / "topology" / "nodes" / node
        (base / "mem_banks" / "0").mkdir(parents=True)
        (base / "name").write_text("ip discovery\n" if node != "0" else "\n")
        (base / "properties").write_text("".join(f"{k} {v}\n" for k, v in values["properties"].items()))
        (base / "mem_banks" / "0" / "properties").write_text("".join(f"{k} {v}\n" for k, v in values["bank"].items()))
    return dest


@pytest.fixture(scope="module")
def gpu_host(bed, tmp_path_factory):
    sys_class = fake_sys_class(tmp_path_factory.mktemp("sys-class"))
    (rec,) = testbed.add(1, binds=[f"{sys_class}:/sys/class"])
    yield rec
    testbed.remove(rec.name)


def plan(rec: testbed.HostRecord, *data: str) -> tuple[int, dict]:
    cmd = [sys.executable, "-m", "lemfleet", "plan", "inventories/testbed.py", "--limit", rec.name, "--json", "-"]
    for item in data:
        cmd += ["--data", item]
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=300, check=False)
    (row,) = json.loads(proc.stdout)
    return proc.returncode, row


def test_the_kfd_fact_runs_over_ssh_and_sees_the_gpu(gpu_host):
    status, row = plan(gpu_host, "gpu_allow_cpu_fallback=true")
    assert status == 0, row
    (gpu,) = row["gpus"]
    assert (gpu["vendor"], gpu["gfx_target"], gpu["integrated"]) == ("amd", "gfx1100", False)
    assert gpu["vram_bytes"] == 25753026560 and gpu["pci_slot"] == "0000:03:00.0"


def test_a_gpu_host_never_falls_back_to_the_cpu_silently(gpu_host):
    # Debian 12 has neither a new enough HIP nor new enough Vulkan headers for llama.cpp.
    status, row = plan(gpu_host)
    assert status == 1 and not row["ok"]
    assert any("gpu_allow_cpu_fallback" in e for e in row["errors"]), row["errors"]
    status, row = plan(gpu_host, "gpu_allow_cpu_fallback=true")
    assert row["backend"] == "cpu" and row["warnings"], row
