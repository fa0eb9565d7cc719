"""The CUDA driver plan: NVIDIA's repository and the distributions' own packages."""

from __future__ import annotations

from typing import Any

import pytest

from lemfleet.roles import platform_pins as pins
from lemfleet.roles.drivers import DriverPlanError, DriverTarget, plan_drivers
from lemfleet.roles.drivers.plan_data import NOUVEAU_BLACKLIST, KeyringDeb
from lemfleet.roles.platforms import RELEASES

KERNEL = "6.12.48+deb13-amd64"
DISTRO = {"drivers_cuda_source": "distro"}


def cuda(os_id: str, version: str, codename: str, **kw: Any) -> DriverTarget:
    return DriverTarget(os_id, version, codename, "cuda", kernel_release=KERNEL, **kw)


@pytest.mark.parametrize(
    ("os_id", "version", "codename", "distro"),
    [
        ("ubuntu", "22.04", "jammy", "ubuntu2204"),
        ("ubuntu", "24.04", "noble", "ubuntu2404"),
        ("debian", "12", "bookworm", "debian12"),
        ("debian", "13", "trixie", "debian13"),
    ],
)
def test_nvidia_repo(os_id: str, version: str, codename: str, distro: str) -> None:
    pinned = pins.cuda_keyring_sha256(distro, "x86_64")
    settings = {} if pinned else {"drivers_cuda_keyring_sha256": "ab" * 32}  # debian13: no published value
    plan = plan_drivers(cuda(os_id, version, codename, compute_capabilities=("9.0",)), settings)
    assert plan.source == "nvidia-repo"
    assert plan.keyring_debs == (
        KeyringDeb(
            f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/cuda-keyring_1.1-1_all.deb",
            pinned or "ab" * 32,
        ),
    )
    assert not plan.keys and not plan.sources  # cuda-keyring writes both itself
    (pin,) = plan.pins
    assert pin.path == "/etc/apt/preferences.d/cuda-repository-pin-600"
    assert pin.render().endswith("Package: *\nPin: release l=NVIDIA CUDA\nPin-Priority: 600\n")
    assert plan.kernel_packages == ("nvidia-open-580", f"linux-headers-{KERNEL}")
    assert plan.packages == ("cuda-toolkit-13-1",)
    assert plan.files == (NOUVEAU_BLACKLIST,)
    assert plan.service_groups == ("video",)
    assert plan.reboot


def test_pre_turing_gets_proprietary_modules_and_cuda_12() -> None:
    plan = plan_drivers(cuda("ubuntu", "24.04", "noble", compute_capabilities=("6.1",)), {})
    assert plan.kernel_packages[0] == "cuda-drivers-580"
    assert plan.packages == ("cuda-toolkit-12-9",)


def test_branch_and_toolkit_follow_the_settings() -> None:
    settings = {"drivers_nvidia_branch": "590", "drivers_cuda_toolkit": "12-8"}
    plan = plan_drivers(cuda("ubuntu", "22.04", "jammy"), settings)
    assert plan.kernel_packages[0] == "nvidia-open-590"
    assert plan.packages == ("cuda-toolkit-12-8",)


def test_cuda_13_cannot_build_for_pascal() -> None:
    target = cuda("debian", "12", "bookworm", compute_capabilities=("6.1",))
    with pytest.raises(DriverPlanError, match=r"drivers_cuda_toolkit='13-1'.* not 6\.1"):
        plan_drivers(target, {"drivers_cuda_toolkit": "13-1", "drivers_nvidia_kernel_modules": "proprietary"})


def test_blackwell_needs_a_new_branch_and_open_modules() -> None:
    target = cuda("ubuntu", "24.04", "noble", compute_capabilities=("12.0",))
    with pytest.raises(DriverPlanError, match=r"drivers_nvidia_branch='550'.* 570 or later"):
        plan_drivers(target, {"drivers_nvidia_branch": "550"})
    with pytest.raises(DriverPlanError, match="drivers_nvidia_kernel_modules='proprietary'"):
        plan_drivers(target, {"drivers_nvidia_kernel_modules": "proprietary"})


def test_open_modules_cannot_drive_volta() -> None:
    target = cuda("ubuntu", "24.04", "noble", compute_capabilities=("7.0",))
    with pytest.raises(DriverPlanError, match="accepted here: 'proprietary' or 'auto'"):
        plan_drivers(target, {"drivers_nvidia_kernel_modules": "open"})


