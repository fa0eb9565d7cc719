"""NVIDIA GPUs, MIG instances and driver state from ``nvidia-smi``.

The probe asks three things: the query form (fields below; ``compute_cap``
exists from nvidia-smi 510 on, older tools answer ``Field "compute_cap" is not
a valid field to query.``), the ``-L`` listing (GPU and MIG UUIDs, MIG
profiles), and the plain table when the query fails or MIG is on (the table's
"MIG devices" list gives each instance's memory). The parser reads any mix of
these. A driver failure is diagnosed by ``gpu_faults``; output in a layout it
does not know (``-q``, ``nvidia-smi vgpu``, a reworded table) is a fact error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from lemfleet.roles.facts.gpu_faults import tool_faults
from lemfleet.roles.facts.gpu_pci import GpuReport, normalize_slot, unrecognised
from lemfleet.roles.hostinfo import Gpu, GpuRuntime, MigDevice
from lemfleet.roles.platform_nvidia import nvidia_cc_from_name

QUERY_FIELDS = (
    "index", "name", "memory.total", "compute_cap", "driver_version", "pci.bus_id", "uuid", "mig.mode.current",
)  # fmt: skip
QUERY_COMMAND = f"nvidia-smi --query-gpu={','.join(QUERY_FIELDS)} --format=csv,noheader,nounits 2>&1"

_INVALID_FIELD = re.compile(r'Field "([^"]+)" is not a valid field to query')
_NOT_SUPPORTED = {"", "[N/A]", "N/A", "[Not Supported]", "[Unknown Error]"}
_MIG_MODES = {"Enabled": True, "Disabled": False}

_TABLE_GPU = re.compile(
    r"^\|\s+(?P<index>\d+)\s+(?P<name>.+?)\s+(?:On|Off|WDDM|TCC)\s*\|\s*"
    r"(?P<bus>[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])\s"
)
_TABLE_MEMORY = re.compile(r"(\d+)MiB\s*/\s*(\d+)MiB")
_TABLE_HEADER = re.compile(
    r"NVIDIA-SMI\s+\S+\s+(?:Driver|KMD) Version:\s*(?P<driver>\S+)"
    r"(?:\s+CUDA(?: UMD)? Version:\s*(?P<cuda>[0-9.]+))?"
)
# "|  0    2   0   0  |           11091MiB / 40448MiB    | ..." (GPU, GI, CI, MIG device)
_TABLE_MIG = re.compile(r"^\|\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+\|\s+\d+MiB\s*/\s*(\d+)MiB")
_LIST_GPU = re.compile(r"^GPU (?P<index>\d+): (?P<name>.+?) \(UUID: (?P<uuid>[^)]*)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (?P<profile>\S+)\s+Device\s+(?P<device>\d+): \(UUID: (?P<uuid>[^)]+)\)\s*$")
_PROFILE_GB = re.compile(r"\.(\d+)gb$")


def _value(text: str | None) -> str | None:
    text = (text or "").strip()
    return None if text in _NOT_SUPPORTED else text


def _mib(text: str | None) -> int | None:
    match = re.match(r"^(\d+)(?:\s*MiB)?$", text or "")
    return int(match.group(1)) * 1024 * 1024 if match else None


def _gpu(index: int, name: str, vram: int | None, cc: str | None, bus: str | None, **more: object) -> Gpu:
    gpu = Gpu(
        vendor="nvidia",
        name=name,
        index=index,
        pci_slot=normalize_slot(bus) if bus else None,
        compute_capability=cc or nvidia_cc_from_name(name),
        vram_bytes=vram,
        driver_ok=True,
        sources=("nvidia-smi",),
    )
    return replace(gpu, **more) if more else gpu  # type: ignore[arg-type]


def _plausible(row: dict[str, str]) -> bool:
    if "index" in row:
        return row["index"].isdigit()
    return row.get("uuid", "").startswith("GPU-") or row.get("mig.mode.current", "") in (*_MIG_MODES, "[N/A]")


def _csv_rows(lines: list[str]) -> tuple[list[Gpu], str | None]:
    """Query rows: positional (noheader, also the older six-field form) or named by a header."""
    fields: tuple[str, ...] = QUERY_FIELDS
    header = False
    gpus: list[Gpu] = []
    driver = None
    for line in lines:
        if "|" in line:
            continue
        cells = [c.strip() for c in line.split(",")]
        names = tuple(re.sub(r"\s*\[.*\]$", "", c) for c in cells)
        if names[0] in QUERY_FIELDS or "mig.mode.pending" in names:
            fields, header = names, True
            continue
        if not (len(cells) == len(fields) or (not header and 6 <= len(cells) < len(fields))):
            continue
        row = dict(zip(fields, cells, strict=False))
        if not _plausible(row):
            continue
        driver = _value(row.get("driver_version")) or driver
        mig = _MIG_MODES.get(row.get("mig.mode.current", ""))
        index = int(row["index"]) if "index" in row else len(gpus)
        gpus.append(
            _gpu(index, row.get("name", "NVIDIA GPU"), _mib(_value(row.get("memory.total"))),
                 _value(row.get("compute_cap")), _value(row.get("pci.bus_id")),
                 uuid=_value(row.get("uuid")), mig_enabled=mig)
        )  # fmt: skip
    return gpus, driver


def _mig_mode_below(lines: list[str], number: int) -> bool | None:
    """The table's "MIG M." cell: the last cell of the GPU's second or third line."""
    for line in lines[number + 1 : number + 3]:
        last = line.strip().strip("|").split("|")[-1].strip()
        if last in _MIG_MODES:
            return _MIG_MODES[last]
    return None


def _table_rows(lines: list[str]) -> tuple[list[Gpu], str | None, str | None, dict[tuple[int, int], int]]:
    gpus: list[Gpu] = []
    driver = cuda = None
    mig_memory: dict[tuple[int, int], int] = {}
    for number, line in enumerate(lines):
        header = _TABLE_HEADER.search(line)
        if header:
            driver, cuda = header["driver"], header["cuda"]
        mig = _TABLE_MIG.match(line)
        if mig:
            gpu, _, _, device, total = (int(g) for g in mig.groups())
            mig_memory[(gpu, device)] = total * 1024 * 1024
            continue
        match = _TABLE_GPU.match(line)
        if not match or any(g.index == int(match["index"]) for g in gpus):
            continue
        memory = _TABLE_MEMORY.search(lines[number + 1]) if number + 1 < len(lines) else None
        vram = int(memory.group(2)) * 1024 * 1024 if memory else None
        gpus.append(
            _gpu(
                int(match["index"]), match["name"], vram, None, match["bus"], mig_enabled=_mig_mode_below(lines, number)
            )
        )
    return gpus, driver, cuda, mig_memory


def _listing(lines: list[str], mig_memory: dict[tuple[int, int], int]) -> list[Gpu]:
    """``nvidia-smi -L``: each GPU with its UUID, and the MIG instances under it."""
    gpus: list[Gpu] = []
    for line in lines:
        if found := _LIST_GPU.match(line):
            uuid = found["uuid"] if found["uuid"].startswith("GPU-") and len(found["uuid"]) > 4 else None
            gpus.append(_gpu(int(found["index"]), found["name"], None, None, None, uuid=uuid))
        elif (mig := _LIST_MIG.match(line)) and gpus:
            device = int(mig["device"])
            vram = mig_memory.get((gpus[-1].index, device))
            size = _PROFILE_GB.search(mig["profile"])
            from_profile = vram is None and size is not None
            if from_profile and size:
                vram = int(size.group(1)) * 10**9  # "40gb" in decimal GB: never more than the instance has
            instance = MigDevice(mig["uuid"], mig["profile"], device, vram, from_profile)
            gpus[-1] = replace(gpus[-1], mig_enabled=True, mig_devices=(*gpus[-1].mig_devices, instance))
    return gpus


def _join(primary: list[Gpu], listed: list[Gpu]) -> list[Gpu]:
    """Add the listing's UUIDs and MIG instances to the query's or table's GPUs, by index."""
    if not primary:
        return listed
    by_index = {g.index: g for g in listed}
    out = []
    for gpu in primary:
        extra = by_index.get(gpu.index)
        if extra is not None:
            mig = True if extra.mig_devices else gpu.mig_enabled
            gpu = replace(gpu, uuid=gpu.uuid or extra.uuid, mig_devices=extra.mig_devices, mig_enabled=mig)
        out.append(gpu)
    return out


