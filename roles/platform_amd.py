"""The AMD part of the platform table: device ids, gfx targets, ROCm's targets and HSA overrides.

Part of the one platform table (:mod:`lemfleet.roles.platforms` says where
every platform fact lives; ROCm's pins and repositories are in
``platform_pins``, the OS releases where HIP can be installed in
``platforms``). Each table is data, not logic, so that a reviewer can check it
against its source in one place; ``REVIEWED`` is when they were last checked.

- PCI device ids -> gfx target, so that a GPU seen only by ``lspci`` (no driver
  yet) still gets an architecture, and so that a runtime's gfx name can be
  checked.
- The gfx names LLVM knows, and the physical memory of partitionable parts.
- The AMD gfx targets that are integrated GPUs (APUs).
- The gfx targets ROCm's libraries ship kernels for, and the HIP that
  llama.cpp needs.
- Known-good ``HSA_OVERRIDE_GFX_VERSION`` values.
"""

from __future__ import annotations

import re
from typing import NamedTuple

REVIEWED = "2026-11"


class AmdPart(NamedTuple):
    gfx: str
    name: str
    integrated: bool = False


# PCI device id (vendor 1002) -> part. Rows marked "fixture" were read from the
# recorded outputs in tests/fixtures/gpu/ (rocminfo "Chip ID", rocm-smi "DID",
# lspci, vulkaninfo); the others come from pci.ids and AMD's product pages.
AMD_PCI: dict[str, AmdPart] = {
    "66a1": AmdPart("gfx906", "AMD Instinct MI50/MI60"),  # fixture (rocm-smi DID)
    "66af": AmdPart("gfx906", "AMD Radeon VII"),
    "738c": AmdPart("gfx908", "AMD Instinct MI100"),  # fixture
    "7408": AmdPart("gfx90a", "AMD Instinct MI250X"),
    "740c": AmdPart("gfx90a", "AMD Instinct MI250/MI250X"),
    "740f": AmdPart("gfx90a", "AMD Instinct MI210"),  # fixture
    "74a0": AmdPart("gfx942", "AMD Instinct MI300A"),  # fixture
    "74a1": AmdPart("gfx942", "AMD Instinct MI300X"),  # fixture
    "74a2": AmdPart("gfx942", "AMD Instinct MI308X"),  # fixture
    "74a5": AmdPart("gfx942", "AMD Instinct MI325X"),
    "74b5": AmdPart("gfx942", "AMD Instinct MI300X VF"),  # fixture
    "73bf": AmdPart("gfx1030", "AMD Radeon RX 6800/6900 (Navi 21)"),  # fixture
    "73df": AmdPart("gfx1031", "AMD Radeon RX 6700/6750 XT (Navi 22)"),  # fixture
    "73ff": AmdPart("gfx1032", "AMD Radeon RX 6600/6650 XT (Navi 23)"),  # fixture
    "744c": AmdPart("gfx1100", "AMD Radeon RX 7900 XTX/XT (Navi 31)"),  # fixture
    "747e": AmdPart("gfx1101", "AMD Radeon RX 7800 XT/7700 XT (Navi 32)"),
    "7480": AmdPart("gfx1102", "AMD Radeon RX 7600/7600S/7700S (Navi 33)"),  # fixture
    "7590": AmdPart("gfx1200", "AMD Radeon RX 9060 XT (Navi 44)"),
    "75a0": AmdPart("gfx950", "AMD Instinct MI350X"),  # fixture (amd-smi static)
    "75a3": AmdPart("gfx950", "AMD Instinct MI355X"),
    "7550": AmdPart("gfx1201", "AMD Radeon RX 9070/9070 XT (Navi 48)"),  # fixture
    "1681": AmdPart("gfx1035", "AMD Radeon 680M (Rembrandt)", True),
    "164e": AmdPart("gfx1036", "AMD Radeon Graphics (Raphael)", True),  # fixture
    "13c0": AmdPart("gfx1036", "AMD Radeon Graphics (Granite Ridge)", True),  # fixture
    "15bf": AmdPart("gfx1103", "AMD Radeon 780M (Phoenix1)", True),  # fixture
    "15c8": AmdPart("gfx1103", "AMD Radeon 740M (Phoenix2)", True),
    "150e": AmdPart("gfx1150", "AMD Radeon 890M (Strix Point)", True),
    "1586": AmdPart("gfx1151", "AMD Radeon 8060S (Strix Halo)", True),
}

# gfx targets that only exist as integrated GPUs: LLVM's AMDGPUUsage processor
# table lists each of them as "APU". KFD sysfs has no reliable iGPU flag of its
# own (kfd_topology.c hard-codes local_mem_size to 0, and cpu_cores_count is 0
# for the iGPU node of modern APUs), so the architecture decides.
# gfx942 is deliberately absent: it is both MI300X (discrete) and MI300A.
APU_GFX = frozenset(
    {
        "gfx801",
        "gfx902",
        "gfx909",
        "gfx90c",
        "gfx1013",
        "gfx1033",
        "gfx1035",
        "gfx1036",
        "gfx1037",
        "gfx1103",
        "gfx1150",
        "gfx1151",
        "gfx1152",
        "gfx1153",
    }
)

GFX_RE = re.compile(r"gfx[0-9]{1,2}[0-9a-f]{2}")