def test_mixed_generations_on_one_host_are_refused() -> None:
    target = cuda("ubuntu", "24.04", "noble", compute_capabilities=("6.1", "12.0"))
    with pytest.raises(DriverPlanError, match="need different NVIDIA kernel modules"):
        plan_drivers(target, {})


def test_working_driver_is_left_alone_and_guarded() -> None:
    target = cuda("ubuntu", "24.04", "noble", runtime_working=True, runtime_version="570.86.15")
    plan = plan_drivers(target, {})
    assert plan.kernel_packages == () and plan.files == ()
    assert plan.keyring_debs  # the toolkit still comes from NVIDIA's repo
    (pin,) = plan.pins
    assert pin.priority == -1
    assert pin.packages == "nvidia-* libnvidia-* cuda-drivers* xserver-xorg-video-nvidia*"
    assert plan.packages == ("cuda-toolkit-13-1",)
    assert not plan.reboot
    assert any("570.86.15" in reason for reason in plan.reasons)


def test_manage_existing_replaces_a_working_driver() -> None:
    target = cuda("ubuntu", "24.04", "noble", runtime_working=True, runtime_version="535.1")
    plan = plan_drivers(target, {"drivers_manage_existing": True})
    assert plan.kernel_packages[0] == "nvidia-open-580"
    assert plan.pins[0].priority == 600


def test_container_gets_cuda_but_no_driver() -> None:
    plan = plan_drivers(cuda("ubuntu", "24.04", "noble", container=True), {})
    assert plan.kernel_packages == () and plan.files == ()
    assert plan.packages == ("cuda-toolkit-13-1",)
    assert not plan.reboot
    assert any("NVIDIA Container Toolkit" in reason for reason in plan.reasons)


def test_nvidia_repo_has_no_debian_sid() -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(cuda("debian", "sid", "sid"), {})
    assert "drivers_cuda_source='nvidia-repo'" in str(err.value)
    assert "accepted there: drivers_cuda_source='distro'" in str(err.value)


def test_nvidia_repo_arm64_only_on_ubuntu() -> None:
    plan = plan_drivers(cuda("ubuntu", "24.04", "noble", arch="aarch64"), {})
    assert "/ubuntu2404/sbsa/" in plan.keyring_debs[0].url
    assert plan.keyring_debs[0].sha256 == pins.CUDA_KEYRING_SHA256[("ubuntu2404", "sbsa")].value
    with pytest.raises(DriverPlanError, match="no aarch64 packages"):
        plan_drivers(cuda("debian", "13", "trixie", arch="aarch64"), {})


@pytest.mark.parametrize(("version", "codename"), [("22.04", "jammy"), ("24.04", "noble")])
def test_ubuntu_distro_packages(version: str, codename: str) -> None:
    plan = plan_drivers(cuda("ubuntu", version, codename), DISTRO)
    assert plan.source == "ubuntu"
    assert not (plan.keys or plan.keyring_debs or plan.sources or plan.pins)
    assert plan.kernel_packages == (
        "nvidia-headless-580-server-open",
        "nvidia-utils-580-server",
        f"linux-headers-{KERNEL}",
    )
    assert plan.packages == ("nvidia-cuda-toolkit",)
    assert plan.files == (NOUVEAU_BLACKLIST,)


def test_ubuntu_distro_proprietary_headless() -> None:
    settings = {**DISTRO, "drivers_nvidia_kernel_modules": "proprietary"}
    plan = plan_drivers(cuda("ubuntu", "24.04", "noble"), settings)
    assert plan.kernel_packages[0] == "nvidia-headless-580-server"


