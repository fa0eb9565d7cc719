"""AMD GPUs from ``rocm-smi``, and the helpers ``amd-smi``'s parser shares.

rocm-smi adds marketing names, VRAM totals, partition modes and the KFD node
that joins it to the other probes. Its own GPU numbering is not HIP's (it lists
cards in DRM order, so KFD nodes 2, 4, 3 can be devices 0, 1, 2); where the KFD
node is known the index is its rank among the nodes, which is HIP's.

Layouts read: ``--csv``, the keyed ``GPU[0] : Key: value`` lines (``-i``,
``--showmeminfo vram``, ``--showproductname``), ``--json`` (complete, or cut
short as posts often are), and the concise default table, both the ROCm 6+ one
with its ``Partitions (Mem, Compute, ID)`` column and the older ``GPU Temp``
one. Anything else is a fact error, never "no GPU".
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from lemfleet.roles.facts.gpu_pci import GpuReport, normalize_slot, unrecognised, with_table_facts
from lemfleet.roles.hostinfo import Gpu, GpuRuntime
from lemfleet.roles.platform_amd import AMD_PCI, APU_GFX, GFX_RE

NOT_A_VALUE = {"", "N/A", "n/a", "None"}
ANSI = re.compile(r"(\x1b|\^\[)\[[0-9;]*m")
PARTITION = re.compile(r"\b(NPS\d|N/A),\s+(SPX|DPX|TPX|QPX|CPX|N/A),\s+(\d+|N/A)\b")


def device_id(text: str) -> str | None:
    match = re.fullmatch(r"0x([0-9a-fA-F]{1,4})", text.strip())
    return f"{int(match.group(1), 16):04x}" if match else None


def _bracketed(name: str) -> str:
    inner = re.search(r"\[([^\]]+)\]\s*$", name)
    return inner.group(1) if inner else name


def _value(text: str | None) -> str | None:
    return None if text is None or text.strip() in NOT_A_VALUE else text.strip()


def amd_gpu(
    *,
    source: str,
    number: int,
    name: str | None = None,
    pci_device: str | None = None,
    gfx: str | None = None,
    vram: int | None = None,
    node: int | None = None,
    slot: str | None = None,
    partition: tuple[str | None, str | None, int | None] = (None, None, None),
) -> Gpu:
    """One AMD GPU from an SMI tool. An unknown device id is kept (vendor 1002 and
    the device number), so the plan can name it; the gfx name is checked later."""
    if name and device_id(name):  # ROCm 4's "Card series: 0x738c" is a PCI id
        pci_device = pci_device or device_id(name)
        name = None
    known = AMD_PCI.get(pci_device or "")
    label = name or (known.name if known else None)
    label = label or (f"AMD GPU [1002:{pci_device}]" if pci_device else f"AMD GPU {gfx or number}")
    compute, memory, partition_id = partition
    gpu = Gpu(
        vendor="amd",
        name=label,
        index=number,
        pci_slot=slot,
        pci_id=f"1002:{pci_device}" if pci_device else None,
        gfx_target=gfx if gfx and GFX_RE.fullmatch(gfx) else None,
        vram_bytes=vram,
        integrated=gfx in APU_GFX,
        driver_ok=True,
        sources=(source,),
        kfd_node=node,
        compute_partition=compute,
        memory_partition=memory,
        partition_id=partition_id,
    )
    return with_table_facts(gpu)


def hip_order(gpus: list[Gpu]) -> tuple[Gpu, ...]:
    """Re-number by KFD node (HIP's order) when every GPU's node is known."""
    if gpus and all(g.kfd_node is not None for g in gpus):
        order = sorted(range(len(gpus)), key=lambda i: gpus[i].kfd_node or 0)
        rank = {position: hip for hip, position in enumerate(order)}
        return tuple(replace(g, index=rank[i]) for i, g in enumerate(gpus))
    return tuple(gpus)


def json_document(lines: list[str]) -> Any:
    """The JSON a tool printed after any warning lines; a document cut short (as
    posted) is read line by line into ``{object key: {key: value}}``."""
    start = next((i for i, line in enumerate(lines) if line.lstrip()[:1] in ("{", "[")), None)
    if start is None:
        return None
    text = "\n".join(lines[start:])
    try:
        return json.loads(text)
    except ValueError:
        pass
    objects: dict[str, dict[str, Any]] = {}
    current: dict[str, Any] | None = None
    for line in lines[start:]:
        opened = re.match(r'^\s*"([^"]+)":\s*\{\s*$', line)
        pair = re.match(r'^\s*"([^"]+)":\s*("(?:[^"\\]|\\.)*"|-?\d+)\s*,?\s*$', line)
        if opened:
            current = objects.setdefault(opened.group(1), {})
        elif pair and current is not None:
            current[pair.group(1)] = json.loads(pair.group(2))
    return objects or None


def _number(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _card_gpu(number: int, card: dict[str, str]) -> Gpu:
    """One card of the keyed, CSV or JSON layouts (keys lower-cased)."""
    name = _value(card.get("device name")) or _value(card.get("card series"))
    # "Card model" is the device id on ROCm 6 but the subsystem id on older
    # releases (MI100: 0x0c34), so it counts only when the table knows it.
    model = device_id(card.get("card model", ""))
    pci_device = device_id(card.get("device id", "")) or device_id(name or "")
    pci_device = pci_device or (model if model in AMD_PCI else None)
    return amd_gpu(
        source="rocm-smi",
        number=number,
        name=_bracketed(name) if name else None,
        pci_device=pci_device,
        gfx=_value(card.get("gfx version")),
        vram=_number(card.get("vram total memory (b)", "")),
        node=_number(card.get("node id", "")),
        slot=normalize_slot(card.get("pci bus", "")),
    )


def _cards_from_csv(lines: list[str]) -> list[Gpu]:
    rows = list(csv.DictReader(lines))
    return [
        _card_gpu(number, {k.strip().lower(): (v or "").strip() for k, v in row.items() if k})
        for number, row in enumerate(rows)
    ]


def _cards_from_keyed(lines: list[str]) -> list[Gpu]:
    cards: dict[int, dict[str, str]] = {}
    for line in lines:
        match = re.match(r"^GPU\[(\d+)\]\s*:\s*([^:]+?):\s*(.*?)\s*$", line)
        if match:
            cards.setdefault(int(match.group(1)), {}).setdefault(match.group(2).lower(), match.group(3))
    return [_card_gpu(number, card) for number, card in sorted(cards.items())]


def _cards_from_json(document: dict[str, Any]) -> list[Gpu]:
    cards = sorted(
        (int(key[4:]), {str(k).lower().rstrip(":"): str(v) for k, v in value.items()})
        for key, value in document.items()
        if re.fullmatch(r"card\d+", key) and isinstance(value, dict)
    )
    return [_card_gpu(number, card) for number, card in cards]


def _partition(line: str) -> tuple[str | None, str | None, int | None]:
    found = PARTITION.search(line)
    if not found:
        return None, None, None
    memory, compute, ident = (None if g == "N/A" else g for g in found.groups())
    return compute, memory, int(ident) if ident else None


def _cards_from_concise(lines: list[str]) -> list[Gpu] | None:
    """The default table: ``Device Node IDs(DID, GUID) ...`` (ROCm 6+) or the
    older ``GPU Temp AvgPwr ...`` one, which names no device. None when there
    is no such header."""
    header = next((line for line in lines if re.match(r"^(Device|GPU)\s+(Node|Temp)\b", line)), None)
    if header is None:
        return None
    has_node = header.split()[:2] == ["Device", "Node"]
    gpus = []
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].isdigit():
            continue
        node = int(fields[1]) if has_node and fields[1].isdigit() else None
        did = device_id(fields[2].rstrip(",")) if has_node and len(fields) > 2 else None
        gpus.append(
            amd_gpu(source="rocm-smi", number=int(fields[0]), pci_device=did, node=node, partition=_partition(line))
        )
    return gpus


def parse_rocm_smi(lines: Iterable[str]) -> GpuReport:
    """Parse ``rocm-smi`` in any of the layouts the module docstring lists."""
    text = [ANSI.sub("", line).rstrip() for line in lines]
    document = json_document(text)
    if isinstance(document, dict) and any(re.fullmatch(r"card\d+", k) for k in document):
        gpus: list[Gpu] | None = _cards_from_json(document)
    elif any(line.startswith("device,") for line in text):
        start = next(i for i, line in enumerate(text) if line.startswith("device,"))
        gpus = _cards_from_csv(text[start:])
    elif any(line.startswith("GPU[") for line in text):
        gpus = _cards_from_keyed(text)
    else:
        gpus = _cards_from_concise(text)
    if gpus is None:
        return (), GpuRuntime(fact_errors=(unrecognised("rocm-smi", text),))
    return hip_order(gpus), GpuRuntime()
