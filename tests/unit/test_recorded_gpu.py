"""The recorded-GPU tools a test-bed host presents (lemfleet/testbed/recorded_gpu.py), run here as scripts.

Each case installs the tools under a scratch prefix, runs the real GPU probe (``GpuProbe``'s command) with that
prefix first on PATH, and checks that the facts see the GPUs the recordings alone give: the tools answer the
facts' own invocations, so a host presenting them is detected as the recorded machine was. Sources: each
fixture's ``# source:`` line (tests/fixtures/gpu/INDEX.md).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from lemfleet.roles.facts.gpu import PROBE_COMMAND, parse_probe
from lemfleet.roles.facts.gpu_pci import GpuReport
from lemfleet.testbed.recorded_gpu import expected_report, install_tools, outputs, write_kfd

CASES = {
    "t4-table": ({"nvidia-smi": "nvidia-smi/tesla-t4-driver580-gpu-table-partial.txt"}, None, 1),
    "hgx-broken-driver": ({"lspci": "lspci/hgx-h100-x8-aspeed-bmc-nvswitch-host.txt",
                           "nvidia-smi": "nvidia-smi/failure-couldnt-communicate-with-driver.txt"},
                          {"nvidia-smi": 9}, 8),
    "rx7900xtx-rocminfo": ({"rocminfo": "rocminfo/rx7900xtx-gfx1100.txt"}, None, 1),
    "a100-x4-mig-listing": ({"nvidia-smi": "nvidia-smi/a100-sxm4-80gb-x4-gpu0-mig-4x1g20gb-list.txt"}, None, 4),
    "a100-x2-table": ({"nvidia-smi": "nvidia-smi/a100-sxm-x2-mig-mixed-driver510-table-partial.txt"}, None, 2),
    "titanv+rtx5880-listing": ({"nvidia-smi": "nvidia-smi/titanv-plus-rtx5880ada-list.txt"}, None, 2),
    "mi300x-x8-rocm-smi": ({"rocm-smi": "rocm-smi/mi300x-x8-concise-with-ansi-caret-escapes.txt"}, None, 8),
    "rx9070xt+igpu-rocminfo": ({"rocminfo": "rocminfo/rx9070xt-gfx1201-plus-raphael-igpu-gfx1036.txt"}, None, 2),
}  # fmt: skip


def summary(report: GpuReport) -> list[tuple[object, ...]]:
    return [
        (g.vendor, g.name, g.index, g.pci_id, g.gfx_target, g.compute_capability, g.vram_bytes, g.mig_enabled,
         len(g.mig_devices))
        for g in report[0]
    ]  # fmt: skip


def probe_with(prefix: Path) -> GpuReport:
    env = {**os.environ, "PATH": f"{prefix}/bin:{os.environ['PATH']}"}
    out = subprocess.run(["sh", "-c", PROBE_COMMAND], env=env, capture_output=True, text=True, timeout=120, check=True)
    return parse_probe(out.stdout.splitlines())


@pytest.mark.parametrize("case", CASES)
def test_the_probe_sees_the_recorded_gpus(case: str, tmp_path: Path) -> None:
    recordings, rc, count = CASES[case]
    install_tools(Path("/"), recordings, rc, prefix=str(tmp_path))
    seen, expected = probe_with(tmp_path), expected_report(recordings, rc)
    assert len(seen[0]) == count
    assert summary(seen) == summary(expected)
    assert [f.kind for f in seen[1].faults] == [f.kind for f in expected[1].faults]


def test_nvidia_smi_answers_each_invocation_from_its_own_recording(tmp_path: Path) -> None:
    install_tools(Path("/"), CASES["t4-table"][0], prefix=str(tmp_path))
    tool = str(tmp_path / "bin" / "nvidia-smi")
    table = subprocess.run([tool], capture_output=True, text=True, check=False)
    assert table.returncode == 0 and "Tesla T4" in table.stdout
    query = subprocess.run([tool, "--query-gpu=index,name", "--format=csv"], capture_output=True, text=True)
    assert query.returncode == 2 and query.stdout == ""
    assert "no recorded output for these arguments (--query-gpu=index name --format=csv)" in query.stderr


def test_a_failure_recording_answers_every_invocation_with_its_status(tmp_path: Path) -> None:
    recordings, rc, _ = CASES["hgx-broken-driver"]
    install_tools(Path("/"), recordings, rc, prefix=str(tmp_path))
    for args in ([], ["-L"], ["--query-gpu=index", "--format=csv"]):
        proc = subprocess.run([str(tmp_path / "bin" / "nvidia-smi"), *args], capture_output=True, text=True)
        assert proc.returncode == 9 and "couldn't communicate with the NVIDIA driver" in proc.stdout


def test_a_section_no_tool_can_present_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"'kernel-log' cannot be presented.*accepted: rocminfo"):
        outputs({"kernel-log": ["NVRM: API mismatch"]})
    with pytest.raises(ValueError, match="two recordings answer 'nvidia-smi-list'"):
        outputs({"nvidia-smi": ["GPU 0: A (UUID: GPU-1)"], "nvidia-smi-list": ["GPU 0: A (UUID: GPU-1)"]})


def test_the_kfd_tree_reads_back_as_the_recorded_gpu(tmp_path: Path) -> None:
    """The derived KFD topology, read with the probe's own KFD command and parser."""
    from lemfleet.roles.facts.gpu_amd import KFD_COMMAND, KFD_NODES, parse_kfd_topology

    gpus, _ = expected_report(CASES["rx7900xtx-rocminfo"][0])
    sys_class = write_kfd(tmp_path / "class", gpus)
    command = KFD_COMMAND.replace(KFD_NODES, str(sys_class / "kfd/kfd/topology/nodes"))
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True).stdout
    (gpu,), _ = parse_kfd_topology(out.splitlines())
    (recorded,) = gpus
    assert (gpu.gfx_target, gpu.pci_id, gpu.pci_slot, gpu.vram_bytes, gpu.render_node) == (
        "gfx1100", "1002:744c", recorded.pci_slot, recorded.vram_bytes, "/dev/dri/renderD128",
    )  # fmt: skip
    assert (sys_class / "net").is_dir(), "the mirror keeps the controller's /sys/class entries"
