"""The HIP (ROCm) driver plan on every release, and the cases where it must refuse."""

from __future__ import annotations

from typing import Any

import pytest

from lemfleet.roles.drivers import DriverPlanError, DriverTarget, plan_drivers
from lemfleet.roles.settings import SettingsError

KERNEL = "6.8.0-45-generic"


def hip(os_id: str, version: str, codename: str, **kw: Any) -> DriverTarget:
    return DriverTarget(os_id, version, codename, "hip", **kw)


@pytest.mark.parametrize(("version", "suite"), [("22.04", "jammy"), ("24.04", "noble")])
def test_ubuntu_from_amds_repository(version: str, suite: str) -> None:
    plan = plan_drivers(hip("ubuntu", version, suite, kernel_release=KERNEL), {})
    assert plan.source == "amd-repo"
    assert [(k.url, k.dest) for k in plan.keys] == [
        ("https://repo.radeon.com/rocm/rocm.gpg.key", "/etc/apt/keyrings/rocm.gpg")
    ]
    assert [s.name for s in plan.sources] == ["amdgpu", "rocm", "amdgraphics"]
    assert [(s.uris, s.suites, s.components, s.architectures, s.signed_by) for s in plan.sources] == [
        ((uri,), (suite,), ("main",), ("amd64",), "/etc/apt/keyrings/rocm.gpg")
        for uri in (
            "https://repo.radeon.com/amdgpu/30.30.3/ubuntu",
            "https://repo.radeon.com/rocm/apt/7.2.3",
            "https://repo.radeon.com/graphics/7.2.3/ubuntu",
        )
    ]
    rocm = plan.sources[1]
    assert rocm.path == "/etc/apt/sources.list.d/rocm.sources"
    assert rocm.deb822() == (
        "Types: deb\n"
        "URIs: https://repo.radeon.com/rocm/apt/7.2.3\n"
        f"Suites: {suite}\n"
        "Components: main\n"
        "Architectures: amd64\n"
        "Signed-By: /etc/apt/keyrings/rocm.gpg\n"
    )
    (pin,) = plan.pins
    assert pin.path == "/etc/apt/preferences.d/rocm-pin-600"
    assert pin.render() == (
        "# Managed by lemfleet (drivers).\nPackage: *\nPin: release o=repo.radeon.com\nPin-Priority: 600\n"
    )
    assert plan.kernel_packages == (
        "amdgpu-dkms",
        f"linux-headers-{KERNEL}",
        f"linux-modules-extra-{KERNEL}",
    )
    assert plan.packages == (
        "rocm-hip-runtime",
        "rocminfo",
        "rocm-hip-runtime-dev",
        "hipcc",
        "hip-dev",
        "rocblas-dev",
        "hipblas-dev",
    )
    assert plan.service_groups == ("render", "video")
    assert plan.reboot and plan.reboot_may_be_needed
    assert not plan.files


def test_debian_sid_uses_debians_rocm_without_dkms() -> None:
    plan = plan_drivers(hip("debian", "sid", "sid"), {})
    assert plan.source == "debian"
    assert not (plan.keys or plan.sources or plan.pins or plan.kernel_packages)
    assert plan.packages == (
        "rocminfo",
        "hipcc",
        "libamdhip64-dev",
        "librocblas-dev",
        "libhipblas-dev",
    )
    assert plan.service_groups == ("render", "video")
    assert not plan.reboot
    assert any("HIP 6.4.3" in reason for reason in plan.reasons)


def test_debian_13_says_hip_is_too_old_and_offers_vulkan() -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(hip("debian", "13", "trixie"), {})
    text = str(err.value)
    assert "gpu_backend='hip'" in text
    assert "Debian 13 (trixie)" in text
    assert "5.7.1" in text and "6.1" in text
    assert "'vulkan'" in text
    assert isinstance(err.value, SettingsError)


def test_debian_12_says_hip_and_vulkan_are_too_old() -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(hip("debian", "12", "bookworm"), {})
    text = str(err.value)
    assert "5.2.3" in text
    assert "1.3.239" in text
    assert "'cpu'" in text
    assert "Debian 13 serves AMD GPUs through 'vulkan'" in text


def test_unsupported_release_lists_the_accepted_ones() -> None:
    with pytest.raises(DriverPlanError, match=r"Ubuntu 22\.04 and 24\.04 .* Debian sid"):
        plan_drivers(hip("ubuntu", "20.04", "focal"), {})


def test_amd_repo_is_amd64_only() -> None:
    with pytest.raises(DriverPlanError, match="amd64 only"):
        plan_drivers(hip("ubuntu", "24.04", "noble", arch="aarch64"), {})