def parse_nvidia_smi(lines: Iterable[str]) -> GpuReport:
    """Parse any mix of nvidia-smi's query CSV, table, ``-L`` listing and error lines."""
    text = [line.rstrip() for line in lines]
    faults = tool_faults("nvidia-smi", text)
    notes = [
        f"nvidia-smi does not know the field {m.group(1)!r} (nvidia-smi older than 510)"
        for line in text
        if (m := _INVALID_FIELD.search(line))
    ]
    gpus, driver = _csv_rows(text)
    table, table_driver, cuda, mig_memory = _table_rows(text)
    driver = driver or table_driver
    if table and (not gpus or all(g.name == "NVIDIA GPU" for g in gpus)):
        gpus = table
    gpus = _join(gpus, _listing(text, mig_memory))
    if faults:
        gpus = []
    errors: tuple[str, ...] = ()
    if not gpus and not faults and not notes and any(line.strip() for line in text):
        errors = (unrecognised("nvidia-smi", text),)
    runtime = GpuRuntime(
        nvidia_smi_ok=bool(gpus),
        nvidia_driver_version=driver if gpus else None,
        nvidia_cuda_version=cuda,
        nvidia_error=faults[0].evidence if faults else None,
        probe_errors=tuple(notes) if not gpus else (),
        fact_errors=errors,
        faults=faults,
    )
    return tuple(gpus), runtime
