"""``rollout``: a deploy over health-gated batches that stops before it can take the fleet down.

1. The fleet's lock is taken on the controller. One pre-pass, a dry deploy over every host, reads
   the fleet and checks every host's settings before any is contacted, then hands the hosts over
   (its own read of the inventory: the rollout reads none of its own), which are split into
   batches (:mod:`lemfleet.api.batches`), canaries first. A resumed rollout reads its hosts first,
   so that its pre-pass covers only the batches it planned.
2. The pre-pass goes on to find the hosts already in the wanted state: they pass as no-ops, and
   only batches with work run. A rollout with nothing to do starts no batch run at all.
3. Once the settings passed, each host is locked (``/var/lib/lemfleet/rollout.lock``, so a second
   controller is refused too) and its deploy record read, in one SSH session per host, while the
   pre-pass goes on; those records are the "before" of every host, so batches without work read
   nothing. The session stays open and releases the lock when the rollout ends, with no second
   SSH login (:class:`lemfleet.api.locks.HeldLocks`).
4. Batch by batch, the hosts with work are deployed (one pyinfra run, ``--limit`` the batch). Each
   host is a transaction: a change that fails the health gate is rolled back on that host
   (roles/transaction.py). A batch whose failures exceed ``max_fail`` stops the rollout; hosts it
   has not reached stay untouched.
5. The record (:mod:`lemfleet.api.rollout_record`) is written around every batch with work, so a stopped
   rollout can be resumed with its id once the cause is fixed: earlier batches are rechecked as
   no-ops and not changed.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from lemfleet.api.batches import DEFAULT_BATCHES, BatchError, allowed_failures, order_hosts, parse_max_fail, split
from lemfleet.api.child import ChildFailed
from lemfleet.api.display import TableView, html_table, text_table
from lemfleet.api.fleet import Fleet, FleetSetupError, data_items, fleet_targets
from lemfleet.api.locks import (
    HeldLocks,
    HostSession,
    LockHeld,
    Owner,
    controller_lock_path,
    hold_host_locks,
    read_files,
    release_controller_lock,
    take_controller_lock,
)
from lemfleet.api.results import Event, FleetDeploy, HostDeploy
from lemfleet.api.rollout_record import Batch, HostOutcome, RolloutRecord, state_of
from lemfleet.api.run import EventCallback, deploy
from lemfleet.paths import DEPLOY_RECORD
from lemfleet.sshtunnel import InventoryTarget

RECORDS = Path("out/rollouts")
HEADERS = ("batch", "host", "outcome", "before", "after", "gap", "error")


@dataclass(frozen=True)
class RolloutResult(TableView):
    record: RolloutRecord
    path: Path | None
    would_change: Mapping[str, tuple[str, ...]]  # host -> operations the pre-pass found to change

    @property
    def ok(self) -> bool:
        return self.record.status in ("completed", "dry-run")

    @property
    def changes(self) -> int:
        """Operations that changed something over all hosts and batches (a dry run: would change); 0 is a no-op."""
        return sum(len(r.changes) for batch in self.record.batches for r in batch.results)

    def to_json(self) -> dict[str, Any]:
        return self.record.to_json()

    def _rows(self) -> list[list[Any]]:
        rows = []
        for batch in self.record.batches:
            for r in batch.results:
                before = (r.before or {}).get("build_id")
                after = (r.after or {}).get("build_id")
                gap = r.serving_gap_s
                rows.append([batch.index, r.host, r.outcome, before, after, gap, (r.errors or [""])[-1][:120]])
        return rows

    def __str__(self) -> str:
        head = f"{self.record.kind} {self.record.id}: {self.record.status}, {self.changes} change(s)" + (
            f" ({self.record.reason})" if self.record.reason else ""
        )
        return head + "\n" + text_table(HEADERS, self._rows())

    def _repr_html_(self) -> str:
        caption = (
            f"{self.record.kind.capitalize()} {self.record.id}: {self.record.status}, {self.changes} change(s)"
            + (f", {self.record.reason}" if self.record.reason else "")
        )
        return html_table(HEADERS, self._rows(), caption=caption)


def parse_record(text: str | None) -> dict[str, Any] | None:
    """A deploy record read over SSH, or None when it is missing or not a JSON object."""
    try:
        record = json.loads(text) if text else None
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def records_of(sessions: Mapping[str, HostSession]) -> dict[str, dict[str, Any] | None]:
    return {name: parse_record(session.files.get(DEPLOY_RECORD)) for name, session in sessions.items()}


def host_outcome(host: HostDeploy, before: dict[str, Any] | None, after: dict[str, Any] | None) -> HostOutcome:
    steps: list[dict[str, Any]] = (
        [dict(name=s.name, status=s.status, message=s.message, seconds=s.seconds) for s in host.smoke.steps]
        if host.smoke
        else []
    )
    health = next((s["seconds"] for s in steps if s["name"] == "health"), None)
    return HostOutcome(
        host=host.host,
        outcome=host.outcome,
        before=state_of(before),
        after=state_of(after),
        gate=steps,
        serving_gap_s=(health if host.changed else 0.0) if host.ok or host.rolled_back else None,
        changes=host.changed,
        errors=list(host.errors),
    )


def _targets(
    found: list[InventoryTarget], patterns: list[str], earlier: RolloutRecord | None, batches: str, inventory: str
) -> tuple[list[InventoryTarget], list[list[str]]]:
    """The hosts (inventory order) and their batches: split anew, or as the resumed rollout had them.

    ``found`` are the hosts ``patterns`` select, in inventory order.
    """
    try:
        if not found:
            raise FleetSetupError(f"--limit {patterns} matches no host of {inventory}")
        if earlier is not None:
            planned = [b.hosts for b in earlier.batches]
            known = {t.name for t in found}
            targets = [t for t in found if any(t.name in b for b in planned)]
            if missing := [h for b in planned for h in b if h not in known]:
                raise FleetSetupError(f"--resume {earlier.id}: hosts {missing} are no longer in the inventory")
            return targets, planned
        order = order_hosts([t.name for t in found], [t.name for t in found if t.canary])
        return found, split(order, batches)
    except BatchError as err:
        raise FleetSetupError(str(err)) from err


def rollout(
    fleet: Fleet,
    *,
    batches: str = DEFAULT_BATCHES,
    max_fail: str | int = 0,
    limit: str | Iterable[str] | None = None,
    data: Mapping[str, Any] | Iterable[str] | None = None,
    resume: str | None = None,
    dry: bool = False,
    break_lock: bool = False,
    records: Path = RECORDS,
    on_event: EventCallback | None = None,
    echo: IO[str] | None = None,
) -> RolloutResult:
    """Roll the deploy out in batches; see the module docstring. Raises :class:`FleetSetupError`
    (bad settings, bad batches), :class:`LockHeld` (another rollout) before changing anything."""
    emit = on_event or (lambda event: None)
    items = data_items(data)
    patterns = [limit] if isinstance(limit, str) else list(limit or ())
    try:
        parse_max_fail(max_fail)
        split([], batches)  # a bad --batches fails before any child starts
    except BatchError as err:
        raise FleetSetupError(str(err)) from err
    earlier = RolloutRecord.read(records, resume) if resume else None
    if earlier is not None:
        batches, max_fail = earlier.batches_spec, earlier.max_fail
    rollout_id = resume or time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
    owner = Owner.me(rollout_id)
    lock = controller_lock_path(records, fleet.inventory)
    if not dry:
        take_controller_lock(lock, owner, break_lock=break_lock)
    held: HeldLocks | None = None
    try:
        # The pre-pass (a pyinfra child) reads the inventory and checks every host's settings before
        # it contacts any; then it hands the hosts over (no inventory read of this process's own), and
        # each host is locked and its deploy record read, in one SSH session each, while it goes on.
        # A resumed rollout reads its hosts first: the pre-pass covers only the batches it planned.
        checked = threading.Event()
        found: list[list[InventoryTarget]] = []

        def take_targets(targets: list[InventoryTarget]) -> None:
            found.append(targets)
            checked.set()

        def run_prepass(hosts: list[str]) -> FleetDeploy:
            try:
                return deploy(fleet, limit=hosts, data=items, dry=True, on_targets=take_targets, echo=echo)
            finally:
                checked.set()

        def settings_passed(prepass_run: Future[FleetDeploy]) -> list[InventoryTarget]:
            checked.wait()
            if not found:
                prepass_run.result()  # settings that do not pass: FleetSetupError, no host contacted
                raise ChildFailed("the pre-pass ended before its run started")
            return found[0]

        with ThreadPoolExecutor(max_workers=1) as pool:
            if earlier is None:
                prepass_run = pool.submit(run_prepass, patterns)
                targets, planned = _targets(settings_passed(prepass_run), patterns, None, batches, fleet.inventory)
            else:
                targets, planned = _targets(fleet_targets(fleet, patterns), patterns, earlier, batches, fleet.inventory)
                prepass_run = pool.submit(run_prepass, [t.name for t in targets])
                settings_passed(prepass_run)
            if dry:
                sessions = read_files(targets, [DEPLOY_RECORD])
            else:  # each host's session stays open, holding its lock, and releases it at the end
                held = hold_host_locks(targets, owner, break_lock=break_lock, read=[DEPLOY_RECORD])
                sessions = held.sessions
            prepass = prepass_run.result()
        before = records_of(sessions)
        by_name = {t.name: t for t in targets}
        record = RolloutRecord(
            id=rollout_id,
            inventory=fleet.inventory,
            limit=patterns,
            batches_spec=batches,
            max_fail=str(max_fail),
            data_keys=sorted({item.split("=", 1)[0] for item in (*fleet.data, *items)}),
            started=time.time(),
            batches=[Batch(i + 1, hosts, results=[HostOutcome(h) for h in hosts]) for i, hosts in enumerate(planned)],
        )
        emit(Event("rollout_started", time.time(), message=f"{record.id}: {len(planned)} batch(es)"))
        would_change = {h.host: tuple(h.changed) for h in prepass.hosts}
        work = {h.host for h in prepass.hosts if h.changed or not h.ok} & set(by_name)
        if dry:
            record.status, record.finished = "dry-run", time.time()
            for batch in record.batches:
                batch.status = "would run" if work & set(batch.hosts) else "unchanged"
                for r in batch.results:
                    r.outcome, r.changes = (
                        ("would update" if r.host in work else "unchanged"),
                        list(would_change.get(r.host, ())),
                    )
            return RolloutResult(record, None, would_change)
        if problems := [s.problem for s in sessions.values() if s.problem]:
            raise LockHeld("; ".join(problems))
        for batch in record.batches:
            if work & set(batch.hosts):
                record.write(records)  # before and after each batch with work, so a cut-off rollout resumes
            _run_batch(fleet, items, batch, work, before, by_name, emit, echo, max_fail)
            if batch.status == "failed":
                record.status = "stopped"
                record.reason = (
                    f"batch {batch.index}: {batch.failures} host(s) failed, {batch.allowed_failures} allowed"
                )
                break
            if batch.status != "unchanged":
                record.write(records)
        else:
            record.status = "completed"
    finally:
        if held is not None:
            held.release()
        if not dry:
            release_controller_lock(lock, owner)
    record.finished = time.time()
    path = record.write(records)
    emit(Event("rollout_done", time.time(), message=f"{record.id}: {record.status}"))
    return RolloutResult(record, path, would_change)


def _run_batch(
    fleet: Fleet,
    items: tuple[str, ...],
    batch: Batch,
    work: set[str],
    before: Mapping[str, dict[str, Any] | None],
    by_name: dict[str, InventoryTarget],
    emit: EventCallback,
    echo: IO[str] | None,
    max_fail: str | int,
) -> None:
    """Deploy the batch's hosts with work (one pyinfra run); the others pass as no-ops, with no run at all."""
    started = time.monotonic()
    todo = [h for h in batch.hosts if h in work]
    batch.allowed_failures = allowed_failures(max_fail, len(batch.hosts))

    def unchanged(h: str) -> HostOutcome:
        return HostOutcome(h, "unchanged", state_of(before.get(h)), state_of(before.get(h)), serving_gap_s=0.0)

    if not todo:
        batch.status = "unchanged"
        batch.results = [unchanged(h) for h in batch.hosts]
        return
    emit(Event("batch_started", time.time(), message=f"batch {batch.index}: {', '.join(todo)}"))
    result: FleetDeploy = deploy(fleet, limit=todo, data=items, on_event=emit, echo=echo)
    after = records_of(read_files([by_name[h] for h in todo], [DEPLOY_RECORD]))
    outcomes = {h.host: host_outcome(h, before.get(h.host), after.get(h.host)) for h in result.hosts}
    batch.results = [outcomes.get(h) or unchanged(h) for h in batch.hosts]
    batch.failures = sum(1 for r in batch.results if r.outcome in ("failed", "rolled back"))
    batch.status = "failed" if batch.failures > batch.allowed_failures else "passed"
    batch.seconds = round(time.monotonic() - started, 3)
    emit(Event("batch_done", time.time(), message=f"batch {batch.index}: {batch.status}"))
