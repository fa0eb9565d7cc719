"""The drivers plan: (host, backend, settings) -> :class:`DriverPlan`, with no host at all.

The backend is the GPU plan's choice; this module only works out how to serve
it on the host's release, and refuses, with a message that says what to set
instead, when it cannot be served there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from lemfleet.roles.drivers.cuda import plan_cuda
from lemfleet.roles.drivers.defaults import clean_settings
from lemfleet.roles.drivers.plan_data import (
    BACKEND_SETTING,
    BACKENDS,
    DriverPlan,
    DriverPlanError,
    DriverTarget,
)
from lemfleet.roles.drivers.rocm import plan_hip
from lemfleet.roles.drivers.vulkan import plan_vulkan
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.platforms import DRIVER_OS


def plan_drivers(target: DriverTarget, settings: Mapping[str, Any]) -> DriverPlan:
    """Decide what the drivers step installs on ``target`` for its backend.

    ``settings`` is any mapping with the ``drivers_*`` settings (missing ones
    take their defaults). Raises :class:`DriverPlanError` (a ``SettingsError``)
    when the backend cannot be served on the host's release.
    """
    clean = clean_settings(settings)
    if target.backend not in BACKENDS:
        accepted = ", ".join(repr(b) for b in BACKENDS)
        raise DriverPlanError(f"{BACKEND_SETTING}={target.backend!r} is not valid; accepted: {accepted}")
    if target.backend == "cpu":
        return DriverPlan("cpu", "none", reasons=("backend cpu: no GPU driver or runtime is needed",))
    if target.os_id not in DRIVER_OS:
        raise DriverPlanError(
            f"{BACKEND_SETTING}={target.backend!r} on {target.described}: lemfleet installs GPU "
            "runtimes on Debian and Ubuntu only; accepted elsewhere: 'cpu'"
        )
    planners = {"hip": plan_hip, "cuda": plan_cuda, "vulkan": plan_vulkan}
    plan = planners[target.backend](target, clean)
    reasons = list(plan.reasons)
    reboot = False
    if plan.reboot_may_be_needed:
        reboot = clean["drivers_reboot"]
        reasons.append(
            "the host reboots if the kernel driver changes (never on @local)"
            if reboot
            else "drivers_reboot=false: reboot the host yourself if the kernel driver changes"
        )
    plan = dataclasses.replace(plan, reboot=reboot, reasons=tuple(reasons))
    if target.kernel_release:
        plan = plan.for_kernel(target.kernel_release)
    return plan


def target_from_facts(
    facts: HostFacts,
    backend: str,
    kernel_release: str | None = None,
    driver_from_lemfleet: bool = False,
) -> DriverTarget:
    """The :class:`DriverTarget` of a detected host, for the backend the GPU plan chose."""
    runtime = facts.gpu_runtime
    working, version, kernel_loaded = False, None, False
    if backend == "hip":
        working, version = runtime.rocminfo_ok, runtime.rocm_version
        kernel_loaded = "/dev/kfd" in runtime.device_nodes
    elif backend == "cuda":
        working, version = runtime.nvidia_smi_ok, runtime.nvidia_driver_version
        kernel_loaded = working
    elif backend == "vulkan":
        working = runtime.vulkan_ok
    return DriverTarget(
        os_id=facts.os_id,
        os_version=facts.os_version,
        os_codename=facts.os_codename,
        backend=backend,
        runtime_working=working,
        runtime_version=version,
        kernel_driver_loaded=kernel_loaded,
        container=facts.container,
        arch=facts.arch,
        kernel_release=kernel_release,
        driver_from_lemfleet=driver_from_lemfleet,
        compute_capabilities=tuple(
            gpu.compute_capability for gpu in facts.gpus if gpu.vendor == "nvidia" and gpu.compute_capability
        ),
    )
