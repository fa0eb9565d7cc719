"""The rollout record: ``out/rollouts/<id>.json`` (stable keys) and a Markdown summary beside it.

Keys (``record_version`` 1):

- ``kind``: ``rollout``, or ``rollback`` for ``lemfleet rollback`` (one batch; a host that went
  back to its previous state has the outcome ``rolled back to previous``, one that could not
  (no previous state, or it failed the gate and what served before serves again) ``failed``);
  records written before rollbacks existed have no ``kind`` and are rollouts;
- ``id``, ``inventory``, ``limit``, ``batches`` (the spec), ``max_fail``, ``data_keys`` (the names of
  the ``--data`` settings given; values are left out, as they may be secrets), ``started``,
  ``finished`` (Unix times), ``status`` (``running``, ``completed``, ``stopped`` or ``dry-run``),
  ``reason`` (why it stopped, or null);
- ``batches``: one object per batch: ``index``, ``hosts``, ``status`` (``passed``, ``unchanged``,
  ``failed``, ``not reached``), ``failures``, ``allowed_failures``, ``seconds``, and ``results``,
  one per host: ``host``, ``outcome`` (``updated``, ``unchanged``, ``rolled back``, ``failed``,
  ``not reached``), ``before`` and ``after`` (``build_id``, ``model_sha256``, ``settings_hash``,
  from the host's deploy record, null where there is none), ``gate`` (the smoke steps: name,
  status, message, seconds), ``serving_gap_s`` (how long ``/health`` did not answer 200 while the
  host switched: the gate's wait for health after the restart; 0 when nothing changed), ``changes``
  (names of the operations that changed), ``errors``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RECORD_VERSION = 1


def state_of(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """build id, model sha256 and a hash of the served settings, from a host's deploy record."""
    if not record:
        return None
    served = {k: record.get(k) for k in ("service", "server", "backend")}
    settings_hash = hashlib.sha256(json.dumps(served, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "build_id": (record.get("build") or {}).get("id"),
        "model_sha256": (record.get("model") or {}).get("sha256"),
        "settings_hash": settings_hash,
    }


@dataclass
class HostOutcome:
    host: str
    outcome: str = "not reached"
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    gate: list[dict[str, Any]] = field(default_factory=list)
    serving_gap_s: float | None = None
    changes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass
class Batch:
    index: int
    hosts: list[str]
    status: str = "not reached"
    failures: int = 0
    allowed_failures: int = 0
    seconds: float = 0.0
    results: list[HostOutcome] = field(default_factory=list)


@dataclass
class RolloutRecord:
    id: str
    inventory: str
    limit: list[str]
    batches_spec: str
    max_fail: str
    data_keys: list[str]
    started: float
    finished: float | None = None
    status: str = "running"
    reason: str | None = None
    batches: list[Batch] = field(default_factory=list)
    record_version: int = RECORD_VERSION
    kind: str = "rollout"

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["batches_spec"] = self.batches_spec
        return document

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RolloutRecord:
        batches = [
            Batch(**{**b, "results": [HostOutcome(**r) for r in b.get("results", [])]}) for b in data.get("batches", [])
        ]
        return cls(**{**data, "batches": batches})

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.id}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        os.replace(tmp, path)
        (directory / f"{self.id}.md").write_text(markdown(self))
        return path

    @classmethod
    def read(cls, directory: Path, rollout_id: str) -> RolloutRecord:
        path = directory / f"{rollout_id}.json"
        if not path.is_file():
            raise ValueError(f"--resume {rollout_id!r}: no record {path}; accepted: the id of an earlier rollout")
        return cls.from_json(json.loads(path.read_text()))


def _state(state: dict[str, Any] | None) -> str:
    if not state:
        return "-"
    return f"{(state['build_id'] or '-')[:8]} / {(state['model_sha256'] or '-')[:8]} / {state['settings_hash'][:8]}"


def markdown(record: RolloutRecord) -> str:
    lines = [f"# {record.kind.capitalize()} {record.id}: {record.status}", ""]
    if record.reason:
        lines += [f"Stopped: {record.reason}", ""]
    lines += [f"Inventory `{record.inventory}`, batches `{record.batches_spec}`, max-fail `{record.max_fail}`.", ""]
    for batch in record.batches:
        lines += [
            f"## Batch {batch.index}: {batch.status} ({batch.failures} failed, {batch.allowed_failures} allowed, "
            f"{batch.seconds:.1f} s)",
            "",
            "| Host | Outcome | Before (build / model / settings) | After | Serving gap | Error |",
            "|---|---|---|---|---|---|",
        ]
        for r in batch.results:
            gap = f"{r.serving_gap_s:.1f} s" if r.serving_gap_s is not None else "-"
            error = (r.errors[-1] if r.errors else "").replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| {r.host} | {r.outcome} | {_state(r.before)} | {_state(r.after)} | {gap} | {error} |")
        lines.append("")
    return "\n".join(lines)
