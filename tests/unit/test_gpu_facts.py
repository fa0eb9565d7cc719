"""GPU fact parsers on real recorded outputs (tests/fixtures/gpu/, each with its source line).

One row per fixture: the parser, then the attributes every parsed GPU must have,
in order. ``None`` in an expectation means "must be None".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lemfleet.roles.facts.gpu_amd import parse_kfd_topology, parse_rocminfo
from lemfleet.roles.facts.gpu_amd_smi import parse_amd_smi
from lemfleet.roles.facts.gpu_nvidia import parse_nvidia_smi
from lemfleet.roles.facts.gpu_pci import GpuReport, parse_device_nodes, parse_lspci
from lemfleet.roles.facts.gpu_rocm_smi import parse_rocm_smi
from lemfleet.roles.facts.gpu_vulkan import parse_vulkaninfo
from tests.fixtures.gpu.hosts import read, source

KIB, MIB = 1024, 2**20
HGX_BUSES = ("1b", "43", "52", "61", "9d", "c3", "d1", "df")
Parser = Callable[[list[str]], GpuReport]

# (fixture, parser, [per-GPU expected attributes])
GPU_CASES: list[tuple[str, Parser, list[dict[str, Any]]]] = [
    # -- rocminfo
    ("rocminfo/mi300x-vf.txt", parse_rocminfo, [
        dict(index=0, name="AMD Instinct MI300X VF", gfx_target="gfx942", pci_id="1002:74b5",
             pci_slot="0000:83:00.0", kfd_node=1, vram_bytes=200998912 * KIB, integrated=False),
    ]),
    ("rocminfo/rx7900xtx-gfx1100.txt", parse_rocminfo, [
        dict(name="Radeon RX 7900 XTX", gfx_target="gfx1100", pci_id="1002:744c",
             pci_slot="0000:03:00.0", vram_bytes=25149440 * KIB, integrated=False),
    ]),
    ("rocminfo/rx9070xt-gfx1201-plus-raphael-igpu-gfx1036.txt", parse_rocminfo, [
        dict(index=0, name="AMD Radeon RX 9070 XT", gfx_target="gfx1201", pci_id="1002:7550",
             vram_bytes=16695296 * KIB, integrated=False, kfd_node=1),
        dict(index=1, name="AMD Radeon Graphics", gfx_target="gfx1036", pci_id="1002:13c0",
             pci_slot="0000:0e:00.0", integrated=True, kfd_node=2),
    ]),
    ("rocminfo/rx6800-gfx1030-rocm5.3.txt", parse_rocminfo, [
        dict(name="AMD Radeon RX 6800", gfx_target="gfx1030", vram_bytes=16760832 * KIB),
    ]),
    ("rocminfo/rx6700xt-gfx1031.txt", parse_rocminfo, [
        dict(name="AMD Radeon RX 6700 XT", gfx_target="gfx1031", pci_id="1002:73df",
             pci_slot="0000:28:00.0", vram_bytes=12566528 * KIB),
    ]),
    # No "Memory Properties: APU" line in ROCm 5.7: gfx1103 is an APU-only target.
    ("rocminfo/radeon-780m-gfx1103-rocm5.7-7940hs.txt", parse_rocminfo, [
        dict(name="AMD Radeon Graphics", gfx_target="gfx1103", pci_id="1002:15bf",
             vram_bytes=524288 * KIB, integrated=True),
    ]),
    ("rocminfo/radeon-780m-gfx1103-grep-summary-7840hs.txt", parse_rocminfo, [
        dict(name="AMD Radeon 780M", gfx_target="gfx1103", integrated=True, pci_slot=None),
    ]),
    # -- KFD sysfs
    ("kfd/mi300x-node4-grep-gfx-target-version.txt", parse_kfd_topology, [
        dict(gfx_target="gfx942", driver_ok=True, sources=("kfd",)),
    ]),
    # -- rocm-smi
    ("rocm-smi/rx7900xt-productname-use-vram-csv.txt", parse_rocm_smi, [
        dict(name="Radeon RX 7900 XT", gfx_target="gfx1100", pci_id="1002:744c",
             vram_bytes=21458059264, kfd_node=1),
    ]),
    ("rocm-smi/mi100-x2-showproductname-csv.txt", parse_rocm_smi, [
        dict(index=0, name="AMD Instinct MI100"), dict(index=1, name="AMD Instinct MI100"),
    ]),
    ("rocm-smi/mi100-showproductname-rocm4.0-legacy.txt", parse_rocm_smi, [
        dict(name="AMD Instinct MI100", pci_id="1002:738c", gfx_target="gfx908"),
    ]),
    # rocm-smi lists KFD nodes 2, 4, 3: HIP (node order) numbers them 0, 2, 1.
    ("rocm-smi/mi210-mi100-mi50-concise.txt", parse_rocm_smi, [
        dict(index=0, kfd_node=2, pci_id="1002:740f", gfx_target="gfx90a"),
        dict(index=2, kfd_node=4, pci_id="1002:738c", gfx_target="gfx908"),
        dict(index=1, kfd_node=3, pci_id="1002:66a1", gfx_target="gfx906"),
    ]),
    ("rocm-smi/mi300x-x8-concise-with-ansi-caret-escapes.txt", parse_rocm_smi, [
        dict(index=i, kfd_node=i + 2, pci_id="1002:74a1", gfx_target="gfx942") for i in range(8)
    ]),
    ("rocm-smi/mi300x-qpx-4-partitions-concise.txt", parse_rocm_smi, [
        dict(index=i, kfd_node=i + 2, gfx_target="gfx942") for i in range(4)
    ]),
    ("rocm-smi/mi300x-spx-showmeminfo-vram.txt", parse_rocm_smi, [dict(vram_bytes=206141652992)]),
    ("rocm-smi/mi300a-tpx-3-partitions-showmeminfo-vram.txt", parse_rocm_smi, [
        dict(index=i, vram_bytes=33580773376) for i in range(3)
    ]),
    ("rocm-smi/mi300x-oam-showid.txt", parse_rocm_smi, [
        dict(name="AMD Instinct MI300X OAM", pci_id="1002:74a1", gfx_target="gfx942"),
    ]),
    ("rocm-smi/mi300a-apu-showid.txt", parse_rocm_smi, [
        dict(name="AMD Instinct MI300A", pci_id="1002:74a0", gfx_target="gfx942"),
    ]),
    ("rocm-smi/rx6800-concise-legacy-rocm5.3.txt", parse_rocm_smi, [
        dict(index=0, gfx_target=None, kfd_node=None, pci_slot=None),
    ]),
    # -- amd-smi
    ("amd-smi/mi300a-x4-static-full.txt", parse_amd_smi, [
        dict(index=i, name="MI300A", pci_id="1002:74a0", gfx_target="gfx942",
             pci_slot=f"000{i}:01:00.0", vram_bytes=64289 * MIB) for i in range(4)
    ]),
    ("amd-smi/mi308x-static-asic.txt", parse_amd_smi, [
        dict(name="MI308X", pci_id="1002:74a2", gfx_target="gfx942"),
    ]),
    ("amd-smi/instinct-x2-list-redacted-uuid.txt", parse_amd_smi, [
        dict(index=0, pci_slot="0000:23:00.0", kfd_node=1),
        dict(index=1, pci_slot="0000:26:00.0", kfd_node=2),
    ]),
    ("amd-smi/mi300x-vf-default.txt", parse_amd_smi, [
        dict(index=0, name="AMD Instinct MI300X VF", pci_slot="0000:83:00.0",
             vram_bytes=196288 * MIB),
    ]),
    # -- nvidia-smi
    ("nvidia-smi/h100-sxm-x8-driver550.txt", parse_nvidia_smi, [
        dict(index=i, name="NVIDIA H100 80GB HBM3", compute_capability="9.0",
             vram_bytes=81559 * MIB, driver_ok=True) for i in range(8)
    ]),
    ("nvidia-smi/b200-x8-driver580.txt", parse_nvidia_smi, [
        dict(index=i, compute_capability="10.0", vram_bytes=183359 * MIB) for i in range(8)
    ]),
    ("nvidia-smi/h100-80gb-hbm3-single-under-load-driver590.txt", parse_nvidia_smi, [
        dict(pci_slot="0000:00:09.0", compute_capability="9.0", vram_bytes=81559 * MIB),
    ]),
    ("nvidia-smi/h100-mig-enabled-under-load-driver590.txt", parse_nvidia_smi, [
        dict(compute_capability="9.0", vram_bytes=81559 * MIB),
    ]),
    ("nvidia-smi/h200-single-under-load-driver590.txt", parse_nvidia_smi, [
        dict(name="NVIDIA H200", pci_slot="0000:83:00.0", vram_bytes=143771 * MIB),
    ]),
    ("nvidia-smi/rtx4080super-linux-under-load-driver595.txt", parse_nvidia_smi, [
        dict(name="NVIDIA GeForce RTX 4080 ...", compute_capability="8.9", vram_bytes=16376 * MIB),
    ]),
    ("nvidia-smi/rtx2080super-linux-under-load-driver610.txt", parse_nvidia_smi, [
        dict(compute_capability="7.5", pci_slot="0000:0c:00.0", vram_bytes=8192 * MIB),
    ]),
    ("nvidia-smi/rtx2080super-windows-wddm-under-load-driver610.txt", parse_nvidia_smi, [
        dict(compute_capability="7.5", vram_bytes=8192 * MIB),
    ]),
    ("nvidia-smi/rtx-pro-laptop-smi470-driver580-table-partial.txt", parse_nvidia_smi, [
        dict(name="NVIDIA RTX PRO ...", compute_capability=None, vram_bytes=8151 * MIB),
    ]),
    ("nvidia-smi/tesla-t4-driver580-gpu-table-partial.txt", parse_nvidia_smi, [
        dict(name="Tesla T4", compute_capability="7.5", pci_slot="0000:00:1e.0"),
    ]),
    ("nvidia-smi/l4-driver570-gpu-table-partial.txt", parse_nvidia_smi, [
        dict(name="NVIDIA L4", compute_capability="8.9", vram_bytes=23034 * MIB),
    ]),
    ("nvidia-smi/grid-k520-driver346-legacy-format.txt", parse_nvidia_smi, [
        dict(name="GRID K520", compute_capability="3.0", pci_slot="0000:00:03.0"),
    ]),
    ("nvidia-smi/h100-x8-vm-list-gpus.txt", parse_nvidia_smi, [
        dict(index=i, compute_capability="9.0", pci_slot=None) for i in range(8)
    ]),
    ("nvidia-smi/titanv-plus-rtx5880ada-list.txt", parse_nvidia_smi, [
        dict(index=0, name="NVIDIA TITAN V", compute_capability="7.0"),
        dict(index=1, name="NVIDIA RTX 5880 Ada Generation", compute_capability="8.9"),
    ]),
    ("nvidia-smi/titanv-plus-rtx5880ada-query-csv.txt", parse_nvidia_smi, [
        dict(index=0, name="NVIDIA TITAN V", compute_capability="7.0"),
        dict(index=1, name="NVIDIA RTX 5880 Ada Generation", compute_capability="8.9"),
    ]),
    ("nvidia-smi/failure-couldnt-communicate-with-driver.txt", parse_nvidia_smi, []),
    ("nvidia-smi/failure-compute-cap-not-valid-field.txt", parse_nvidia_smi, []),
    # -- lspci: ASPEED BMC VGA, NVSwitch bridges and virtio VGA are not GPUs
    ("lspci/hgx-h100-x8-aspeed-bmc-nvswitch-host.txt", parse_lspci, [
        dict(index=i, vendor="nvidia", name="NVIDIA H100 SXM5 80GB", pci_id="10de:2330",
             compute_capability="9.0", driver_ok=False, pci_slot=slot)
        for i, slot in enumerate(f"0000:{b}:00.0" for b in HGX_BUSES)
    ]),
    ("lspci/kvm-guest-virtio-gpu-plus-4x-h100-passthrough.txt", parse_lspci, [
        dict(index=i, pci_id="10de:2330", pci_slot=f"0000:{0x09 + i:02x}:00.0") for i in range(4)
    ]),
    ("lspci/dell-xps15-gtx1050ti-mobile-3d-controller-nnk.txt", parse_lspci, [
        dict(name="NVIDIA GeForce GTX 1050 Ti Mobile", pci_slot="0000:01:00.0",
             compute_capability="6.1", kernel_driver="nvidia"),
    ]),
    ("lspci/asus-tuf-a16-rx7600s-dgpu-plus-780m-igpu-knn.txt", parse_lspci, [
        dict(index=0, pci_id="1002:7480", gfx_target="gfx1102", integrated=False,
             pci_slot="0000:03:00.0", kernel_driver="amdgpu"),
        dict(index=1, pci_id="1002:15bf", gfx_target="gfx1103", integrated=True,
             name="AMD Radeon 780M (Phoenix1)", pci_slot="0000:68:00.0"),
    ]),
    # -- vulkaninfo: llvmpipe (a CPU device) keeps its index but is not a GPU
    ("vulkaninfo/rtx2060-nvidia-plus-llvmpipe-devices-section.txt", parse_vulkaninfo, [
        dict(vendor="nvidia", name="NVIDIA GeForce RTX 2060", vulkan_index=0,
             pci_id="10de:1f08", compute_capability="7.5", integrated=False),
    ]),
    ("vulkaninfo/rx6600xt-amdgpu-pro-devices-section.txt", parse_vulkaninfo, [
        dict(name="AMD Radeon RX 6600 XT", pci_id="1002:73ff", gfx_target="gfx1032"),
    ]),
    ("vulkaninfo/rx9070xt-plus-raphael-igpu-amdvlk-device-select-list.txt", parse_vulkaninfo, [
        dict(pci_id="1002:164e", integrated=True, pci_slot="0000:19:00.0", gfx_target="gfx1036"),
    ]),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "parser", "expected"), GPU_CASES, ids=[case[0] for case in GPU_CASES])
def test_parser_reads_each_gpu(fixture: str, parser: Parser, expected: list[dict[str, Any]]) -> None:
    gpus, _ = parser(read(fixture))
    assert len(gpus) == len(expected), f"{fixture} ({source(fixture)}): {gpus}"
    for gpu, attributes in zip(gpus, expected, strict=True):
        actual = {key: getattr(gpu, key) for key in attributes}
        assert actual == attributes, f"{fixture} ({source(fixture)})"


RUNTIME_CASES = [
    ("rocminfo/mi300x-vf.txt", parse_rocminfo, dict(rocminfo_ok=True, probe_errors=())),
    ("amd-smi/mi300x-vf-default.txt", parse_amd_smi, dict(rocm_version="7.2.4")),
    ("nvidia-smi/h100-sxm-x8-driver550.txt", parse_nvidia_smi,
     dict(nvidia_smi_ok=True, nvidia_driver_version="550.90.07", nvidia_cuda_version="12.4")),
    ("nvidia-smi/rtx2080super-linux-under-load-driver610.txt", parse_nvidia_smi,
     dict(nvidia_driver_version="610.57.04", nvidia_cuda_version="13.3")),
    # nvidia-smi 470 userspace talking to a 580 driver: the driver's version counts.
    ("nvidia-smi/rtx-pro-laptop-smi470-driver580-table-partial.txt", parse_nvidia_smi,
     dict(nvidia_smi_ok=True, nvidia_driver_version="580.95.05")),
    ("nvidia-smi/grid-k520-driver346-legacy-format.txt", parse_nvidia_smi,
     dict(nvidia_driver_version="346.46", nvidia_cuda_version=None)),
    ("nvidia-smi/titanv-plus-rtx5880ada-query-csv.txt", parse_nvidia_smi,
     dict(nvidia_smi_ok=True, nvidia_driver_version="570.86.15")),
    ("nvidia-smi/failure-couldnt-communicate-with-driver.txt", parse_nvidia_smi,
     dict(nvidia_smi_ok=False, nvidia_driver_version=None,
          nvidia_error="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
          "driver. Make sure that the latest NVIDIA driver is installed and running.")),
    ("nvidia-smi/failure-compute-cap-not-valid-field.txt", parse_nvidia_smi,
     dict(nvidia_smi_ok=False, nvidia_error=None,
          probe_errors=("nvidia-smi does not know the field 'compute_cap' "
                        "(nvidia-smi older than 510)",))),
    ("vulkaninfo/rtx2060-nvidia-plus-llvmpipe-devices-section.txt", parse_vulkaninfo,
     dict(vulkan_ok=True)),
]  # fmt: skip


@pytest.mark.parametrize(("fixture", "parser", "expected"), RUNTIME_CASES, ids=[c[0] for c in RUNTIME_CASES])
def test_parser_reads_the_runtime(fixture: str, parser: Parser, expected: dict[str, Any]) -> None:
    _, runtime = parser(read(fixture))
    assert {key: getattr(runtime, key) for key in expected} == expected, source(fixture)


def test_nvidia_query_csv_without_header_and_unsupported_fields() -> None:
    # Hand-built in the documented --format=csv,noheader,nounits layout (QUERY_FIELDS
    # order), with the values of h100-sxm-x8-driver550.txt; "[N/A]" as old drivers print.
    lines = [
        "0, NVIDIA H100 80GB HBM3, 81559, 9.0, 550.90.07, 00000000:53:00.0",
        "1, NVIDIA H100 80GB HBM3, [N/A], 9.0, 550.90.07, 00000000:64:00.0",
    ]
    gpus, runtime = parse_nvidia_smi(lines)
    assert [(g.index, g.pci_slot, g.vram_bytes) for g in gpus] == [
        (0, "0000:53:00.0", 81559 * MIB),
        (1, "0000:64:00.0", None),
    ]
    assert runtime.nvidia_driver_version == "550.90.07"


def test_kfd_dump_with_cpu_and_gpu_nodes() -> None:
    # Hand-built in the probe's layout: node properties as kfd_topology.c's node_show()
    # prints them, with the values of rocminfo/rx7900xtx-gfx1100.txt (node 1, BDFID 768,
    # chip 0x744c = 29772) and a 24 GiB FB_PUBLIC bank (heap_type 1).
    lines = [
        "kfd-node 0", "name ", "cpu_cores_count 16", "simd_count 0", "gfx_target_version 0",
        "kfd-mem-bank 0", "heap_type 0", "size_in_bytes 33179353088",
        "kfd-node 1", "name ip discovery", "cpu_cores_count 0", "simd_count 192",
        "gfx_target_version 110000", "vendor_id 4098", "device_id 29772", "location_id 768",
        "domain 0", "drm_render_minor 128",
        "kfd-mem-bank 0", "heap_type 1", "size_in_bytes 25753026560", "flags 0",
    ]  # fmt: skip
    (gpu,), _ = parse_kfd_topology(lines)
    assert (gpu.gfx_target, gpu.pci_id, gpu.pci_slot) == ("gfx1100", "1002:744c", "0000:03:00.0")
    assert (gpu.kfd_node, gpu.index, gpu.vram_bytes) == (1, 0, 25753026560)
    assert (gpu.render_node, gpu.integrated) == ("/dev/dri/renderD128", False)


def test_kfd_combined_apu_node_is_integrated() -> None:
    # Hand-built: a Kaveri/Carrizo-style CRAT node with CPU cores and SIMDs together.
    lines = ["kfd-node 0", "cpu_cores_count 4", "simd_count 32", "gfx_target_version 80001"]
    (gpu,), _ = parse_kfd_topology(lines)
    assert (gpu.gfx_target, gpu.integrated) == ("gfx801", True)


def test_device_nodes() -> None:
    _, runtime = parse_device_nodes(["/dev/nvidiactl", "/dev/nvidia0", "", "/dev/kfd"])
    assert runtime.device_nodes == ("/dev/kfd", "/dev/nvidia0", "/dev/nvidiactl")
