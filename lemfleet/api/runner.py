"""The child process behind :func:`lemfleet.api.deploy`: one pyinfra run, reported as JSON events.

pyinfra runs on gevent and its CLI loader patches the whole process for it, so the API never runs
pyinfra in the caller's process (a notebook kernel, a script). It starts
``python -m lemfleet.api.runner``, writes a :class:`RunRequest` as JSON on its stdin and reads one
JSON object a line from its stdout: live events while the run goes on, then one ``result``. pyinfra's
own messages go to stderr, as the pyinfra command prints them.

The run is the one ``pyinfra INVENTORY DEPLOY_FILE -y`` does, through pyinfra's own API and CLI
loaders (inventory, group data, ``--data``, ``--limit``, the deploy file), with two differences: every
host's settings are checked before any host is contacted, and what happened comes back as data.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

import click
import gevent
import pyinfra
import pyinfra_cli  # noqa: F401  (patches the process for gevent, as the pyinfra command does first)
from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops
from pyinfra.api.output import set_echo, set_formatter
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_config, ctx_inventory, ctx_state
from pyinfra_cli.log import setup_logging
from pyinfra_cli.prints import pretty_op_name
from pyinfra_cli.util import load_deploy_file

from lemfleet.inventory_loader import InventoryError, limit_hosts, load_inventory, target_of
from lemfleet.roles.controller import FleetSettingsError, validate_hosts

SETUP_ERROR = 2


@dataclass(frozen=True)
class RunRequest:
    inventory: str
    deploy_file: str
    limit: tuple[str, ...] = ()
    data: tuple[str, ...] = ()  # "key=value", as pyinfra's --data takes them
    group_data: tuple[str, ...] = ()
    dry: bool = False
    serial: bool = False
    parallel: int = 0  # 0: pyinfra's default
    connect_timeout: int = 10
    targets: bool = False  # run_started also lists each host as an SSH target (the rollout's locks)


@dataclass
class Emitter:
    """Writes one JSON event a line to the parent; greenlets share it, so writes are serialised."""

    out: IO[str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: list[Any] = field(default_factory=list)  # events that wait for their operation to complete

    def flush(self) -> None:
        gevent.joinall(self.pending)
        self.pending.clear()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"event": event, "time": round(time.time(), 3), **fields}, default=str)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()


def _op_name(state: Any, op_hash: str) -> str:
    return str(pretty_op_name(state.op_meta[op_hash]))


def _callbacks(emit: Emitter) -> BaseStateCallback:
    class Events(BaseStateCallback):
        @staticmethod
        def host_connect(state: Any, host: Any) -> None:
            emit("host_connected", host=host.name)

        @staticmethod
        def host_connect_error(state: Any, host: Any, error: Any) -> None:
            emit("host_unreachable", host=host.name, message=click.unstyle(str(error)))

        @staticmethod
        def operation_host_start(state: Any, host: Any, op_hash: str) -> None:
            emit("operation_started", host=host.name, operation=_op_name(state, op_hash))

        @staticmethod
        def operation_host_success(state: Any, host: Any, op_hash: str, retry_count: int = 0) -> None:
            # pyinfra calls this just before it marks the operation complete, in the same greenlet;
            # whether it changed anything can be read once that greenlet yields.
            meta = state.ops[host][op_hash].operation_meta
            name = _op_name(state, op_hash)
            emit.pending.append(
                gevent.spawn(lambda: emit("operation_done", host=host.name, operation=name, changed=meta.did_change()))
            )

        @staticmethod
        def operation_host_error(state: Any, host: Any, op_hash: str, retry_count: int = 0, max_retries: int = 0):
            emit("operation_failed", host=host.name, operation=_op_name(state, op_hash))

    return Events()


class HostMessages(logging.Handler):
    """pyinfra's per-host warnings and errors (``[host] message``), kept as data per host.

    Operations such as the health gate report why a host failed only through pyinfra's logger,
    so this is the one place that text becomes data; it never leaves the child as text to parse.
    """

    def __init__(self, names: list[str], emit: Emitter) -> None:
        super().__init__(logging.WARNING)
        self.prefixes = {f"[{name}] ": name for name in names}
        self.messages: dict[str, list[dict[str, str]]] = {name: [] for name in names}
        self.emit_event = emit

    def emit(self, record: logging.LogRecord) -> None:
        text = click.unstyle(record.getMessage()).strip()
        for prefix, name in self.prefixes.items():
            start = text.find(prefix)
            if start != -1:
                message = text[start + len(prefix) :].strip()
                level = "error" if record.levelno >= logging.ERROR else "warning"
                self.messages[name].append({"level": level, "message": message})
                self.emit_event("host_message", host=name, level=level, message=message)
                return


def _host_result(state: Any, host: Any, messages: list[dict[str, str]], dry: bool, since: float, smoke_dir: Path):
    operations = []
    for op_hash in state.get_op_order():
        if op_hash not in state.ops[host]:
            continue
        meta = state.ops[host][op_hash].operation_meta
        entry: dict[str, Any] = {"name": _op_name(state, op_hash)}
        if dry:
            # As pyinfra's own --dry report: a change that hangs on an _if (a restart when a file
            # changed, say) follows from the others, so only the unconditional ones say "would change".
            op_data = state.get_op_data_for_host(host, op_hash)
            conditional = bool(op_data.global_arguments["_if"])
            entry.update(changed=bool(meta._maybe_is_change) and not conditional, success=None, stderr=[])
        elif meta.is_complete():
            succeeded = meta.did_succeed(_raise_if_not_complete=False)
            entry.update(changed=succeeded and meta.did_change(), success=succeeded)
            entry["stderr"] = [] if succeeded else [click.unstyle(line) for line in meta.stderr_lines][-20:]
        else:
            entry.update(changed=False, success=None, stderr=[])  # not reached: an earlier step failed
        operations.append(entry)
    smoke_file = smoke_dir / f"{host.name}.json"
    smoke = None
    if not dry and smoke_file.is_file() and smoke_file.stat().st_mtime >= since:
        smoke = json.loads(smoke_file.read_text())
    failed = host in state.failed_hosts or any(op["success"] is False for op in operations)
    return {
        "host": host.name,
        "ok": not failed,
        "operations": operations,
        "errors": [m["message"] for m in messages if m["level"] == "error"],
        "warnings": [m["message"] for m in messages if m["level"] == "warning"],
        "smoke": smoke,
    }


def run(request: RunRequest, emit: Emitter) -> int:
    """One pyinfra run of ``request``; emits events and a final ``result``; returns the exit status."""
    started = time.time()
    cwd = str(Path.cwd())
    if cwd not in sys.path:  # the pyinfra command puts the working directory on sys.path too
        sys.path.append(cwd)
    state = State(check_for_changes=request.dry)
    state.cwd = cwd
    config = Config(CONNECT_TIMEOUT=request.connect_timeout)
    if request.parallel:
        config.PARALLEL = request.parallel
    ctx_state.set(state)
    ctx_config.set(config)
    try:
        inventory = load_inventory(request.inventory, request.data, request.group_data)
        ctx_inventory.set(inventory)
        hosts = limit_hosts(inventory, request.limit)
        settings = validate_hosts(hosts)
        # The rollout takes its host list from here rather than from an inventory child of its own.
        targets = {"targets": [asdict(target_of(h)) for h in hosts]} if request.targets else {}
    except (InventoryError, FleetSettingsError) as err:
        emit("setup_failed", message=str(err))
        return SETUP_ERROR
    names = [h.name for h in hosts]
    emit("run_started", hosts=names, dry=request.dry, **targets)
    messages = HostMessages(names, emit)
    logging.getLogger("pyinfra").addHandler(messages)
    state.init(inventory, config, initial_limit=hosts)
    state.add_callback_handler(_callbacks(emit))
    state.set_stage(StateStage.Connect)
    try:
        connect_all(state)
        state.set_stage(StateStage.Prepare)
        emit("stage", stage="prepare")
        load_deploy_file(state, request.deploy_file)
        if not request.dry:
            state.set_stage(StateStage.Execute)
            emit("stage", stage="execute")
            run_ops(state, serial=request.serial)
    except PyinfraError as err:  # no host left, or a failure pyinfra stops the whole run for
        emit("run_stopped", message=click.unstyle(str(err)))
    emit.flush()
    state.set_stage(StateStage.Disconnect)
    results = []
    for host in hosts:
        if host not in state.activated_hosts:
            errors = [m["message"] for m in messages.messages[host.name]] or ["not connected"]
            results.append({"host": host.name, "ok": False, "operations": [], "smoke": None, "warnings": [],
                            "errors": errors})  # fmt: skip
            continue
        smoke_dir = Path(settings[host.name]["smoke_results_dir"])
        results.append(_host_result(state, host, messages.messages[host.name], request.dry, started, smoke_dir))
    disconnect_all(state)
    emit("result", hosts=results, dry=request.dry, seconds=round(time.time() - started, 3))
    return 0 if all(r["ok"] for r in results) else 1


def main() -> int:
    # As the pyinfra command sets itself up (pyinfra_cli.main): CLI mode, so that a deploy file's
    # operations are ordered by where they are called, and pyinfra's own output on stderr.
    pyinfra.is_cli = True
    set_formatter(click.style)
    set_echo(click.echo)
    setup_logging(logging.INFO)
    # paramiko logs a traceback from its transport thread for every refused host; the event says why.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    emit = Emitter(sys.stdout)
    sys.stdout = sys.stderr  # deploy and inventory files may print
    request: dict[str, Any] = json.load(sys.stdin)
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in request.items()}
    return run(RunRequest(**fields), emit)


if __name__ == "__main__":
    sys.exit(main())
