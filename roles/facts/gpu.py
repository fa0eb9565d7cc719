"""All GPU probes in one SSH round trip, merged into one Gpu per device.

``GpuProbe`` runs every probe that applies to the host in a single shell
command: each runs only when its tool or sysfs path exists, tolerates failure,
and prints its output between ``@@lemfleet-gpu:<name>`` and
``@@lemfleet-gpu-rc:<name>:<exit status>`` markers. Nothing needs root and
nothing is changed.

Merge rule: one Gpu per device (per logical GPU for partitioned MI300), joined
by KFD node, then PCI slot, then, for probes that report neither (``vulkaninfo
--summary``, ``nvidia-smi -L``, old ``rocm-smi`` tables), by PCI id and finally
by position among the same vendor's unmatched devices. Runtime-specific probes
win over lspci for names, VRAM and architecture; a device is ``driver_ok`` when
any runtime probe (KFD, rocminfo, rocm-smi/amd-smi, nvidia-smi, Vulkan) saw it.
``index`` is the HIP/CUDA index where a runtime gave one, else the PCI order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import fields, replace
from typing import Any

from pyinfra.api import FactBase

from lemfleet.roles.facts.gpu_amd import KFD_COMMAND, KFD_NODES, parse_kfd_topology, parse_rocminfo
from lemfleet.roles.facts.gpu_amd_smi import parse_amd_smi, parse_rocm_smi
from lemfleet.roles.facts.gpu_nvidia import QUERY_COMMAND, parse_nvidia_smi
from lemfleet.roles.facts.gpu_pci import (
    DEVICE_NODES_COMMAND,
    PCI_SYSFS_COMMAND,
    GpuReport,
    index_by_vendor,
    parse_device_nodes,
    parse_lspci,
    parse_pci_sysfs,
)
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
        f"if {_HAS.format('amd-smi')}; then "
        f"{_section('amd-smi', 'timeout 30 amd-smi static --asic --bus --vram 2>&1')}; "
        f"elif {_HAS.format('rocm-smi')}; then {_section('rocm-smi', 'timeout 30 rocm-smi --showproductname --showmeminfo vram --csv 2>&1')}; fi",  # noqa: E501
        f"if {_HAS.format('nvidia-smi')}; then lf_s nvidia-smi; timeout 30 {QUERY_COMMAND}; rc=$?; "
        "lf_e nvidia-smi $rc; if [ $rc -ne 0 ]; then "
        f"{_section('nvidia-smi-table', 'timeout 30 nvidia-smi 2>&1')}; fi; fi",
        f"if {_HAS.format('vulkaninfo')}; then "
        f"{_section('vulkaninfo', 'timeout 30 vulkaninfo --summary 2>/dev/null')}; fi",
        _section("device-nodes", DEVICE_NODES_COMMAND),
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


# Name quality per source: a lower rank wins. Table-derived names (KFD, sysfs)
# rank last because they cover a whole chip family ("RX 7900 XTX/XT").
_NAME_RANK = {
    "rocminfo": 0,
    "nvidia-smi": 0,
    "amd-smi": 1,
    "rocm-smi": 2,
    "vulkaninfo": 3,
    "lspci": 4,
    "kfd": 5,
    "pci-sysfs": 5,
}
_RUNTIME_SOURCES = frozenset({"kfd", "rocminfo", "amd-smi", "rocm-smi", "nvidia-smi"})
_GENERIC_NAME = re.compile(r"^(AMD|NVIDIA) GPU\b")


def _name_rank(gpu: Gpu) -> int:
    if _GENERIC_NAME.match(gpu.name):
        return 9
    return min((_NAME_RANK.get(s, 8) for s in gpu.sources), default=8)


def _combine(old: Gpu, new: Gpu) -> Gpu:
    changes: dict[str, Any] = {}
    for f in fields(Gpu):
        if f.name in ("vendor", "name", "index", "integrated", "driver_ok", "sources"):
            continue
        if getattr(old, f.name) is None and getattr(new, f.name) is not None:
            changes[f.name] = getattr(new, f.name)
    if _name_rank(new) < _name_rank(old):
        changes["name"] = new.name
    if not _RUNTIME_SOURCES & set(old.sources) and _RUNTIME_SOURCES & set(new.sources):
        changes["index"] = new.index
    changes["integrated"] = old.integrated or new.integrated
    changes["driver_ok"] = old.driver_ok or new.driver_ok
    changes["sources"] = old.sources + tuple(s for s in new.sources if s not in old.sources)
    return replace(old, **changes)


def _keyed_match(devices: list[Gpu], gpu: Gpu, used: set[int]) -> int | None:
    for i, device in enumerate(devices):
        if i in used or device.vendor != gpu.vendor:
            continue
        if gpu.kfd_node is not None and device.kfd_node == gpu.kfd_node:
            return i
        if gpu.pci_slot and device.pci_slot == gpu.pci_slot:
            return i
    return None


def merge_gpus(reports: Sequence[tuple[Gpu, ...]]) -> tuple[Gpu, ...]:
    """One Gpu per device from several probes' lists, given best source first.

    GPUs with a KFD node or PCI slot are joined first, from every probe; the
    ones without (vulkaninfo --summary, nvidia-smi -L, old rocm-smi tables) then
    join the devices that their own probe did not already match."""
    devices: list[Gpu] = []
    deferred: list[tuple[list[Gpu], set[int]]] = []
    for gpus in reports:
        used: set[int] = set()
        keyless: list[Gpu] = []
        for gpu in gpus:
            i = _keyed_match(devices, gpu, used)
            if i is not None:
                devices[i] = _combine(devices[i], gpu)
                used.add(i)
            elif gpu.kfd_node is None and gpu.pci_slot is None:
                keyless.append(gpu)
            else:
                devices.append(gpu)
                used.add(len(devices) - 1)
        deferred.append((keyless, used))
    for keyless, used in deferred:
        _merge_keyless(devices, keyless, used)
    return _number(devices)


def _merge_keyless(devices: list[Gpu], keyless: list[Gpu], used: set[int]) -> None:
    """Join GPUs that carry no KFD node or slot to the devices their own probe did
    not match: by PCI id (in order, for identical cards), then by position when
    as many remain on both sides; anything else is a device of its own."""
    for vendor in sorted({g.vendor for g in keyless}):
        free = [i for i, d in enumerate(devices) if d.vendor == vendor and i not in used]
        leftovers = []
        for gpu in (g for g in keyless if g.vendor == vendor):
            same = [i for i in free if gpu.pci_id and devices[i].pci_id == gpu.pci_id]
            if same:
                devices[same[0]] = _combine(devices[same[0]], gpu)
                free.remove(same[0])
            else:
                leftovers.append(gpu)
        if len(leftovers) == len(free):
            for i, gpu in zip(free, leftovers, strict=True):
                devices[i] = _combine(devices[i], gpu)
        else:
            devices.extend(leftovers)


def _number(devices: list[Gpu]) -> tuple[Gpu, ...]:
    """Keep runtime indexes; number devices no runtime saw after them, in PCI order."""
    out: list[Gpu] = []
    for vendor in sorted({d.vendor for d in devices}):
        mine = [d for d in devices if d.vendor == vendor]
        seen = [d for d in mine if _RUNTIME_SOURCES & set(d.sources)]
        unseen = [d for d in mine if not _RUNTIME_SOURCES & set(d.sources)]
        if not seen:
            out.extend(index_by_vendor(unseen))
            continue
        out.extend(sorted(seen, key=lambda d: d.index))
        start = max(d.index for d in seen) + 1
        for n, device in enumerate(sorted(unseen, key=lambda d: d.pci_slot or "")):
            out.append(replace(device, index=start + n))
    return tuple(out)


def merge_runtimes(runtimes: Iterable[GpuRuntime]) -> GpuRuntime:
    merged: dict[str, Any] = {}
    for runtime in runtimes:
        for f in fields(GpuRuntime):
            value, have = getattr(runtime, f.name), merged.get(f.name)
            if isinstance(value, bool):
                merged[f.name] = bool(have) or value
            elif isinstance(value, tuple):
                merged[f.name] = tuple(have or ()) + tuple(v for v in value if v not in (have or ()))
            elif have is None:
                merged[f.name] = value
    if "device_nodes" in merged:
        merged["device_nodes"] = tuple(sorted(merged["device_nodes"]))
    return GpuRuntime(**merged)


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
)


def parse_probe(lines: Iterable[str]) -> GpuReport:
    """Parse ``GpuProbe``'s combined output into the merged GPUs and runtime."""
    sections = split_sections(lines)
    reports: list[GpuReport] = []
    errors: list[str] = []
    if "nvidia-smi-table" in sections:
        query, _ = sections["nvidia-smi"]
        table, rc = sections.pop("nvidia-smi-table")
        sections["nvidia-smi"] = (query + table, rc)
    for name, parser in _PARSERS:
        if name not in sections:
            continue
        body, rc = sections[name]
        reports.append(parser(body))
        if rc and name not in ("nvidia-smi", "vulkaninfo"):
            first = next((line.strip() for line in body if line.strip()), "no output")
            errors.append(f"{name} exited with status {rc}: {first}")
        if rc and name == "vulkaninfo" and not reports[-1][0]:
            errors.append(f"vulkaninfo exited with status {rc}: no usable Vulkan device")
    runtime = merge_runtimes([r for _, r in reports] + [GpuRuntime(probe_errors=tuple(errors))])
    if "rocm-version" in sections:
        version = " ".join(sections["rocm-version"][0]).strip().split("-")[0]
        runtime = replace(runtime, rocm_version=version or runtime.rocm_version)
    return merge_gpus([gpus for gpus, _ in reports]), runtime


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
