"""The deploy record: what this deploy intended for the host, written to /etc/lemfleet/deployed.json.

The shipped verification suite checks the host against this record rather
than against constants. It holds no secrets (only whether a key is required),
and nothing that changes from run to run, so writing it is idempotent.
"""

from __future__ import annotations

from typing import Any

from lemfleet.roles.llama_cpp import BINARY, BUILDS, build_id
from lemfleet.roles.model import ModelArtifact
from lemfleet.roles.plan import HostPlan
from lemfleet.roles.sources import Source

RECORD_VERSION = 1


def deploy_record(
    plan: HostPlan,
    source: Source,
    model: ModelArtifact,
    model_path: str,
    *,
    unit_name: str = "lemfleet-llama",
    user: str = "lemfleet",
) -> dict[str, Any]:
    bid = build_id(source, plan)
    return {
        "record_version": RECORD_VERSION,
        "backend": plan.backend,
        "service": {
            "unit": f"{unit_name}.service",
            "user": user,
            "host": plan.listen_host,
            "port": plan.port,
            "api_key_required": plan.needs_api_key,
        },
        "build": {
            "id": bid,
            "path": f"{BUILDS}/{bid}",
            "binary": BINARY,
            "backend": plan.backend,
            "source": source.source_id,
            "gpu_targets": list(plan.gpu_targets),
            "cuda_architectures": list(plan.cuda_architectures),
        },
        "model": {
            "alias": plan.alias,
            "path": model_path,
            "file": model.filename,
            "sha256": model.sha256,
            "size": model.size,
            "repo": model.repo,
            "revision": model.revision,
            "reason": model.reason,
        },
        "server": {
            "threads": plan.threads,
            "ctx_size": plan.ctx_size,
            "parallel": plan.parallel,
            "n_gpu_layers": plan.n_gpu_layers,
        },
    }
