"""smoke: the settings and checks of proving a host serves: health, auth, models, chat, streamed chat, offload.

The checks run in the health gate (roles/gate.py) on every deploy, through
the deploy's own SSH connection, so a loopback-only server is tested as it
is. Each host's result, with its time to first token and decode tokens/s,
is written to ``smoke_results_dir`` on the controller.
"""

from __future__ import annotations

import re
from typing import Any

from lemfleet.api_keys import first_key
from lemfleet.roles.server import api_keys
from lemfleet.roles.settings import Setting, boolean, defaults, integer, text

SETTINGS = (
    Setting("smoke_enabled", True, "Smoke-test each host at the end of the deploy.", boolean),
    Setting(
        "smoke_health_timeout", 600, "Seconds to wait for the model to load (/health 503 -> 200).", integer(1, 86400)
    ),
    Setting("smoke_max_tokens", 16, "Tokens asked of each test completion.", integer(1, 4096)),
    Setting(
        "smoke_results_dir", "out/smoke", "Controller directory for each host's smoke JSON.", text(accepted="a path")
    ),
)
DEFAULTS = defaults(SETTINGS)


OFFLOADED = re.compile(r"offloaded (\d+)/(\d+) layers to GPU")
# load_tensors: "%12s model buffer size = %8.2f MiB", one line per buffer the weights were loaded into.
MODEL_BUFFER = re.compile(r"(\S+) model buffer size = +([\d.]+) MiB")
# A buffer in a GPU's own memory: CUDA0, ROCm1, Vulkan0 (not CUDA_Host or CPU_Mapped, which are host memory).
GPU_BUFFER = re.compile(r"(CUDA|ROCm|Vulkan)\d+")
# What the server says when its GPU backend found no device: common/arg.cpp's warning for -ngl, ggml-cuda's
# (also ggml-hip's, named ROCm) init error, ggml-vulkan's empty device list.
NO_DEVICE = re.compile(r"no usable GPU found.*|failed to initialize (?:CUDA|ROCm): .*|ggml_vulkan: No devices found\.?")
# ggml-vulkan's device line, "ggml_vulkan: 0 = llvmpipe (LLVM 19.1.7, 256 bits) (llvmpipe) | uma: 1 | ...":
# Mesa's lavapipe and SwiftShader are Vulkan on the CPU, not a GPU (ggml skips them unless they are chosen).
SOFTWARE_VULKAN = re.compile(r"ggml_vulkan: (\d+) = ((?:llvmpipe|lavapipe|SwiftShader)[^|]*?)\s*\|")
LOAD_LINES = "offloaded [0-9]+/[0-9]+ layers|model buffer size|no usable GPU found|failed to initialize|ggml_vulkan: "


def _no_gpu(what: str, log: str) -> str:
    said = NO_DEVICE.search(log)
    return f"no GPU computed: {what}" + (f"; the server said: {said.group(0).strip()!r}" if said else "")


def offload_problem(log: str, backend: str, n_gpu_layers: int) -> str | None:
    """Why the server's log shows it is not running as planned on the GPU, or None.

    When it loads a model llama.cpp logs ``load_tensors: offloaded N/M layers
    to GPU`` (only when it has a GPU device at all) and one ``<buffer> model
    buffer size = X MiB`` line per buffer the weights went into. A GPU plan
    that asked for every layer must see N == M and some weights in a GPU's own
    memory (CUDA0, ROCm0, Vulkan0) on a device that is not Vulkan on the CPU,
    so that a silent CPU run (a missing driver, a wrong device, no GPU at all)
    fails the host; where nothing ran on a GPU the reason starts with "no GPU
    computed" and quotes what the server said about its devices. /props
    reports no devices in the pinned llama.cpp, so the log is the evidence; a
    log with neither line proves nothing either way and the caller warns.
    """
    if backend == "cpu" or n_gpu_layers == 0:
        return None
    found = OFFLOADED.findall(log)
    if found:
        done, total = (int(x) for x in found[-1])
        if done == 0:
            return _no_gpu(f"0/{total} layers were offloaded to the GPU ({backend} planned {n_gpu_layers})", log)
        if done < min(total, n_gpu_layers):
            return f"only {done}/{total} layers were offloaded to the GPU ({backend} planned {n_gpu_layers})"
    buffers = [(name, float(size)) for name, size in MODEL_BUFFER.findall(log)]
    on_gpu = [name for name, size in buffers if GPU_BUFFER.fullmatch(name) and size > 0]
    if buffers and not on_gpu:
        listed = ", ".join(f"{name} {size:.0f} MiB" for name, size in buffers)
        return _no_gpu(
            f"the model's weights were loaded into host memory only ({listed}), not the {backend} GPU's", log
        )
    software = {f"Vulkan{index}": name.strip() for index, name in SOFTWARE_VULKAN.findall(log)}
    if on_gpu and all(name in software for name in on_gpu):
        devices = ", ".join(f"{name} is {software[name]}" for name in on_gpu)
        return _no_gpu(f"the weights went to Vulkan on the CPU ({devices}), not a GPU", log)
    return None


def smoke_key(data: Any) -> str | None:
    """The key the smoke checks send: the first of the same content the server step writes to the host's key file."""
    return first_key(api_keys(data))
