"""``plan`` and ``deploy``: pyinfra runs in a child process, results and live events as objects."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

from lemfleet.api.child import Child, ChildFailed
from lemfleet.api.fleet import Fleet, FleetSetupError, data_items
from lemfleet.api.results import Event, FleetDeploy, FleetPlan, HostDeploy, HostPlan
from lemfleet.sshtunnel import InventoryTarget

EventCallback = Callable[[Event], None]


def _limit(limit: str | Iterable[str] | None) -> list[str]:
    if limit is None:
        return []
    return [limit] if isinstance(limit, str) else list(limit)


def plan(
    fleet: Fleet,
    *,
    limit: str | Iterable[str] | None = None,
    data: Mapping[str, Any] | Iterable[str] | None = None,
    connect_timeout: int = 10,
    echo: IO[str] | None = None,
) -> FleetPlan:
    """Each host's plan (backend, GPUs, targets, quant, flags, reasons) or its errors; changes nothing.

    Settings are checked first, for every host, and a bad one raises :class:`FleetSetupError`
    before any host is contacted. Hosts that cannot be reached or planned come back as rows with
    ``ok=False`` and their errors.
    """
    request = {
        "inventory": fleet.inventory,
        "limit": _limit(limit),
        "data": [*fleet.data, *data_items(data)],
        "group_data": list(fleet.group_data),
        "connect_timeout": connect_timeout,
    }
    child = Child("lemfleet.plan_fleet", request, env=dict(fleet.env), echo=echo)
    documents = list(child.events())
    if not documents:
        raise ChildFailed(f"lemfleet plan ended without an answer (exit {child.returncode}):\n{child.tail()}")
    document = documents[-1]
    if "error" in document:
        raise FleetSetupError(document["error"])
    rows = document["rows"]
    return FleetPlan(tuple(HostPlan(r["host"], r["ok"], tuple(r["errors"]), r) for r in rows))


def default_deploy_file() -> Path:
    """lemfleet's own deploy (``lemfleet.deploy``, this repo's deploy.py), found without importing it."""
    spec = importlib.util.find_spec("lemfleet.deploy")
    assert spec is not None and spec.origin is not None, "lemfleet.deploy is part of the package"
    return Path(spec.origin)


def deploy(
    fleet: Fleet,
    *,
    limit: str | Iterable[str] | None = None,
    data: Mapping[str, Any] | Iterable[str] | None = None,
    dry: bool = False,
    serial: bool = False,
    parallel: int = 0,
    on_event: EventCallback | None = None,
    deploy_file: str | os.PathLike[str] | None = None,
    echo: IO[str] | None = None,
    timeout: float | None = None,
    on_targets: Callable[[list[InventoryTarget]], None] | None = None,
) -> FleetDeploy:
    """Run the deploy on the fleet (or ``limit``) and return each host's result.

    Every host's settings are checked before any is contacted (:class:`FleetSetupError`).
    ``on_event`` gets each :class:`Event` as it happens: hosts connecting, each operation starting
    and finishing on each host, and each host's warnings and errors. ``dry`` runs detection and
    the plan of operations on the hosts and changes nothing; the result then says which operations
    would change. ``echo`` receives pyinfra's own output (e.g. ``sys.stderr``); it is also kept in
    :attr:`FleetDeploy.log`. ``on_targets`` gets the run's hosts as SSH targets once their settings
    passed, before any is contacted (the child read the inventory: no second read is needed).
    """
    deploy_path = Path(deploy_file) if deploy_file is not None else default_deploy_file()
    if not deploy_path.is_file():
        raise FleetSetupError(f"deploy file {str(deploy_path)!r} does not exist")
    request = {
        "inventory": fleet.inventory,
        "deploy_file": str(deploy_path.resolve()),
        "limit": _limit(limit),
        "data": [*fleet.data, *data_items(data)],
        "group_data": list(fleet.group_data),
        "dry": dry,
        "serial": serial,
        "parallel": parallel,
        "targets": on_targets is not None,
    }
    child = Child("lemfleet.api.runner", request, env=dict(fleet.env), echo=echo, timeout=timeout)
    final: dict[str, Any] | None = None
    for document in child.events():
        event = Event.from_json(document)
        if event.kind == "setup_failed":
            raise FleetSetupError(event.message or "invalid settings; no host was contacted")
        if event.kind == "result":
            final = document
        if event.kind == "run_started" and on_targets is not None:
            on_targets([InventoryTarget.from_dict(t) for t in document["targets"]])
        if on_event is not None:
            on_event(event)
    if final is None:
        raise ChildFailed(f"the deploy ended without a result (exit {child.returncode}):\n{child.tail()}")
    hosts = tuple(HostDeploy.from_json(h) for h in final["hosts"])
    return FleetDeploy(hosts, dry=bool(final["dry"]), seconds=float(final["seconds"]), log=child.log)


def print_events(event: Event) -> None:
    """An ``on_event`` that prints one plain line per host event (notebooks use tqdm instead)."""
    if event.kind in ("operation_done", "operation_failed"):
        mark = "failed" if event.kind == "operation_failed" else ("changed" if event.changed else "ok")
        print(f"[{event.host}] {event.operation}: {mark}")
    elif event.kind in ("host_unreachable", "host_message"):
        print(f"[{event.host}] {event.level or 'error'}: {event.message}")
