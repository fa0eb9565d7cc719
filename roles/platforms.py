"""The platform table: every fact that depends on the OS release or the GPU vendor, each in one place.

The GPU plan (``gpu_plan``, ``gpu_backends``, ``gpu_cuda``, ``gpu_devices`` and
the GPU facts) reads it to decide which backend a host can have; the drivers
plan (``roles/drivers``) reads the same rows to decide how to install that
backend there. A release's HIP or Vulkan headers therefore cannot say one thing
to one plan and another to the other, as two tables once did (one said "HIP >=
7.0 in sid", the other the HIP the test bed measured there, now sid's row).

Where each fact lives, once:

- this module: the OS releases (:data:`RELEASES`, one row per release: its
  codename, Vulkan headers, the distribution's own HIP, CUDA toolkit and NVIDIA
  driver, and whether AMD's and NVIDIA's repositories serve it), the Vulkan
  header floor, and the verdicts read off a row (:func:`rocm_route`,
  :func:`vulkan_headers_ok`, :func:`cuda_installable`);
- ``platform_amd``: AMD device ids -> gfx target, the gfx names LLVM knows,
  APUs, partition memory, the gfx targets ROCm ships kernels for, known-good
  HSA overrides and the HIP llama.cpp needs;
- ``platform_nvidia``: NVIDIA device ids and names -> compute capability,
  generations, what each CUDA toolkit builds for, driver-branch floors;
- ``platform_pins``: what goes stale upstream, each pin with its review date:
  the ROCm release and its amdgpu driver, repo.radeon.com's and NVIDIA's
  repository URLs and keys, the NVIDIA driver branch and CUDA toolkit pins.

The vendor modules hold the large static tables; this one imports them for
its verdicts, and nothing below it imports the steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from lemfleet.roles.platform_amd import HIP_MIN
from lemfleet.roles.platform_pins import version_tuple

# The OSes whose GPU drivers and runtimes the drivers step installs.
DRIVER_OS = ("ubuntu", "debian")


class Release(NamedTuple):
    """What one OS release's archive, and the vendors' repositories for it, offer a GPU backend."""

    codename: str  # the apt suite: "jammy", "bookworm", "sid"
    vulkan_headers: str  # libvulkan-dev
    cuda_toolkit: str  # the distribution's nvidia-cuda-toolkit
    hip: str | None = None  # the distribution's own libamdhip64-dev, where lemfleet uses it
    amd_repo: bool = False  # AMD's ROCm repository (repo.radeon.com) has a suite for it
    nvidia_repo: str | None = None  # NVIDIA's CUDA repository directory, None where there is none
    nvidia_driver: str | None = None  # the distribution's one NVIDIA driver branch (None: drivers_nvidia_branch)


# Keyed by os_release(): (os_id, release) where release is the Ubuntu version,
# the Debian major version, or "sid". Sources: apt-cache madison on the test
# bed's Debian hosts, 2026-11-29 (libvulkan-dev, libamdhip64-dev,
# nvidia-cuda-toolkit, nvidia-kernel-dkms); packages.ubuntu.com for Ubuntu
# (nvidia-cuda-toolkit jammy 11.5.1, noble 12.0.140; libvulkan-dev); ROCm's
# install guide for the suites repo.radeon.com serves; NVIDIA's repository
# listing (developer.download.nvidia.com/compute/cuda/repos/) for its
# directories. Ubuntu's archive carries every NVIDIA server branch
# (nvidia-headless-<branch>-server), so there the branch setting applies.
RELEASES: dict[tuple[str, str], Release] = {
    ("debian", "12"): Release("bookworm", "1.3.239", "11.8", hip="5.2.3", nvidia_repo="debian12", nvidia_driver="535"),
    ("debian", "13"): Release("trixie", "1.4.309", "12.4", hip="5.7.1", nvidia_repo="debian13", nvidia_driver="550"),
    # sid's HIP as measured: installed and run (hipconfig) on a sid test-bed host (tests/testbed/test_gpu_builds.py).
    ("debian", "sid"): Release("sid", "1.4.363", "12.4", hip="6.4.3", nvidia_driver="550"),
    ("ubuntu", "22.04"): Release("jammy", "1.3.204", "11.5", amd_repo=True, nvidia_repo="ubuntu2204"),
    ("ubuntu", "24.04"): Release("noble", "1.3.275", "12.0", amd_repo=True, nvidia_repo="ubuntu2404"),
}

# ggml-vulkan uses vk::LayerSettingEXT (VK_EXT_layer_settings), which needs
# headers >= 1.3.261 (measured: Debian 12's headers fail to compile, Debian 13's work).
VULKAN_MIN_HEADERS = (1, 3, 261)


def os_release(os_id: str, version: str, codename: str) -> tuple[str, str]:
    """The key of :data:`RELEASES`: ("ubuntu", "24.04"), ("debian", "12"), ("debian", "sid")."""
    if os_id == "debian":
        if codename == "sid" or version in ("", "unstable", "sid"):
            return ("debian", "sid")
        return ("debian", version.split(".")[0])
    return (os_id, version)


def label(release: tuple[str, str]) -> str:
    """("debian", "sid") -> "Debian sid"."""
    return " ".join(release).capitalize()


def named(releases: Iterable[tuple[str, str]]) -> str:
    """Releases for a message, grouped by OS: "Ubuntu 22.04 and 24.04, Debian 12, 13 and sid"."""
    groups: dict[str, list[str]] = {}
    for os_id, version in releases:
        groups.setdefault(os_id, []).append(version)
    parts = []
    for os_id, versions in groups.items():
        listed = ", ".join(versions[:-1]) + " and " + versions[-1] if len(versions) > 1 else versions[0]
        parts.append(f"{os_id.capitalize()} {listed}")
    return ", ".join(parts)


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def hip_new_enough(version: str) -> bool:
    """Whether ggml-hip builds with HIP ``version`` (it needs :data:`HIP_MIN`)."""
    return version_tuple(version) >= HIP_MIN


class RocmRoute(NamedTuple):
    """How (or why not) a HIP that ggml-hip accepts gets onto an OS release."""

    ok: bool
    how: str


def rocm_route(release: tuple[str, str]) -> RocmRoute:
    """AMD's repository where it serves the release, else the release's own HIP if new enough."""
    row = RELEASES.get(release)
    if row is not None and row.amd_repo:
        return RocmRoute(True, f"ROCm from AMD's repository (repo.radeon.com, {row.codename})")
    if row is None or row.hip is None:
        return RocmRoute(False, f"no known route to HIP >= {dotted(HIP_MIN)} on {label(release)}")
    if hip_new_enough(row.hip):
        return RocmRoute(True, f"{release[0].capitalize()}'s own ROCm packages (HIP {row.hip} in {release[1]})")
    return RocmRoute(False, f"{label(release)} packages HIP {row.hip}, too old for ggml-hip (>= {dotted(HIP_MIN)})")


def vulkan_headers_new_enough(headers: str) -> bool:
    return version_tuple(headers) >= VULKAN_MIN_HEADERS


def vulkan_headers_ok(release: tuple[str, str]) -> tuple[bool | None, str]:
    """Whether ggml-vulkan compiles with the release's packaged Vulkan headers, and why.

    A release newer than every known one of its OS is taken to ship newer
    headers; None means unknown (an older or other release not in the table)."""
    minimum = dotted(VULKAN_MIN_HEADERS)
    row = RELEASES.get(release)
    if row is not None:
        ok = vulkan_headers_new_enough(row.vulkan_headers)
        verdict = "new enough" if ok else "too old"
        return (
            ok,
            f"{label(release)} ships Vulkan headers {row.vulkan_headers}, {verdict} for ggml-vulkan (>= {minimum})",
        )
    os_id, version = release
    known = [version_tuple(v) for o, v in RELEASES if o == os_id and version_tuple(v)]
    if known and version_tuple(version) > max(known):
        return True, f"{label(release)} ships Vulkan headers newer than {minimum}"
    return None, f"the Vulkan headers version of {label(release)} is not known (ggml-vulkan needs >= {minimum})"


def cuda_installable(release: tuple[str, str]) -> bool:
    """Whether the drivers step has a route to the NVIDIA driver on the release's OS: NVIDIA's
    repository, Ubuntu's nvidia-*-server packages or Debian's non-free driver."""
    return release[0] in DRIVER_OS
