"""``rollback``: put hosts back on their previous build and model by hand, through the health gate.

The previous state is the one the last passing change replaced on each host
(roles/transaction.py keeps it under ``/var/lib/lemfleet/previous/``). A
rollback:

1. reads the fleet (no host contacted) and takes the fleet's lock on the controller, as a rollout
   does (:mod:`lemfleet.api.locks`; one at a time per fleet, rollouts and rollbacks alike);
2. locks each host and reads its deploy record and its previous state's record, in one SSH
   session per host (``--dry`` only reads, and says what each host would go back to);
3. runs lemfleet/rollback_deploy.py over the hosts (one pyinfra run): each host puts its previous
   state back, restarts and passes the gate, or goes back to what served before and fails
   (roles/rollback.py). A host with no previous state fails with a clear message, untouched;
4. writes a record like a rollout's, ``out/rollouts/<id>.json`` and ``.md`` with ``"kind":
   "rollback"``: one batch, each host's before (what served) and after (what serves now).
"""

from __future__ import annotations

import importlib.util
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from lemfleet.api.fleet import Fleet, FleetSetupError, fleet_targets
from lemfleet.api.locks import (
    LockHeld,
    Owner,
    controller_lock_path,
    lock_hosts,
    read_files,
    release_controller_lock,
    release_host_locks,
    take_controller_lock,
)
from lemfleet.api.results import Event
from lemfleet.api.rollout import RECORDS, RolloutResult, host_outcome, parse_record, records_of
from lemfleet.api.rollout_record import Batch, HostOutcome, RolloutRecord, state_of
from lemfleet.api.run import EventCallback, deploy
from lemfleet.paths import DEPLOY_RECORD, PREVIOUS_DIR
from lemfleet.sshtunnel import InventoryTarget

PREVIOUS_RECORD = f"{PREVIOUS_DIR}/deployed.json"
NO_PREVIOUS = "no previous state to roll back to"


def rollback_deploy_file() -> Path:
    """lemfleet's rollback deploy (``lemfleet.rollback_deploy``), found without importing it."""
    spec = importlib.util.find_spec("lemfleet.rollback_deploy")
    assert spec is not None and spec.origin is not None, "lemfleet.rollback_deploy is part of the package"
    return Path(spec.origin)


def rollback(
    fleet: Fleet,
    *,
    limit: str | Iterable[str] | None = None,
    dry: bool = False,
    break_lock: bool = False,
    records: Path = RECORDS,
    on_event: EventCallback | None = None,
    echo: IO[str] | None = None,
) -> RolloutResult:
    """Put every host (or ``limit``) back on its previous build and model; see the module docstring.

    Raises :class:`FleetSetupError` (bad inventory or limit) or :class:`LockHeld` (a rollout or
    rollback holds the fleet or a host) before changing anything. ``result.ok`` is False when any
    host could not be rolled back; each such host's ``errors`` say why.
    """
    emit = on_event or (lambda event: None)
    patterns = [limit] if isinstance(limit, str) else list(limit or ())
    targets = fleet_targets(fleet, patterns)
    if not targets:
        raise FleetSetupError(f"--limit {patterns} matches no host of {fleet.inventory}")
    names = [t.name for t in targets]
    record = RolloutRecord(
        id=time.strftime("%Y%m%d-%H%M%S-rollback-") + secrets.token_hex(3),
        inventory=fleet.inventory,
        limit=patterns,
        batches_spec="100%",
        max_fail="0",
        data_keys=sorted({item.split("=", 1)[0] for item in fleet.data}),
        started=time.time(),
        batches=[Batch(1, names, results=[HostOutcome(h) for h in names])],
        kind="rollback",
    )
    owner = Owner.me(record.id)
    lock = controller_lock_path(records, fleet.inventory)
    reads = [DEPLOY_RECORD, PREVIOUS_RECORD]
    if dry:
        return _dry(record, read_files(targets, reads))
    take_controller_lock(lock, owner, break_lock=break_lock)
    locked: list[InventoryTarget] = targets
    try:
        sessions = lock_hosts(targets, owner, break_lock=break_lock, read=reads)
        if problems := [s.problem for s in sessions.values() if s.problem]:
            raise LockHeld("; ".join(problems))
        before = records_of(sessions)
        emit(Event("rollout_started", time.time(), message=f"{record.id}: rollback of {len(names)} host(s)"))
        batch = record.batches[0]
        started = time.monotonic()
        result = deploy(fleet, limit=names, deploy_file=rollback_deploy_file(), on_event=emit, echo=echo)
        after = records_of(release_host_locks(targets, owner, read=[DEPLOY_RECORD]))
        locked = []
        outcomes = {h.host: host_outcome(h, before[h.host], after.get(h.host)) for h in result.hosts}
        for outcome in outcomes.values():
            if outcome.outcome == "updated":
                outcome.outcome = "rolled back to previous"
            elif outcome.outcome == "rolled back":  # the previous state failed the gate; what served is back
                outcome.outcome = "failed"
        batch.results = [outcomes.get(h) or HostOutcome(h, "failed", errors=["not in the run"]) for h in names]
        batch.failures = sum(1 for r in batch.results if r.outcome == "failed")
        batch.status = "failed" if batch.failures else "passed"
        batch.seconds = round(time.monotonic() - started, 3)
        record.status = "completed" if not batch.failures else "stopped"
        record.reason = f"{batch.failures} host(s) not rolled back" if batch.failures else None
    finally:
        if locked:
            release_host_locks(locked, owner)
        release_controller_lock(lock, owner)
    record.finished = time.time()
    path = record.write(records)
    emit(Event("rollout_done", time.time(), message=f"{record.id}: {record.status}"))
    return RolloutResult(record, path, {})


def _dry(record: RolloutRecord, sessions: dict) -> RolloutResult:
    """What each host would go back to, from its records; nothing is locked or changed."""
    batch = record.batches[0]
    for r in batch.results:
        files = sessions[r.host].files
        now, previous = parse_record(files.get(DEPLOY_RECORD)), parse_record(files.get(PREVIOUS_RECORD))
        r.before, r.after = state_of(now), state_of(previous)
        if previous is None:
            r.outcome, r.errors = "failed", [f"{NO_PREVIOUS} (or it cannot be read over SSH)"]
        else:
            r.outcome = "would roll back"
            r.changes = [_describe(now, previous)]
    batch.status = "would run"
    record.status, record.finished = "dry-run", time.time()
    return RolloutResult(record, None, {r.host: tuple(r.changes) for r in batch.results})


def _describe(now: dict | None, previous: dict) -> str:
    def one(record: dict | None) -> str:
        if not record:
            return "nothing recorded"
        build, model = record.get("build") or {}, record.get("model") or {}
        return f"build {build.get('id')}, model {model.get('file')} ({str(model.get('sha256'))[:12]})"

    return f"{one(now)} -> {one(previous)}"