@pytest.mark.parametrize(
    ("release", "too_new", "message", "fits"),
    [
        # Ubuntu 22.04's toolkit is too old for Ada.
        (("ubuntu", "22.04", "jammy"), "8.9", "CUDA 11.5", "8.6"),
        # Debian 13's toolkit (and driver) predate Blackwell.
        (("debian", "13", "trixie"), "12.0", "CUDA 12.4 builds for compute capability 5.0 to 9.0, not 12.0", "9.0"),
        # Debian 12's CUDA 11.8 failed to compile ggml-cuda for sm_90 (tests/testbed/test_gpu_builds.py).
        (("debian", "12", "bookworm"), "9.0", "CUDA 11.8 builds for compute capability 3.5 to 8.9, not 9.0", "7.5"),
    ],
)
def test_a_distro_toolkit_too_old_for_the_gpu_points_at_nvidias_repo(
    release: tuple[str, str, str], too_new: str, message: str, fits: str
) -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(cuda(*release, compute_capabilities=(too_new,)), DISTRO)
    assert message in str(err.value)
    assert "accepted: drivers_cuda_source='nvidia-repo'" in str(err.value)
    assert plan_drivers(cuda(*release, compute_capabilities=(fits,)), DISTRO).backend == "cuda"


@pytest.mark.parametrize(
    ("version", "codename", "suites"),
    [
        ("12", "bookworm", ("bookworm", "bookworm-updates")),
        ("13", "trixie", ("trixie", "trixie-updates")),
        ("sid", "sid", ("sid",)),
    ],
)
def test_debian_distro_packages(version: str, codename: str, suites: tuple[str, ...]) -> None:
    plan = plan_drivers(cuda("debian", version, codename), DISTRO)
    assert plan.source == "debian"
    (source,) = plan.sources
    assert source.path == "/etc/apt/sources.list.d/debian-nonfree.sources"
    assert source.deb822() == (
        "Types: deb\n"
        "URIs: http://deb.debian.org/debian\n"
        f"Suites: {' '.join(suites)}\n"
        "Components: contrib non-free non-free-firmware\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
    assert plan.kernel_packages == (
        "nvidia-open-kernel-dkms",
        "nvidia-smi",
        "libcuda1",
        f"linux-headers-{KERNEL}",
    )
    assert plan.packages == ("nvidia-cuda-toolkit",)
    assert plan.files == (NOUVEAU_BLACKLIST,)


def test_debian_distro_mirror_and_proprietary_modules() -> None:
    settings = {
        **DISTRO,
        "drivers_debian_mirror": "http://mirror.example/debian",
        "drivers_nvidia_kernel_modules": "proprietary",
    }
    plan = plan_drivers(cuda("debian", "13", "trixie"), settings)
    assert plan.sources[0].uris == ("http://mirror.example/debian",)
    assert plan.kernel_packages[0] == "nvidia-kernel-dkms"


def test_debian_distro_keeps_a_working_driver() -> None:
    target = cuda("debian", "13", "trixie", runtime_working=True, runtime_version="550.163.01")
    plan = plan_drivers(target, DISTRO)
    assert plan.kernel_packages == () and plan.files == ()
    assert plan.sources  # the toolkit lives in non-free
    assert plan.packages == ("nvidia-cuda-toolkit",)


def test_a_driver_lemfleet_installed_stays_declared_not_guarded() -> None:
    # Second run after an install and reboot: nvidia-smi works now, and the plan must be
    # the same as on the first run, so that the run changes nothing.
    first = plan_drivers(cuda("ubuntu", "24.04", "noble"), {})
    target = cuda(
        "ubuntu",
        "24.04",
        "noble",
        runtime_working=True,
        runtime_version="580.105.08",
        driver_from_lemfleet=True,
    )
    second = plan_drivers(target, {})
    assert second.pins == first.pins
    assert second.kernel_packages == first.kernel_packages
    assert second.files == first.files


def test_a_keyring_without_a_published_sha256_is_refused_until_pinned() -> None:
    with pytest.raises(DriverPlanError) as err:
        plan_drivers(cuda("debian", "13", "trixie"), {})
    message = str(err.value)
    assert "drivers_cuda_keyring_sha256=None: lemfleet pins no sha256 for" in message
    assert "/debian13/x86_64/cuda-keyring_1.1-1_all.deb" in message
    assert "drivers_cuda_source='distro'" in message


@pytest.mark.parametrize(("distro", "arch"), sorted(pins.CUDA_KEYRING_SHA256))
def test_every_keyring_pin_is_a_sha256_with_its_source(distro: str, arch: str) -> None:
    pin = pins.CUDA_KEYRING_SHA256[(distro, arch)]
    assert len(pin.value) == 64 and int(pin.value, 16) >= 0
    assert pin.source and pin.reviewed
    assert distro in {row.nvidia_repo for row in RELEASES.values()} and arch in pins.NVIDIA_REPO_ARCHES.values()
