"""The NVIDIA part of the platform table: compute capability by device, and what each CUDA toolkit builds for.

Part of the one platform table (:mod:`lemfleet.roles.platforms` says where
every platform fact lives; the driver branch, toolkit and repository pins are
in ``platform_pins``, the CUDA toolkit each OS release packages in
``platforms``).

nvidia-smi reports ``compute_cap`` only from release 510 on, and GPUs seen by
``lspci`` alone (no driver yet) report nothing, so the compute capability comes
from these tables. It decides the CUDA architectures of the build, which CUDA
toolkit can build for the GPU, and whether the GPU can be served at all.

Sources: pci.ids (https://pci-ids.ucw.cz, vendor 10de) and NVIDIA's CUDA GPU
list (https://developer.nvidia.com/cuda-gpus). Rows marked "fixture" were seen
in the recorded outputs in tests/fixtures/gpu/.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from lemfleet.roles.platform_pins import version_tuple

REVIEWED = "2026-11"


class NvidiaPart(NamedTuple):
    name: str
    compute_capability: str


NVIDIA_PCI: dict[str, NvidiaPart] = {
    # Kepler
    "118a": NvidiaPart("GRID K520", "3.0"),
    "118f": NvidiaPart("Tesla K10", "3.0"),
    "1180": NvidiaPart("GeForce GTX 680", "3.0"),
    "1005": NvidiaPart("GeForce GTX TITAN", "3.5"),
    "1023": NvidiaPart("Tesla K40m", "3.5"),
    "1024": NvidiaPart("Tesla K40c", "3.5"),
    "102d": NvidiaPart("Tesla K80", "3.7"),
    # Maxwell
    "1380": NvidiaPart("GeForce GTX 750 Ti", "5.0"),
    "13bd": NvidiaPart("Tesla M10", "5.0"),
    "13c0": NvidiaPart("GeForce GTX 980", "5.2"),
    "13c2": NvidiaPart("GeForce GTX 970", "5.2"),
    "17c8": NvidiaPart("GeForce GTX 980 Ti", "5.2"),
    "17fd": NvidiaPart("Tesla M40", "5.2"),
    "13f2": NvidiaPart("Tesla M60", "5.2"),
    # Pascal
    "15f7": NvidiaPart("Tesla P100-PCIE-12GB", "6.0"),
    "15f8": NvidiaPart("Tesla P100-PCIE-16GB", "6.0"),
    "15f9": NvidiaPart("Tesla P100-SXM2-16GB", "6.0"),
    "1b38": NvidiaPart("Tesla P40", "6.1"),
    "1bb3": NvidiaPart("Tesla P4", "6.1"),
    "1b02": NvidiaPart("TITAN Xp", "6.1"),
    "1b06": NvidiaPart("GeForce GTX 1080 Ti", "6.1"),
    "1b80": NvidiaPart("GeForce GTX 1080", "6.1"),
    "1b81": NvidiaPart("GeForce GTX 1070", "6.1"),
    "1c82": NvidiaPart("GeForce GTX 1050 Ti", "6.1"),
    "1c8c": NvidiaPart("GeForce GTX 1050 Ti Mobile", "6.1"),  # fixture
    "1cb3": NvidiaPart("Quadro P400", "6.1"),
    # Volta
    "1d81": NvidiaPart("TITAN V", "7.0"),
    "1db1": NvidiaPart("Tesla V100-SXM2-16GB", "7.0"),
    "1db4": NvidiaPart("Tesla V100-PCIE-16GB", "7.0"),
    "1db5": NvidiaPart("Tesla V100-SXM2-32GB", "7.0"),
    "1db6": NvidiaPart("Tesla V100-PCIE-32GB", "7.0"),
    # Turing
    "1e02": NvidiaPart("TITAN RTX", "7.5"),
    "1e04": NvidiaPart("GeForce RTX 2080 Ti", "7.5"),
    "1e07": NvidiaPart("GeForce RTX 2080 Ti Rev. A", "7.5"),
    "1e30": NvidiaPart("Quadro RTX 6000/8000", "7.5"),
    "1eb8": NvidiaPart("Tesla T4", "7.5"),
    "1f08": NvidiaPart("GeForce RTX 2060", "7.5"),  # fixture
    "2184": NvidiaPart("GeForce GTX 1660", "7.5"),
    # Ampere and newer
    "20b0": NvidiaPart("A100-SXM4-40GB", "8.0"),
    "20b2": NvidiaPart("A100-SXM4-80GB", "8.0"),
    "20b5": NvidiaPart("A100 80GB PCIe", "8.0"),
    "20f1": NvidiaPart("A100-PCIE-40GB", "8.0"),
    "2204": NvidiaPart("GeForce RTX 3090", "8.6"),
    "2236": NvidiaPart("A10", "8.6"),
    "2684": NvidiaPart("GeForce RTX 4090", "8.9"),
    "26b9": NvidiaPart("L40S", "8.9"),
    "27b8": NvidiaPart("L4", "8.9"),
    "2330": NvidiaPart("H100 SXM5 80GB", "9.0"),  # fixture
    "2331": NvidiaPart("H100 PCIe", "9.0"),
    "2335": NvidiaPart("H200", "9.0"),
    "2901": NvidiaPart("B200", "10.0"),
    "2b85": NvidiaPart("GeForce RTX 5090", "12.0"),  # fixture (kernel log)
}

# Product-name patterns -> compute capability, for nvidia-smi older than 510
# and for names the table truncates ("NVIDIA A100-SXM...", "RTX PRO 6000
# Blac..."). First match wins, so a more specific pattern comes first.
NVIDIA_NAME_CC: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), cc)
    for pattern, cc in (
        (r"\bG?B300\b", "10.3"),
        (r"\bG?B[12]00\b", "10.0"),
        (r"RTX 50\d\d|RTX PRO \d{4} Blac", "12.0"),
        (r"\bG?H(100|200|800|20)\b", "9.0"),
        (r"\bA(100|800|30)\b", "8.0"),
        (r"\bL(4|20|40S?)\b|RTX 40\d\d|Ada Generation|RTX \d{4} Ada", "8.9"),
        (r"\bA(10G?|40|16|2)\b|RTX 30\d\d|RTX A\d{4}", "8.6"),
        (r"\bT4\b|RTX 20[5-8]|TITAN RTX|Quadro RTX|GTX 16\d\d|\b(Quadro )?T(400|600|1000|1200)\b", "7.5"),
        (r"\bV100\b|TITAN V\b|Quadro GV100", "7.0"),
        (r"\bP100\b|Quadro GP100", "6.0"),
        (r"\bP(4|6|40)\b|GTX 10\d\d|TITAN Xp\b|TITAN X \(Pascal\)|Quadro P\d{3,4}", "6.1"),
        (r"GTX TITAN X\b|GTX 9[5-8]0|\bM(4|6|40|60)\b|Quadro M[456]000", "5.2"),
        (r"GTX 750|\bM10\b", "5.0"),
        (r"\bK80\b", "3.7"),
        (r"\bK(20|40)[cmsX]?\b|GTX TITAN\b|GTX 780", "3.5"),
        (r"GRID K[125]\d*|\bK10\b|GTX 6[5-9]0|GTX 7[67]0", "3.0"),
    )
)

# The GPU generations by compute capability, for the plan's reasons.
GENERATIONS: tuple[tuple[tuple[int, int], str], ...] = (
    ((12, 0), "Blackwell"),
    ((10, 0), "Blackwell"),
    ((9, 0), "Hopper"),
    ((8, 9), "Ada"),
    ((8, 0), "Ampere"),
    ((7, 5), "Turing"),
    ((7, 0), "Volta"),
    ((6, 0), "Pascal"),
    ((5, 0), "Maxwell"),
    ((3, 0), "Kepler"),
    ((0, 0), "Fermi or older"),
)

# The oldest compute capability llama.cpp's CUDA backend builds for, which is
# also CUDA 12's floor (CUDA_CC_RANGES below; the drivers step picks the
# toolkit by capability): older parts cannot be served.
CUDA_MIN_CC = (5, 0)
UNSUPPORTED_WHY = (
    "CUDA 12 dropped compute capability below 5.0 (CUDA 11.x with the 470 driver was "
    "the last for Kepler) and llama.cpp's CUDA backend builds for 5.0 and newer"
)


# Compute capabilities a toolkit can build the pinned llama.cpp for (nvcc
# --list-gpu-arch per release; llama.cpp ggml-cuda/CMakeLists.txt: 89 needs
# 11.8, 120 needs 12.8). nvcc 11.8 lists sm_90, but ggml-cuda's Hopper code
# (programmatic dependent launch, common.cuh) does not compile with it:
# "cudaGridDependencySynchronize is undefined", measured with Debian 12's
# nvidia-cuda-toolkit 11.8 on 2026-11-29 (tests/testbed/test_gpu_builds.py).
# Rows: (first toolkit version, lowest cc, highest cc).
CUDA_CC_RANGES: tuple[tuple[tuple[int, int], tuple[int, int], tuple[int, int]], ...] = (
    ((11, 0), (3, 5), (8, 6)),
    ((11, 8), (3, 5), (8, 9)),
    ((12, 0), (5, 0), (9, 0)),
    ((12, 8), (5, 0), (12, 0)),
    ((12, 9), (5, 0), (12, 1)),
    ((13, 0), (7, 5), (12, 1)),
)
# Drivers by branch: Blackwell (cc 10.x/12.x) needs 570 or later; the open
# kernel modules need Turing (cc 7.5) or later, and Blackwell needs them.
BLACKWELL_MIN_BRANCH = 570
OPEN_MODULES_MIN_CC = (7, 5)
OPEN_ONLY_MIN_CC = (10, 0)


def toolkit_cc_range(toolkit: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(lowest, highest) compute capability that CUDA ``toolkit`` ('12.4', '13-1') builds for."""
    version = version_tuple(toolkit)[:2]
    low, high = CUDA_CC_RANGES[0][1], CUDA_CC_RANGES[0][2]
    for first, row_low, row_high in CUDA_CC_RANGES:
        if version >= first:
            low, high = row_low, row_high
    return low, high


def cc_tuple(cc: str) -> tuple[int, int]:
    major, _, minor = cc.partition(".")
    return int(major), int(minor or 0)


def generation(cc: str) -> str:
    value = cc_tuple(cc)
    return next(name for floor, name in GENERATIONS if value >= floor)


def nvidia_cc_from_name(name: str) -> str | None:
    for pattern, cc in NVIDIA_NAME_CC:
        if pattern.search(name):
            return cc
    return None
