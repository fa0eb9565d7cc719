"""plan: a pure function from a host's facts and its settings to a :class:`HostPlan`.

Every choice carries a one-line reason, so that the plan can be printed for a
whole fleet before anything is touched, and so that a surprising choice can
be traced to the fact or setting behind it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lemfleet.paths import LOOPBACK, SERVER_HOST, SERVER_PORT
from lemfleet.roles import server_tls
from lemfleet.roles.gpu_plan import choose_gpu
from lemfleet.roles.hostinfo import HostFacts
from lemfleet.roles.instances import Instance, choose_layout

GIB = 1024**3

# Options every build gets. Only llama-server is built, statically linked so
# the installed build is one self-contained file; nothing is fetched at build
# time (the web UI is the one in the source tree).
BASE_CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
)


@dataclass(frozen=True)
class ModelInfo:
    """What the plan needs to know of the model: its size drives memory decisions."""

    alias: str
    size_bytes: int = 0


@dataclass(frozen=True)
class HostPlan:
    hostname: str
    os_id: str
    os_version: str
    arch: str
    cpu_features: tuple[str, ...]
    cpu_logical_cores: int
    backend: str
    gpu_targets: tuple[str, ...]
    cuda_architectures: tuple[str, ...]
    cmake_flags: tuple[str, ...]
    build_env: dict[str, str]
    run_env: dict[str, str]
    device_nodes: tuple[str, ...]
    threads: int
    ctx_size: int
    parallel: int
    n_gpu_layers: int
    flash_attn: str
    listen_host: str
    port: int
    alias: str
    tensor_split: tuple[float, ...] = ()
    log_verbosity: int = 3
    reasons: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # The llama-server processes (server_instances, roles/instances.py); empty: one plain server.
    instances: tuple[Instance, ...] = ()

    @property
    def needs_api_key(self) -> bool:
        return self.listen_host not in LOOPBACK

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.hostname,
            "backend": self.backend,
            "gpu_targets": list(self.gpu_targets),
            "cuda_architectures": list(self.cuda_architectures),
            "cmake_flags": list(self.cmake_flags),
            "threads": self.threads,
            "ctx_size": self.ctx_size,
            "parallel": self.parallel,
            "n_gpu_layers": self.n_gpu_layers,
            "flash_attn": self.flash_attn,
            "log_verbosity": self.log_verbosity,
            "listen": f"{self.listen_host}:{self.port}",
            "alias": self.alias,
            "run_env": self.run_env,
            "reasons": self.reasons,
            "warnings": list(self.warnings),
        }


def _auto_parallel(facts: HostFacts) -> tuple[int, str]:
    mem_gib = facts.mem_total_bytes / GIB
    if mem_gib < 4:
        return 1, f"1 slot: {mem_gib:.1f} GiB of RAM leaves room for one context"
    slots = max(1, min(4, facts.cpu_physical_cores // 2, int(mem_gib // 4)))
    return slots, (
        f"{slots} slot(s): half the {facts.cpu_physical_cores} physical cores, "
        f"one per 4 GiB of {mem_gib:.1f} GiB RAM, at most 4"
    )


def _auto_ctx(facts: HostFacts, parallel: int, model: ModelInfo) -> tuple[int, str]:
    # llama-server divides -c among the slots; give each slot 4096 tokens
    # where the memory left after the weights allows it, else 2048.
    free = facts.mem_total_bytes - model.size_bytes
    per_slot = 4096 if free >= 4 * GIB else 2048
    return per_slot * parallel, f"{per_slot} tokens per slot x {parallel} slot(s)"


def plan_host(
    facts: HostFacts, settings: Mapping[str, Any], model: ModelInfo, *, recorded: Mapping[str, Any] | None = None
) -> HostPlan:
    """Decide how this host will build and serve. Pure: no host is contacted.

    ``recorded`` is the host's deploy record before this deploy, if any: a host
    deployed before instances keeps its one server until ``server_instances`` is set.
    """
    reasons: dict[str, str] = {}
    warnings: list[str] = []
    gpu = choose_gpu(facts, settings)
    reasons["backend"] = "; ".join(gpu.reasons)
    warnings.extend(gpu.warnings)

    flags = list(BASE_CMAKE_FLAGS)
    # llama.cpp builds on the host it serves from, so tune for that CPU.
    flags.append("-DGGML_NATIVE=ON")
    if gpu.backend == "hip":
        flags += ["-DGGML_HIP=ON", f"-DGPU_TARGETS={';'.join(gpu.gpu_targets)}"]
    elif gpu.backend == "cuda":
        # Unknown compute capability (no driver yet): let CMake ask the GPU at build time.
        archs = ";".join(gpu.cuda_architectures) or "native"
        flags += ["-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={archs}"]
    elif gpu.backend == "vulkan":
        flags.append("-DGGML_VULKAN=ON")
    flags += list(settings.get("llama_cpp_cmake_flags") or [])
    # OpenSSL only for a server_tls host, so that every other build keeps its id (roles/server_tls.py).
    flags = server_tls.cmake_flags(flags, settings)
    reasons["cmake_flags"] = f"{gpu.backend} backend, native CPU tuning, llama-server only"
    if server_tls.enabled(settings):
        reasons["cmake_flags"] += "; OpenSSL on for server_tls (a build id of its own)"

    threads = settings.get("server_threads") or facts.cpu_physical_cores
    reasons["threads"] = (
        "set by server_threads"
        if settings.get("server_threads")
        else f"{threads} = physical cores (SMT siblings add little to decode)"
    )
    if settings.get("server_parallel"):
        parallel = settings["server_parallel"]
        reasons["parallel"] = "set by server_parallel"
    else:
        parallel, reasons["parallel"] = _auto_parallel(facts)
    if settings.get("server_ctx_size") is not None:
        ctx = settings["server_ctx_size"]
        reasons["ctx_size"] = "set by server_ctx_size" + (" (0: the model's own)" if ctx == 0 else "")
    else:
        ctx, reasons["ctx_size"] = _auto_ctx(facts, parallel, model)

    ngl_setting = settings.get("server_n_gpu_layers")
    if gpu.backend == "cpu":
        ngl = 0
        reasons["n_gpu_layers"] = "0: CPU backend"
    elif ngl_setting is not None:
        ngl = ngl_setting
        reasons["n_gpu_layers"] = "set by server_n_gpu_layers"
    else:
        ngl = 999
        reasons["n_gpu_layers"] = f"all layers on the GPU ({gpu.vram_budget_bytes / GIB:.1f} GiB VRAM chosen)"

    log_verbosity = settings.get("server_log_verbosity")
    if log_verbosity is not None:
        reasons["log_verbosity"] = "set by server_log_verbosity"
    elif gpu.backend != "cpu":
        log_verbosity = 4
        reasons["log_verbosity"] = (
            "4: the journal then shows where the weights were loaded, which the smoke step checks"
        )
    else:
        log_verbosity = 3
        reasons["log_verbosity"] = "3: llama-server's default"

    run_env = dict(gpu.env)
    if gpu.tensor_split:
        reasons["tensor_split"] = "split across GPUs by VRAM: " + ",".join(f"{s:g}" for s in gpu.tensor_split)
    port = settings.get("server_port", SERVER_PORT)
    layout = choose_layout(
        settings.get("server_instances"),
        gpu=gpu,
        facts=facts,
        threads=threads,
        ctx_size=ctx,
        model_bytes=model.size_bytes,
        port=port,
        unit_name=settings.get("server_unit_name", "lemfleet-llama"),
        recorded=recorded,
        wanted_devices=settings.get("gpu_devices"),
    )
    reasons["instances"] = layout.reason

    return HostPlan(
        hostname=facts.hostname,
        os_id=facts.os_id,
        os_version=facts.os_version,
        arch=facts.arch,
        cpu_features=tuple(facts.cpu_features),
        cpu_logical_cores=facts.cpu_logical_cores,
        backend=gpu.backend,
        gpu_targets=tuple(gpu.gpu_targets),
        cuda_architectures=tuple(gpu.cuda_architectures),
        cmake_flags=tuple(flags),
        build_env={},
        run_env=run_env,
        device_nodes=tuple(gpu.device_nodes),
        threads=threads,
        ctx_size=ctx,
        parallel=parallel,
        n_gpu_layers=ngl,
        flash_attn=settings.get("server_flash_attn", "auto"),
        listen_host=settings.get("server_host", SERVER_HOST),
        port=port,
        alias=model.alias,
        tensor_split=tuple(gpu.tensor_split),
        log_verbosity=log_verbosity,
        reasons=reasons,
        warnings=tuple(warnings),
        instances=layout.instances,
    )
