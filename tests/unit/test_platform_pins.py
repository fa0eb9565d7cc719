"""The platform table's pins (roles/platform_pins.py): each carries its review date and source, and the
URL forms and version rules built from them.

When a vendor moves a repository, a URL form fails and says which. The pinned values themselves are
not restated here: a test that repeats a constant proves nothing about it.
"""

from __future__ import annotations

import re
from datetime import date

import pytest

from lemfleet.roles import platform_pins as pins
from lemfleet.roles.drivers import DEFAULTS, SETTINGS
from lemfleet.roles.platform_amd import HIP_MIN
from lemfleet.roles.platform_nvidia import toolkit_cc_range
from lemfleet.roles.platforms import RELEASES


def test_pins_carry_the_review_date() -> None:
    date.fromisoformat(pins.REVIEWED)
    for pin in (
        pins.ROCM_VERSION,
        pins.NVIDIA_BRANCH,
        pins.CUDA_TOOLKIT,
        pins.CUDA_TOOLKIT_PRE_TURING,
        pins.AMDGPU_REVIEWED,
    ):
        assert pin.reviewed == pins.REVIEWED, pin
        assert pin.source, pin


def test_settings_defaults_are_the_pins() -> None:
    assert DEFAULTS["drivers_rocm_version"] == pins.ROCM_VERSION.value
    assert DEFAULTS["drivers_nvidia_branch"] == pins.NVIDIA_BRANCH.value
    assert DEFAULTS["drivers_manage_existing"] is False


def test_every_setting_is_prefixed_documented_and_checked() -> None:
    names = [s.name for s in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.name.startswith("drivers_")
        assert len(setting.doc) > 40
        assert setting.check is not None
        assert setting.clean(setting.default) == setting.default


def test_rocm_url_forms() -> None:
    assert pins.rocm_repo_url("7.2.3") == "https://repo.radeon.com/rocm/apt/7.2.3"
    assert pins.rocm_graphics_repo_url("7.2.3") == "https://repo.radeon.com/graphics/7.2.3/ubuntu"
    assert pins.amdgpu_repo_url("30.30.3") == "https://repo.radeon.com/amdgpu/30.30.3/ubuntu"


@pytest.mark.parametrize(
    ("rocm", "amdgpu"),
    [
        ("7.2.3", "30.30.3"),
        ("7.2", "30.30"),
        ("7.1", "30.20"),
        ("7.0", "30.10"),
        ("6.4.3", "6.4.3"),  # before 7.0 the driver repo used the ROCm number
        ("7.9.9", None),  # unknown: the plan asks for drivers_amdgpu_version
    ],
)
def test_amdgpu_driver_release_for_rocm(rocm: str, amdgpu: str | None) -> None:
    assert pins.amdgpu_for_rocm(rocm) == amdgpu


@pytest.mark.parametrize(
    ("os_id", "release", "distro"),
    [
        ("ubuntu", "22.04", "ubuntu2204"),
        ("ubuntu", "24.04", "ubuntu2404"),
        ("debian", "12", "debian12"),
        ("debian", "13", "debian13"),
    ],
)
def test_cuda_keyring_url_form(os_id: str, release: str, distro: str) -> None:
    assert RELEASES[(os_id, release)].nvidia_repo == distro
    url = pins.cuda_keyring_url(distro)
    assert url == (
        f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/x86_64/cuda-keyring_1.1-1_all.deb"
    )
    # The 1.0-1 keyring answers 404 on current repos (ansible-role-nvidia-driver#81).
    assert "cuda-keyring_1.0-1" not in url


def test_cuda_keyring_arm64_uses_sbsa() -> None:
    assert pins.cuda_keyring_url("ubuntu2404", pins.NVIDIA_REPO_ARCHES["aarch64"]) == (
        "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/sbsa/cuda-keyring_1.1-1_all.deb"
    )


def test_nvidia_repo_knows_only_checked_distros() -> None:
    for row in RELEASES.values():
        assert row.nvidia_repo is None or re.fullmatch(r"(ubuntu\d{4}|debian\d{2})", row.nvidia_repo)
    assert RELEASES[("debian", "sid")].nvidia_repo is None


@pytest.mark.parametrize(
    ("toolkit", "low", "high"),
    [
        ("11.5", (3, 5), (8, 6)),
        ("11.8", (3, 5), (8, 9)),  # sm_90 is in nvcc 11.8, but not ggml-cuda's Hopper code (measured)
        ("12.0", (5, 0), (9, 0)),
        ("12.4", (5, 0), (9, 0)),
        ("12-8", (5, 0), (12, 0)),
        ("12-9", (5, 0), (12, 1)),
        ("13-1", (7, 5), (12, 1)),
    ],
)
def test_toolkit_compute_capability_ranges(toolkit: str, low: tuple[int, int], high: tuple[int, int]) -> None:
    assert toolkit_cc_range(toolkit) == (low, high)


def test_version_tuple() -> None:
    assert pins.version_tuple("7.2.3") == (7, 2, 3)
    assert pins.version_tuple("13-1") == (13, 1)
    assert pins.version_tuple("12.4.131~12.4.1-2") == (12, 4, 131)
    assert pins.version_tuple("6.1") >= HIP_MIN
    assert pins.version_tuple("5.7.1") < HIP_MIN
