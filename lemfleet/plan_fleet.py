"""The plan of every host in a pyinfra inventory, computed from live facts without changing any host.

This is the work behind ``lemfleet plan`` (see :mod:`lemfleet.plan_cli` for the command and the
row keys). Rows are built by :func:`plan_row`, a pure function of a host's facts and settings,
so fixture hosts give the same rows as live ones. :func:`plan_inventory` loads the inventory
with pyinfra's own loader, checks every host's settings, connects to the hosts in parallel and
gathers facts with the deploy's own :func:`lemfleet.roles.detect.gather`; it runs in a child process
(``python -m lemfleet.plan_fleet``, the request as JSON on stdin, the rows as JSON on stdout),
because pyinfra's CLI loader monkey-patches its whole process for gevent.

Nothing is downloaded: the model's alias comes from ``model_alias`` or the file naming, its size
is known only for ``model_source=local`` (the file is stat'ed, not hashed), and
``model_quant=auto`` is shown with the memory budget it will be resolved against at deploy time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from pyinfra.api import Config, State
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback, StateStage
from pyinfra.context import ctx_config, ctx_host, ctx_inventory, ctx_state

from lemfleet.errors import SettingsError
from lemfleet.inventory_loader import InventoryError, limit_hosts, load_inventory
from lemfleet.plan_tls import tls_entry
from lemfleet.quants import parse_gguf_name
from lemfleet.roles import detect
from lemfleet.roles.controller import FleetSettingsError, validate_hosts
from lemfleet.roles.distro_index import host_index
from lemfleet.roles.facts.apt_index import AptIndex
from lemfleet.roles.gpu_plan import choose_gpu
from lemfleet.roles.hostinfo import Gpu, HostFacts
from lemfleet.roles.model_delivery import default_alias
from lemfleet.roles.model_source import memory_budget
from lemfleet.roles.plan import ModelInfo, plan_host
from lemfleet.roles.server_units import InstanceUnits
from lemfleet.roles.source_plan import choose_for_host

GIB = 1024**3
SETUP_ERROR = 2


class PlanSetupError(Exception):
    """A setting is invalid: nothing was contacted (an unreadable inventory is an ``InventoryError``)."""


@dataclass(frozen=True)
class PlanRequest:
    inventory: str
    limit: tuple[str, ...] = ()
    data: tuple[str, ...] = ()  # "key=value", as pyinfra's --data takes them
    group_data: tuple[str, ...] = ()
    connect_timeout: int = 10  # pyinfra's Config.CONNECT_TIMEOUT default


# -- one host's row (pure) ------------------------------------------------------------


def _file_name(settings: Mapping[str, Any]) -> tuple[str | None, str]:
    """The model file's name where the settings give it, and the setting that does."""
    source = settings["model_source"]
    if source == "url":
        return str(settings["model_url"]).rstrip("/").rsplit("/", 1)[-1].split("?")[0], "model_url"
    if source in ("local", "host"):
        return str(settings["model_path"]).rsplit("/", 1)[-1], "model_path"
    return settings["model_file"], "model_file"


def model_for(settings: Mapping[str, Any]) -> tuple[ModelInfo, dict[str, Any]]:
    """The :class:`ModelInfo` the plan gets, and the row's ``model`` object; downloads nothing."""
    filename, _ = _file_name(settings)
    size = 0
    if settings["model_source"] == "local":
        path = Path(settings["model_path"]).expanduser()
        if not path.is_file():
            raise SettingsError([f"model_path={settings['model_path']!r} is not a file on the controller"])
        size = path.stat().st_size
    if settings["model_alias"]:
        alias = settings["model_alias"]
    elif filename:
        alias = default_alias(filename)
    else:
        # The hub's files are named <repo name less -GGUF>-<QUANT>.gguf (lemfleet.quants.model_files).
        alias = str(settings["model_repo"]).rsplit("/", 1)[-1].removesuffix("-GGUF")
    model = {"source": settings["model_source"], "alias": alias, "file": filename, "size_bytes": size}
    return ModelInfo(alias=alias, size_bytes=size), model


