"""Physical devices behind the runtime's logical GPUs: partitions and MIG instances.

The GPU tools list what a runtime enumerates, which is not always one entry per
physical GPU:

- An AMD Instinct MI300-class part in a compute-partition mode (DPX, QPX, CPX)
  is listed once per partition. In memory mode NPS1 every partition reports the
  whole memory pool, so adding the partitions up would multiply the VRAM; in
  NPS4, and on MI300A in TPX/CPX, each partition has memory of its own. Which
  case a listing is comes from the sizes themselves, checked against the part's
  physical memory (``PHYSICAL_VRAM_GIB``), and from the memory mode.
- An NVIDIA GPU with MIG on is listed once, but a CUDA process sees exactly
  one MIG instance (``CUDA_VISIBLE_DEVICES=MIG-<uuid>``), with that instance's
  memory, never the GPU's.

The plan counts and budgets physical devices; one server per partition or MIG
instance is the operator's choice (``server_instances``, issue 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lemfleet.roles.hostinfo import Gpu, MigDevice
from lemfleet.roles.platform_amd import PHYSICAL_VRAM_GIB

GIB = 2**30
_SPLIT_MODES = ("DPX", "TPX", "QPX", "CPX")


@dataclass(frozen=True)
class Physical:
    """One physical GPU and the logical GPUs (partitions) it is listed as."""

    members: tuple[Gpu, ...]
    vram_bytes: int | None
    shared_pool: bool  # the partitions share one memory pool (counted once)

    @property
    def mode(self) -> str:
        first = self.members[0]
        return "/".join(p for p in (first.compute_partition, first.memory_partition) if p)


def _label(gpu: Gpu) -> str:
    return f"{gpu.vendor}[{gpu.index}]"


def _same_device(previous: Gpu, gpu: Gpu) -> bool:
    return (
        previous.vendor == gpu.vendor
        and previous.compute_partition == gpu.compute_partition
        and previous.partition_id is not None
        and gpu.partition_id == previous.partition_id + 1
        and (previous.pci_id == gpu.pci_id or None in (previous.pci_id, gpu.pci_id))
    )


def _physical(members: list[Gpu]) -> Physical:
    sizes = [m.vram_bytes for m in members]
    if len(members) == 1:
        return Physical(tuple(members), sizes[0], False)
    device = next((m.pci_id[5:] for m in members if m.pci_id), "")
    pool = PHYSICAL_VRAM_GIB.get(device, 0) * GIB
    known = [s for s in sizes if s]
    # A partition reporting more than its share of the part's memory reports the whole pool;
    # without the sizes, the memory mode decides (NPS1: one pool).
    shared = max(known) > 1.1 * pool / len(members) if known and pool else members[0].memory_partition in (None, "NPS1")
    if len(known) < len(members):
        vram = max(known) if known and shared else None
    else:
        vram = max(known) if shared else sum(known)
    return Physical(tuple(members), vram, shared)


def physical_gpus(gpus: Sequence[Gpu]) -> tuple[Physical, ...]:
    """Group logical GPUs into physical devices: partitions 1..N-1 of a partitioned
    part follow partition 0 in the runtime's order; every other GPU is its own device."""
    groups: list[list[Gpu]] = []
    for gpu in sorted(gpus, key=lambda g: (g.vendor, g.index)):
        partitioned = gpu.compute_partition in _SPLIT_MODES and gpu.partition_id
        if partitioned and groups and _same_device(groups[-1][-1], gpu):
            groups[-1].append(gpu)
        else:
            groups.append([gpu])
    return tuple(_physical(group) for group in groups)


def explain_partitions(physical: Physical) -> str:
    """The reason line for a partitioned device, or "" for a plain one."""
    if len(physical.members) < 2:
        return ""
    first = physical.members[0]
    labels = ", ".join(_label(m) for m in physical.members)
    size = f"{(physical.vram_bytes or 0) / GIB:.1f} GiB" if physical.vram_bytes else "size unknown"
    memory = (
        f"they share one memory pool ({size}), counted once"
        if physical.shared_pool
        else f"each has memory of its own ({size} in all)"
    )
    return (
        f"partitions: {labels} are the {len(physical.members)} {physical.mode} partitions of one "
        f"{first.name}; {memory}; planned as one physical device (one server per partition "
        "is server_instances: per-gpu)"
    )


def budget(chosen: Sequence[Gpu]) -> tuple[int, list[str], tuple[float, ...]]:
    """VRAM of the chosen GPUs counted per physical device, the GPUs whose VRAM is
    unknown, and each logical GPU's share for --tensor-split (equal within a device)."""
    groups = physical_gpus(chosen)
    total = sum(p.vram_bytes or 0 for p in groups)
    unknown = [_label(m) for p in groups if not p.vram_bytes for m in p.members]
    shares: dict[int, float] = {}
    for group in groups:
        for member in group.members:
            part = (group.vram_bytes or 0) / len(group.members)
            shares[id(member)] = part / total if total and not unknown else 1 / len(chosen)
    split = tuple(round(shares[id(g)], 4) for g in chosen) if len(chosen) > 1 else ()
    return total, unknown, split


def mig_instances(gpus: Sequence[Gpu]) -> list[tuple[Gpu, MigDevice]]:
    return [(gpu, mig) for gpu in gpus if gpu.mig_enabled for mig in gpu.mig_devices]


def largest_mig(gpus: Sequence[Gpu]) -> tuple[Gpu, MigDevice] | None:
    """The MIG instance with the most memory (the first of equals), for a single server."""
    instances = mig_instances(gpus)
    return max(instances, key=lambda pair: pair[1].vram_bytes or 0) if instances else None
