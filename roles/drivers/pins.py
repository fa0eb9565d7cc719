"""Pinned driver versions, repository URLs and per-release package facts.

Everything that goes stale lives here, as data, each with the date it was last
checked and where. ``tests/unit/test_drivers_pins.py`` asserts every pin and
URL form, so a pin that moves shows up as a failing test, not on a fleet
(cf. NVIDIA/ansible-role-nvidia-driver#81: a ``cuda-keyring_1.0-1`` URL that
started to answer 404).
"""

from __future__ import annotations

import re
from typing import NamedTuple

REVIEWED = "2026-11-29"


class Pin(NamedTuple):
    value: str
    reviewed: str
    source: str


# -- AMD ROCm (Ubuntu, from AMD's apt repository) --------------------------------

# The ROCm release installed from repo.radeon.com. 7.2.3 is documented for
# Ubuntu 22.04 (jammy) and 24.04 (noble); its sources are rocm/apt/<ver>,
# graphics/<ver>/ubuntu and the matching amdgpu driver repo.
ROCM_VERSION = Pin(
    "7.2.3",
    REVIEWED,
    "https://rocm.docs.amd.com/projects/install-on-linux/en/latest/install/install-methods/"
    "package-manager/package-manager-ubuntu.html",
)
ROCM_KEY_URL = "https://repo.radeon.com/rocm/rocm.gpg.key"
ROCM_KEYRING = "/etc/apt/keyrings/rocm.gpg"
# The one primary key rocm.gpg.key must hold: "ROCm Release Manager", rsa4096 of 2016-08-01, whose
# expiry AMD extends in place (so the file's hash changes while the fingerprint does not). Published as
# gpg's output for repo.radeon.com's rocm.gpg.key in ROCm's own tracker:
# https://github.com/ROCm/legacy-rocm-build/issues/1538 (and the long id 9386B48A1A693C5C in apt's
# errors for repo.radeon.com/rocm/apt/6.4.1 in 2025, https://github.com/ROCm/legacy-rocm-build/issues/4912).
ROCM_KEY_FINGERPRINT = Pin(
    "CA8BB4727A47B4D09B4EE8969386B48A1A693C5C",
    "2026-11-30",
    "https://github.com/ROCm/legacy-rocm-build/issues/1538",
)
# ggml/src/ggml-hip/CMakeLists.txt: "At least ROCM/HIP V6.1 is required".
HIP_MIN = (6, 1)

# Since ROCm 7.0 the amdgpu kernel driver (amdgpu-dkms) has its own numbering:
# 7.0 -> 30.10, 7.1 -> 30.20, 7.2 -> 30.30 (point releases follow, 7.2.3 ->
# 30.30.3). Before 7.0 the driver repo used the ROCm number itself.
AMDGPU_FOR_ROCM: dict[str, str] = {
    "7.0": "30.10",
    "7.1": "30.20",
    "7.2": "30.30",
    "7.2.3": "30.30.3",
}
AMDGPU_REVIEWED = Pin("7.2.3 -> 30.30.3", REVIEWED, "repo.radeon.com/amdgpu/ listing")


def amdgpu_for_rocm(rocm_version: str) -> str | None:
    """The amdgpu driver repo release shipped with ``rocm_version``, or None if unknown."""
    if rocm_version in AMDGPU_FOR_ROCM:
        return AMDGPU_FOR_ROCM[rocm_version]
    if version_tuple(rocm_version) < (7, 0):
        return rocm_version
    return None


def rocm_repo_url(rocm_version: str) -> str:
    return f"https://repo.radeon.com/rocm/apt/{rocm_version}"


def rocm_graphics_repo_url(rocm_version: str) -> str:
    """The Mesa/libdrm repo ROCm 7.x depends on; it did not exist before 7.0."""
    return f"https://repo.radeon.com/graphics/{rocm_version}/ubuntu"


def amdgpu_repo_url(amdgpu_version: str) -> str:
    return f"https://repo.radeon.com/amdgpu/{amdgpu_version}/ubuntu"


# -- NVIDIA CUDA ---------------------------------------------------------------

