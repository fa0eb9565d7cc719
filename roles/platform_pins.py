"""The pins of the platform table: vendor repositories, their URLs and keys, each with its review date.

Part of the one platform table (:mod:`lemfleet.roles.platforms` says where
every platform fact lives). What goes stale upstream lives here, as data, each
with the date it was last checked and where: the ROCm release and AMD's
repositories, the NVIDIA driver branch, the CUDA toolkits and NVIDIA's
repository. What a release's own archive ships is the platform table's, not
this module's. ``tests/unit/test_drivers_pins.py`` asserts every pin and URL
form, so a pin that moves shows up as a failing test, not on a fleet (cf.
NVIDIA/ansible-role-nvidia-driver#81: a ``cuda-keyring_1.0-1`` URL that
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

# The ROCm release installed from repo.radeon.com, documented for the Ubuntu
# releases the platform table marks ``amd_repo``; its sources are
# rocm/apt/<ver>, graphics/<ver>/ubuntu and the matching amdgpu driver repo.
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
# The cuda-keyring package writes the key to /usr/share/keyrings/ and the source
# to /etc/apt/sources.list.d/cuda-<distro>-<arch>.list itself.
CUDA_KEYRING_DEB = "cuda-keyring_1.1-1_all.deb"
# Release "Label" of NVIDIA's CUDA repos, as in NVIDIA's own cuda-<distro>.pin.
NVIDIA_REPO_LABEL = "NVIDIA CUDA"

# uname -m -> NVIDIA's repo architecture directory (arm64 servers are "sbsa").
NVIDIA_REPO_ARCHES = {"x86_64": "x86_64", "aarch64": "sbsa"}


def cuda_keyring_url(distro: str, arch: str = "x86_64") -> str:
    return f"https://developer.download.nvidia.com/compute/cuda/repos/{distro}/{arch}/{CUDA_KEYRING_DEB}"


# sha256 of CUDA_KEYRING_DEB per repo directory. dpkg runs the package's maintainer scripts as
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


DEBIAN_ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def version_tuple(text: str) -> tuple[int, ...]:
    """'7.2.3' -> (7, 2, 3); '13-1' -> (13, 1); '12.4.131~12.4.1' -> (12, 4, 131)."""
    return tuple(int(part) for part in re.findall(r"\d+", text.split("~")[0]))
