"""What the GPU plan decides for one host: the backend, the devices, and why.

It is its own module because both the backend rules (``gpu_backends``) build
it and the plan (``gpu_plan``) returns it; neither imports the other back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lemfleet.roles.hostinfo import Gpu

Backend = Literal["hip", "cuda", "vulkan", "cpu"]


@dataclass(frozen=True)
class GpuChoice:
    """The GPU part of a host's plan."""

    backend: Backend
    devices: tuple[Gpu, ...] = ()
    gpu_targets: tuple[str, ...] = ()  # GPU_TARGETS for ggml-hip: the chosen GPUs' gfx set
    cuda_architectures: tuple[str, ...] = ()  # CMAKE_CUDA_ARCHITECTURES: "89", "90"
    env: dict[str, str] = field(default_factory=dict)  # for llama-server's environment
    vram_budget_bytes: int = 0
    tensor_split: tuple[float, ...] = ()  # --tensor-split, proportional to VRAM
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    device_nodes: tuple[str, ...] = ()  # DeviceAllow= entries for the systemd unit
