"""GPUs as the Vulkan loader enumerates them (``vulkaninfo --summary``).

The ``GPUn`` number is the device's index in Vulkan's enumeration order,
which is what ``GGML_VK_VISIBLE_DEVICES`` takes; it counts CPU devices such as
llvmpipe too, so those keep their slot in the numbering but are not GPUs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from lemfleet.roles.facts.gpu_pci import GPU_VENDORS, GpuReport, normalize_slot, with_table_facts
from lemfleet.roles.hostinfo import Gpu, GpuRuntime

_DEVICE_HEADER = re.compile(r"^GPU(\d+):\s*$")
_KEY_VALUE = re.compile(r"^\s+(\w+)\s*=\s*(.*?)\s*$")
# MESA_VK_DEVICE_SELECT=list: `GPU 0: 1002:164e "AMD Radeon Graphics" integrated GPU 0000:19:00.0`
_SELECT_LIST = re.compile(
    r'^\s*GPU (?P<index>\d+): (?P<vendor>[0-9a-f]{4}):(?P<device>[0-9a-f]{4}) "(?P<name>[^"]*)" '
    r"(?P<type>discrete|integrated|virtual|cpu)[^0-9]*(?P<slot>\S+)?\s*$",
    re.IGNORECASE,
)
_GPU_TYPES = {
    "PHYSICAL_DEVICE_TYPE_DISCRETE_GPU": False,
    "PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU": True,
}


def _vendor_device(props: dict[str, str]) -> tuple[str, str]:
    vendor = f"{int(props.get('vendorID', '0'), 16):04x}"
    device = f"{int(props.get('deviceID', '0'), 16):04x}"
    return vendor, device


def _summary_devices(lines: list[str]) -> list[Gpu]:
    devices: list[tuple[int, dict[str, str]]] = []
    for line in lines:
        header = _DEVICE_HEADER.match(line.strip())
        if header:
            devices.append((int(header.group(1)), {}))
            continue
        pair = _KEY_VALUE.match(line)
        if pair and devices:
            devices[-1][1].setdefault(pair.group(1), pair.group(2))
    gpus = []
    for index, props in devices:
        integrated = _GPU_TYPES.get(props.get("deviceType", ""))
        vendor_id, device_id = _vendor_device(props)
        vendor = GPU_VENDORS.get(vendor_id)
        if integrated is None or vendor is None:
            continue
        name = re.sub(r"\s*\(RADV [^)]*\)$", "", props.get("deviceName", "GPU"))
        gpu = Gpu(
            vendor=vendor,
            name=name,
            index=index,
            pci_id=f"{vendor_id}:{device_id}",
            integrated=integrated,
            driver_ok=True,
            sources=("vulkaninfo",),
            vulkan_index=index,
        )
        gpus.append(with_table_facts(gpu))
    return gpus


def _select_list(lines: list[str]) -> list[Gpu]:
    gpus = []
    for line in lines:
        match = _SELECT_LIST.match(line)
        vendor = GPU_VENDORS.get(match["vendor"].lower()) if match else None
        if not match or vendor is None or match["type"].lower() not in ("discrete", "integrated"):
            continue
        index = int(match["index"])
        gpu = Gpu(
            vendor=vendor,
            name=match["name"],
            index=index,
            pci_slot=normalize_slot(match["slot"] or ""),
            pci_id=f"{match['vendor'].lower()}:{match['device'].lower()}",
            integrated=match["type"].lower() == "integrated",
            driver_ok=True,
            sources=("vulkaninfo",),
            vulkan_index=index,
        )
        gpus.append(with_table_facts(gpu))
    return gpus


def parse_vulkaninfo(lines: Iterable[str]) -> GpuReport:
    """Parse ``vulkaninfo --summary`` (its Devices section) or the
    ``MESA_VK_DEVICE_SELECT=list`` listing."""
    text = [line.rstrip() for line in lines]
    gpus = _summary_devices(text) or _select_list(text)
    return tuple(gpus), GpuRuntime(vulkan_ok=bool(gpus))
