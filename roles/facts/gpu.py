"""All GPU probes in one SSH round trip, merged into one Gpu per device.

``GpuProbe`` runs every probe that applies to the host in a single shell
command: each runs only when its tool or sysfs path exists, tolerates failure,
and prints its output between ``@@lemfleet-gpu:<name>`` and
``@@lemfleet-gpu-rc:<name>:<exit status>`` markers. Nothing needs root and
nothing is changed.

Each section goes to its parser; ``gpu_merge`` joins the parsers' GPUs into one
Gpu per device. On top of the parsers' own verdicts, a vendor tool that printed
nothing is a fact error where the bus shows that vendor's GPU (and only there,
so a CPU-only host with a leftover tool plans cleanly), every AMD gfx name is
checked against the PCI table (``settle_gfx``), and the merged facts add their
own driver diagnoses (``gpu_faults.host_faults``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace

from pyinfra.api import FactBase

from lemfleet.roles.facts.gpu_amd import KFD_COMMAND, KFD_NODES, parse_kfd_topology, parse_rocminfo
from lemfleet.roles.facts.gpu_amd_smi import AMD_SMI_COMMAND, parse_amd_smi
from lemfleet.roles.facts.gpu_faults import host_faults, tool_faults
from lemfleet.roles.facts.gpu_merge import merge_gpus, merge_runtimes
from lemfleet.roles.facts.gpu_nvidia import QUERY_COMMAND, parse_nvidia_smi
from lemfleet.roles.facts.gpu_pci import (
    DEVICE_NODES_COMMAND,
    PCI_SYSFS_COMMAND,
    GpuReport,
    parse_device_nodes,
    parse_lspci,
    parse_pci_sysfs,
    settle_gfx,
    unrecognised,
)
from lemfleet.roles.facts.gpu_rocm_smi import parse_rocm_smi
from lemfleet.roles.facts.gpu_vulkan import parse_vulkaninfo
from lemfleet.roles.hostinfo import Gpu, GpuRuntime

MARK = "@@lemfleet-gpu:"
RC_MARK = "@@lemfleet-gpu-rc:"

_HAS = "command -v {} >/dev/null 2>&1"


def _section(name: str, command: str) -> str:
    return f"lf_s {name}; {command}; lf_e {name} $?"


PROBE_COMMAND = "; ".join(
    [
        'PATH="$PATH:/opt/rocm/bin:/usr/sbin:/sbin"',
        f"lf_s() {{ echo '{MARK}'\"$1\"; }}",
        f'lf_e() {{ printf \'\\n{RC_MARK}%s:%s\\n\' "$1" "$2"; }}',
        f"if {_HAS.format('lspci')}; then {_section('lspci', 'lspci -Dnnk 2>/dev/null')}; "
        f"else {_section('pci-sysfs', PCI_SYSFS_COMMAND)}; fi",
        f"if [ -d {KFD_NODES} ]; then {_section('kfd', KFD_COMMAND)}; fi",
        f"if {_HAS.format('rocminfo')}; then {_section('rocminfo', 'timeout 30 rocminfo 2>&1')}; fi",
        f"if [ -r /opt/rocm/.info/version ]; then {_section('rocm-version', 'cat /opt/rocm/.info/version')}; fi",
        f"if {_HAS.format('amd-smi')}; then {_section('amd-smi', AMD_SMI_COMMAND)}; "
        f"elif {_HAS.format('rocm-smi')}; then {_section('rocm-smi', 'timeout 30 rocm-smi --showproductname --showmeminfo vram --csv 2>&1')}; fi",  # noqa: E501
        # The query, then the -L listing (GPU and MIG UUIDs), then the table where the
        # query failed or MIG is on (the table's "MIG devices" give each instance's memory).
        f"if {_HAS.format('nvidia-smi')}; then lf_s nvidia-smi; timeout 30 {QUERY_COMMAND}; rc=$?; "
        "lf_e nvidia-smi $rc; lf_s nvidia-smi-list; l=$(timeout 30 nvidia-smi -L 2>&1); lrc=$?; "
        "printf '%s\\n' \"$l\"; lf_e nvidia-smi-list $lrc; "
        "if [ $rc -ne 0 ] || printf '%s' \"$l\" | grep -q '^ *MIG '; then "
        f"{_section('nvidia-smi-table', 'timeout 30 nvidia-smi 2>&1')}; fi; fi",
        f"if {_HAS.format('vulkaninfo')}; then "
        f"{_section('vulkaninfo', 'timeout 30 vulkaninfo --summary 2>/dev/null')}; fi",
        _section("device-nodes", DEVICE_NODES_COMMAND),
        # The kernel's GPU driver messages (missing firmware, NVRM errors), where this
        # user may read them; dmesg is often restricted, so nothing here is required.
        _section(
            "kernel-log",
            "{ dmesg 2>/dev/null || journalctl -k -b -q --no-pager 2>/dev/null; } "
            "| grep -iE 'amdgpu|NVRM|nvidia|kfd' | tail -n 80; true",
        ),
        "true",
    ]
)


def split_sections(lines: Iterable[str]) -> dict[str, tuple[list[str], int | None]]:
    """The probe's output as ``{section: (lines, exit status)}``."""
    sections: dict[str, tuple[list[str], int | None]] = {}
    current: str | None = None
    for raw in lines:
        line = raw.rstrip("\n")
        if line.startswith(MARK):
            current = line[len(MARK) :].strip()
            sections[current] = ([], None)
        elif line.startswith(RC_MARK):
            name, _, rc = line[len(RC_MARK) :].rpartition(":")
            if name in sections:
                body = sections[name][0]
                if body and not body[-1].strip():
                    body.pop()  # the newline lf_e adds in case output lacked one
                sections[name] = (body, int(rc) if rc.strip().isdigit() else None)
            current = None
        elif current is not None:
            sections[current][0].append(line)
    return sections