def quant_for(settings: Mapping[str, Any], facts: HostFacts) -> dict[str, Any]:
    """The row's ``quant`` object: the quant named by the settings, or the budget ``auto`` will use."""
    filename, setting = _file_name(settings)
    if filename:
        parsed = parse_gguf_name(filename)
        value = parsed[1] if parsed else None
        note = f"{value or 'not in the file name'}, from {setting}={filename}"
        return {"value": value, "from": setting, "budget_bytes": None, "reserve_bytes": None, "note": note}
    value = settings["model_quant"]
    if value != "auto":
        note = f"{value}, set by model_quant"
        return {"value": value, "from": "model_quant", "budget_bytes": None, "reserve_bytes": None, "note": note}
    budget, reserve = memory_budget(settings, facts)
    memory = "RAM" if choose_gpu(facts, settings).backend == "cpu" else "VRAM of the chosen GPUs"
    note = (
        f"auto, resolved at deploy time: the largest quant in {settings['model_repo']} whose file fits "
        f"{budget / GIB:.1f} GiB ({memory}) with {reserve / GIB:.1f} GiB kept for the context"
    )
    return {"value": "auto", "from": "model_quant", "budget_bytes": budget, "reserve_bytes": reserve, "note": note}


def gpu_entries(gpus: Sequence[Gpu], chosen: Sequence[Gpu] = ()) -> list[dict[str, Any]]:
    return [
        {
            "index": gpu.index,
            "vendor": gpu.vendor,
            "name": gpu.name,
            "vram_bytes": gpu.vram_bytes,
            "gfx_target": gpu.gfx_target,
            "compute_capability": gpu.compute_capability,
            "pci_slot": gpu.pci_slot,
            "integrated": gpu.integrated,
            "driver_ok": gpu.driver_ok,
            "chosen": gpu in chosen,
        }
        for gpu in gpus
    ]


def empty_row(name: str, errors: Sequence[str] = (), facts: HostFacts | None = None) -> dict[str, Any]:
    """A row with every key, for a host that has no plan (yet); ``errors`` say why."""
    row: dict[str, Any] = {"host": name, "ok": not errors, "errors": list(errors)}
    row.update(dict.fromkeys(("hostname", "os", "arch", "cpu_physical_cores", "mem_total_bytes")))
    row.update(gpus=[], model=None, quant=None, backend=None, gpu_targets=[], cuda_architectures=[], cmake_flags=[])
    row.update(
        dict.fromkeys(
            ("threads", "ctx_size", "parallel", "n_gpu_layers", "flash_attn", "log_verbosity", "listen", "alias")
        )
    )
    row.update(run_env={}, tensor_split=[], reasons={}, warnings=[], llama_cpp_source=None, sources={}, tls=None)
    if facts is not None:
        row["hostname"] = facts.hostname
        row["os"] = " ".join(p for p in (facts.os_id, facts.os_version, f"({facts.os_codename})") if p != "()")
        row["arch"] = facts.arch
        row["cpu_physical_cores"] = facts.cpu_physical_cores
        row["mem_total_bytes"] = facts.mem_total_bytes
        row["gpus"] = gpu_entries(facts.gpus)
    return row


def plan_row(
    name: str,
    facts: HostFacts,
    settings: Mapping[str, Any],
    recorded: Mapping[str, Any] | None = None,
    ssh_hostname: str | None = None,
    apt_index: AptIndex | None = None,
) -> dict[str, Any]:
    """The row for one host: its plan, GPUs, model and quant, or the errors that stop its plan.

    ``recorded`` is the host's deploy record, as the deploy reads it (a host deployed before
    ``server_instances`` keeps its one server until the setting is set for it). ``ssh_hostname``
    is among the names of a certificate ``server_tls='generate'`` makes (lemfleet.plan_tls). ``apt_index``
    is the host's own package indexes, read where lemfleet's table does not know the release (Ubuntu).
    """
    row = empty_row(name, facts=facts)
    row["tls"] = tls_entry(name, settings, recorded, ssh_hostname)
    try:
        model, row["model"] = model_for(settings)
        plan = plan_host(facts, settings, model, recorded=recorded)
        row["gpus"] = gpu_entries(facts.gpus, choose_gpu(facts, settings).devices)
        row["quant"] = quant_for(settings, facts)
    except SettingsError as err:
        row.update(ok=False, errors=list(err.problems))
        return row
    planned = plan.to_json()
    planned["hostname"] = planned.pop("host")
    row.update(planned)
    row["tensor_split"] = list(plan.tensor_split)
    # Where llama-server would come from, and what each source would give (roles/source_plan.py).
    source = choose_for_host(settings, facts, plan.backend, plan.gpu_targets, apt_index)
    row.update(llama_cpp_source=source.method, sources=source.offers)
    row["reasons"] = {**row["reasons"], "llama_cpp_source": source.reason}
    if source.refusal:
        row.update(ok=False, errors=[source.refusal])
    return row


