"""AMD GPUs from the KFD topology in sysfs and from ``rocminfo``.

KFD (``/sys/class/kfd/kfd/topology/nodes/*``) is written by the amdgpu kernel
driver and readable with no ROCm installed; ``rocminfo`` shows what the ROCm
runtime itself sees, in HIP's device order.

iGPU vs dGPU: a GPU is integrated when rocminfo reports ``Memory Properties:
APU`` (ROCr's HSA_AMD_MEMORY_PROPERTY_AGENT_IS_APU), when its KFD node carries
CPU cores as well as SIMDs (the combined APU node of Kaveri/Carrizo CRAT
tables), or when its gfx target exists only as an APU (``APU_GFX``, from LLVM's
AMDGPUUsage processor table). Sizes are not used: ``local_mem_size`` is
hard-coded to 0 by kfd_topology.c, and an iGPU's VRAM is a BIOS carve-out that
ranges from 512 MiB to 96 GiB.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from lemfleet.roles.facts.gpu_faults import tool_faults
from lemfleet.roles.facts.gpu_pci import GpuReport, slot_from_location, table_name, unrecognised
from lemfleet.roles.hostinfo import Gpu, GpuRuntime
from lemfleet.roles.platform_amd import APU_GFX, GFX_RE, gfx_from_target_version

KFD_NODES = "/sys/class/kfd/kfd/topology/nodes"

# HSA_MEM_HEAP_TYPE_FB_PUBLIC / FB_PRIVATE: the device's own memory (kfd_crat.h).
_VRAM_HEAPS = (1, 2)

KFD_COMMAND = (
    f"for n in {KFD_NODES}/*; do "
    '[ -r "$n/properties" ] || continue; '
    'echo "kfd-node ${n##*/}"; '
    'echo "name $(cat "$n/name" 2>/dev/null)"; '
    'cat "$n/properties" 2>/dev/null; '
    'for b in "$n"/mem_banks/*; do [ -r "$b/properties" ] || continue; '
    'echo "kfd-mem-bank ${b##*/}"; cat "$b/properties" 2>/dev/null; done; '
    "done; true"
)


def _int(text: str) -> int | None:
    try:
        return int(text, 0)
    except ValueError:
        return None


def kfd_node_gpu(node: int | None, props: dict[str, int], banks: list[dict[str, int]]) -> Gpu | None:
    """One KFD node as a Gpu, or None for a CPU node (``simd_count`` 0)."""
    if props.get("simd_count", 1) == 0:
        return None
    gfx = gfx_from_target_version(props.get("gfx_target_version", 0))
    device = props.get("device_id")
    pci_id = f"1002:{device:04x}" if device else None
    location = props.get("location_id")
    minor = props.get("drm_render_minor", 0)
    vram = sum(b.get("size_in_bytes", 0) for b in banks if b.get("heap_type") in _VRAM_HEAPS)
    combined_apu = props.get("cpu_cores_count", 0) > 0 and props.get("simd_count", 0) > 0
    name = (table_name("amd", pci_id[5:]) if pci_id else None) or f"AMD GPU {gfx or ''}".strip()
    return Gpu(
        vendor="amd",
        name=name,
        pci_slot=slot_from_location(location, props.get("domain", 0)) if location else None,
        pci_id=pci_id,
        gfx_target=gfx,
        vram_bytes=vram or None,
        integrated=combined_apu or gfx in APU_GFX,
        driver_ok=True,
        sources=("kfd",),
        kfd_node=node,
        render_node=f"/dev/dri/renderD{minor}" if minor >= 128 else None,
    )


def parse_kfd_topology(lines: Iterable[str]) -> GpuReport:
    """Parse the probe's KFD dump: ``kfd-node N`` and ``kfd-mem-bank M`` headers,
    each followed by its ``properties`` file (``key value`` lines). Lines before
    any header (e.g. a grep of one node's properties) form a node of unknown id."""
    nodes: list[tuple[int | None, dict[str, int], list[dict[str, int]]]] = []
    target: dict[str, int] | None = None
    for raw in lines:
        fields = raw.split()
        if len(fields) == 2 and fields[0] == "kfd-node":
            nodes.append((_int(fields[1]), {}, []))
            target = nodes[-1][1]
        elif len(fields) == 2 and fields[0] == "kfd-mem-bank" and nodes:
            nodes[-1][2].append({})
            target = nodes[-1][2][-1]
        elif len(fields) == 2 and fields[0] != "name":
            if target is None:
                nodes.append((None, {}, []))
                target = nodes[-1][1]
            value = _int(fields[1])
            if value is not None:
                target[fields[0]] = value
    gpus = [gpu for node in nodes if (gpu := kfd_node_gpu(*node)) is not None]
    gpus.sort(key=lambda g: -1 if g.kfd_node is None else g.kfd_node)
    indexed = tuple(replace(gpu, index=i) for i, gpu in enumerate(gpus))
    return indexed, GpuRuntime()


# -- rocminfo ---------------------------------------------------------------------

_FIELD_RE = re.compile(r"^(?P<indent> *)(?P<key>[^:]+?):{1,2}\s*(?P<value>.*?)\s*$")
_HEX_IN_PARENS = re.compile(r"\(0x([0-9a-fA-F]+)\)")
_SIZE_KB = re.compile(r"^(\d+)(?:\(0x[0-9a-fA-F]+\))?\s*KB")


def _agents(lines: list[str]) -> list[list[str]]:
    """Split rocminfo output into agents. Grepped summaries that lack the
    ``Agent N`` headers start a new agent at each top-level ``Name:`` line."""
    agents: list[list[str]] = []
    has_headers = any(re.match(r"^Agent \d+\s*$", line) for line in lines)
    for line in lines:
        if has_headers and re.match(r"^Agent \d+\s*$", line):
            agents.append([])
        elif not has_headers and re.match(r"^  Name:", line):
            agents.append([line])
        elif agents:
            agents[-1].append(line)
    return agents


def _rocminfo_agent(agent: list[str]) -> Gpu | None:
    top: dict[str, str] = {}
    isa: list[str] = []
    coarse_kb: int | None = None
    segment = ""
    for line in agent:
        match = _FIELD_RE.match(line.rstrip())
        if not match:
            continue
        indent, key, value = len(match["indent"]), match["key"], match["value"]
        if indent == 2:
            top.setdefault(key, value)
        elif key == "Segment":
            segment = value
        elif key == "Size" and "GLOBAL" in segment and "COARSE GRAINED" in segment:
            size = _SIZE_KB.match(value)
            if size and coarse_kb is None:
                coarse_kb = int(size.group(1))
        elif key == "Name" and indent >= 6:
            isa.append(value)
    gfx_match = GFX_RE.fullmatch(top.get("Name", ""))
    if top.get("Device Type", "GPU" if gfx_match else "") != "GPU":
        return None
    gfx = gfx_match.group(0) if gfx_match else None
    for name in isa:
        found = GFX_RE.search(name.split("--")[-1])
        if gfx is None and found:
            gfx = found.group(0)
    chip = _HEX_IN_PARENS.search(top.get("Chip ID", ""))
    pci_id = f"1002:{int(chip.group(1), 16):04x}" if chip and int(chip.group(1), 16) else None
    bdfid = _int(top.get("BDFID", ""))
    node = _int(top.get("Node", ""))
    return Gpu(
        vendor="amd",
        name=top.get("Marketing Name") or (f"AMD GPU {gfx}" if gfx else "AMD GPU"),
        pci_slot=slot_from_location(bdfid) if bdfid else None,
        pci_id=pci_id,
        gfx_target=gfx,
        vram_bytes=coarse_kb * 1024 if coarse_kb else None,
        integrated=top.get("Memory Properties", "") == "APU" or gfx in APU_GFX,
        driver_ok=True,
        sources=("rocminfo",),
        kfd_node=node,
    )


def parse_rocminfo(lines: Iterable[str]) -> GpuReport:
    """Parse ``rocminfo``: one Gpu per GPU agent, numbered in HIP's order.

    The PCI slot comes from ``BDFID`` and assumes PCI domain 0; KFD supplies the
    domain when the two are merged.
    """
    text = [line.rstrip("\n") for line in lines]
    gpus = [gpu for agent in _agents(text) if (gpu := _rocminfo_agent(agent)) is not None]
    slots = [gpu.pci_slot for gpu in gpus]
    # BDFID has no PCI domain: on multi-domain hosts (4x MI300A) slots repeat, so drop them.
    gpus = [
        replace(gpu, index=i, pci_slot=gpu.pci_slot if slots.count(gpu.pci_slot) == 1 else None)
        for i, gpu in enumerate(gpus)
    ]
    faults = tool_faults("rocminfo", text)
    # A recognised layout with CPU agents only is a host with no ROCm GPU, not an error.
    recognised = bool(gpus) or any(re.match(r"^(HSA Agents|Agent \d+)\s*$", line) for line in text)
    errors: tuple[str, ...] = ()
    facts: tuple[str, ...] = ()
    if faults:
        errors = tuple(f"rocminfo: {f.evidence}" for f in faults)
    elif not recognised:
        facts = (unrecognised("rocminfo", text),)
    return tuple(gpus), GpuRuntime(rocminfo_ok=bool(gpus), probe_errors=errors, fact_errors=facts, faults=faults)
