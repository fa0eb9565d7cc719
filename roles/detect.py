"""detect: learn what a host is, without changing it.

One round trip for the host probe and one for the GPU probe. The result is a
:class:`lemfleet.roles.hostinfo.HostFacts`, which the plan reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pyinfra import host

from lemfleet.roles.facts.gpu import GpuProbe
from lemfleet.roles.facts.host import (
    HostProbe,
    parse_cpuinfo,
    parse_df,
    parse_lscpu_cores,
    parse_meminfo,
    parse_os_release,
)
from lemfleet.roles.hostinfo import Gpu, GpuRuntime, HostFacts

# The paths whose filesystems receive builds and models.
TARGET_PATHS = ("/opt/lemfleet", "/var/lib/lemfleet")


def facts_from_sections(
    sections: Mapping[str, list[str]],
    gpus: tuple[Gpu, ...] = (),
    gpu_runtime: GpuRuntime | None = None,
) -> HostFacts:
    """Build :class:`HostFacts` from the host probe's sections (pure)."""
    os_release = parse_os_release(sections.get("os", []))
    physical, logical = parse_lscpu_cores(sections.get("lscpu", []))
    model, flags = parse_cpuinfo(sections.get("cpuinfo", []))
    mem = parse_meminfo(sections.get("meminfo", []))
    systemd = (sections.get("systemd") or ["offline"])[0].strip()
    container = (sections.get("container") or ["none"])[0].strip()
    os_id = os_release.get("ID", "unknown")
    return HostFacts(
        hostname=(sections.get("hostname") or ["unknown"])[0].strip(),
        os_id=os_id,
        os_version=os_release.get("VERSION_ID", ""),
        os_codename=os_release.get("VERSION_CODENAME", ""),
        arch=(sections.get("arch") or ["unknown"])[0].strip(),
        cpu_model=model,
        # lscpu can be missing in minimal images; fall back to one core per CPU.
        cpu_physical_cores=physical or logical or 1,
        cpu_logical_cores=logical or physical or 1,
        cpu_flags=flags,
        mem_total_bytes=mem.get("MemTotal", 0),
        disk_free_bytes=parse_df(sections.get("disk", [])),
        # "running" and "degraded" both mean a booted systemd that manages units.
        systemd_running=systemd in ("running", "degraded", "starting", "initializing"),
        container=container != "none",
        gpus=gpus,
        gpu_runtime=gpu_runtime or GpuRuntime(),
    )


def gather(extra_paths: list[str] | None = None) -> HostFacts:
    """Probe the current pyinfra host (two SSH round trips in all).

    ``extra_paths`` are more paths whose free disk space the plan needs (e.g. a custom model_dir).
    """
    paths = tuple(dict.fromkeys([*TARGET_PATHS, *(extra_paths or [])]))
    sections = host.get_fact(HostProbe, paths=paths)
    gpus, runtime = _gpu_probe(host)
    return facts_from_sections(sections, gpus, runtime)


def _gpu_probe(current_host: Any) -> tuple[tuple[Gpu, ...], GpuRuntime]:
    gpus, runtime = current_host.get_fact(GpuProbe)
    return tuple(gpus), runtime
