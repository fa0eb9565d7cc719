"""GPUs as the PCI bus sees them, and the GPU device nodes.

These work with no GPU driver or runtime installed, so a GPU whose driver is
missing or broken is still seen. Only display controllers (PCI classes 0300
VGA, 0302 3D, 0380 other) from AMD (1002) and NVIDIA (10de) count: the ASPEED
BMC VGA of servers (1a03), virtio (1af4), QEMU/Bochs (1234) and VMware (15ad)
adapters are not GPUs to serve a model on, and NVSwitch bridges (class 0680)
are not display controllers.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from lemfleet.roles.hostinfo import Gpu, GpuRuntime, Vendor
from lemfleet.roles.platform_amd import AMD_PCI, KNOWN_GFX, gfx_from_decimal_name
from lemfleet.roles.platform_nvidia import NVIDIA_PCI

GpuReport = tuple[tuple[Gpu, ...], GpuRuntime]
"""What every GPU fact returns: the GPUs it saw and what it learnt about the runtime."""

GPU_CLASSES = frozenset({"0300", "0302", "0380"})
GPU_VENDORS: dict[str, Vendor] = {"1002": "amd", "10de": "nvidia"}

_SLOT_RE = re.compile(r"(?:([0-9a-fA-F]{4,8}):)?([0-9a-fA-F]{2}):([0-9a-fA-F]{2})\.([0-7])")


def unrecognised(tool: str, lines: Iterable[str]) -> str:
    """The fact error for output no parser recognised: the tool, and its first
    line that is not a table border, quoted."""
    text = [t.strip() for t in lines if t.strip() and not set(t.strip()) <= set("+-=|:*. ")]
    # The line naming a device the parser could not read explains it best; else the first.
    line = next((t for t in text if _SLOT_RE.search(t)), text[0] if text else "")
    if not line:
        return f"{tool} printed nothing"
    return f"{tool} printed output in a layout the parser does not know: {line!r}"


def normalize_slot(text: str) -> str | None:
    """A PCI address as "dddd:bb:dd.f" (lower case, 4-digit domain), or None.

    Accepts lspci's "03:00.0" (domain 0 implied) and nvidia-smi's 8-digit
    domain "00000000:18:00.0".
    """
    match = _SLOT_RE.fullmatch(text.strip())
    if not match:
        return None
    domain, bus, dev, fn = match.groups()
    return f"{int(domain or '0', 16):04x}:{bus.lower()}:{dev.lower()}.{fn}"


def slot_from_location(location_id: int, domain: int = 0) -> str:
    """KFD ``location_id`` / rocminfo ``BDFID`` ((bus << 8) | (dev << 3) | fn) as a slot."""
    bus, devfn = divmod(location_id & 0xFFFF, 256)
    return f"{domain:04x}:{bus:02x}:{devfn >> 3:02x}.{devfn & 7}"


def table_name(vendor: Vendor, device_id: str) -> str | None:
    if vendor == "amd" and device_id in AMD_PCI:
        return AMD_PCI[device_id].name
    if vendor == "nvidia" and device_id in NVIDIA_PCI:
        return "NVIDIA " + NVIDIA_PCI[device_id].name
    return None


def settle_gfx(gpu: Gpu) -> Gpu:
    """Check a runtime's gfx name against LLVM's names and the PCI device-id table.

    Some tools write a stepping of 10 or more in decimal ("gfx9010" for 9.0.10,
    which is gfx90a): such a name is read back as the real one, and a name LLVM
    does not know is never kept as a build target. Where the device id is in
    ``AMD_PCI`` the table wins over the runtime, and the GPU's notes say so.
    """
    if gpu.vendor != "amd":
        return gpu
    gfx, notes = gpu.gfx_target, list(gpu.notes)
    said = f"{gpu.sources[0] if gpu.sources else 'the runtime'} reported {gfx}"
    if gfx is not None and gfx not in KNOWN_GFX:
        decoded = gfx_from_decimal_name(gfx)
        why = f" (its version read in decimal digits: {decoded})" if decoded else ""
        notes.append(f"{said}, which is not an LLVM gfx target{why}")
        gfx = decoded
    part = AMD_PCI.get(gpu.pci_id.split(":")[1]) if gpu.pci_id and gpu.pci_id.startswith("1002:") else None
    if part and gfx != part.gfx:
        if gfx is not None:
            notes.append(f"{said}, but device {gpu.pci_id} is {part.gfx} in the PCI table; the table wins")
        gfx = part.gfx
    if gfx == gpu.gfx_target and len(notes) == len(gpu.notes):
        return gpu
    return replace(gpu, gfx_target=gfx, notes=tuple(dict.fromkeys(notes)))


def with_table_facts(gpu: Gpu) -> Gpu:
    """Fill the gfx target (checked, see ``settle_gfx``), compute capability and
    iGPU flag from the PCI id tables."""
    gpu = settle_gfx(gpu)
    if not gpu.pci_id:
        return gpu
    device_id = gpu.pci_id.split(":")[1]
    changes: dict[str, Any] = {}
    if gpu.vendor == "amd" and device_id in AMD_PCI:
        changes["integrated"] = gpu.integrated or AMD_PCI[device_id].integrated
    elif gpu.vendor == "nvidia" and device_id in NVIDIA_PCI:
        changes["compute_capability"] = gpu.compute_capability or NVIDIA_PCI[device_id].compute_capability
    return _replace(gpu, changes)


def _replace(gpu: Gpu, changes: dict[str, Any]) -> Gpu:
    return replace(gpu, **changes) if changes else gpu


def index_by_vendor(gpus: Iterable[Gpu]) -> tuple[Gpu, ...]:
    """Number GPUs per vendor in PCI order, the order CUDA (with
    CUDA_DEVICE_ORDER=PCI_BUS_ID) and KFD normally enumerate them in."""
    ordered = sorted(gpus, key=lambda g: (g.vendor, g.pci_slot or ""))
    counters: dict[str, int] = {}
    out = []
    for gpu in ordered:
        n = counters.get(gpu.vendor, 0)
        counters[gpu.vendor] = n + 1
        out.append(_replace(gpu, {"index": n}))
    return tuple(out)


# -- lspci -Dnnk ------------------------------------------------------------------

_LSPCI_RE = re.compile(
    r"^(?P<slot>(?:[0-9a-f]{4}:)?[0-9a-f]{2}:[0-9a-f]{2}\.[0-7])\s+"
    r"(?P<class_name>[^\[]*?)\s*\[(?P<class>[0-9a-f]{4})\]:\s*"
    r"(?P<desc>.*?)\s*\[(?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4})\]"
    r"(?:\s*\(rev [0-9a-f]+\))?\s*$",
    re.IGNORECASE,
)
_VENDOR_PREFIXES = ("Advanced Micro Devices, Inc. [AMD/ATI]", "NVIDIA Corporation")


def _lspci_name(vendor: Vendor, device_id: str, desc: str) -> str:
    for prefix in _VENDOR_PREFIXES:
        if desc.startswith(prefix):
            desc = desc[len(prefix) :].strip()
    bracket = re.search(r"\[([^\]]+)\]\s*$", desc)
    if not bracket and table_name(vendor, device_id):  # a bare codename such as "Phoenix1"
        return table_name(vendor, device_id) or desc
    model = bracket.group(1) if bracket else desc
    brand = "AMD" if vendor == "amd" else "NVIDIA"
    return f"{brand} {model}".strip()


def parse_lspci(lines: Iterable[str]) -> GpuReport:
    """Parse ``lspci -Dnnk`` (also ``-nn`` and ``-nnk``; stray stderr lines are skipped)."""
    gpus: list[Gpu] = []
    current: Gpu | None = None
    listed = False
    for raw in lines:
        line = raw.rstrip()
        match = _LSPCI_RE.match(line)
        if match:
            listed = True
            current = None
            vendor = GPU_VENDORS.get(match["vendor"].lower())
            if vendor is None or match["class"] not in GPU_CLASSES:
                continue
            device_id = match["device"].lower()
            current = Gpu(
                vendor=vendor,
                name=_lspci_name(vendor, device_id, match["desc"]),
                pci_slot=normalize_slot(match["slot"]),
                pci_id=f"{match['vendor'].lower()}:{device_id}",
                sources=("lspci",),
            )
            gpus.append(current)
        elif current is not None and "Kernel driver in use:" in line:
            driver = line.split(":", 1)[1].strip()
            gpus[-1] = _replace(gpus[-1], {"kernel_driver": driver})
    return index_by_vendor(with_table_facts(g) for g in gpus), GpuRuntime(pci_listed=listed)


def parse_pci_sysfs(lines: Iterable[str]) -> GpuReport:
    """Parse the probe's sysfs fallback, one device a line:
    ``0000:03:00.0 0x030000 0x1002 0x7480 amdgpu`` (slot, class, vendor, device, driver)."""
    gpus = []
    listed = False
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        listed = listed or normalize_slot(fields[0]) is not None
        slot, pci_class, vendor_hex, device_hex = fields[:4]
        vendor = GPU_VENDORS.get(vendor_hex.lower().removeprefix("0x"))
        if vendor is None or pci_class.lower().removeprefix("0x")[:4] not in GPU_CLASSES:
            continue
        device_id = device_hex.lower().removeprefix("0x")
        brand = "AMD" if vendor == "amd" else "NVIDIA"
        gpus.append(
            Gpu(
                vendor=vendor,
                name=table_name(vendor, device_id) or f"{brand} GPU [{device_id}]",
                pci_slot=normalize_slot(slot),
                pci_id=f"{vendor_hex.lower().removeprefix('0x')}:{device_id}",
                kernel_driver=fields[4] if len(fields) > 4 else None,
                sources=("pci-sysfs",),
            )
        )
    return index_by_vendor(with_table_facts(g) for g in gpus), GpuRuntime(pci_listed=listed)


PCI_SYSFS_COMMAND = (
    "for d in /sys/bus/pci/devices/*; do "
    '[ -r "$d/class" ] || continue; '
    'drv=""; [ -L "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")"); '
    'echo "${d##*/} $(cat "$d/class") $(cat "$d/vendor") $(cat "$d/device") $drv"; '
    "done"
)


# -- device nodes -----------------------------------------------------------------

DEVICE_NODES_COMMAND = (
    "for f in /dev/kfd /dev/dri/renderD* /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools "
    '/dev/nvidia[0-9]* /dev/nvidia-caps/*; do [ -e "$f" ] && '
    '{ stat -c "%n %a %G" "$f" 2>/dev/null || echo "$f"; }; done; true'
)


def parse_device_nodes(lines: Iterable[str]) -> GpuReport:
    """Device node paths, one a line, optionally followed by mode and group
    (``/dev/kfd 660 render``, from ``stat -c '%n %a %G'``)."""
    entries = sorted({line.strip() for line in lines if line.strip().startswith("/dev/")})
    nodes = tuple(sorted({entry.split()[0] for entry in entries}))
    modes = tuple(entry for entry in entries if len(entry.split()) == 3)
    return (), GpuRuntime(device_nodes=nodes, device_node_modes=modes)
