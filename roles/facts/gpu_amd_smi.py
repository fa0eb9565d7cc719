"""AMD GPUs from ``rocm-smi`` and ``amd-smi``, where they are installed.

They add marketing names, VRAM totals and the KFD node or PCI address that
joins them to the other probes. Their own GPU numbering is not HIP's (rocm-smi
lists cards in DRM order, so KFD nodes 2, 4, 3 can be devices 0, 1, 2); where
the KFD node is known the index is its rank among the nodes, which is HIP's.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import replace

from pyinfra.api import FactBase

from lemfleet.roles.facts.gpu_pci import GpuReport, normalize_slot, with_table_facts
from lemfleet.roles.gpu_tables import AMD_PCI, APU_GFX, GFX_RE
from lemfleet.roles.hostinfo import Gpu, GpuRuntime

_NOT_A_VALUE = {"", "N/A", "n/a", "None"}
_ANSI = re.compile(r"(\x1b|\^\[)\[[0-9;]*m")


def _device_id(text: str) -> str | None:
    match = re.fullmatch(r"0x([0-9a-fA-F]{1,4})", text.strip())
    return f"{int(match.group(1), 16):04x}" if match else None


def _bracketed(name: str) -> str:
    inner = re.search(r"\[([^\]]+)\]\s*$", name)
    return inner.group(1) if inner else name


def _amd_gpu(
    *,
    source: str,
    number: int,
    name: str | None = None,
    device_id: str | None = None,
    gfx: str | None = None,
    vram: int | None = None,
    node: int | None = None,
    slot: str | None = None,
) -> Gpu:
    known = device_id if device_id in AMD_PCI else None
    if name and _device_id(name):  # ROCm 4's "Card series: 0x738c" is a PCI id
        known = known or (_device_id(name) if _device_id(name) in AMD_PCI else None)
        name = None
    label = name or (AMD_PCI[known].name if known else None) or f"AMD GPU {gfx or number}"
    gpu = Gpu(
        vendor="amd",
        name=label,
        index=number,
        pci_slot=slot,
        pci_id=f"1002:{known}" if known else None,
        gfx_target=gfx if gfx and GFX_RE.fullmatch(gfx) else None,
        vram_bytes=vram,
        integrated=gfx in APU_GFX,
        driver_ok=True,
        sources=(source,),
        kfd_node=node,
    )
    return with_table_facts(gpu)


def _hip_order(gpus: list[Gpu]) -> tuple[Gpu, ...]:
    """Re-number by KFD node (HIP's order) when every GPU's node is known."""
    if gpus and all(g.kfd_node is not None for g in gpus):
        order = sorted(range(len(gpus)), key=lambda i: gpus[i].kfd_node or 0)
        rank = {position: hip for hip, position in enumerate(order)}
        return tuple(replace(g, index=rank[i]) for i, g in enumerate(gpus))
    return tuple(gpus)


# -- rocm-smi ---------------------------------------------------------------------


def _rocm_smi_csv(lines: list[str]) -> list[Gpu]:
    rows = list(csv.DictReader(lines))
    gpus = []
    for number, row in enumerate(rows):
        get = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}.get
        series = get("card series", "")
        vram = get("vram total memory (b)", "")
        node = get("node id", "")
        gpus.append(
            _amd_gpu(
                source="rocm-smi",
                number=number,
                name=_bracketed(series) if series not in _NOT_A_VALUE else None,
                device_id=_device_id(get("card model", "")),
                gfx=get("gfx version") or None,
                vram=int(vram) if vram.isdigit() else None,
                node=int(node) if node.isdigit() else None,
            )
        )
    return gpus


def _rocm_smi_keyed(lines: list[str]) -> list[Gpu]:
    """``GPU[0]\t\t: Key: \t\tvalue`` lines (``-i``, ``--showmeminfo``, ``--showproductname``)."""
    cards: dict[int, dict[str, str]] = {}
    for line in lines:
        match = re.match(r"^GPU\[(\d+)\]\s*:\s*([^:]+?):\s*(.*?)\s*$", line)
        if match:
            cards.setdefault(int(match.group(1)), {})[match.group(2).lower()] = match.group(3)
    gpus = []
    for number, card in sorted(cards.items()):
        name = card.get("device name") or card.get("card series")
        vram = card.get("vram total memory (b)", "")
        gpus.append(
            _amd_gpu(
                source="rocm-smi",
                number=number,
                name=_bracketed(name) if name and name not in _NOT_A_VALUE else None,
                device_id=_device_id(card.get("device id", "")),
                gfx=card.get("gfx version"),
                vram=int(vram) if vram.isdigit() else None,
            )
        )
    return gpus


def _rocm_smi_concise(lines: list[str]) -> list[Gpu]:
    """The default table: ``Device Node IDs(DID, GUID) ...`` (ROCm 6+) or the
    older ``GPU Temp AvgPwr ...`` one, which names no device."""
    header = next((line for line in lines if re.match(r"^(Device|GPU)\s+", line)), "")
    has_node = header.split()[:2] == ["Device", "Node"]
    gpus = []
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].isdigit() or not header:
            continue
        node = int(fields[1]) if has_node and fields[1].isdigit() else None
        did = _device_id(fields[2].rstrip(",")) if has_node and len(fields) > 2 else None
        gpus.append(_amd_gpu(source="rocm-smi", number=int(fields[0]), device_id=did, node=node))
    return gpus


def parse_rocm_smi(lines: Iterable[str]) -> GpuReport:
    """Parse ``rocm-smi`` output in its CSV (``--csv``), keyed (``-i``,
    ``--showmeminfo vram``, ``--showproductname``) or concise (default) form."""
    text = [_ANSI.sub("", line).rstrip() for line in lines]
    if any(line.startswith("device,") for line in text):
        start = next(i for i, line in enumerate(text) if line.startswith("device,"))
        gpus = _rocm_smi_csv(text[start:])
    elif any(line.startswith("GPU[") for line in text):
        gpus = _rocm_smi_keyed(text)
    else:
        gpus = _rocm_smi_concise(text)
    return _hip_order(gpus), GpuRuntime()


class RocmSmi(FactBase[GpuReport]):
    """AMD GPUs from ``rocm-smi --showproductname --showmeminfo vram --csv``.

    Sample output::

        device,VRAM Total Memory (B),VRAM Total Used Memory (B),Card Series,Card Model,...,Node ID,GUID,GFX Version
        card0,21458059264,27856896,Radeon RX 7900 XT,0x744c,...,1,26967,gfx1100
    """

    def requires_command(self) -> str:
        return "rocm-smi"

    def command(self) -> str:
        return "timeout 30 rocm-smi --showproductname --showmeminfo vram --csv 2>&1; true"

    @staticmethod
    def default() -> GpuReport:
        return (), GpuRuntime()

    def process(self, output: list[str]) -> GpuReport:
        return parse_rocm_smi(output)


# -- amd-smi ----------------------------------------------------------------------


def _amd_smi_blocks(lines: list[str]) -> list[dict[str, str]]:
    """``GPU: N`` blocks of indented ``KEY: value`` lines, flattened to dotted keys."""
    blocks: list[dict[str, str]] = []
    stack: list[tuple[int, str]] = []
    in_gpu = False
    for line in lines:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if indent == 0:
            in_gpu = key == "GPU"
            if in_gpu:
                blocks.append({"GPU": value})
            stack = []
            continue
        if not in_gpu:
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        if value:
            blocks[-1].setdefault(path, value)
        else:
            stack.append((indent, key))
    return blocks


def _mib(text: str) -> int | None:
    match = re.match(r"^(\d+)\s*MB$", text.strip())
    return int(match.group(1)) * 1024 * 1024 if match else None


def _amd_smi_table(lines: list[str]) -> tuple[list[Gpu], str | None]:
    """The box table that a bare ``amd-smi`` prints."""
    version = None
    gpus: list[Gpu] = []
    pending: tuple[str, str] | None = None
    for line in lines:
        found = re.search(r"ROCm version:\s*([0-9][0-9.]*)", line)
        version = found.group(1) if found else version
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first = cells[0].split(None, 1) if cells and cells[0] else []
        if first and normalize_slot(first[0]) and len(first) == 2:
            pending = (normalize_slot(first[0]) or "", first[1])
        elif pending and first and first[0].isdigit() and len(cells) > 1:
            numbers = cells[0].split()
            total = re.search(r"/\s*(\d+)\s*MB", cells[-1])
            hip = int(numbers[1]) if len(numbers) > 1 and numbers[1].isdigit() else len(gpus)
            gpu = _amd_gpu(source="amd-smi", number=hip, name=pending[1], slot=pending[0])
            vram = int(total.group(1)) * 1024 * 1024 if total else None
            gpus.append(replace(gpu, vram_bytes=vram))
            pending = None
    return gpus, version


def parse_amd_smi(lines: Iterable[str]) -> GpuReport:
    """Parse ``amd-smi static`` / ``amd-smi list`` blocks or the bare ``amd-smi`` table."""
    text = [line.rstrip() for line in lines]
    if any(line.startswith("+") or line.startswith("| AMD-SMI") for line in text):
        gpus, version = _amd_smi_table(text)
        return tuple(gpus), GpuRuntime(rocm_version=version)
    gpus = []
    for block in _amd_smi_blocks(text):
        number = int(block["GPU"]) if block["GPU"].isdigit() else len(gpus)
        node = block.get("NODE_ID", "")
        gpus.append(
            _amd_gpu(
                source="amd-smi",
                number=number,
                name=block.get("ASIC.MARKET_NAME"),
                device_id=_device_id(block.get("ASIC.DEVICE_ID", "")),
                gfx=block.get("ASIC.TARGET_GRAPHICS_VERSION"),
                vram=_mib(block.get("VRAM.SIZE", "")),
                node=int(node) if node.isdigit() else None,
                slot=normalize_slot(block.get("BUS.BDF") or block.get("BDF") or ""),
            )
        )
    return _hip_order(gpus), GpuRuntime()


class AmdSmi(FactBase[GpuReport]):
    """AMD GPUs from ``amd-smi static --asic --bus --vram``.

    Sample output (shortened)::

        GPU: 0
            ASIC:
                MARKET_NAME: MI308X
                DEVICE_ID: 0x74a2
                TARGET_GRAPHICS_VERSION: gfx942
            BUS:
                BDF: 0000:01:00.0
            VRAM:
                SIZE: 64289 MB
    """

    def requires_command(self) -> str:
        return "amd-smi"

    def command(self) -> str:
        return "timeout 30 amd-smi static --asic --bus --vram 2>&1; true"

    @staticmethod
    def default() -> GpuReport:
        return (), GpuRuntime()

    def process(self, output: list[str]) -> GpuReport:
        return parse_amd_smi(output)
