"""NVIDIA GPUs from ``nvidia-smi``.

The query form is asked first::

    nvidia-smi --query-gpu=index,name,memory.total,compute_cap,driver_version,pci.bus_id \
        --format=csv,noheader,nounits

``compute_cap`` exists from nvidia-smi 510 on; older tools answer ``Field
"compute_cap" is not a valid field to query.``, and then the plain table
(``nvidia-smi``) is read instead, with the compute capability looked up by
product name. The parser reads all of these forms, plus ``nvidia-smi -L``,
and recognises the driver failures ("couldn't communicate with the NVIDIA
driver", NVML version mismatch, "No devices were found").
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pyinfra.api import FactBase

from lemfleet.roles.facts.gpu_pci import GpuReport, normalize_slot
from lemfleet.roles.gpu_tables import nvidia_cc_from_name
from lemfleet.roles.hostinfo import Gpu, GpuRuntime

QUERY_FIELDS = ("index", "name", "memory.total", "compute_cap", "driver_version", "pci.bus_id")
QUERY_COMMAND = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits 2>&1"

# Lines that mean the driver (not just this tool) is unusable.
_DRIVER_FAILURES = (
    "couldn't communicate with the nvidia driver",
    "failed to initialize nvml",
    "no devices were found",
    "nvidia-smi couldn't find libnvidia-ml.so",
    "unable to determine the device handle",
)
_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
_NOT_SUPPORTED = {"", "[N/A]", "N/A", "[Not Supported]", "[Unknown Error]"}

_TABLE_GPU = re.compile(
    r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off|WDDM|TCC)\s*\|\s*"
    r"(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s"
)
_TABLE_MEMORY = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")
_TABLE_HEADER = re.compile(
    r"NVIDIA-SMI\s+\S+\s+(?:Driver|KMD) Version:\s*(?P<driver>\S+)"
    r"(?:\s+CUDA(?: UMD)? Version:\s*(?P<cuda>[0-9.]+))?"
)
_LIST_GPU = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: [^)]*\)\s*$")


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in _NOT_SUPPORTED else text


def _mib(text: str | None) -> int | None:
    match = re.match(r"^(\d+)(?:\s*MiB)?$", text or "")
    return int(match.group(1)) * 1024 * 1024 if match else None


def _gpu(index: int, name: str, vram: int | None, cc: str | None, bus: str | None) -> Gpu:
    return Gpu(
        vendor="nvidia",
        name=name,
        index=index,
        pci_slot=normalize_slot(bus) if bus else None,
        compute_capability=cc or nvidia_cc_from_name(name),
        vram_bytes=vram,
        driver_ok=True,
        sources=("nvidia-smi",),
    )


def _csv_rows(lines: list[str]) -> tuple[list[Gpu], str | None]:
    """Query rows, positional (noheader) or named by a header line."""
    fields: tuple[str, ...] = QUERY_FIELDS
    gpus: list[Gpu] = []
    driver = None
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if (cells and cells[0] in QUERY_FIELDS) or "index" in cells:
            fields = tuple(re.sub(r"\s*\[.*\]$", "", c) for c in cells)
            continue
        if len(cells) != len(fields) or len(cells) < 2:
            continue
        row = dict(zip(fields, cells, strict=True))
        index = row.get("index", "")
        if not index.isdigit():
            continue
        driver = _value(row.get("driver_version", "")) or driver
        gpus.append(
            _gpu(
                int(index),
                row.get("name", "NVIDIA GPU"),
                _mib(_value(row.get("memory.total", ""))),
                _value(row.get("compute_cap", "")),
                _value(row.get("pci.bus_id", "")),
            )
        )
    return gpus, driver


def _table_rows(lines: list[str]) -> tuple[list[Gpu], str | None, str | None]:
    gpus: list[Gpu] = []
    driver = cuda = None
    for number, line in enumerate(lines):
        header = _TABLE_HEADER.search(line)
        if header:
            driver, cuda = header["driver"], header["cuda"]
        match = _TABLE_GPU.match(line)
        if not match:
            continue
        memory = _TABLE_MEMORY.search(lines[number + 1]) if number + 1 < len(lines) else None
        vram = int(memory.group(2)) * 1024 * 1024 if memory else None
        gpus.append(_gpu(int(match["index"]), match["name"], vram, None, match["bus"]))
    return gpus, driver, cuda


def parse_nvidia_smi(lines: Iterable[str]) -> GpuReport:
    """Parse any mix of nvidia-smi's query CSV, table, ``-L`` list and error lines."""
    text = [line.rstrip() for line in lines]
    errors = [line.strip() for line in text if any(f in line.lower() for f in _DRIVER_FAILURES)]
    notes = [
        f"nvidia-smi does not know the field {m.group(1)!r} (nvidia-smi older than 510)"
        for line in text
        if (m := _INVALID_FIELD.search(line))
    ]
    gpus, driver = _csv_rows(text)
    cuda = None
    if not gpus:
        gpus, driver, cuda = _table_rows(text)
    if not gpus:
        gpus = [_gpu(int(m["index"]), m["name"], None, None, None) for line in text if (m := _LIST_GPU.match(line))]
    if errors:
        gpus = []
    runtime = GpuRuntime(
        nvidia_smi_ok=bool(gpus),
        nvidia_driver_version=driver if gpus else None,
        nvidia_cuda_version=cuda,
        nvidia_error=errors[0] if errors else None,
        probe_errors=tuple(notes) if not gpus else (),
    )
    return tuple(gpus), runtime


class NvidiaSmi(FactBase[GpuReport]):
    """NVIDIA GPUs and driver state from ``nvidia-smi``; the plain table is read
    when the query form fails.

    Sample output::

        0, NVIDIA H100 80GB HBM3, 81559, 9.0, 550.90.07, 00000000:53:00.0
        1, NVIDIA H100 80GB HBM3, 81559, 9.0, 550.90.07, 00000000:64:00.0

    or, when the driver is not loaded::

        NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. ...
    """

    def requires_command(self) -> str:
        return "nvidia-smi"

    def command(self) -> str:
        return f"{QUERY_COMMAND} || nvidia-smi 2>&1; true"

    @staticmethod
    def default() -> GpuReport:
        return (), GpuRuntime()

    def process(self, output: list[str]) -> GpuReport:
        return parse_nvidia_smi(output)
