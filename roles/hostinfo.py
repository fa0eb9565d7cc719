"""What the detect step learns about a host, as plain data.

Facts (``roles/facts/``) parse command output into these types; the plan
(``roles/plan.py``) reads them. Nothing here talks to a host, so plans can be
computed and tested from recorded outputs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Vendor = Literal["amd", "nvidia", "intel", "other"]
FaultKind = Literal[
    "version-mismatch",  # kernel module and userspace libraries of different releases
    "module-not-loaded",  # no driver bound to the GPU (or nouveau / vfio-pci holds it)
    "device-nodes",  # /dev/kfd, /dev/dri/renderD*, /dev/nvidia* missing or not accessible
    "firmware-missing",  # the kernel driver could not load the GPU's firmware
    "no-devices",  # the driver is loaded but initialised no GPU
    "driver-missing",  # the tool is there but its driver library is not
    "unsupported",  # the kernel driver does not support this GPU
]


@dataclass(frozen=True)
class MigDevice:
    """One NVIDIA MIG instance, as ``nvidia-smi -L`` and the table's "MIG devices" list it.

    A CUDA process sees exactly one MIG instance, named by ``uuid`` in
    ``CUDA_VISIBLE_DEVICES``; its memory is the instance's, not the GPU's.
    """

    uuid: str  # "MIG-0929581a-2be6-5dec-bf34-0954c6c529a6"
    profile: str  # "3g.40gb"
    device: int  # the MIG device index on its GPU ("Device  1")
    vram_bytes: int | None = None  # from the table; else the profile's size (decimal GB)
    vram_from_profile: bool = False


@dataclass(frozen=True)
class GpuFault:
    """A GPU driver problem diagnosed from a tool's words, with what fixes it."""

    kind: FaultKind
    vendor: Vendor
    source: str  # the tool or log that said so: "nvidia-smi", "rocminfo", "kernel-log", "lspci"
    evidence: str  # the line quoted as printed
    action: str

    def describe(self) -> str:
        return f"{self.kind} ({self.source}: {self.evidence!r}); action: {self.action}"


@dataclass(frozen=True)
class Gpu:
    """One GPU, merged from every probe that saw it.

    ``index`` is the device's index as its runtime counts it (HIP, CUDA or
    Vulkan), which is what the ``*_VISIBLE_DEVICES`` variables take.
    """

    vendor: Vendor
    name: str
    index: int = 0
    pci_slot: str | None = None  # "0000:c3:00.0" where known
    pci_id: str | None = None  # "1002:744c"
    gfx_target: str | None = None  # "gfx1100" (AMD)
    compute_capability: str | None = None  # "8.9" (NVIDIA)
    vram_bytes: int | None = None
    integrated: bool = False
    driver_ok: bool = False  # its runtime tool (rocminfo / nvidia-smi / KFD) answered
    sources: tuple[str, ...] = ()
    kfd_node: int | None = None  # KFD topology node id (AMD): joins sysfs, rocminfo, rocm-smi
    render_node: str | None = None  # "/dev/dri/renderD128" where known (KFD drm_render_minor)
    vulkan_index: int | None = None  # index in Vulkan's device order (GGML_VK_VISIBLE_DEVICES)
    kernel_driver: str | None = None  # "amdgpu", "nvidia", "nouveau", "vfio-pci" (lspci -k)
    uuid: str | None = None  # "GPU-..." (NVIDIA)
    mig_enabled: bool | None = None  # NVIDIA MIG mode now; None where the GPU has no MIG
    mig_devices: tuple[MigDevice, ...] = ()
    compute_partition: str | None = None  # AMD Instinct: "SPX", "DPX", "TPX", "QPX", "CPX"
    memory_partition: str | None = None  # AMD Instinct: "NPS1", "NPS2", "NPS4"
    partition_id: int | None = None  # this logical GPU's partition on its physical device
    notes: tuple[str, ...] = ()  # what detection corrected, for the plan's reasons


@dataclass(frozen=True)
class GpuRuntime:
    """Which GPU userspace already works on the host."""

    rocminfo_ok: bool = False
    rocm_version: str | None = None
    nvidia_smi_ok: bool = False
    nvidia_driver_version: str | None = None
    nvidia_error: str | None = None  # e.g. "couldn't communicate with the NVIDIA driver"
    vulkan_ok: bool = False
    device_nodes: tuple[str, ...] = ()  # /dev/kfd, /dev/dri/renderD128, /dev/nvidia0 ...
    nvidia_cuda_version: str | None = None  # highest CUDA the driver supports ("12.4")
    probe_errors: tuple[str, ...] = ()  # probes that ran and failed, for the plan's warnings
    # Output no parser recognised ("<tool>: ... '<line>'"): the GPU list cannot be trusted,
    # so the plan refuses (or serves on the CPU under gpu_allow_cpu_fallback).
    fact_errors: tuple[str, ...] = ()
    faults: tuple[GpuFault, ...] = ()  # diagnosed driver problems
    pci_listed: bool = False  # a PCI listing (lspci or sysfs) was read, so absent GPUs are absent
    device_node_modes: tuple[str, ...] = ()  # "/dev/kfd 666 render" lines (stat -c '%n %a %G')


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os_id: str  # "debian", "ubuntu"
    os_version: str  # "12", "24.04"
    os_codename: str  # "bookworm", "noble"
    arch: str  # "x86_64"
    cpu_model: str
    cpu_physical_cores: int
    cpu_logical_cores: int
    cpu_flags: frozenset[str]
    mem_total_bytes: int
    disk_free_bytes: dict[str, int]  # path -> bytes free on its filesystem
    systemd_running: bool
    container: bool
    gpus: tuple[Gpu, ...] = ()
    gpu_runtime: GpuRuntime = field(default_factory=GpuRuntime)

    @property
    def cpu_features(self) -> list[str]:
        """The SIMD features llama.cpp's CPU backend cares about, present on this host."""
        wanted = (
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512_vnni",
            "avx512_bf16",
            "amx_int8",
            "amx_bf16",
        )
        return [f for f in wanted if f in self.cpu_flags]
