"""CUDA: the NVIDIA driver and toolkit from NVIDIA's repository or from the distribution.

``drivers_cuda_source`` chooses. NVIDIA's repository is set up the way NVIDIA
documents it, by installing the ``cuda-keyring`` package, which writes the
key and the source itself. The distribution route uses Ubuntu's
``nvidia-headless-<branch>-server`` packages or Debian's non-free driver.
Headless packages are used throughout: a GPU server needs no X driver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lemfleet.roles import platform_pins as pins
from lemfleet.roles.drivers.plan_data import (
    KERNEL_RELEASE,
    NOUVEAU_BLACKLIST,
    AptPin,
    AptSource,
    DriverPlan,
    DriverPlanError,
    DriverTarget,
    KeyringDeb,
)
from lemfleet.roles.platform_nvidia import BLACKWELL_MIN_BRANCH, OPEN_MODULES_MIN_CC, OPEN_ONLY_MIN_CC, toolkit_cc_range
from lemfleet.roles.platforms import RELEASES, Release, named

HEADERS = f"linux-headers-{KERNEL_RELEASE}"
# /dev/nvidia* are 0666 unless the module options narrow them to a group; Debian
# and Ubuntu use "video" when they do.
GROUPS = ("video",)
# With the driver installed from NVIDIA's repo, its packages win over the
# distribution's (NVIDIA's own cuda-<distro>.pin does the same).
NVIDIA_PIN = AptPin("cuda-repository-pin-600", f"release l={pins.NVIDIA_REPO_LABEL}", 600)
# With a working driver kept, NVIDIA's repo must never replace it on a later
# upgrade, so its driver packages are pinned away; the toolkit is unaffected.
KEEP_DRIVER_PIN = AptPin(
    "lemfleet-keep-nvidia-driver",
    f"release l={pins.NVIDIA_REPO_LABEL}",
    -1,
    packages="nvidia-* libnvidia-* cuda-drivers* xserver-xorg-video-nvidia*",
)
DEBIAN_COMPONENTS = ("contrib", "non-free", "non-free-firmware")


def plan_cuda(target: DriverTarget, settings: Mapping[str, Any]) -> DriverPlan:
    ccs = _compute_capabilities(target)
    modules = _kernel_modules(settings["drivers_nvidia_kernel_modules"], ccs)
    keep = target.runtime_working and not settings["drivers_manage_existing"]
    keep = keep and not target.driver_from_lemfleet
    reasons: list[str] = []
    if target.runtime_working and target.driver_from_lemfleet:
        reasons.append("nvidia-smi works with the driver an earlier lemfleet run installed")
    elif keep:
        reasons.append(
            f"nvidia-smi already works (driver {target.runtime_version or 'of unknown version'}); "
            "with drivers_manage_existing=false the driver is left alone, only CUDA is added"
        )
    elif target.container:
        reasons.append(
            "inside a container: the driver comes from the host (NVIDIA Container Toolkit); only CUDA is installed here"
        )
    elif target.runtime_working:
        reasons.append(
            f"drivers_manage_existing=true: the working driver {target.runtime_version or ''} "
            "may be upgraded or replaced"
        )
    install_driver = not keep and not target.container
    source = settings["drivers_cuda_source"]
    row = RELEASES.get((target.os_id, target.release))
    if source == "nvidia-repo":
        plan = _nvidia_repo(target, settings, ccs, modules, install_driver)
    elif row is not None and target.os_id == "ubuntu":
        plan = _ubuntu(target, row, settings, ccs, modules, install_driver)
    elif row is not None and row.nvidia_driver is not None:
        plan = _debian(target, row, settings, ccs, modules, install_driver)
    else:
        raise DriverPlanError(
            f"drivers_cuda_source='distro' is not supported on {target.described}; accepted "
            f"releases: {named(k for k, r in RELEASES.items() if k[0] == 'ubuntu' or r.nvidia_driver)}"
        )
    return DriverPlan(
        backend="cuda",
        source=plan.source,
        keyring_debs=plan.keyring_debs,
        sources=plan.sources,
        pins=plan.pins,
        files=(NOUVEAU_BLACKLIST,) if install_driver else (),
        kernel_packages=plan.kernel_packages if install_driver else (),
        packages=plan.packages,
        runtime_packages=plan.runtime_packages,
        service_groups=GROUPS,
        reasons=tuple(reasons) + plan.reasons,
    )


def _compute_capabilities(target: DriverTarget) -> list[tuple[int, int]]:
    return [(v[0], v[1] if len(v) > 1 else 0) for v in map(pins.version_tuple, target.compute_capabilities)]


def _cc_text(cc: tuple[int, int]) -> str:
    return f"{cc[0]}.{cc[1]}"


def _kernel_modules(choice: str, ccs: list[tuple[int, int]]) -> str:
    """'open' or 'proprietary': open needs Turing (7.5) or later, Blackwell (10.0+) needs open."""
    old = [cc for cc in ccs if cc < OPEN_MODULES_MIN_CC]
    new = [cc for cc in ccs if cc >= OPEN_ONLY_MIN_CC]
    if old and new:
        raise DriverPlanError(
            f"GPUs with compute capability {_cc_text(old[0])} and {_cc_text(new[0])} on one host "
            "need different NVIDIA kernel modules (proprietary and open); no value of "
            "drivers_nvidia_kernel_modules serves both. Accepted: one GPU generation per host"
        )
    if choice == "auto":
        return "proprietary" if old else "open"
    if choice == "open" and old:
        raise DriverPlanError(
            f"drivers_nvidia_kernel_modules='open' cannot drive a GPU of compute capability "
            f"{_cc_text(old[0])} (open modules need Turing, 7.5, or later); accepted here: "
            "'proprietary' or 'auto'"
        )
    if choice == "proprietary" and new:
        raise DriverPlanError(
            f"drivers_nvidia_kernel_modules='proprietary' cannot drive a GPU of compute "
            f"capability {_cc_text(new[0])} (Blackwell needs the open modules); accepted here: "
            "'open' or 'auto'"
        )
    return choice


def _check_toolkit(setting: str, toolkit: str, ccs: list[tuple[int, int]], fix: str) -> None:
    low, high = toolkit_cc_range(toolkit)
    for cc in ccs:
        if not low <= cc <= high:
            raise DriverPlanError(
                f"{setting}: CUDA {toolkit.replace('-', '.')} builds for compute capability "
                f"{_cc_text(low)} to {_cc_text(high)}, not {_cc_text(cc)}; {fix}"
            )


def _check_branch(setting: str, branch: str, ccs: list[tuple[int, int]], fix: str) -> None:
    blackwell = [cc for cc in ccs if cc >= (10, 0)]
    if blackwell and int(branch) < BLACKWELL_MIN_BRANCH:
        raise DriverPlanError(
            f"{setting}: driver branch {branch} predates Blackwell (compute capability "
            f"{_cc_text(blackwell[0])} needs {BLACKWELL_MIN_BRANCH} or later); {fix}"
        )


def _nvidia_repo(
    target: DriverTarget,
    settings: Mapping[str, Any],
    ccs: list[tuple[int, int]],
    modules: str,
    install_driver: bool,
) -> DriverPlan:
    row = RELEASES.get((target.os_id, target.release))
    distro = row.nvidia_repo if row else None
    if distro is None:
        fallback = (
            "accepted there: drivers_cuda_source='distro'" if row is not None else "use another release or backend"
        )
        served = named(key for key, other in RELEASES.items() if other.nvidia_repo)
        raise DriverPlanError(
            f"drivers_cuda_source='nvidia-repo' is not available on {target.described}: "
            f"NVIDIA's CUDA repository serves {served}; {fallback}"
        )
    arch = pins.NVIDIA_REPO_ARCHES.get(target.arch)
    if arch is None or (arch == "sbsa" and target.os_id != "ubuntu"):
        raise DriverPlanError(
            f"drivers_cuda_source='nvidia-repo' has no {target.arch} packages for "
            f"{target.described}; accepted: x86_64 hosts, or aarch64 on Ubuntu"
        )
    pre_turing = any(cc < OPEN_MODULES_MIN_CC for cc in ccs)
    default = pins.CUDA_TOOLKIT_PRE_TURING if pre_turing else pins.CUDA_TOOLKIT
    toolkit = settings["drivers_cuda_toolkit"] or default.value
    _check_toolkit(f"drivers_cuda_toolkit={toolkit!r}", toolkit, ccs, "accepted: a toolkit that covers it")
    branch = settings["drivers_nvidia_branch"]
    _check_branch(f"drivers_nvidia_branch={branch!r}", branch, ccs, f"accepted: {pins.NVIDIA_BRANCH.value}")
    driver = f"nvidia-open-{branch}" if modules == "open" else f"cuda-drivers-{branch}"
    keyring_url = pins.cuda_keyring_url(distro, arch)
    keyring_sha256 = settings.get("drivers_cuda_keyring_sha256") or pins.cuda_keyring_sha256(distro, arch)
    if keyring_sha256 is None:
        raise DriverPlanError(
            f"drivers_cuda_keyring_sha256=None: lemfleet pins no sha256 for {keyring_url}, and dpkg would run "
            "the package's scripts as root; accepted: its sha256 (from the Packages index of NVIDIA's repo), "
            "or drivers_cuda_source='distro'"
        )
    reasons = [f"NVIDIA's CUDA repository for {distro}/{arch}, set up by {pins.CUDA_KEYRING_DEB}"]
    if install_driver:
        reasons.append(f"driver branch {branch} with the {modules} kernel modules ({driver})")
    reasons.append(f"CUDA toolkit {toolkit.replace('-', '.')} (cuda-toolkit-{toolkit})")
    return DriverPlan(
        backend="cuda",
        source="nvidia-repo",
        keyring_debs=(KeyringDeb(keyring_url, keyring_sha256),),
        pins=(NVIDIA_PIN,) if install_driver else (KEEP_DRIVER_PIN,),
        kernel_packages=(driver, HEADERS),
        packages=(f"cuda-toolkit-{toolkit}",),
        # What a CUDA build of llama-server links (libcudart, libcublas, libcublasLt); libcuda comes with the driver.
        runtime_packages=(f"cuda-cudart-{toolkit}", f"libcublas-{toolkit}"),
        reasons=tuple(reasons),
    )


def _ubuntu(
    target: DriverTarget,
    row: Release,
    settings: Mapping[str, Any],
    ccs: list[tuple[int, int]],
    modules: str,
    install_driver: bool,
) -> DriverPlan:
    toolkit = row.cuda_toolkit
    fix = "accepted: drivers_cuda_source='nvidia-repo'"
    _check_toolkit(f"drivers_cuda_source='distro' on {target.described}", toolkit, ccs, fix)
    branch = settings["drivers_nvidia_branch"]
    _check_branch(f"drivers_nvidia_branch={branch!r}", branch, ccs, f"accepted: {pins.NVIDIA_BRANCH.value}")
    suffix = "-open" if modules == "open" else ""
    reasons = [f"Ubuntu's packages: CUDA toolkit {toolkit} (nvidia-cuda-toolkit, multiverse)"]
    if install_driver:
        reasons.append(f"driver branch {branch} server, {modules} kernel modules (restricted)")
    return DriverPlan(
        backend="cuda",
        source="ubuntu",
        kernel_packages=(
            f"nvidia-headless-{branch}-server{suffix}",
            f"nvidia-utils-{branch}-server",
            HEADERS,
        ),
        packages=("nvidia-cuda-toolkit",),
        runtime_packages=distro_cuda_runtime(toolkit),
        reasons=tuple(reasons),
    )


def distro_cuda_runtime(toolkit: str) -> tuple[str, ...]:
    """The libraries of Debian's and Ubuntu's nvidia-cuda-toolkit that a CUDA llama-server links, by major version."""
    major = toolkit.split(".")[0]
    return (f"libcudart{major}.0", f"libcublas{major}", f"libcublaslt{major}") if major == "11" else (
        f"libcudart{major}", f"libcublas{major}", f"libcublaslt{major}")  # fmt: skip


def _debian(
    target: DriverTarget,
    row: Release,
    settings: Mapping[str, Any],
    ccs: list[tuple[int, int]],
    modules: str,
    install_driver: bool,
) -> DriverPlan:
    release = target.release
    toolkit, branch = row.cuda_toolkit, row.nvidia_driver or ""
    fix = (
        "accepted: drivers_cuda_source='nvidia-repo'"
        if row.nvidia_repo
        else "no other source serves it on this release"
    )
    where = f"drivers_cuda_source='distro' on {target.described}"
    _check_toolkit(where, toolkit, ccs, fix)
    _check_branch(where, branch, ccs, fix)
    codename = row.codename
    suites = (codename,) if release == "sid" else (codename, f"{codename}-updates")
    kernel = "nvidia-open-kernel-dkms" if modules == "open" else "nvidia-kernel-dkms"
    reasons = [
        f"Debian's packages from contrib/non-free: CUDA toolkit {toolkit} (nvidia-cuda-toolkit)",
    ]
    if install_driver:
        reasons.append(f"Debian's driver {branch} with the {modules} kernel modules ({kernel})")
    else:
        reasons.append(
            f"Debian's nvidia-cuda-toolkit depends on libcuda1 (>= {branch}): a driver that "
            "did not come from a package gets Debian's libcuda1 beside it"
        )
    return DriverPlan(
        backend="cuda",
        source="debian",
        sources=(
            AptSource(
                "debian-nonfree",
                (settings["drivers_debian_mirror"],),
                suites,
                DEBIAN_COMPONENTS,
                pins.DEBIAN_ARCHIVE_KEYRING,
            ),
        ),
        kernel_packages=(kernel, "nvidia-smi", "libcuda1", HEADERS),
        packages=("nvidia-cuda-toolkit",),
        runtime_packages=distro_cuda_runtime(toolkit),
        reasons=tuple(reasons),
    )