# -- the fleet (in a child process: pyinfra's loader patches it for gevent) ----------


def plan_inventory(request: PlanRequest) -> list[dict[str, Any]]:
    """One row per host (in inventory order): settings first, then facts, then the plan.

    Only call this in a process that pyinfra's CLI may patch for gevent (see the module doc).
    """
    state = State(check_for_changes=False)
    state.cwd = os.getcwd()
    config = Config(CONNECT_TIMEOUT=request.connect_timeout)
    ctx_state.set(state)
    ctx_config.set(config)
    inventory = load_inventory(request.inventory, request.data, request.group_data)
    ctx_inventory.set(inventory)
    hosts = limit_hosts(inventory, request.limit)
    try:
        settings = validate_hosts(hosts)
    except FleetSettingsError as err:
        raise PlanSetupError(str(err)) from err

    errors: dict[str, list[str]] = {}

    class ConnectErrors(BaseStateCallback):
        @staticmethod
        def host_connect_error(state: Any, host: Any, error: Any) -> None:
            errors[host.name] = [f"cannot reach the host: {error}"]

    state.init(inventory, config, initial_limit=hosts)
    state.add_callback_handler(ConnectErrors())
    state.set_stage(StateStage.Connect)
    with contextlib.suppress(PyinfraError):  # raised when no host is left: each row says why
        connect_all(state)
    state.set_stage(StateStage.Prepare)

    def gather(host: Any) -> tuple[HostFacts, dict[str, Any] | None, AptIndex | None]:
        with ctx_host.use(host):
            unit_name = settings[host.name]["server_unit_name"]
            facts = detect.gather()
            return facts, host.get_fact(InstanceUnits, unit_name=unit_name).record, host_index(facts)

    reached = [h for h in hosts if h in state.active_hosts]
    greenlets = {h: state.pool.spawn(gather, h) for h in reached}
    gevent.joinall(list(greenlets.values()))
    rows = []
    for host in hosts:
        greenlet = greenlets.get(host)
        if greenlet is None:
            rows.append(empty_row(host.name, errors.get(host.name) or ["not connected"]))
        elif greenlet.exception is not None or host in state.failed_hosts:
            why = f": {type(greenlet.exception).__name__}: {greenlet.exception}" if greenlet.exception else ""
            rows.append(empty_row(host.name, [f"facts could not be gathered{why}"]))
        else:
            facts, recorded, index = greenlet.value
            rows.append(plan_row(host.name, facts, settings[host.name], recorded, host.data.get("ssh_hostname"), index))
    disconnect_all(state)
    return rows


def main() -> int:
    """Read a :class:`PlanRequest` as JSON on stdin; print ``{"rows": [...]}`` or ``{"error": "..."}``.

    stdout carries only that document; pyinfra's own messages go to stderr as they happen.
    """
    import pyinfra_cli  # noqa: F401  (patches for gevent first, as the pyinfra command does)

    # paramiko logs a traceback from its transport thread for every refused or silent host;
    # the row already says why the host could not be reached.
    logging.getLogger("paramiko").addHandler(logging.NullHandler())
    out = sys.stdout
    sys.stdout = sys.stderr  # inventory files may print
    try:
        document: dict[str, Any] = {"rows": plan_inventory(PlanRequest(**json.load(sys.stdin)))}
        status = 0
    except (InventoryError, PlanSetupError) as err:
        document, status = {"error": str(err)}, SETUP_ERROR
    out.write(json.dumps(document))
    out.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