# 580 is NVIDIA's long-term support branch and the last one that still drives
# Maxwell, Pascal and Volta; every CUDA 13.x runs on it (minor version
# compatibility, CUDA compatibility guide).
NVIDIA_BRANCH = Pin(
    "580",
    REVIEWED,
    "https://docs.nvidia.com/datacenter/tesla/drivers/supported-drivers-and-cuda-toolkit-versions.html",
)
# cuda-toolkit-X-Y from NVIDIA's repo. CUDA 13 dropped compute capability < 7.5,
# so older GPUs get the last 12.x instead.
CUDA_TOOLKIT = Pin("13-1", REVIEWED, "https://developer.nvidia.com/cuda-toolkit-archive")
CUDA_TOOLKIT_PRE_TURING = Pin("12-9", REVIEWED, "https://developer.nvidia.com/cuda-toolkit-archive")
CUDA_KEYRING_DEB = "cuda-keyring_1.1-1_all.deb"
# The cuda-keyring package writes the key to /usr/share/keyrings/ and the source
# to /etc/apt/sources.list.d/cuda-<distro>-<arch>.list itself.
CUDA_KEYRING_FILE = "/usr/share/keyrings/cuda-archive-keyring.gpg"
# Release "Label" of NVIDIA's CUDA repos, as in NVIDIA's own cuda-<distro>.pin.
NVIDIA_REPO_LABEL = "NVIDIA CUDA"

# (os_id, release) -> NVIDIA's repo directory name.
NVIDIA_REPO_DISTROS: dict[tuple[str, str], str] = {
    ("ubuntu", "22.04"): "ubuntu2204",
    ("ubuntu", "24.04"): "ubuntu2404",
    ("debian", "12"): "debian12",
    ("debian", "13"): "debian13",
}
# uname -m -> NVIDIA's repo architecture directory (arm64 servers are "sbsa").
NVIDIA_REPO_ARCHES = {"x86_64": "x86_64", "aarch64": "sbsa"}


def cuda_keyring_url(distro: str, arch: str = "x86_64") -> str:
    return f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/{arch}/{CUDA_KEYRING_DEB}"


# sha256 of cuda-keyring_1.1-1_all.deb per repo directory. dpkg runs the package's maintainer scripts as
# root, so only a file with exactly this hash is installed. NVIDIA publishes the hash in each repo's
# Packages index, which cannot be reached from where this was written (2026-11-30); the values below are
# the ones independent public install scripts check (sha256sum -c) against NVIDIA's file, cited by what
# they are. Where they disagreed, the value most of them check is pinned and the disagreement noted. Repo
# directories with no value found (ubuntu2204/sbsa, debian13) need drivers_cuda_keyring_sha256.
CUDA_KEYRING_SHA256: dict[tuple[str, str], Pin] = {
    # NVIDIA's own NCCL install script for ubuntu2404 (CUDA_KEYRING_SHA256_X86_64, NCCL 2.30.7/CUDA 13.3),
    # and three other pinned installers; one other script checks 9b9b4df8... instead.
    ("ubuntu2404", "x86_64"): Pin(
        "d2a6b11c096396d868758b86dab1823b25e14d70333f1dfa74da5ddaf6a06dba",
        "2026-11-30",
        "NVIDIA NCCL install script for ubuntu2404 (CUDA_KEYRING_SHA256_X86_64); 3 more pinned installers",
    ),
    # The same NVIDIA NCCL script (CUDA_KEYRING_SHA256_SBSA) and an NVIDIA-copyrighted host setup script
    # of 2026-07-15 for ubuntu2404/sbsa.
    ("ubuntu2404", "sbsa"): Pin(
        "6ea7d2737648936820e85677177957a0f6521b840d98eb0bbae0a4f003fa7249",
        "2026-11-30",
        "NVIDIA NCCL install script for ubuntu2404 (CUDA_KEYRING_SHA256_SBSA); NVIDIA host setup script",
    ),
    # Three pinned installers (a Dockerfile ARG, a WSL2 setup script, an Ubuntu CUDA setup script); one
    # other script checks 7c0a531d... instead.
    ("ubuntu2204", "x86_64"): Pin(
        "d93190d50b98ad4699ff40f4f7af50f16a76dac3bb8da1eaaf366d47898ff8df",
        "2026-11-30",
        "3 pinned public installers for ubuntu2204/x86_64 (CUDA_KEYRING_SHA256)",
    ),
    # One pinned installer (an FFmpeg/NVENC build script for debian12/x86_64): the weakest pin here.
    ("debian12", "x86_64"): Pin(
        "e7f219eab6fe4819cdb5c15b98233dc3420302d9c00883219cd3d896857cf48d",
        "2026-11-30",
        "1 pinned public installer for debian12/x86_64 (CUDA_KEYRING_SHA256)",
    ),
}


