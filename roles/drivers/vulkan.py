"""Vulkan: the loader, Mesa's drivers (RADV for AMD) and llama.cpp's Vulkan build packages.

Everything comes from the distribution's own archive; there is no kernel
package and so never a reboot. llama.cpp's docs/build.md lists the build
packages for Debian and Ubuntu: ``libvulkan-dev glslc spirv-headers``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lemfleet.roles.drivers.plan_data import BACKEND_SETTING, DriverPlan, DriverPlanError, DriverTarget
from lemfleet.roles.platforms import RELEASES, VULKAN_MIN_HEADERS, dotted, label, rocm_route, vulkan_headers_new_enough

# Names checked with apt-cache madison against trixie, sid and bookworm on
# 2026-11-29 (all in main); on Ubuntu 24.04 glslc and spirv-headers are in universe.
RUNTIME = ("libvulkan1", "mesa-vulkan-drivers", "vulkan-tools")
BUILD = ("libvulkan-dev", "glslc", "spirv-headers")
# Render nodes (/dev/dri/renderD*) belong to "render"; older udev rules use "video".
GROUPS = ("render", "video")


def _accepted() -> str:
    good = [label(key) for key, row in RELEASES.items() if vulkan_headers_new_enough(row.vulkan_headers)]
    return ", ".join(good)


def _alternatives(target: DriverTarget) -> str:
    hip = rocm_route((target.os_id, target.release)).ok
    return "'hip' for AMD GPUs, 'cuda' for NVIDIA GPUs, or 'cpu'" if hip else ("'cuda' for NVIDIA GPUs, or 'cpu'")


def plan_vulkan(target: DriverTarget, settings: Mapping[str, Any]) -> DriverPlan:
    row = RELEASES.get((target.os_id, target.release))
    minimum = dotted(VULKAN_MIN_HEADERS)
    if row is None:
        raise DriverPlanError(
            f"{BACKEND_SETTING}='vulkan' is not supported on {target.described}; accepted "
            f"releases for vulkan: {_accepted()}"
        )
    headers = row.vulkan_headers
    if not vulkan_headers_new_enough(headers):
        raise DriverPlanError(
            f"{BACKEND_SETTING}='vulkan' cannot be built on {target.described}: its Vulkan "
            f"headers ({headers}) are older than the {minimum} that llama.cpp's Vulkan backend "
            f"needs (vk::LayerSettingEXT); accepted releases for vulkan: {_accepted()}. On "
            f"this release use {_alternatives(target)}"
        )
    reasons = [
        f"Vulkan from {target.described}'s archive: headers {headers} (>= {minimum}), "
        "Mesa's drivers (RADV for AMD) and glslc",
    ]
    if target.os_id == "ubuntu":
        reasons.append("glslc and spirv-headers come from Ubuntu's universe component")
    if target.runtime_working:
        reasons.append("vulkaninfo already works; installed packages are not upgraded")
    return DriverPlan(
        backend="vulkan",
        source=target.os_id,
        packages=RUNTIME + BUILD,
        runtime_packages=RUNTIME,
        service_groups=GROUPS,
        reasons=tuple(reasons),
    )
