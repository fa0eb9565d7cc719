"""What the detect step learns about a host, as plain data.

Facts (``roles/facts/``) parse command output into these types; the plan
(``roles/plan.py``) reads them. Nothing here talks to a host, so plans can be
computed and tested from recorded outputs alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Vendor = Literal["amd", "nvidia", "intel", "other"]


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


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os_id: str  # "debian", "ubuntu"
    os_version: str  # "12", "24.04"
    os_codename: str  # "bookworm", "noble"
    os_family: str  # "debian"
    arch: str  # "x86_64"
    cpu_model: str
    cpu_physical_cores: int
    cpu_logical_cores: int
    cpu_flags: frozenset[str]
    mem_total_bytes: int
    mem_available_bytes: int
    disk_free_bytes: dict[str, int]  # path -> bytes free on its filesystem
    systemd_running: bool
    virtualization: str  # systemd-detect-virt: "none", "kvm", "systemd-nspawn", ...
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
