"""choose_gpu on the hardware classes of issue 15, from real recorded outputs
(tests/fixtures/gpu/hosts.py says which scenarios are hand-built or hand-combined, and why).

Each row: the scenario, its settings, the outcome ("backend" or "error: <text>"), the
GpuChoice attributes it must have, and text its reasons (or warnings) must contain.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from lemfleet.roles.gpu_plan import choose_gpu
from lemfleet.roles.settings import SettingsError
from tests.fixtures.gpu.hosts import DEBIAN_13, SCENARIOS, UBUNTU_2404, Release, scenario_host

GIB = 2**30
FALLBACK = {"gpu_allow_cpu_fallback": True}
NV = ("/dev/nvidiactl", "char-nvidia-uvm")
MIG_3G = "MIG-0929581a-2be6-5dec-bf34-0954c6c529a6"
MIG_3G_2 = "MIG-3adbed3a-d03d-549f-a016-ba1fd7359f23"


class Case(NamedTuple):
    scenario: str
    settings: dict[str, Any]
    outcome: str
    expect: dict[str, Any] = {}
    says: tuple[str, ...] = ()  # each in the reasons or warnings (or the error)
    release: Release = UBUNTU_2404


CASES = [
    # -- class 1: output no parser knows is an error, never "no GPU"; a CPU-only host plans cleanly
    Case("k40c-smi-q", {}, "error: the GPU facts cannot be trusted: nvidia-smi printed output in a layout "
         "the parser does not know: 'GPU 00000000:84:00.0'"),
    Case("k40c-smi-q", FALLBACK, "cpu", dict(devices=0), ("serving on the CPU: the GPU facts cannot be trusted",)),
    Case("t4-vgpu-host-smi-vgpu", {}, "error: nvidia-smi printed output in a layout the parser does not know: "
         "'|   0  Tesla T4"),
    Case("hgx-silent-nvidia-smi", {}, "error: nvidia-smi printed nothing (exit status 0) although lspci shows "
         "0000:1b:00.0 NVIDIA H100 SXM5 80GB"),
    Case("hgx-silent-nvidia-smi", FALLBACK, "cpu", {}, ("8 GPU(s) detected but serving on the CPU",)),
    Case("cpu-only-silent-nvidia-smi", {}, "cpu", dict(warnings=(), devices=0)),
    Case("cpu-only", {}, "cpu", dict(warnings=())),
    # -- class 2: partitions count once per physical device; MI300A TPX memory is split
    Case("mi300x-qpx", {}, "hip", dict(devices=4, vram_budget_bytes=206141652992, gpu_targets=("gfx942",),
         tensor_split=(0.25,) * 4),
         ("detected: 1 physical GPU(s) as 4 partitions", "are the 4 QPX/NPS1 partitions of one AMD Instinct "
          "MI300X; they share one memory pool (192.0 GiB), counted once", "vram: 192.0 GiB across 1 physical")),
    Case("mi300x-qpx", {"gpu_devices": [2]}, "hip", dict(devices=1, vram_budget_bytes=206141652992,
         env={"HIP_VISIBLE_DEVICES": "2"})),
    Case("mi300x-qpx-no-vram", {}, "hip", dict(devices=4, vram_budget_bytes=0),
         ("they share one memory pool (size unknown)",)),
    Case("mi300a-tpx", {}, "hip", dict(devices=3, vram_budget_bytes=3 * 33580773376),
         ("are the 3 TPX/NPS1 partitions of one AMD Instinct MI300A; each has memory of its own",)),
    Case("mi300x-x8", {}, "hip", dict(devices=8), ("vram: 0.0 GiB across 8 physical GPU(s)",)),
    # -- class 3: MIG, one instance per server with its own memory, never the whole GPU's
    Case("a100-mig-2x3g40gb", {}, "cuda", dict(
         env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": MIG_3G}, vram_budget_bytes=40 * 10**9,
         cuda_architectures=("80",), device_nodes=(*NV, "/dev/nvidia0", "char-nvidia-caps"), tensor_split=()),
         ("a CUDA process sees exactly one MIG instance", "the largest of 2",
          "vram: 37.3 GiB of MIG instance 3g.40gb, not the whole GPU's")),
    Case("a100-mig-2x3g40gb", {"gpu_devices": [MIG_3G_2]}, "cuda",
         dict(env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": MIG_3G_2}),
         (f"devices: MIG instance {MIG_3G_2} (3g.40gb) on nvidia[0] NVIDIA A100 80GB PCIe, chosen by gpu_devices",)),
    Case("a100-mig-2x3g40gb", {"gpu_devices": ["MIG-00000000-0000-0000-0000-000000000000"]},
         "error: gpu_devices entry 'MIG-00000000-0000-0000-0000-000000000000' matches no GPU"),
    Case("a100-x4-gpu0-mig", {}, "cuda", dict(devices=3, env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID",
         "CUDA_VISIBLE_DEVICES": "1,2,3"}), ("left out nvidia[0]",)),
    Case("a100-mig-mixed", {}, "cuda", dict(devices=1, vram_budget_bytes=81920 * 2**20,
         env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0"}),
         ("devices: left out nvidia[1] NVIDIA A100-SXM..., MIG on with no MIG instance listed",)),
    Case("a800-mig-no-instances", {}, "error: MIG is on but nvidia-smi -L lists no MIG instance to serve on; "
         "create instances (nvidia-smi mig -i 0 -cgi <profile> -C) or turn MIG off (nvidia-smi -i 0 -mig 0)"),
    Case("h100-mig-table", {}, "error: nvidia[0] NVIDIA H100 80GB HBM3: MIG is on"),
    Case("rtx-pro-6000-x3", {}, "cuda", dict(devices=2, cuda_architectures=("120",)),
         ("backend: cuda, the NVIDIA driver works (its version was not reported)",)),
    # -- class 4: runtime gfx names checked against the PCI table; unknown ids kept
    Case("mi250-gfx9010", {}, "hip", dict(gpu_targets=("gfx90a",)),
         ("facts: amd[0] AMD INSTINCT MI250 (MCM) OAM AC MBA: rocm-smi reported gfx9010, which is not an LLVM "
          "gfx target (its version read in decimal digits: gfx90a)",)),
    Case("mi350x", {}, "hip", dict(gpu_targets=("gfx950",))),
    Case("rx7800xt-json", {}, "hip", dict(gpu_targets=("gfx1101",))),
    Case("phoenix3-unknown-id", {}, "vulkan", dict(devices=1),
         ("gfx target unknown (device 1002:1900 is not in the PCI table, and no KFD or rocminfo answer)",)),
    # -- class 5: broken drivers diagnosed by class; never a silent CPU plan
    Case("nvidia-version-mismatch", {}, "error: serving on the CPU would hide a broken GPU driver: "
         "version-mismatch (nvidia-smi: 'Failed to initialize NVML: Driver/library version mismatch / NVML "
         "library version: 570.124'), the loaded nvidia kernel module is older or newer"),
    Case("nvidia-version-mismatch", FALLBACK, "cpu", {},
         ("diagnosis: version-mismatch", "reload the modules (rmmod nvidia_uvm nvidia_drm nvidia_modeset nvidia "
          "&& modprobe nvidia) or reboot")),
    Case("nvidia-broken-no-lspci", {}, "error: serving on the CPU would hide a broken GPU driver: module-not-loaded"),
    Case("nvidia-broken-no-lspci", FALLBACK, "cpu", {}, ("action: the nvidia kernel module is not loaded",)),
    Case("nvidia-broken", {}, "cuda", dict(devices=8), ("diagnosis: module-not-loaded (nvidia-smi:",)),
    Case("rtx5090-no-devices", {}, "error: no-devices (nvidia-smi: 'No devices were found')"),
    Case("rtx5090-no-devices", FALLBACK, "cpu", {}, ("diagnosis: no-devices (kernel-log: 'Jul 01 22:55:07 gpu "
         "kernel: NVRM: GPU 0000:01:00.0: RmInitAdapter failed! (0x22:0x56:884)')",)),
    Case("cpu-only-leftover-nvidia", {}, "cpu", dict(devices=0),
         ("GPU driver fault (no nvidia GPU on the PCI bus: a driver left over), no-devices",)),
    Case("pitcairn-kfd", {}, "error: device-nodes (rocminfo: 'Unable to open /dev/kfd read-write: Cannot "
         "allocate memory')"),
    Case("mi100-firmware", {}, "error: firmware-missing (kernel-log: '[    9.605986] amdgpu 0000:23:00.0: Direct "
         "firmware load for amdgpu/arcturus_gpu_info.bin failed with error -2'), install the GPU firmware"),
    Case("mi100-kfd-denied", {}, "vulkan", dict(devices=4),
         ("diagnosis: device-nodes (rocminfo: 'Unable to open /dev/kfd read-write: Permission denied'); action: "
          "/dev/kfd and /dev/dri/renderD* are not accessible to this user",)),
    # -- class 6: older NVIDIA generations from the tables; unsupported ones refused with a reason
    Case("k80", {}, "error: Tesla K80: Kepler (compute capability 3.7) is not supported: CUDA 12 dropped "
         "compute capability below 5.0"),
    Case("k80", FALLBACK, "cpu", {}, ("1 GPU(s) detected but serving on the CPU",)),
    Case("k80x4+2080ti", {}, "cuda", dict(devices=1, cuda_architectures=("75",),
         env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "2"}),
         ("devices: left out nvidia[0] Tesla K80: Kepler (compute capability 3.7) is not supported",)),
    Case("titan-xp", {}, "cuda", dict(cuda_architectures=("61",)), ("backend: cuda, driver 384.66 works",)),
    Case("p400-vgpu-host", {}, "cuda", dict(cuda_architectures=("61",), vram_budget_bytes=2047 * 2**20)),
    Case("gtx1050ti-lspci", {}, "cuda", dict(cuda_architectures=("61",)),
         ("the NVIDIA driver is not installed or not loaded, the drivers step installs it",)),
    Case("gtx1050ti-lspci", {}, "cuda", dict(cuda_architectures=("61",)), release=DEBIAN_13),
]  # fmt: skip


def _id(case: Case) -> str:
    settings = ",".join(f"{k}={v}" for k, v in case.settings.items())
    return f"{case.scenario}-{case.release.os_id}{case.release.version}-{settings}"


def _observed(choice: Any, key: str) -> Any:
    value = getattr(choice, key)
    return len(value) if key == "devices" else value


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_hardware_class(case: Case) -> None:
    facts = scenario_host(case.scenario, case.release)
    context = f"{case.scenario}: {SCENARIOS[case.scenario][0]}"
    if case.outcome.startswith("error: "):
        with pytest.raises(SettingsError) as raised:
            choose_gpu(facts, case.settings)
        assert case.outcome.removeprefix("error: ") in str(raised.value), context
        assert "gpu_allow_cpu_fallback" in str(raised.value) or "gpu_devices" in str(raised.value)
        return
    choice = choose_gpu(facts, case.settings)
    text = "\n".join(choice.reasons + choice.warnings)
    assert choice.backend == case.outcome, f"{context}\n{text}"
    assert {k: _observed(choice, k) for k in case.expect} == case.expect, f"{context}\n{text}"
    for part in case.says:
        assert part in text, f"{context}\n{text}"


def test_no_reason_says_driver_none() -> None:
    for name in SCENARIOS:
        choice = choose_gpu(scenario_host(name, UBUNTU_2404), FALLBACK)
        assert not any("None" in line for line in choice.reasons), name


def test_mig_never_budgets_the_whole_gpu() -> None:
    for name in ("a100-mig-2x3g40gb", "a100-mig-mixed", "rtx-pro-6000-x3", "a100-x4-gpu0-mig"):
        choice = choose_gpu(scenario_host(name, UBUNTU_2404), {})
        whole = sum(g.vram_bytes or 0 for g in choice.devices if g.mig_enabled)
        assert whole == 0 or choice.vram_budget_bytes < whole, name
        mig_uuid = choice.env.get("CUDA_VISIBLE_DEVICES", "")
        assert mig_uuid.startswith("MIG-") == any(g.mig_enabled for g in choice.devices), name


def test_lemfleet_plan_rows_carry_the_diagnosis_and_action() -> None:
    from lemfleet.plan_fleet import plan_row
    from lemfleet.roles.settings_check import validate

    refused = plan_row("mismatch", scenario_host("nvidia-version-mismatch", UBUNTU_2404), validate({}))
    assert not refused["ok"]
    assert any("version-mismatch" in e and "or reboot" in e for e in refused["errors"])
    planned = plan_row("broken", scenario_host("nvidia-broken", UBUNTU_2404), validate({}))
    assert planned["ok"] and planned["backend"] == "cuda"
    assert "diagnosis: module-not-loaded" in planned["reasons"]["backend"]
    assert any("action: the nvidia kernel module is not loaded" in w for w in planned["warnings"])
    untrusted = plan_row("smi-q", scenario_host("k40c-smi-q", UBUNTU_2404), validate({}))
    assert any("the GPU facts cannot be trusted" in e for e in untrusted["errors"])
