"""The deploy record: what serves on the host and passed the health gate, in /etc/lemfleet/deployed.json.

The shipped verification suite checks the host against this record rather
than against constants. It holds no secrets (only whether a key is required),
and nothing that changes from run to run, so writing it is idempotent. It is
written only once the state it describes passed the gate
(roles/transaction.py), so it never names a model or build that failed.

Schema versions:

- 1 (lemfleet before the health gate): ``"record_version": 1`` and no
  ``schema_version``; written before the smoke test, so it may name a state
  that never served.
- 2: ``"schema_version": 2`` and a ``gate`` section naming the checks the
  state passed. A host with a version-1 record is adopted on its next deploy:
  its serving state becomes the last good one, and the record is rewritten as
  version 2 once the new state passes the gate. :func:`upgrade_record` reads
  either version as version 2.

Since ``server_instances``, a version-2 record also lists ``instances`` (unit,
port, devices, threads of each llama-server); a record without it names one
plain unit, and its host keeps that layout until ``server_instances`` is set.
"""

from __future__ import annotations

from typing import Any

from lemfleet.roles.llama_cpp import BINARY, BUILDS, build_id
from lemfleet.roles.llama_sources import Source
from lemfleet.roles.model_delivery import ModelArtifact
from lemfleet.roles.plan import HostPlan
from lemfleet.roles.server_units import layout_of

SCHEMA_VERSION = 2
# The checks a state passes before it is recorded (roles/gate.py); "auth" only when a key is required.
GATE_CHECKS = ("health", "models", "chat", "stream", "offload")


class RecordError(ValueError):
    """A deployed.json this lemfleet cannot read; the message says why and what is accepted."""


def deploy_record(
    plan: HostPlan,
    source: Source,
    model: ModelArtifact,
    model_path: str,
    *,
    unit_name: str = "lemfleet-llama",
    user: str = "lemfleet",
    tls_fingerprint: str | None = None,
    tls_spki_sha256: str | None = None,
) -> dict[str, Any]:
    bid = build_id(source, plan)
    instances = layout_of(plan)
    record = {
        "schema_version": SCHEMA_VERSION,
        "backend": plan.backend,
        "gate": {"checks": [*GATE_CHECKS, *(["auth"] if plan.needs_api_key else [])]},
        "service": {
            "unit": instances[0].unit(unit_name),
            "user": user,
            "host": plan.listen_host,
            "port": instances[0].port,
            "api_key_required": plan.needs_api_key,
        },
        # Every llama-server of the host (server_instances); "service" names the first.
        "instances": [instance.to_json(unit_name) for instance in instances],
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
    if tls_fingerprint:  # server_tls: what clients pin (lemfleet.tls_client); absent otherwise, as before TLS
        record["service"]["tls"] = {  # type: ignore[index]
            "scheme": "https",
            "sha256_fingerprint": tls_fingerprint,
            "spki_sha256": tls_spki_sha256,
        }
    return record


def schema_version(record: dict[str, Any]) -> int:
    """The record's schema version: ``schema_version``, or 1 for a record of an earlier lemfleet."""
    if "schema_version" in record:
        version = record["schema_version"]
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordError(f"schema_version={version!r} is not valid; accepted: an integer")
        return version
    if record.get("record_version", 1) != 1:
        raise RecordError(f"record_version={record.get('record_version')!r} is not valid; accepted: 1")
    return 1


def upgrade_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as schema version 2 (a new dict); version 1 gains the version and an empty ``gate``.

    A version-1 record was written before its state was checked, so it
    claims no gate checks; ``adopted`` says the state was taken as good
    because it was serving when lemfleet first gated this host.
    """
    version = schema_version(record)
    if version == SCHEMA_VERSION:
        return dict(record)
    if version != 1:
        raise RecordError(
            f"schema_version={version} is newer than this lemfleet reads; accepted: 1 to {SCHEMA_VERSION}"
        )
    upgraded = {key: value for key, value in record.items() if key != "record_version"}
    upgraded["schema_version"] = SCHEMA_VERSION
    upgraded["gate"] = {"checks": [], "adopted": True}
    return upgraded


def instance_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record as each llama-server of the host sees it: ``service`` naming that instance's unit and port.

    A record lists its instances (``server_instances``); one from before instances names one service.
    """
    service = record.get("service") or {}
    listed = record.get("instances") or [{"unit": service.get("unit"), "port": service.get("port")}]
    return [{**record, "service": {**service, "unit": i["unit"], "port": i["port"]}} for i in listed]
