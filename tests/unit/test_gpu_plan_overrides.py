"""The gpu_* settings win over detection, and bad or impossible ones fail with a
message that names the setting, the value and what is accepted."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from lemfleet.roles.gpu_plan import DEFAULTS, SETTINGS, choose_gpu
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.settings import SettingsError
from tests.fixtures.gpu.hosts import (
    DEBIAN_12,
    DEBIAN_13,
    UBUNTU_2404,
    Release,
    scenario_host,
)


def _mixed_host() -> HostFacts:
    """RTX 4090 (hand-built) + RX 7900 XTX (rocminfo fixture) on one Ubuntu 24.04 host."""
    amd = scenario_host("rx7900xtx", UBUNTU_2404)
    nvidia = scenario_host("rtx4090", UBUNTU_2404)
    return replace(
        amd,
        gpus=amd.gpus + nvidia.gpus,
        gpu_runtime=replace(amd.gpu_runtime, nvidia_smi_ok=True, nvidia_driver_version="580.95.05"),
    )


ERRORS: list[tuple[str, Release, dict[str, Any], list[str]]] = [
    ("rx7900xtx", UBUNTU_2404, {"gpu_backend": "cuda"},
     ["gpu_backend='cuda' needs nvidia GPUs", "amd[0] Radeon RX 7900 XTX"]),
    ("h100", UBUNTU_2404, {"gpu_backend": "hip"}, ["gpu_backend='hip' needs amd GPUs"]),
    ("cpu-only", UBUNTU_2404, {"gpu_backend": "cuda"},
     ["gpu_backend='cuda' but no AMD or NVIDIA GPU was detected"]),
    ("rx7900xtx", DEBIAN_12, {"gpu_backend": "vulkan"},
     ["gpu_backend='vulkan' cannot build on this host", "1.3.239"]),
    ("rx7900xtx", UBUNTU_2404, {"gpu_backend": "metal"},
     ["gpu_backend='metal' is not valid", "'auto', 'hip', 'cuda', 'vulkan', 'cpu'"]),
    ("rx7900xtx", UBUNTU_2404, {"gpu_targets": ["gfx11OO"]},
     ["gpu_targets=['gfx11OO'] is not valid", "gfx targets for hip"]),
    ("rx7900xtx", UBUNTU_2404, {"gpu_targets": ["8.9"]}, ["must be gfx names", "for hip"]),
    ("h100", UBUNTU_2404, {"gpu_targets": ["gfx942"]}, ["must be compute capabilities for cuda"]),
    ("h100-x8", UBUNTU_2404, {"gpu_devices": [9]},
     ["gpu_devices entry '9' matches no GPU", "nvidia[7] NVIDIA H100 80GB HBM3 at 0000:ca:00.0"]),
    ("h100-x8", UBUNTU_2404, {"gpu_devices": "gpu0"}, ["gpu_devices='gpu0' is not valid"]),
    ("rx6700xt", UBUNTU_2404, {"gpu_hsa_override_gfx_version": "10.3"},
     ["gpu_hsa_override_gfx_version='10.3' is not valid", "'10.3.0'"]),
    ("rx9070xt+igpu", UBUNTU_2404, {"gpu_devices": [0, 1], "gpu_hsa_override_gfx_version": "auto"},
     ["gpu_hsa_override_gfx_version applies to every GPU", "gfx1030, gfx1201"]),
    ("rx6700xt", UBUNTU_2404, {"gpu_allow_cpu_fallback": "maybe"},
     ["gpu_allow_cpu_fallback='maybe' is not valid"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("scenario", "release", "settings", "message"),
    ERRORS,
    ids=[f"{s}-{next(iter(o))}" for s, _, o, _ in ERRORS],
)
def test_bad_or_impossible_settings_fail(
    scenario: str, release: Release, settings: dict[str, Any], message: list[str]
) -> None:
    with pytest.raises(SettingsError) as raised:
        choose_gpu(scenario_host(scenario, release), settings)
    assert raised.value.host == scenario_host(scenario, release).hostname
    for part in message:
        assert part in str(raised.value)


def test_forced_hip_on_debian_13_warns_about_rocm() -> None:
    choice = choose_gpu(scenario_host("rx7900xtx", DEBIAN_13), {"gpu_backend": "hip"})
    assert (choice.backend, choice.gpu_targets) == ("hip", ("gfx1100",))
    assert any("HIP 5.7.1" in w and "ROCm must come from AMD" in w for w in choice.warnings)


def test_forced_vulkan_on_nvidia() -> None:
    choice = choose_gpu(scenario_host("h100", UBUNTU_2404), {"gpu_backend": "vulkan"})
    assert choice.backend == "vulkan" and choice.cuda_architectures == ()
    assert "/dev/nvidiactl" in choice.device_nodes


def test_forced_cpu_on_a_gpu_host_is_not_a_fallback() -> None:
    choice = choose_gpu(scenario_host("h100-x8", UBUNTU_2404), {"gpu_backend": "cpu"})
    assert (choice.backend, choice.devices, choice.warnings) == ("cpu", (), ())
    assert "backend: cpu, set by gpu_backend" in choice.reasons


def test_devices_by_pci_address_and_index() -> None:
    facts = scenario_host("h100-x8", UBUNTU_2404)
    by_slot = choose_gpu(facts, {"gpu_devices": ["86:00.0", "0000:53:00.0"]})
    by_index = choose_gpu(facts, {"gpu_devices": "3, 0"})
    for choice in (by_slot, by_index):
        assert choice.env["CUDA_VISIBLE_DEVICES"] == "0,3"
        assert choice.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert choice.tensor_split == (0.5, 0.5)
        assert [g.index for g in choice.devices] == [0, 3]
        assert choice.device_nodes[-2:] == ("/dev/nvidia0", "/dev/nvidia3")


def test_chosen_igpu_alone_uses_vulkan_and_warns_about_indexes() -> None:
    choice = choose_gpu(scenario_host("rx9070xt+igpu", UBUNTU_2404), {"gpu_devices": [1]})
    assert choice.backend == "vulkan"
    assert [g.gfx_target for g in choice.devices] == ["gfx1036"]
    assert any("GGML_VK_VISIBLE_DEVICES is not set" in w for w in choice.warnings)


def test_targets_override_wins() -> None:
    hip = choose_gpu(scenario_host("rx7900xtx", UBUNTU_2404), {"gpu_targets": "gfx1101,gfx1100"})
    assert hip.gpu_targets == ("gfx1100", "gfx1101")
    cuda = choose_gpu(scenario_host("h100", UBUNTU_2404), {"gpu_targets": ["9.0", "89"]})
    assert cuda.cuda_architectures == ("89", "90")
    vulkan = choose_gpu(scenario_host("rx7900xtx", DEBIAN_13), {"gpu_targets": ["gfx1100"]})
    assert vulkan.gpu_targets == () and "gpu_targets is ignored by the vulkan backend" in vulkan.warnings


def test_targets_that_miss_a_chosen_gpu_warn() -> None:
    choice = choose_gpu(scenario_host("rx7900xtx", UBUNTU_2404), {"gpu_targets": ["gfx1101"]})
    assert choice.gpu_targets == ("gfx1101",)
    assert any("leave out the chosen GPUs' ['gfx1100']" in w for w in choice.warnings)


def test_mixed_vendors() -> None:
    facts = _mixed_host()
    auto = choose_gpu(facts, {})
    assert auto.backend == "cuda"  # 24564 MiB against 24560 MiB
    assert any("by VRAM" in r for r in auto.reasons)
    assert choose_gpu(facts, {"gpu_backend": "hip"}).devices == facts.gpus[:1]
    with pytest.raises(SettingsError, match="is ambiguous"):
        choose_gpu(facts, {"gpu_devices": [0]})
    picked = choose_gpu(facts, {"gpu_devices": ["0000:03:00.0"]})
    assert (picked.backend, picked.env) == ("hip", {})


def test_settings_are_declared_with_docs_and_valid_defaults() -> None:
    assert [s.name for s in SETTINGS] == list(DEFAULTS)
    for setting in SETTINGS:
        assert setting.name.startswith("gpu_") and len(setting.doc) > 40
        assert setting.clean(setting.default) == setting.default


def test_vulkan_indexes_from_vulkaninfo() -> None:
    from tests.fixtures.gpu.hosts import host, probe
    from tests.unit.test_gpu_facts_probe import RADV_7600S

    report = probe({"vulkaninfo": RADV_7600S, "lspci": "lspci/asus-tuf-a16-rx7600s-dgpu-plus-780m-igpu-knn.txt"})
    choice = choose_gpu(host("laptop", DEBIAN_13, report), {})
    assert (choice.backend, choice.env) == ("vulkan", {"GGML_VK_VISIBLE_DEVICES": "1"})
