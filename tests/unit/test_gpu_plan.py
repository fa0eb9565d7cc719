"""choose_gpu on hosts built from the recorded fixtures, one table row per case.

Scenarios come from tests/fixtures/gpu/hosts.py: each goes through the real probe
parser and merge where a recording exists, and says so where it is hand-built.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from lemfleet.roles.gpu_plan import GpuChoice, choose_gpu
from lemfleet.roles.settings import SettingsError
from tests.fixtures.gpu.hosts import (
    DEBIAN_12,
    DEBIAN_13,
    DEBIAN_SID,
    SCENARIOS,
    UBUNTU_2204,
    UBUNTU_2404,
    Release,
    scenario_host,
)

GIB = 2**30
DEB12_FAILS = "Debian 12 ships Vulkan headers 1.3.239, too old"
NVIDIA_NODES = ("/dev/nvidiactl", "char-nvidia-uvm")


class Case(NamedTuple):
    scenario: str
    release: Release
    settings: dict[str, Any]
    # backend, or "error: <text the message must contain>"
    outcome: str
    expect: dict[str, Any] = {}  # GpuChoice attributes (devices as a count)


CASES = [
    # -- AMD Instinct
    Case("mi300x", UBUNTU_2404, {}, "hip", dict(gpu_targets=("gfx942",), env={}, devices=1,
         device_nodes=("/dev/kfd", "char-drm"))),
    Case("mi300x", DEBIAN_12, {}, "error: Debian 12 packages HIP 5.2.3"),
    Case("mi300x", DEBIAN_12, {"gpu_allow_cpu_fallback": True}, "cpu", dict(devices=0, env={})),
    Case("mi300x", DEBIAN_13, {}, "vulkan",
         dict(gpu_targets=(), vram_budget_bytes=200998912 * 1024)),
    Case("mi300x", DEBIAN_SID, {}, "hip", dict(gpu_targets=("gfx942",))),
    Case("mi300x-x8", UBUNTU_2404, {}, "hip", dict(devices=8, tensor_split=(0.125,) * 8)),
    Case("mi250", UBUNTU_2404, {}, "hip", dict(gpu_targets=("gfx90a",), devices=2,
         tensor_split=(0.5, 0.5), vram_budget_bytes=128 * GIB)),
    Case("mi250", DEBIAN_13, {}, "vulkan", dict(devices=2)),
    # -- Radeon
    Case("rx7900xtx", UBUNTU_2404, {}, "hip", dict(gpu_targets=("gfx1100",), env={})),
    Case("rx7900xtx", UBUNTU_2204, {}, "hip", dict(gpu_targets=("gfx1100",))),
    Case("rx7900xtx", DEBIAN_12, {}, f"error: {DEB12_FAILS}"),
    Case("rx7900xtx", DEBIAN_13, {}, "vulkan", dict(env={})),
    Case("rx6700xt", UBUNTU_2404, {}, "vulkan", dict(gpu_targets=(), env={})),
    Case("rx6700xt", UBUNTU_2404, {"gpu_hsa_override_gfx_version": "auto"}, "hip",
         dict(gpu_targets=("gfx1030",), env={"HSA_OVERRIDE_GFX_VERSION": "10.3.0"})),
    Case("rx6700xt", UBUNTU_2404, {"gpu_hsa_override_gfx_version": "10.3.0"}, "hip",
         dict(gpu_targets=("gfx1030",), env={"HSA_OVERRIDE_GFX_VERSION": "10.3.0"})),
    Case("rx6700xt", UBUNTU_2204, {}, "error: Ubuntu 22.04 ships Vulkan headers 1.3.204, too old"),
    Case("rx6700xt", DEBIAN_13, {}, "vulkan"),
    Case("rx6700xt", DEBIAN_12, {}, "error: gfx1031 is not a target ROCm's libraries support"),
    Case("780m+rx7600s", UBUNTU_2404, {}, "hip", dict(gpu_targets=("gfx1102",), devices=1,
         env={"HIP_VISIBLE_DEVICES": "0"})),
    Case("780m+rx7600s", UBUNTU_2404, {"gpu_include_integrated": True}, "hip",
         dict(gpu_targets=("gfx1102",), devices=1)),  # the 780M's gfx1103 has no ROCm kernels
    Case("780m+rx7600s", DEBIAN_13, {}, "vulkan", dict(devices=1, env={})),
    Case("780m+rx7600s", DEBIAN_12, {}, f"error: {DEB12_FAILS}"),
    Case("780m", UBUNTU_2404, {}, "vulkan", dict(devices=1)),
    Case("780m", UBUNTU_2404, {"gpu_hsa_override_gfx_version": "auto"}, "hip",
         dict(gpu_targets=("gfx1100",), env={"HSA_OVERRIDE_GFX_VERSION": "11.0.0"})),
    Case("rx9070xt+igpu", UBUNTU_2404, {}, "hip", dict(gpu_targets=("gfx1201",), devices=1,
         env={"HIP_VISIBLE_DEVICES": "0"})),
    Case("rx9070xt+igpu", DEBIAN_13, {}, "vulkan", dict(devices=1)),
    Case("rx9070xt+igpu", DEBIAN_12, {}, f"error: {DEB12_FAILS}"),
    # -- NVIDIA
    Case("h100", UBUNTU_2404, {}, "cuda", dict(cuda_architectures=("90",), gpu_targets=(),
         env={"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}, vram_budget_bytes=81559 * 2**20,
         device_nodes=(*NVIDIA_NODES, "/dev/nvidia0"))),
    Case("h100", DEBIAN_12, {}, "cuda", dict(cuda_architectures=("90",))),
    Case("h100-x8", UBUNTU_2404, {}, "cuda", dict(devices=8, tensor_split=(0.125,) * 8)),
    Case("rtx4090", UBUNTU_2404, {}, "cuda", dict(cuda_architectures=("89",))),
    Case("rtx4080super", DEBIAN_13, {}, "cuda", dict(cuda_architectures=("89",))),
    Case("a100-x8", UBUNTU_2404, {}, "cuda", dict(cuda_architectures=("80",), devices=8,
         vram_budget_bytes=640 * GIB, tensor_split=(0.125,) * 8)),
    Case("t4", DEBIAN_12, {}, "cuda", dict(cuda_architectures=("75",), vram_budget_bytes=15 * GIB)),
    Case("nvidia-broken", UBUNTU_2404, {}, "cuda", dict(cuda_architectures=("90",), devices=8)),
    # The same nvidia-smi failure with no lspci output was once a warn-only CPU plan: now refused.
    Case("nvidia-broken-no-lspci", UBUNTU_2404, {}, "error: serving on the CPU would hide a broken GPU driver"),
    Case("nvidia-broken-no-lspci", UBUNTU_2404, {"gpu_allow_cpu_fallback": True}, "cpu", dict(devices=0)),
    Case("grid-k520", UBUNTU_2404, {}, "error: Kepler (compute capability 3.0) is not supported"),
    Case("grid-k520", UBUNTU_2404, {"gpu_allow_cpu_fallback": True}, "cpu"),
    # -- no GPU
    Case("cpu-only", UBUNTU_2404, {}, "cpu", dict(devices=0, warnings=(), env={}, device_nodes=())),
    Case("cpu-only", DEBIAN_12, {}, "cpu", dict(vram_budget_bytes=0, tensor_split=())),
]  # fmt: skip


def _id(case: Case) -> str:
    settings = ",".join(f"{k}={v}" for k, v in case.settings.items())
    return f"{case.scenario}-{case.release.os_id}{case.release.version or 'sid'}-{settings}"


def _observed(choice: GpuChoice, key: str) -> Any:
    value = getattr(choice, key)
    return len(value) if key == "devices" else value


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_plan_table(case: Case) -> None:
    facts = scenario_host(case.scenario, case.release)
    context = f"{case.scenario}: {SCENARIOS[case.scenario][0]}"
    if case.outcome.startswith("error: "):
        with pytest.raises(SettingsError) as raised:
            choose_gpu(facts, case.settings)
        assert case.outcome.removeprefix("error: ") in str(raised.value), context
        assert "gpu_allow_cpu_fallback" in str(raised.value) or "gpu_" in str(raised.value)
        return
    choice = choose_gpu(facts, case.settings)
    assert choice.backend == case.outcome, f"{context}\n" + "\n".join(choice.reasons)
    assert {k: _observed(choice, k) for k in case.expect} == case.expect, context


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_choice_explains_itself(name: str) -> None:
    facts = scenario_host(name, UBUNTU_2404)
    choice = choose_gpu(facts, {"gpu_allow_cpu_fallback": True})
    assert choice.reasons[0].startswith("detected: ")
    assert any(line.startswith("backend: ") for line in choice.reasons)
    if choice.backend == "hip":
        assert set(choice.gpu_targets) == {g.gfx_target for g in choice.devices} or choice.env.get(
            "HSA_OVERRIDE_GFX_VERSION"
        )
    if choice.backend == "cuda":
        caps = {g.compute_capability.replace(".", "") for g in choice.devices if g.compute_capability}
        assert set(choice.cuda_architectures) == caps
    if choice.backend == "cpu" and facts.gpus:
        assert any("serving on the CPU" in w for w in choice.warnings)


def test_unsupported_gfx_says_how_to_use_hip() -> None:
    choice = choose_gpu(scenario_host("rx6700xt", UBUNTU_2404), {})
    text = "\n".join(choice.reasons)
    assert "gfx1031 is not a target ROCm's libraries support" in text
    assert "gpu_hsa_override_gfx_version: auto would use the known-good 10.3.0" in text
    assert "HSA_OVERRIDE_GFX_VERSION" not in choice.env


def test_igpu_exclusion_is_explained() -> None:
    choice = choose_gpu(scenario_host("rx9070xt+igpu", UBUNTU_2404), {})
    assert [g.gfx_target for g in choice.devices] == ["gfx1201"]
    assert any("integrated" in r and "left out" in r for r in choice.reasons)


def test_broken_driver_warns() -> None:
    choice = choose_gpu(scenario_host("nvidia-broken", UBUNTU_2404), {})
    assert any(r.startswith("diagnosis: module-not-loaded") for r in choice.reasons)
    assert any("couldn't communicate with the NVIDIA driver" in w for w in choice.warnings)
    assert any("NVIDIA driver is broken" in w for w in choice.warnings)
    assert all(not g.driver_ok for g in choice.devices)


def test_cpu_fallback_is_never_silent() -> None:
    choice = choose_gpu(scenario_host("mi300x", DEBIAN_12), {"gpu_allow_cpu_fallback": "yes"})
    assert choice.backend == "cpu"
    assert any("1 GPU(s) detected but serving on the CPU" in w for w in choice.warnings)