def parse_kernel_log(lines: Iterable[str]) -> GpuReport:
    """The kernel's GPU driver lines: only the faults they prove (``gpu_faults``)."""
    return (), GpuRuntime(faults=tool_faults("kernel-log", lines))


_PARSERS: tuple[tuple[str, Callable[[list[str]], GpuReport]], ...] = (
    ("kfd", parse_kfd_topology),
    ("rocminfo", parse_rocminfo),
    ("amd-smi", parse_amd_smi),
    ("rocm-smi", parse_rocm_smi),
    ("nvidia-smi", parse_nvidia_smi),
    ("vulkaninfo", parse_vulkaninfo),
    ("lspci", parse_lspci),
    ("pci-sysfs", parse_pci_sysfs),
    ("device-nodes", parse_device_nodes),
    ("kernel-log", parse_kernel_log),
)
_TOOL_VENDOR = {"rocminfo": "amd", "rocm-smi": "amd", "amd-smi": "amd", "nvidia-smi": "nvidia"}
_BUS_SOURCES = ("lspci", "pci-sysfs", "kfd")
_VULKAN_LAYOUT = re.compile(r"^(Devices:|GPU\d+:|\s*GPU \d+: )")


def _silent(name: str, rc: int | None, seen: list[Gpu]) -> str | None:
    """A vendor tool that printed nothing is an error only where the bus shows that vendor's GPU."""
    shown = [g for g in seen if g.vendor == _TOOL_VENDOR[name]]
    if not shown:
        return None
    where = f"{shown[0].sources[0]} shows {shown[0].pci_slot or shown[0].pci_id} {shown[0].name}"
    return f"{name} printed nothing (exit status {rc}) although {where}"


def parse_probe(lines: Iterable[str]) -> GpuReport:
    """Parse ``GpuProbe``'s combined output into the merged GPUs and runtime."""
    sections = split_sections(lines)
    nvidia_rc = {n: sections[n][1] for n in ("nvidia-smi", "nvidia-smi-table") if n in sections}
    if "nvidia-smi" in sections or "nvidia-smi-table" in sections:
        parts = [n for n in ("nvidia-smi", "nvidia-smi-list", "nvidia-smi-table") if n in sections]
        body = [line for name in parts for line in sections.pop(name)[0]]
        rc = nvidia_rc.get("nvidia-smi-table", nvidia_rc.get("nvidia-smi"))
        sections["nvidia-smi"] = (body, rc)
    reports: list[GpuReport] = []
    errors: list[str] = []
    facts: list[str] = []
    silent: list[tuple[str, int | None]] = []
    for name, parser in _PARSERS:
        if name not in sections:
            continue
        body, rc = sections[name]
        if name in _TOOL_VENDOR and not any(line.strip() for line in body):
            silent.append((name, rc))
            continue
        reports.append(parser(body))
        if rc and name not in ("nvidia-smi", "vulkaninfo", "kernel-log") and not reports[-1][1].faults:
            first = next((line.strip() for line in body if line.strip()), "no output")
            errors.append(f"{name} exited with status {rc}: {first}")
        if name == "vulkaninfo" and not reports[-1][0]:
            if rc:
                errors.append(f"vulkaninfo exited with status {rc}: no usable Vulkan device")
            elif not any(_VULKAN_LAYOUT.match(line) for line in body):
                facts.append(unrecognised("vulkaninfo", body))
    on_bus = [g for gpus, _ in reports for g in gpus if g.sources and g.sources[0] in _BUS_SOURCES]
    facts += [error for name, rc in silent if (error := _silent(name, rc, on_bus))]
    if facts and not on_bus and all(f.startswith("vulkaninfo") for f in facts):
        errors += facts  # a vulkaninfo we cannot read on a host with no GPU on its bus: a warning
        facts = []
    runtime = merge_runtimes(
        [r for _, r in reports] + [GpuRuntime(probe_errors=tuple(errors), fact_errors=tuple(facts))]
    )
    if "rocm-version" in sections:
        version = " ".join(sections["rocm-version"][0]).strip().split("-")[0]
        runtime = replace(runtime, rocm_version=version or runtime.rocm_version)
    gpus = tuple(settle_gfx(g) for g in merge_gpus([gpus for gpus, _ in reports]))
    found = host_faults(gpus, runtime)
    return gpus, replace(runtime, faults=tuple(dict.fromkeys(runtime.faults + found)))


class GpuProbe(FactBase[GpuReport]):
    """Every GPU on the host and the GPU runtime state, from one shell command.

    Sample output (shortened)::

        @@lemfleet-gpu:lspci
        0000:03:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. [AMD/ATI] Navi 33 [Radeon RX 7700S/7600/7600S/7600M XT/PRO W7600] [1002:7480] (rev c1)
        @@lemfleet-gpu-rc:lspci:0
        @@lemfleet-gpu:nvidia-smi
        NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. ...
        @@lemfleet-gpu-rc:nvidia-smi:9
        @@lemfleet-gpu:device-nodes
        /dev/kfd
        @@lemfleet-gpu-rc:device-nodes:0
    """  # noqa: E501

    def command(self) -> str:
        return PROBE_COMMAND

    @staticmethod
    def default() -> GpuReport:
        return (), GpuRuntime()

    def process(self, output: list[str]) -> GpuReport:
        return parse_probe(output)
