"""The llama-server flags lemfleet sets itself, which ``server_extra_args`` may not set again.

llama-server takes the last value of a repeated flag, and the unit appends the extra arguments
after lemfleet's own, so an extra ``--host 0.0.0.0`` or ``--api-key-file /dev/null`` would win
over the planned address or key. Every flag the unit passes is listed here with all its aliases
(short forms included, as ``common/arg.cpp`` of the pinned llama.cpp declares them) and the
environment variable that sets it, together with the flags that would load another model than
the one lemfleet delivered and verified. A live test reads ``llama-server --help`` of the pinned
build to prove no alias or variable is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ManagedFlag:
    flags: tuple[str, ...]
    env: str
    setting: str
    """What the operator sets instead."""


MANAGED_FLAGS = (
    ManagedFlag(("--host",), "LLAMA_ARG_HOST", "server_host"),
    ManagedFlag(("--port",), "LLAMA_ARG_PORT", "server_port"),
    ManagedFlag(("-m", "--model"), "LLAMA_ARG_MODEL", "the model_* settings"),
    ManagedFlag(("-a", "--alias"), "LLAMA_ARG_ALIAS", "model_alias"),
    ManagedFlag(("-t", "--threads"), "LLAMA_ARG_THREADS", "server_threads"),
    ManagedFlag(("-c", "--ctx-size"), "LLAMA_ARG_CTX_SIZE", "server_ctx_size"),
    ManagedFlag(("-np", "--parallel"), "LLAMA_ARG_N_PARALLEL", "server_parallel"),
    ManagedFlag(("-ngl", "--gpu-layers", "--n-gpu-layers"), "LLAMA_ARG_N_GPU_LAYERS", "server_n_gpu_layers"),
    ManagedFlag(("-fa", "--flash-attn"), "LLAMA_ARG_FLASH_ATTN", "server_flash_attn"),
    ManagedFlag(("-lv", "--verbosity", "--log-verbosity"), "LLAMA_ARG_LOG_VERBOSITY", "server_log_verbosity"),
    ManagedFlag(("--metrics",), "LLAMA_ARG_ENDPOINT_METRICS", "nothing: lemfleet always enables /metrics"),
    ManagedFlag(("--api-key",), "LLAMA_API_KEY", "server_api_key"),
    ManagedFlag(("--api-key-file",), "LLAMA_ARG_API_KEY_FILE", "server_api_key_file"),
    ManagedFlag(("-ts", "--tensor-split"), "LLAMA_ARG_TENSOR_SPLIT", "gpu_devices"),
    ManagedFlag(("--ssl-key-file",), "LLAMA_ARG_SSL_KEY_FILE", "server_tls / server_tls_key"),
    ManagedFlag(("--ssl-cert-file",), "LLAMA_ARG_SSL_CERT_FILE", "server_tls / server_tls_cert"),
    # These would make llama-server fetch and serve a model lemfleet never verified.
    ManagedFlag(("-hf", "-hfr", "--hf-repo"), "LLAMA_ARG_HF_REPO", "model_repo"),
    ManagedFlag(("-hff", "--hf-file"), "LLAMA_ARG_HF_FILE", "model_file"),
    ManagedFlag(("-mu", "--model-url"), "LLAMA_ARG_MODEL_URL", "model_url"),
    ManagedFlag(("-dr", "--docker-repo"), "LLAMA_ARG_DOCKER_REPO", "the model_* settings"),
)

_BY_FLAG = {flag: managed for managed in MANAGED_FLAGS for flag in managed.flags}
MANAGED_ENV = frozenset(managed.env for managed in MANAGED_FLAGS)


def extra_args_problems(items: Sequence[str], name: str = "server_extra_args") -> list[str]:
    """Why ``items`` may not be appended to the unit's command line; empty when they may.

    An item is refused when it holds whitespace or a control character (systemd splits the
    environment value on whitespace, so one item would become several arguments), or when it
    names a managed flag, as ``--flag`` or ``--flag=value``. Messages name the item's position
    and the flag, never the item's text, which could carry a secret (``--api-key=...``).
    """
    problems: list[str] = []
    for index, item in enumerate(items):
        where = f"{name}[{index}]"
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in item):
            problems.append(
                f"{where} holds whitespace or a control character; accepted: one argument per item, "
                "without spaces or line breaks"
            )
            continue
        managed = _BY_FLAG.get(item.split("=", 1)[0])
        if managed is not None:
            problems.append(
                f"{where} sets {'/'.join(managed.flags)}, which lemfleet manages; accepted: any other "
                f"llama-server argument (use {managed.setting} instead)"
            )
    return problems


def env_problems(env: Mapping[str, str], source: str) -> list[str]:
    """Why ``env`` may not go into the service's environment: it must not set a managed flag's variable."""
    return [
        f"{source} sets {key}, the variable of a flag lemfleet manages; accepted: variables other than "
        f"{', '.join(sorted(MANAGED_ENV))}"
        for key in sorted(env)
        if key in MANAGED_ENV
    ]
