"""The Vulkan and CPU plans, the settings checks, and reading a detected host."""

from __future__ import annotations

import pytest

from lemfleet.roles.drivers import DriverPlanError, DriverTarget, plan_drivers, target_from_facts
from lemfleet.roles.hostinfo import Gpu, GpuRuntime, HostFacts
from lemfleet.roles.settings import SettingsError

# The exact names the Debian 13 test bed installs; checked with apt-cache
# madison against trixie (all in main) on 2026-11-29.
VULKAN_PACKAGES = (
    "libvulkan1",
    "mesa-vulkan-drivers",
    "vulkan-tools",
    "libvulkan-dev",
    "glslc",
    "spirv-headers",
)


@pytest.mark.parametrize(
    ("os_id", "version", "codename"),
    [("debian", "13", "trixie"), ("debian", "sid", "sid"), ("ubuntu", "24.04", "noble")],
)
def test_vulkan_from_the_archive(os_id: str, version: str, codename: str) -> None:
    plan = plan_drivers(DriverTarget(os_id, version, codename, "vulkan"), {})
    assert plan.packages == VULKAN_PACKAGES
    assert plan.source == os_id
    assert not (plan.keys or plan.keyring_debs or plan.sources or plan.pins or plan.files)
    assert plan.kernel_packages == ()
    assert plan.service_groups == ("render", "video")
    assert not plan.reboot and not plan.needs_kernel_release


def test_vulkan_on_debian_12_is_too_old() -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(DriverTarget("debian", "12", "bookworm", "vulkan"), {})
    text = str(err.value)
    assert "gpu_backend='vulkan'" in text
    assert "(1.3.239)" in text and "1.3.261" in text
    assert "Debian 13, Debian sid, Ubuntu 24.04" in text
    assert "'cuda' for NVIDIA GPUs, or 'cpu'" in text


def test_vulkan_on_ubuntu_22_04_points_at_hip() -> None:
    with pytest.raises(DriverPlanError, match="'hip' for AMD GPUs"):
        plan_drivers(DriverTarget("ubuntu", "22.04", "jammy", "vulkan"), {})


def test_vulkan_on_an_unknown_release() -> None:
    with pytest.raises(DriverPlanError, match="accepted releases for vulkan: Debian 13"):
        plan_drivers(DriverTarget("ubuntu", "26.04", "resolute", "vulkan"), {})


def test_cpu_needs_nothing_anywhere() -> None:
    plan = plan_drivers(DriverTarget("fedora", "41", "", "cpu"), {})
    assert plan.empty
    assert plan.backend == "cpu" and plan.source == "none"
    assert not plan.reboot


def test_unknown_backend_names_the_setting() -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(DriverTarget("debian", "13", "trixie", "metal"), {})
    assert "gpu_backend='metal' is not valid; accepted: 'hip', 'cuda', 'vulkan', 'cpu'" in str(err.value)


def test_other_distributions_get_cpu_only() -> None:
    with pytest.raises(DriverPlanError, match="Debian and Ubuntu only; accepted elsewhere: 'cpu'"):
        plan_drivers(DriverTarget("fedora", "41", "", "vulkan"), {})


def test_bad_settings_are_all_named() -> None:
    settings = {
        "drivers_cuda_source": "apt",
        "drivers_reboot": "maybe",
        "drivers_nvidia_branch": "5",
    }
    with pytest.raises(SettingsError) as err:
        plan_drivers(DriverTarget("debian", "13", "trixie", "vulkan"), settings)
    text = str(err.value)
    assert "drivers_cuda_source='apt' is not valid; accepted: 'nvidia-repo', 'distro'" in text
    assert "drivers_reboot='maybe' is not valid; accepted: true or false" in text
    assert "drivers_nvidia_branch='5' is not valid" in text


def test_settings_from_the_command_line_are_cleaned() -> None:
    # --data drivers_reboot=no arrives as a string.
    target = DriverTarget("ubuntu", "24.04", "noble", "hip")
    assert not plan_drivers(target, {"drivers_reboot": "no"}).reboot


def test_describe_is_for_people() -> None:
    plan = plan_drivers(DriverTarget("ubuntu", "24.04", "noble", "hip"), {})
    text = plan.describe()
    assert text.startswith("backend hip, source amd-repo")
    assert "key https://repo.radeon.com/rocm/rocm.gpg.key -> /etc/apt/keyrings/rocm.gpg" in text
    assert "kernel driver: amdgpu-dkms" in text
    assert "- the host reboots if the kernel driver changes (never on @local)" in text


def facts(gpus: tuple[Gpu, ...], runtime: GpuRuntime, container: bool = False) -> HostFacts:
    return HostFacts(
        hostname="gpu1",
        os_id="ubuntu",
        os_version="24.04",
        os_codename="noble",
        arch="x86_64",
        cpu_model="AMD EPYC",
        cpu_physical_cores=16,
        cpu_logical_cores=32,
        cpu_flags=frozenset({"avx2"}),
        mem_total_bytes=64 << 30,
        disk_free_bytes={"/": 100 << 30},
        systemd_running=True,
        container=container,
        gpus=gpus,
        gpu_runtime=runtime,
    )


def test_target_from_facts_for_nvidia() -> None:
    gpus = (
        Gpu("nvidia", "NVIDIA H100 80GB HBM3", compute_capability="9.0", driver_ok=True),
        Gpu("amd", "AMD Radeon Graphics", gfx_target="gfx1036", integrated=True),
    )
    runtime = GpuRuntime(nvidia_smi_ok=True, nvidia_driver_version="590.48.01")
    target = target_from_facts(facts(gpus, runtime), "cuda", kernel_release="6.8.0-45-generic")
    assert target.runtime_working and target.kernel_driver_loaded
    assert target.runtime_version == "590.48.01"
    assert target.compute_capabilities == ("9.0",)
    assert target.release == "24.04" and target.kernel_release == "6.8.0-45-generic"
    assert plan_drivers(target, {}).kernel_packages == ()


def test_target_from_facts_for_amd_in_a_container() -> None:
    runtime = GpuRuntime(device_nodes=("/dev/kfd", "/dev/dri/renderD128"))
    gpus = (Gpu("amd", "Radeon RX 7900 XTX", gfx_target="gfx1100"),)
    target = target_from_facts(facts(gpus, runtime, container=True), "hip")
    assert not target.runtime_working
    assert target.kernel_driver_loaded and target.container
    plan = plan_drivers(target, {})
    assert plan.kernel_packages == () and plan.packages[0] == "rocm-hip-runtime"


def test_debian_sid_release_key() -> None:
    assert DriverTarget("debian", "", "sid", "hip").release == "sid"
    assert DriverTarget("debian", "13.2", "trixie", "hip").release == "13"
    assert DriverTarget("debian", "13", "trixie", "hip").described == "Debian 13 (trixie)"
