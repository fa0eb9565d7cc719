"""The combined GpuProbe fact: its shell command on this real host, and the merge of
several probes' recorded outputs into one Gpu per device."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.facts import get_facts

from lemfleet.roles.facts.gpu import PROBE_COMMAND, GpuProbe, parse_probe, split_sections
from lemfleet.roles.hostinfo import GpuRuntime
from tests.fixtures.gpu.hosts import HERE, probe, probe_lines, read

MIB = 2**20


def _run_probe(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", PROBE_COMMAND], capture_output=True, text=True, timeout=120, env=env)


def test_probe_command_runs_on_this_host() -> None:
    done = _run_probe()
    assert done.returncode == 0, done.stderr
    sections = split_sections(done.stdout.splitlines())
    assert {"device-nodes"} <= set(sections)
    assert "lspci" in sections or "pci-sysfs" in sections
    assert all(rc == 0 for _, rc in sections.values() if rc is not None)
    gpus, runtime = parse_probe(done.stdout.splitlines())
    # The development and CI machines have no GPU: the probe must say so, not guess.
    if not Path("/dev/kfd").exists() and not Path("/dev/nvidiactl").exists():
        assert gpus == ()
        assert runtime.probe_errors == ()


def test_probe_through_pyinfra_on_local_host() -> None:
    state = State(Inventory((["@local"], {})), Config())
    connect_all(state)
    ((gpus, runtime),) = get_facts(state, GpuProbe).values()
    assert isinstance(runtime, GpuRuntime)
    assert gpus == _run_probe_gpus()


def _run_probe_gpus() -> tuple[object, ...]:
    return parse_probe(_run_probe().stdout.splitlines())[0]


def test_probe_command_falls_back_to_the_table_when_the_query_fails(tmp_path: Path) -> None:
    # nvidia-smi 470 userspace (canonical/inference-snaps#89) replayed by a stub: the query
    # form fails with the recorded message, the plain form prints the recorded table.
    failure = tmp_path / "failure.txt"
    table = tmp_path / "table.txt"
    failure.write_text("\n".join(read("nvidia-smi/failure-compute-cap-not-valid-field.txt")) + "\n")
    table.write_text("\n".join(read("nvidia-smi/rtx-pro-laptop-smi470-driver580-table-partial.txt")))
    stub = tmp_path / "nvidia-smi"
    stub.write_text(f'#!/bin/sh\ncase "$*" in *--query-gpu*) cat {failure}; exit 2;; esac\ncat {table}\n')
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    done = _run_probe(env)
    sections = split_sections(done.stdout.splitlines())
    assert sections["nvidia-smi"][1] == 2
    assert sections["nvidia-smi-table"][1] == 0
    (gpu,), runtime = parse_probe(done.stdout.splitlines())
    assert (gpu.name, gpu.vram_bytes, gpu.driver_ok) == ("NVIDIA RTX PRO ...", 8151 * MIB, True)
    assert (runtime.nvidia_smi_ok, runtime.nvidia_driver_version) == (True, "580.95.05")


def test_merge_rocminfo_and_amd_smi_of_one_droplet() -> None:
    # Both recorded on the same MI300X VF droplet (Mahmood-Anaam/msp docs/amd_droplet.md).
    (gpu,), runtime = probe({"rocminfo": "rocminfo/mi300x-vf.txt", "amd-smi": "amd-smi/mi300x-vf-default.txt"})
    assert gpu.sources == ("rocminfo", "amd-smi")
    assert (gpu.name, gpu.pci_slot, gpu.gfx_target) == (
        "AMD Instinct MI300X VF",
        "0000:83:00.0",
        "gfx942",
    )
    assert gpu.vram_bytes == 200998912 * 1024  # rocminfo's pool wins over amd-smi's total
    assert (runtime.rocminfo_ok, runtime.rocm_version) == (True, "7.2.4")


def test_merge_keyless_rocm_smi_by_position() -> None:
    # Both from ROCm/ROCm#1861 (one RX 6800): the old concise table names no node or slot.
    (gpu,), _ = probe(
        {
            "rocminfo": "rocminfo/rx6800-gfx1030-rocm5.3.txt",
            "rocm-smi": "rocm-smi/rx6800-concise-legacy-rocm5.3.txt",
        }
    )
    assert gpu.sources == ("rocminfo", "rocm-smi")
    assert (gpu.name, gpu.gfx_target) == ("AMD Radeon RX 6800", "gfx1030")


def test_merge_kfd_with_rocminfo_by_node() -> None:
    # KFD dump hand-built to match rocminfo/rx7900xtx-gfx1100.txt (see test_gpu_facts).
    kfd = [
        "kfd-node 0", "cpu_cores_count 16", "simd_count 0",
        "kfd-node 1", "simd_count 192", "gfx_target_version 110000", "device_id 29772",
        "location_id 768", "drm_render_minor 128", "kfd-mem-bank 0", "heap_type 1",
        "size_in_bytes 25753026560",
    ]  # fmt: skip
    (gpu,), _ = probe({"kfd": kfd, "rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"})
    assert gpu.sources == ("kfd", "rocminfo")
    assert gpu.name == "Radeon RX 7900 XTX"  # rocminfo's marketing name beats the PCI table's
    assert (gpu.vram_bytes, gpu.render_node) == (25753026560, "/dev/dri/renderD128")


def test_no_driver_gpus_come_from_lspci() -> None:
    gpus, runtime = probe({"lspci": "lspci/asus-tuf-a16-rx7600s-dgpu-plus-780m-igpu-knn.txt"})
    assert [(g.index, g.gfx_target, g.integrated, g.driver_ok) for g in gpus] == [
        (0, "gfx1102", False, False),
        (1, "gfx1103", True, False),
    ]
    assert runtime == GpuRuntime(pci_listed=True)


def test_broken_nvidia_driver_keeps_the_lspci_gpus() -> None:
    gpus, runtime = probe(
        {
            "lspci": "lspci/hgx-h100-x8-aspeed-bmc-nvswitch-host.txt",
            "nvidia-smi": "nvidia-smi/failure-couldnt-communicate-with-driver.txt",
        },
        rc={"nvidia-smi": 9},
    )
    assert len(gpus) == 8
    assert all(g.compute_capability == "9.0" and not g.driver_ok for g in gpus)
    assert runtime.nvidia_error is not None and "couldn't communicate" in runtime.nvidia_error
    assert not runtime.nvidia_smi_ok


def test_a_failing_probe_is_reported() -> None:
    # The message rocminfo prints when the amdgpu/KFD driver is not loaded (rocminfo.cc).
    lines = probe_lines({"rocminfo": ["ROCk module is NOT loaded, possibly no GPU devices"]}, rc={"rocminfo": 1})
    gpus, runtime = parse_probe(lines)
    assert gpus == () and not runtime.rocminfo_ok
    assert "rocminfo: ROCk module is NOT loaded" in runtime.probe_errors[-1]
    assert [(f.kind, f.vendor, f.source) for f in runtime.faults] == [("module-not-loaded", "amd", "rocminfo")]


def test_a_silent_tool_is_an_error_only_beside_its_vendors_gpu() -> None:
    # Hand-built empty nvidia-smi sections, beside the recorded HGX lspci and beside none.
    hgx = "lspci/hgx-h100-x8-aspeed-bmc-nvswitch-host.txt"
    _, runtime = probe({"lspci": hgx, "nvidia-smi": []})
    assert runtime.fact_errors == (
        "nvidia-smi printed nothing (exit status 0) although lspci shows 0000:1b:00.0 NVIDIA H100 SXM5 80GB",
    )
    _, runtime = probe({"lspci": hgx, "rocminfo": []})
    assert runtime.fact_errors == ()  # no AMD GPU on that bus
    _, runtime = probe({"nvidia-smi": [], "device-nodes": []})
    assert runtime.fact_errors == ()


def test_probe_reads_the_kernel_log_and_device_node_modes() -> None:
    # Recorded kernel log (ROCm/ROCm#1357) and hand-built stat lines in the probe's layout.
    _, runtime = probe(
        {
            "kernel-log": "kernel-log/mi100-arcturus-gpu-info-firmware-missing.txt",
            "device-nodes": ["/dev/kfd 600 root", "/dev/dri/renderD128 660 render"],
        }
    )
    assert runtime.device_nodes == ("/dev/dri/renderD128", "/dev/kfd")
    assert [(f.kind, f.source) for f in runtime.faults] == [
        ("firmware-missing", "kernel-log"),
        ("device-nodes", "device-nodes"),
    ]
    assert runtime.faults[1].evidence == "/dev/kfd 600 root"


def test_fixtures_keep_their_source_lines() -> None:
    for path in sorted(HERE.rglob("*.txt")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# source: "), path


# Hand-built in vulkaninfo --summary's Devices layout (see the vulkaninfo fixtures):
# RADV listing the RX 7600S of lspci/asus-tuf-a16-...txt as GPU1 after llvmpipe.
RADV_7600S = [
    "Devices:", "========",
    "GPU0:", "\tvendorID           = 0x10005", "\tdeviceID           = 0x0000",
    "\tdeviceType         = PHYSICAL_DEVICE_TYPE_CPU", "\tdeviceName         = llvmpipe",
    "GPU1:", "\tvendorID           = 0x1002", "\tdeviceID           = 0x7480",
    "\tdeviceType         = PHYSICAL_DEVICE_TYPE_DISCRETE_GPU",
    "\tdeviceName         = AMD Radeon RX 7600S (RADV NAVI33)",
]  # fmt: skip


def test_merge_vulkan_device_by_its_unique_pci_id() -> None:
    gpus, runtime = probe({"vulkaninfo": RADV_7600S, "lspci": "lspci/asus-tuf-a16-rx7600s-dgpu-plus-780m-igpu-knn.txt"})
    assert [(g.pci_id, g.vulkan_index, g.driver_ok) for g in gpus] == [
        ("1002:7480", 1, True),
        ("1002:15bf", None, False),
    ]
    assert gpus[0].name == "AMD Radeon RX 7600S" and runtime.vulkan_ok


def test_an_unreadable_vulkaninfo_stops_only_a_host_with_gpus() -> None:
    # Hand-built: the head of vulkaninfo's full (non --summary) report, a layout the
    # Devices-section parser does not read, beside the recorded HGX lspci and beside nothing.
    full_report = ["==========", "VULKANINFO", "==========", "", "Vulkan Instance Version: 1.3.204"]
    _, runtime = probe({"lspci": "lspci/hgx-h100-x8-aspeed-bmc-nvswitch-host.txt", "vulkaninfo": full_report})
    assert runtime.fact_errors == ("vulkaninfo printed output in a layout the parser does not know: 'VULKANINFO'",)
    _, runtime = probe({"vulkaninfo": full_report, "device-nodes": []})
    assert runtime.fact_errors == ()
    assert runtime.probe_errors == ("vulkaninfo printed output in a layout the parser does not know: 'VULKANINFO'",)
