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
LOAD_LINES = "offloaded [0-9]+/[0-9]+ layers|model buffer size"


def offload_problem(log: str, backend: str, n_gpu_layers: int) -> str | None:
    """Why the server's log shows it is not running as planned on the GPU, or None.

    When it loads a model llama.cpp logs ``load_tensors: offloaded N/M layers
    to GPU`` and one ``<buffer> model buffer size = X MiB`` line per buffer the
    weights went into. A GPU plan that asked for every layer must see N == M
    and some weights in a GPU's own memory (CUDA0, ROCm0, Vulkan0), so that a
    silent CPU run (a missing driver, a wrong device) fails the host. /props
    reports no devices in the pinned llama.cpp, so the log is the evidence; a
    log with neither line proves nothing either way and the caller warns.
    """
    if backend == "cpu" or n_gpu_layers == 0:
        return None
    found = OFFLOADED.findall(log)
    if found:
        done, total = (int(x) for x in found[-1])
        if done < min(total, n_gpu_layers):
            return f"only {done}/{total} layers were offloaded to the GPU ({backend} planned {n_gpu_layers})"
    buffers = [(name, float(size)) for name, size in MODEL_BUFFER.findall(log)]
    if buffers and not any(GPU_BUFFER.fullmatch(name) and size > 0 for name, size in buffers):
        listed = ", ".join(f"{name} {size:.0f} MiB" for name, size in buffers)
        return f"the model's weights were loaded into host memory only ({listed}), not the {backend} GPU's"
    return None


def smoke_key(data: Any) -> str | None:
    """The key the smoke checks send: the first of the same content the server step writes to the host's key file."""
    return first_key(api_keys(data))
