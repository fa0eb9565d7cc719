"""HIP (ROCm): AMD's apt repository on Ubuntu, Debian's own packages on sid.

The routes are the platform table's (``roles/platforms.py``): AMD's
repository where it has a suite for the release, else the release's own HIP
where ggml-hip accepts it (``HIP_MIN``, ggml/src/ggml-hip/CMakeLists.txt).
That rules out the ROCm that Debian 12 and 13 package; those releases serve
AMD GPUs through Vulkan instead, where their Vulkan headers allow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lemfleet.roles import platform_pins as pins
from lemfleet.roles.drivers.plan_data import (
    BACKEND_SETTING,
    KERNEL_RELEASE,
    AptKey,
    AptPin,
    AptSource,
    DriverPlan,
    DriverPlanError,
    DriverTarget,
)
from lemfleet.roles.platform_amd import HIP_MIN
from lemfleet.roles.platforms import RELEASES, Release, dotted, hip_new_enough, named, vulkan_headers_new_enough

# AMD recommends meta-packages over single ones ("Package manager integration"):
# rocm-hip-runtime runs HIP programs, rocm-hip-runtime-dev builds them. llama.cpp
# also links rocBLAS and hipBLAS, and finds HIP through hipconfig (hipcc).
AMD_RUNTIME = ("rocm-hip-runtime", "rocminfo")
AMD_BUILD = ("rocm-hip-runtime-dev", "hipcc", "hip-dev", "rocblas-dev", "hipblas-dev")
# What a host that receives a HIP build needs to run it: the libraries of rocblas-dev and hipblas-dev.
AMD_LIBRARIES = ("rocblas", "hipblas")
# Ubuntu's documented prerequisites of amdgpu-dkms.
AMD_KERNEL = (
    "amdgpu-dkms",
    f"linux-headers-{KERNEL_RELEASE}",
    f"linux-modules-extra-{KERNEL_RELEASE}",
)
# Debian's names for the same pieces (apt-cache show in sid, 2026-11-29):
# hipcc also ships hipconfig, libamdhip64-dev the hip CMake config.
DEBIAN_RUNTIME = ("rocminfo",)
DEBIAN_BUILD = ("hipcc", "libamdhip64-dev", "librocblas-dev", "libhipblas-dev")
# /dev/kfd and /dev/dri/renderD* belong to these groups (ROCm prerequisites).
GROUPS = ("render", "video")
RADEON_PIN = AptPin("rocm-pin-600", "release o=repo.radeon.com", 600)


def _hip_routes() -> str:
    """The releases with a new enough HIP, and where it comes from, for a message."""
    amd = [key for key, row in RELEASES.items() if row.amd_repo]
    own = [key for key, row in RELEASES.items() if not row.amd_repo and row.hip and hip_new_enough(row.hip)]
    return f"{named(amd)} (AMD's repository) and {named(own)} (Debian's packages)"


def plan_hip(target: DriverTarget, settings: Mapping[str, Any]) -> DriverPlan:
    row = RELEASES.get((target.os_id, target.release))
    if row is not None and row.amd_repo:
        return _amd_repo(target, row, settings)
    if row is not None and row.hip and hip_new_enough(row.hip):
        return _distro_hip(target, row)
    if row is not None and row.hip:
        raise DriverPlanError(_hip_too_old(target, row))
    raise DriverPlanError(
        f"{BACKEND_SETTING}='hip' is not supported on {target.described}; accepted for hip: {_hip_routes()}. "
        f"Other releases can use {BACKEND_SETTING}='vulkan' where their Vulkan headers are new "
        "enough, or 'cpu'."
    )


def _hip_too_old(target: DriverTarget, row: Release) -> str:
    headers = row.vulkan_headers
    if vulkan_headers_new_enough(headers):
        offer = f"accepted there: 'vulkan' (RADV, Vulkan headers {headers}) or 'cpu'"
    else:
        # A sibling release whose HIP is too old too, but whose Vulkan headers are not.
        vulkan = [
            key
            for key, other in RELEASES.items()
            if key[0] == target.os_id and other.hip and not hip_new_enough(other.hip)
            if vulkan_headers_new_enough(other.vulkan_headers)
        ]
        offer = f"accepted there: 'cpu' only, since its Vulkan headers ({headers}) are too old as well"
        offer += f"; {named(vulkan)} serves AMD GPUs through 'vulkan'" if vulkan else ""
    return (
        f"{BACKEND_SETTING}='hip' cannot be served on {target.described}: its HIP is {row.hip} and "
        f"llama.cpp's HIP backend needs {dotted(HIP_MIN)} or later; {offer}. A new enough ROCm is on "
        f"{_hip_routes()}."
    )


def _amd_repo(target: DriverTarget, row: Release, settings: Mapping[str, Any]) -> DriverPlan:
    rocm = settings["drivers_rocm_version"]
    if not hip_new_enough(rocm):
        raise DriverPlanError(
            f"drivers_rocm_version={rocm!r} is too old: llama.cpp's HIP backend needs ROCm {dotted(HIP_MIN)} "
            f"or later; accepted: {dotted(HIP_MIN)} or later, e.g. {pins.ROCM_VERSION.value!r}"
        )
    if target.arch != "x86_64":
        raise DriverPlanError(
            f"{BACKEND_SETTING}='hip' on {target.arch}: AMD's ROCm repository is amd64 only; "
            f"accepted on {target.arch}: 'vulkan' or 'cpu'"
        )
    existing = target.runtime_version
    # A ROCm that an earlier run installed is lemfleet's own: keep it as declared.
    manage = settings["drivers_manage_existing"] or target.driver_from_lemfleet
    if target.runtime_working and not manage:
        if existing and not hip_new_enough(existing):
            raise DriverPlanError(
                f"ROCm {existing} already works on {target.described}, but llama.cpp needs HIP "
                f"{dotted(HIP_MIN)} or later; set drivers_manage_existing=true to install ROCm "
                f"{rocm} from AMD's repository, or {BACKEND_SETTING}='vulkan'"
            )
        return DriverPlan(
            backend="hip",
            source="existing",
            packages=AMD_BUILD,
            runtime_packages=AMD_LIBRARIES,
            service_groups=GROUPS,
            reasons=(
                f"rocminfo already works (ROCm {existing or 'of unknown version'}); with "
                "drivers_manage_existing=false its packages and repositories are left alone",
                "only the HIP build packages are added, from the repositories already configured",
            ),
        )

    suite = row.codename
    sources = [_radeon_source("rocm", pins.rocm_repo_url(rocm), suite)]
    if pins.version_tuple(rocm) >= (7, 0):
        sources.append(_radeon_source("amdgraphics", pins.rocm_graphics_repo_url(rocm), suite))
    reasons = [
        f"ROCm {rocm} from AMD's repository for {target.described}, pinned above "
        "Ubuntu's own ROCm packages with priority 600",
    ]
    if target.runtime_working and target.driver_from_lemfleet:
        reasons.append("rocminfo works with the ROCm an earlier lemfleet run installed")
    elif target.runtime_working:
        reasons.append(f"drivers_manage_existing=true: the working ROCm {existing or ''} may be upgraded")

    kernel: tuple[str, ...] = ()
    if target.container:
        reasons.append("inside a container: the host's kernel provides amdgpu; no DKMS module")
    elif target.kernel_driver_loaded and not manage:
        reasons.append("/dev/kfd exists: the running kernel's amdgpu already serves ROCm")
    else:
        amdgpu = settings["drivers_amdgpu_version"] or pins.amdgpu_for_rocm(rocm)
        if amdgpu is None:
            known = ", ".join(f"{r} -> {a}" for r, a in pins.AMDGPU_FOR_ROCM.items())
            raise DriverPlanError(
                "drivers_amdgpu_version=None cannot be derived for drivers_rocm_version="
                f"{rocm!r}; set drivers_amdgpu_version to the amdgpu repository release "
                f"shipped with that ROCm (known: {known})"
            )
        sources.insert(0, _radeon_source("amdgpu", pins.amdgpu_repo_url(amdgpu), suite))
        kernel = AMD_KERNEL
        reasons.append(f"amdgpu-dkms {amdgpu} with headers for the running kernel")

    return DriverPlan(
        backend="hip",
        source="amd-repo",
        keys=(AptKey(pins.ROCM_KEY_URL, pins.ROCM_KEYRING, fingerprints=(pins.ROCM_KEY_FINGERPRINT.value,)),),
        sources=tuple(sources),
        pins=(RADEON_PIN,),
        kernel_packages=kernel,
        packages=AMD_RUNTIME + AMD_BUILD,
        runtime_packages=AMD_RUNTIME + AMD_LIBRARIES,
        service_groups=GROUPS,
        reasons=tuple(reasons),
    )


def _radeon_source(name: str, uri: str, suite: str) -> AptSource:
    return AptSource(name, (uri,), (suite,), ("main",), pins.ROCM_KEYRING, ("amd64",))


def _distro_hip(target: DriverTarget, row: Release) -> DriverPlan:
    reasons = [
        f"Debian's own ROCm packages (HIP {row.hip} in {target.release}, 2026-11-29), from the configured archive",
        "Debian's kernel drives AMD GPUs itself (amdgpu with KFD): no DKMS module is needed",
    ]
    if target.runtime_working:
        reasons.append("rocminfo already works; installed packages are not upgraded")
    return DriverPlan(
        backend="hip",
        source="debian",
        packages=DEBIAN_RUNTIME + DEBIAN_BUILD,
        # Debian's HIP library packages are named by soname and were not checked from here: a host that
        # receives a build gets the build packages too, which depend on the libraries.
        runtime_packages=DEBIAN_RUNTIME + DEBIAN_BUILD,
        service_groups=GROUPS,
        reasons=tuple(reasons),
    )