def test_rocm_older_than_6_1_is_refused() -> None:
    with pytest.raises(DriverPlanError, match=r"drivers_rocm_version='6\.0' is too old"):
        plan_drivers(hip("ubuntu", "24.04", "noble"), {"drivers_rocm_version": "6.0"})


def test_rocm_6_4_has_no_graphics_repo_and_same_numbered_driver() -> None:
    plan = plan_drivers(hip("ubuntu", "24.04", "noble"), {"drivers_rocm_version": "6.4.3"})
    assert [s.uris[0] for s in plan.sources] == [
        "https://repo.radeon.com/amdgpu/6.4.3/ubuntu",
        "https://repo.radeon.com/rocm/apt/6.4.3",
    ]


def test_unknown_rocm_needs_an_explicit_amdgpu_release() -> None:
    target = hip("ubuntu", "24.04", "noble")
    with pytest.raises(DriverPlanError, match="set drivers_amdgpu_version"):
        plan_drivers(target, {"drivers_rocm_version": "7.9.1"})
    plan = plan_drivers(target, {"drivers_rocm_version": "7.9.1", "drivers_amdgpu_version": "30.90.1"})
    assert plan.sources[0].uris == ("https://repo.radeon.com/amdgpu/30.90.1/ubuntu",)


def test_working_rocm_is_left_alone() -> None:
    target = hip("ubuntu", "24.04", "noble", runtime_working=True, runtime_version="7.0.2")
    plan = plan_drivers(target, {})
    assert plan.source == "existing"
    assert not (plan.keys or plan.sources or plan.pins or plan.kernel_packages)
    assert plan.packages == (
        "rocm-hip-runtime-dev",
        "hipcc",
        "hip-dev",
        "rocblas-dev",
        "hipblas-dev",
    )
    assert not plan.reboot
    assert any("drivers_manage_existing=false" in reason for reason in plan.reasons)


def test_working_but_too_old_rocm_is_an_error_that_names_the_switch() -> None:
    target = hip("ubuntu", "22.04", "jammy", runtime_working=True, runtime_version="5.7.1")
    with pytest.raises(DriverPlanError, match="set drivers_manage_existing=true"):
        plan_drivers(target, {})


def test_manage_existing_replaces_a_working_rocm() -> None:
    target = hip(
        "ubuntu",
        "24.04",
        "noble",
        runtime_working=True,
        runtime_version="5.7.1",
        kernel_driver_loaded=True,
    )
    plan = plan_drivers(target, {"drivers_manage_existing": True})
    assert plan.source == "amd-repo"
    assert plan.kernel_packages[0] == "amdgpu-dkms"
    assert plan.reboot


def test_loaded_kernel_driver_skips_dkms() -> None:
    plan = plan_drivers(hip("ubuntu", "24.04", "noble", kernel_driver_loaded=True), {})
    assert plan.kernel_packages == ()
    assert [s.name for s in plan.sources] == ["rocm", "amdgraphics"]
    assert "rocm-hip-runtime" in plan.packages
    assert not plan.reboot and not plan.reboot_may_be_needed


def test_container_skips_kernel_modules() -> None:
    plan = plan_drivers(hip("ubuntu", "22.04", "jammy", container=True), {})
    assert plan.kernel_packages == ()
    assert "amdgpu" not in [s.name for s in plan.sources]
    assert plan.packages[0] == "rocm-hip-runtime"
    assert not plan.reboot
    assert any("container" in reason for reason in plan.reasons)


def test_reboot_can_be_switched_off() -> None:
    plan = plan_drivers(hip("ubuntu", "24.04", "noble"), {"drivers_reboot": False})
    assert plan.kernel_packages and not plan.reboot
    assert any("drivers_reboot=false" in reason for reason in plan.reasons)


def test_kernel_release_is_filled_in_later() -> None:
    plan = plan_drivers(hip("ubuntu", "24.04", "noble"), {})
    assert plan.needs_kernel_release
    assert plan.kernel_packages[1] == "linux-headers-{kernel_release}"
    ready = plan.for_kernel("6.11.0-1-generic")
    assert not ready.needs_kernel_release
    assert ready.kernel_packages[1:] == (
        "linux-headers-6.11.0-1-generic",
        "linux-modules-extra-6.11.0-1-generic",
    )


def test_a_rocm_lemfleet_installed_stays_declared() -> None:
    first = plan_drivers(hip("ubuntu", "24.04", "noble"), {})
    target = hip(
        "ubuntu",
        "24.04",
        "noble",
        runtime_working=True,
        runtime_version="7.2.3",
        kernel_driver_loaded=True,
        driver_from_lemfleet=True,
    )
    second = plan_drivers(target, {})
    assert (second.sources, second.pins, second.kernel_packages) == (
        first.sources,
        first.pins,
        first.kernel_packages,
    )
