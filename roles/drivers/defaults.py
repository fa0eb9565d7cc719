"""The drivers step's settings: what may be changed on a host, and the pinned versions.

Every default is the pin in :mod:`lemfleet.roles.platform_pins` (part of the platform
table, :mod:`lemfleet.roles.platforms`), so the README table, the code and the
reviewed pin cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lemfleet.roles import platform_pins as pins
from lemfleet.roles.platform_amd import HIP_MIN
from lemfleet.roles.settings import Setting, boolean, clean_group, defaults, integer, one_of, sha256, text

_AMDGPU = pins.amdgpu_for_rocm(pins.ROCM_VERSION.value)

SETTINGS = (
    # -- what may change on a host
    Setting(
        "drivers_manage_existing",
        False,
        "Let lemfleet upgrade or replace a GPU driver that already works (rocminfo or "
        "nvidia-smi succeed). Off: a working driver and its repositories are left alone, "
        "and only the build packages are added.",
        boolean,
    ),
    Setting(
        "drivers_reboot",
        True,
        "Reboot a host when its kernel driver was installed or changed, and wait for it to "
        "come back. Never done on @local or inside a container.",
        boolean,
    ),
    Setting(
        "drivers_reboot_timeout",
        900,
        "Seconds to wait for a rebooted host to answer again (DKMS builds make boots slow).",
        integer(60, 7200),
    ),
    # -- AMD ROCm (Ubuntu, AMD's repository)
    Setting(
        "drivers_rocm_version",
        pins.ROCM_VERSION.value,
        f"ROCm release installed from AMD's apt repository on Ubuntu (pin reviewed "
        f"{pins.ROCM_VERSION.reviewed}). llama.cpp needs {'.'.join(map(str, HIP_MIN))} or later.",
        text(r"\d+\.\d+(\.\d+)?", f"a ROCm release such as {pins.ROCM_VERSION.value!r}"),
    ),
    Setting(
        "drivers_amdgpu_version",
        None,
        "Release of AMD's amdgpu driver repository (amdgpu-dkms); None takes the one shipped "
        f"with drivers_rocm_version ({pins.ROCM_VERSION.value} -> {_AMDGPU}).",
        text(r"\d+\.\d+(\.\d+)?", f"an amdgpu release such as {_AMDGPU!r}", none_ok=True),
    ),
    # -- NVIDIA CUDA
    Setting(
        "drivers_cuda_source",
        "nvidia-repo",
        "Where the NVIDIA driver and CUDA come from: 'nvidia-repo' (NVIDIA's CUDA repository, "
        "through the cuda-keyring package) or 'distro' (Ubuntu's nvidia-*-server packages or "
        "Debian's non-free ones).",
        one_of("nvidia-repo", "distro"),
    ),
    Setting(
        "drivers_nvidia_branch",
        pins.NVIDIA_BRANCH.value,
        f"NVIDIA driver branch from NVIDIA's repository or Ubuntu (pin reviewed "
        f"{pins.NVIDIA_BRANCH.reviewed}). Debian's own driver has one branch per release.",
        text(r"\d{3}", f"a three-digit driver branch such as {pins.NVIDIA_BRANCH.value!r}"),
    ),
    Setting(
        "drivers_nvidia_kernel_modules",
        "auto",
        "NVIDIA kernel modules: 'open', 'proprietary', or 'auto' (open unless a GPU is older "
        "than Turing, which only the proprietary modules drive).",
        one_of("auto", "open", "proprietary"),
    ),
    Setting(
        "drivers_cuda_toolkit",
        None,
        f"CUDA toolkit from NVIDIA's repository as 'X-Y' (package cuda-toolkit-X-Y). None "
        f"takes the pin: {pins.CUDA_TOOLKIT.value}, or {pins.CUDA_TOOLKIT_PRE_TURING.value} "
        f"when a GPU is older than Turing (reviewed {pins.CUDA_TOOLKIT.reviewed}).",
        text(r"\d{2}-\d", f"a toolkit version such as {pins.CUDA_TOOLKIT.value!r}", none_ok=True),
    ),
    Setting(
        "drivers_cuda_keyring_sha256",
        None,
        "sha256 of NVIDIA's cuda-keyring package for this host's repo; None takes lemfleet's pin, where one "
        "is published (Ubuntu 22.04/24.04 x86_64, 24.04 arm64, Debian 12 x86_64).",
        sha256,
    ),
    Setting(
        "drivers_debian_mirror",
        "http://deb.debian.org/debian",
        "Debian mirror for the contrib and non-free components that Debian's NVIDIA driver and CUDA toolkit come from.",
        text(r"https?://\S+", "an http:// or https:// URL"),
    ),
)
DEFAULTS = defaults(SETTINGS)


def clean_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The drivers_* settings from ``settings``, defaulted and checked.

    Raises :class:`SettingsError` naming every bad setting, its value and what
    is accepted.
    """
    return clean_group(SETTINGS, settings)