# Every processor name LLVM's AMDGPU backend accepts (AMDGPUUsage, "Processors"),
# GCN 3 and newer. A runtime name outside this set is not a build target.
KNOWN_GFX = frozenset({
    "gfx801", "gfx802", "gfx803", "gfx805", "gfx810", "gfx900", "gfx902", "gfx904", "gfx906",
    "gfx908", "gfx909", "gfx90a", "gfx90c", "gfx940", "gfx941", "gfx942", "gfx950", "gfx1010",
    "gfx1011", "gfx1012", "gfx1013", "gfx1030", "gfx1031", "gfx1032", "gfx1033", "gfx1034",
    "gfx1035", "gfx1036", "gfx1100", "gfx1101", "gfx1102", "gfx1103", "gfx1150", "gfx1151",
    "gfx1152", "gfx1153", "gfx1200", "gfx1201",
})  # fmt: skip

# Memory of one physical Instinct device that compute partitions can share, in
# GiB (AMD's data sheets). A partition that reports more than its share of this
# pool is reporting the whole pool (NPS1); one that reports its share (MI300A in
# TPX, NPS4) has memory of its own.
PHYSICAL_VRAM_GIB: dict[str, int] = {
    "74a0": 128,  # MI300A (unified HBM3)
    "74a1": 192,  # MI300X
    "74a2": 192,  # MI308X
    "74a5": 256,  # MI325X
    "74b5": 192,  # MI300X VF
    "75a0": 288,  # MI350X
    "75a3": 288,  # MI355X
}


def gfx_from_target_version(value: int) -> str | None:
    """KFD's ``gfx_target_version`` (major*10000 + minor*100 + stepping) as a gfx name.

    90402 -> gfx942, 90010 -> gfx90a, 110000 -> gfx1100, 100300 -> gfx1030. 0
    (a CPU node) gives None.
    """
    if value <= 0:
        return None
    major, rest = divmod(value, 10000)
    minor, stepping = divmod(rest, 100)
    if minor > 15 or stepping > 15:
        return None
    return f"gfx{major}{minor:x}{stepping:x}"


def gfx_from_decimal_name(name: str) -> str | None:
    """A gfx name whose stepping (or minor) of 10 or more was written in decimal
    digits, as the real name: "gfx9010" (9.0.10) -> "gfx90a". None when no
    reading gives a name LLVM knows."""
    digits = name.removeprefix("gfx")
    if not digits.isdigit():
        return None
    for major_len in (1, 2):
        major, rest = digits[:major_len], digits[major_len:]
        for minor_len in (1, 2):
            minor, stepping = rest[:minor_len], rest[minor_len:]
            if not minor or not stepping or len(stepping) > 2:
                continue
            gfx = gfx_from_target_version(int(major) * 10000 + int(minor) * 100 + int(stepping))
            if gfx in KNOWN_GFX and gfx != name:
                return gfx
    return None


def gfx_from_override(version: str) -> str | None:
    """``HSA_OVERRIDE_GFX_VERSION`` ("10.3.0", "9.0.10") as the gfx name it makes ROCm report."""
    match = re.fullmatch(r"(\d{1,2})\.(\d{1,2})\.(\d{1,2})", version)
    if not match:
        return None
    major, minor, stepping = (int(g) for g in match.groups())
    return gfx_from_target_version(major * 10000 + minor * 100 + stepping)


# ggml/src/ggml-hip/CMakeLists.txt: "At least ROCM/HIP V6.1 is required".
HIP_MIN = (6, 1)

# gfx targets that ROCm's math libraries (rocBLAS/hipBLAS, which ggml-hip links)
# ship kernels for in ROCm 6.4 to 7.x, following the ROCm "System requirements
# (Linux)" matrix and llama.cpp's .devops/rocm.Dockerfile ROCM_DOCKER_ARCH list
# ("mostly tied to rocBLAS supported archs"). gfx803/gfx900/gfx1010/gfx1032 are
# in that list only as unofficial builds, so they are left out here.
ROCM_GFX: dict[str, str] = {
    "gfx906": "Instinct MI50/MI60, Radeon VII (deprecated by AMD)",
    "gfx908": "Instinct MI100",
    "gfx90a": "Instinct MI210/MI250/MI250X",
    "gfx942": "Instinct MI300X/MI300A/MI308X/MI325X",
    "gfx950": "Instinct MI350X/MI355X",
    "gfx1030": "Radeon RX 6800/6900, PRO W6800, V620",
    "gfx1100": "Radeon RX 7900 XTX/XT/GRE, PRO W7900",
    "gfx1101": "Radeon RX 7800 XT/7700 XT, PRO W7800/W7700",
    "gfx1102": "Radeon RX 7600, PRO W7600",
    "gfx1151": "Ryzen AI Max (Strix Halo)",
    "gfx1200": "Radeon RX 9060 XT",
    "gfx1201": "Radeon RX 9070/9070 XT, AI PRO R9700",
}

# Known-good HSA_OVERRIDE_GFX_VERSION values for parts ROCm's libraries do not
# ship kernels for: the override makes ROCm treat the part as the listed,
# supported sibling of the same ISA family (llama.cpp docs/build.md: "10.3.0 for
# RDNA2, 11.0.0 for RDNA3"). Used only when the user opts in.
HSA_OVERRIDE_KNOWN_GOOD: dict[str, str] = {
    "gfx1031": "10.3.0",
    "gfx1032": "10.3.0",
    "gfx1033": "10.3.0",
    "gfx1034": "10.3.0",
    "gfx1035": "10.3.0",
    "gfx1036": "10.3.0",
    "gfx1103": "11.0.0",
}