def cuda_keyring_sha256(distro: str, arch: str) -> str | None:
    """The pinned sha256 of the cuda-keyring package in NVIDIA's ``distro``/``arch`` repo, or None."""
    pin = CUDA_KEYRING_SHA256.get((distro, arch))
    return pin.value if pin else None


# Debian's non-free NVIDIA driver branch per release (apt-cache madison
# nvidia-kernel-dkms, 2026-11-29). Ubuntu's archive carries every server branch
# (nvidia-headless-<branch>-server), so there the branch setting applies.
DEBIAN_NVIDIA_DRIVER: dict[str, str] = {"12": "535", "13": "550", "sid": "550"}
# nvidia-cuda-toolkit per release: Debian from apt-cache madison, Ubuntu from
# packages.ubuntu.com (jammy 11.5.1, noble 12.0.140).
DISTRO_CUDA_TOOLKIT: dict[tuple[str, str], str] = {
    ("debian", "12"): "11.8",
    ("debian", "13"): "12.4",
    ("debian", "sid"): "12.4",
    ("ubuntu", "22.04"): "11.5",
    ("ubuntu", "24.04"): "12.0",
}
DEBIAN_ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"

# Compute capabilities a toolkit can build the pinned llama.cpp for (nvcc
# --list-gpu-arch per release; llama.cpp ggml-cuda/CMakeLists.txt: 89 needs
# 11.8, 120 needs 12.8). nvcc 11.8 lists sm_90, but ggml-cuda's Hopper code
# (programmatic dependent launch, common.cuh) does not compile with it:
# "cudaGridDependencySynchronize is undefined", measured with Debian 12's
# nvidia-cuda-toolkit 11.8 on 2026-11-29 (tests/testbed/test_gpu_builds.py).
# Rows: (first toolkit version, lowest cc, highest cc).
CUDA_CC_RANGES: tuple[tuple[tuple[int, int], tuple[int, int], tuple[int, int]], ...] = (
    ((11, 0), (3, 5), (8, 6)),
    ((11, 8), (3, 5), (8, 9)),
    ((12, 0), (5, 0), (9, 0)),
    ((12, 8), (5, 0), (12, 0)),
    ((12, 9), (5, 0), (12, 1)),
    ((13, 0), (7, 5), (12, 1)),
)
# Drivers by branch: Blackwell (cc 10.x/12.x) needs 570 or later; the open
# kernel modules need Turing (cc 7.5) or later, and Blackwell needs them.
BLACKWELL_MIN_BRANCH = 570
OPEN_MODULES_MIN_CC = (7, 5)
OPEN_ONLY_MIN_CC = (10, 0)

# -- Debian's own ROCm and Vulkan -------------------------------------------------

# libamdhip64-dev per release, apt-cache madison 2026-11-29.
DEBIAN_HIP: dict[str, str] = {"12": "5.2.3", "13": "5.7.1", "sid": "6.4.3"}

# libvulkan-dev per release. ggml-vulkan uses vk::LayerSettingEXT, which needs
# headers >= 1.3.261: Debian 12's 1.3.239 fails to compile (measured).
VULKAN_MIN_HEADERS = (1, 3, 261)
VULKAN_HEADERS: dict[tuple[str, str], str] = {
    ("debian", "12"): "1.3.239",
    ("debian", "13"): "1.4.309",
    ("debian", "sid"): "1.4.363",
    ("ubuntu", "22.04"): "1.3.204",
    ("ubuntu", "24.04"): "1.3.275",
}

UBUNTU_CODENAMES = {"22.04": "jammy", "24.04": "noble"}
DEBIAN_CODENAMES = {"12": "bookworm", "13": "trixie", "sid": "sid"}


def version_tuple(text: str) -> tuple[int, ...]:
    """'7.2.3' -> (7, 2, 3); '13-1' -> (13, 1); '12.4.131~12.4.1' -> (12, 4, 131)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("~")[0]))


def toolkit_cc_range(toolkit: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(lowest, highest) compute capability that CUDA ``toolkit`` ('12.4', '13-1') builds for."""
    version = version_tuple(toolkit)[:2]
    low, high = CUDA_CC_RANGES[0][1], CUDA_CC_RANGES[0][2]
    for first, row_low, row_high in CUDA_CC_RANGES:
        if version >= first:
            low, high = row_low, row_high
    return low, high
