"""Merging several probes' views of the same GPUs into one Gpu per device.

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
from collections.abc import Iterable, Sequence
from dataclasses import fields, replace
from typing import Any

from lemfleet.roles.facts.gpu_pci import index_by_vendor
from lemfleet.roles.hostinfo import Gpu, GpuRuntime

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
        if f.name in ("vendor", "name", "index", "integrated", "driver_ok", "sources", "notes"):
            continue
        if getattr(old, f.name) in (None, ()) and getattr(new, f.name) not in (None, ()):
            changes[f.name] = getattr(new, f.name)
    changes["notes"] = tuple(dict.fromkeys(old.notes + new.notes))
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
