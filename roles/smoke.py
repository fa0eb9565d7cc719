"""smoke: prove the host serves: health (503 while loading is fine), models, chat, streamed chat.

The check runs on every deploy, through the deploy's own SSH connection, so
a loopback-only server is tested as it is. A passing check changes nothing,
so it does not spoil a no-change second run; a failing one fails the host
with what went wrong. Each host's result, with its time to first token and
decode tokens/s, is written to ``smoke_results_dir`` on the controller.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation

from lemfleet.forward import forward
from lemfleet.roles.server import api_keys
from lemfleet.roles.settings import Setting, boolean, defaults, integer, text
from lemfleet.smoke import smoke_check

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


def _report_failure(message: str):
    def failed(state, host) -> bool:
        host.log_styled(message, fg="red", log_func=logger.error)
        return False

    return failed


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


@operation(is_idempotent=False)
def check_endpoint(port: int, listen_host: str, alias: str, backend: str, unit: str = "", n_gpu_layers: int = 0):
    """Run the smoke test at execution time; yield a failing command only when it fails."""
    if not state.is_executing:
        return
    data = host.data
    remote = "127.0.0.1" if listen_host in ("0.0.0.0", "::") else listen_host
    # The first key of the same content the server step writes to the host's key file.
    keys = api_keys(data) or ""
    key = next((line.strip() for line in keys.splitlines() if line.strip() and not line.startswith("#")), None)
    with forward(host, remote, port) as base:
        result = smoke_check(
            base,
            api_key=key,
            model_alias=alias,
            host=host.name,
            backend=backend,
            health_timeout=data.get("smoke_health_timeout"),
            max_tokens=data.get("smoke_max_tokens"),
        )
    result.url = f"http://{listen_host}:{port}"
    out = Path(data.get("smoke_results_dir"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{host.name}.json.tmp"
    tmp.write_text(json.dumps(result.to_json(), indent=2))
    os.replace(tmp, out / f"{host.name}.json")
    if result.ok and backend != "cpu":
        # This run of the service only: its invocation's journal.
        invocation = f"_SYSTEMD_INVOCATION_ID=$(systemctl show -p InvocationID --value {unit})"
        status, log = host.run_shell_command(
            StringCommand(f"journalctl {invocation} --no-pager -o cat | grep -E '{LOAD_LINES}'")
        )
        text = log.stdout if status else ""
        if not (OFFLOADED.search(text) or MODEL_BUFFER.search(text)):
            host.log_styled(f"warning: the {backend} server's log does not say where it loaded the model "
                            "(server_log_verbosity below 4?)",
                            fg="yellow", log_func=logger.warning)  # fmt: skip
        problem = offload_problem(text, backend, n_gpu_layers)
        if problem:
            yield FunctionCommand(_report_failure(f"smoke test failed: {problem}"), (), {})
            return
    if result.ok:
        host.log_styled(
            f"smoke passed: ttft {result.time_to_first_token_s}s, "
            f"{result.decode_tokens_per_s} tokens/s, reply {result.reply!r}",
            fg="green",
            log_func=logger.info,
        )
        return
    problems = "; ".join(f"{s.name}: {s.message}" for s in result.failures())
    yield FunctionCommand(_report_failure(f"smoke test failed: {problems}"), (), {})


@deploy("Smoke-test the endpoint", data_defaults=DEFAULTS)
def smoke(port: int, listen_host: str, alias: str, backend: str, n_gpu_layers: int = 0) -> None:
    if host.data.get("smoke_enabled"):
        check_endpoint(
            name="Smoke test",
            port=port,
            listen_host=listen_host,
            alias=alias,
            backend=backend,
            unit=f"{host.data.get('server_unit_name')}.service",
            n_gpu_layers=n_gpu_layers,
        )
