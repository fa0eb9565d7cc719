"""AMD GPUs from ``amd-smi``, where it is installed (ROCm 6.1 and newer).

Layouts read: the ``GPU: N`` blocks of ``amd-smi static`` and ``amd-smi list``
(with their ``PARTITION`` block or ``PARTITION_ID``), the box table a bare
``amd-smi`` prints (with its ``Partition-Mode`` cell, ``SPX/NPS1``), and
``--json`` (a list, or an object holding ``gpu_data``; also cut short).
Anything else is a fact error, never "no GPU".
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from lemfleet.roles.facts.gpu_pci import GpuReport, normalize_slot, unrecognised
from lemfleet.roles.facts.gpu_rocm_smi import amd_gpu, device_id, hip_order, json_document
from lemfleet.roles.hostinfo import Gpu, GpuRuntime

_MODES = re.compile(r"\b(SPX|DPX|TPX|QPX|CPX)/(NPS\d)\b")


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
            modes = _MODES.search(cells[0])
            partition = (modes.group(1), modes.group(2), None) if modes else (None, None, None)
            gpu = amd_gpu(source="amd-smi", number=hip, name=pending[1], slot=pending[0], partition=partition)
            vram = int(total.group(1)) * 1024 * 1024 if total else None
            gpus.append(replace(gpu, vram_bytes=vram))
            pending = None
    return gpus, version


def _partition(block: dict[str, str]) -> tuple[str | None, str | None, int | None]:
    compute = block.get("PARTITION.COMPUTE_PARTITION") or block.get("PARTITION.ACCELERATOR_PARTITION")
    memory = block.get("PARTITION.MEMORY_PARTITION")
    ident = block.get("PARTITION.PARTITION_ID") or block.get("PARTITION_ID") or ""
    return (
        compute if compute and compute != "N/A" else None,
        memory if memory and memory != "N/A" else None,
        int(ident) if ident.isdigit() else None,
    )


def _from_blocks(blocks: list[dict[str, str]]) -> list[Gpu]:
    gpus: list[Gpu] = []
    for block in blocks:
        number = int(block["GPU"]) if str(block["GPU"]).isdigit() else len(gpus)
        node = str(block.get("NODE_ID", ""))
        gpus.append(
            amd_gpu(
                source="amd-smi",
                number=number,
                name=block.get("ASIC.MARKET_NAME"),
                pci_device=device_id(block.get("ASIC.DEVICE_ID", "")),
                gfx=block.get("ASIC.TARGET_GRAPHICS_VERSION"),
                vram=_mib(block.get("VRAM.SIZE", "")),
                node=int(node) if node.isdigit() else None,
                slot=normalize_slot(block.get("BUS.BDF") or block.get("BDF") or ""),
                partition=_partition(block),
            )
        )
    return gpus


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """amd-smi's JSON objects as the dotted upper-case keys of its text blocks;
    ``{"value": 64289, "unit": "MB"}`` becomes ``"64289 MB"``."""
    if isinstance(value, dict) and set(value) == {"value", "unit"}:
        return {prefix: f"{value['value']} {value['unit']}"}
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}.{key.upper()}" if prefix else key.upper()))
        return out
    return {prefix: str(value)}


def _json_blocks(document: Any) -> list[dict[str, str]] | None:
    if isinstance(document, dict) and isinstance(document.get("gpu_data"), list):
        document = document["gpu_data"]
    if isinstance(document, list) and all(isinstance(d, dict) and "gpu" in d for d in document):
        return [_flatten(d) for d in document]
    if isinstance(document, dict) and document:  # cut short: {"asic": {...}, "bus": {...}}
        block = {f"{key.upper()}.{k.upper()}": str(v) for key, inner in document.items() for k, v in inner.items()}
        return [{"GPU": "0", **block}]
    return None


def parse_amd_smi(lines: Iterable[str]) -> GpuReport:
    """Parse ``amd-smi`` in any of the layouts the module docstring lists."""
    text = [line.rstrip() for line in lines]
    if any(line.startswith("+") or line.startswith("| AMD-SMI") for line in text):
        table, version = _amd_smi_table(text)
        return tuple(table), GpuRuntime(rocm_version=version)
    blocks = _amd_smi_blocks(text)
    if not blocks:
        blocks = _json_blocks(json_document(text)) or []
    if not blocks:
        return (), GpuRuntime(fact_errors=(unrecognised("amd-smi", text),))
    return hip_order(_from_blocks(blocks)), GpuRuntime()


# --partition is newer than the other flags: without it amd-smi refuses the whole call.
AMD_SMI_COMMAND = (
    "timeout 30 amd-smi static --asic --bus --vram --partition 2>&1 "
    "|| timeout 30 amd-smi static --asic --bus --vram 2>&1"
)
