"""Load a pyinfra inventory with pyinfra's own loader: the one loader behind every lemfleet command.

``lemfleet plan`` and the deploy runner load it in their own process (:func:`load_inventory`,
:func:`limit_hosts`); the controller's commands (smoke, status, load, Prometheus, rollout,
rollback, remove) get the hosts as :class:`~lemfleet.sshtunnel.InventoryTarget` from
:func:`inventory_targets`, which loads the same way in a child process
(``python -m lemfleet.inventory_loader``, the request as JSON on stdin, the targets as JSON on
stdout). Either way ``--data`` and ``--group-data`` apply and ``--limit`` selects as pyinfra's
does, so every command sees the hosts and settings the deploy sees.

Why a child: importing ``pyinfra_cli`` monkey-patches the whole process for gevent (sockets,
threads, ssl), which must not happen under the smoke client's threads and httpx.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from fnmatch import fnmatch
from typing import Any

from lemfleet.sshtunnel import DEFAULT_SERVER_HOST, DEFAULT_SERVER_PORT, InventoryTarget, SshOptions


class InventoryError(ValueError):
    """The inventory cannot be read, a ``--data`` item is malformed or a ``--limit`` matches nothing."""


def load_inventory(path: str, data: Sequence[str] = (), group_data: Sequence[str] = ()) -> Any:
    """pyinfra's ``Inventory`` for ``path``, with ``--data`` items (``key=value``) and ``--group-data`` folders.

    Only call this in a process that pyinfra's CLI may patch for gevent (see the module doc).
    """
    # pyinfra_cli patches the whole process for gevent when imported; only a process that loads an
    # inventory imports it, not every importer of this module.
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra_cli.exceptions import CliError, UnexpectedExternalError
    from pyinfra_cli.inventory import make_inventory
    from pyinfra_cli.util import parse_cli_arg

    override = {}
    for pair in data:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InventoryError(f"--data {pair!r} is not valid; accepted: KEY=VALUE")
        override[key] = parse_cli_arg(value)
    try:
        return make_inventory(
            path, cwd=os.getcwd(), override_data=override, group_data_directories=list(group_data) or None
        )
    except UnexpectedExternalError as err:
        cause = err.exception
        raise InventoryError(f"inventory {path}: {type(cause).__name__}: {cause}") from err
    except (PyinfraError, CliError) as err:
        raise InventoryError(f"inventory {path}: {err}") from err


def matching(inventory: Any, patterns: Iterable[str]) -> list[Any]:
    """The hosts pyinfra's ``--limit`` and ``--exclude`` select: a group name, or a glob over host names."""
    from pyinfra.api.exceptions import NoGroupError  # pyinfra only where an inventory is loaded (module doc)

    found: list[Any] = []
    for pattern in patterns:
        try:
            hosts = inventory.get_group(pattern)
        except NoGroupError:
            hosts = [h for h in inventory if fnmatch(h.name, pattern)]
        found += [h for h in hosts if h not in found]
    return found


def limit_hosts(inventory: Any, patterns: Sequence[str]) -> list[Any]:
    """pyinfra's ``--limit``, in inventory order; every pattern must match a group or a host."""
    if not patterns:
        return list(inventory)
    for pattern in patterns:
        if not matching(inventory, [pattern]):
            raise InventoryError(f"--limit {pattern!r} matches no group or host in the inventory")
    chosen = matching(inventory, patterns)
    return [h for h in inventory if h in chosen]


def target_of(host: Any) -> InventoryTarget:
    """How the controller reaches one loaded host, and where its server listens there."""
    # pyinfra is imported only where an inventory is loaded: the controller that asks for targets
    # never pays for importing it (seconds) nor risks its gevent patching.
    from pyinfra.connectors.local import LocalConnector
    from pyinfra.connectors.ssh import SSHConnector

    data = host.data
    server_host = str(data.get("server_host") or DEFAULT_SERVER_HOST)
    server_port = int(data.get("server_port") or DEFAULT_SERVER_PORT)
    groups = tuple(dict.fromkeys(str(group) for group in host.groups))
    canary = "canary" in groups or data.get("rollout_canary") in (True, "true", "yes", 1, "1")
    if issubclass(host.connector_cls, LocalConnector):
        ssh = None
    elif issubclass(host.connector_cls, SSHConnector):
        ssh = SshOptions.from_host_data(host.name, data)
    else:
        raise InventoryError(
            f"host {host.name} uses {host.connector_cls.__name__}; lemfleet reaches inventory hosts over SSH "
            "or @local only (give other endpoints as URLs)"
        )
    return InventoryTarget(host.name, ssh, server_host, server_port, groups, canary)


def read_targets(request: Mapping[str, Any]) -> list[InventoryTarget]:
    """The targets of ``request`` (``inventory``, ``data``, ``group_data``, ``limit``), loaded here."""
    from pyinfra.api import State  # pyinfra only where an inventory is loaded (see target_of)
    from pyinfra.context import ctx_state

    with ctx_state.use(State()):
        inventory = load_inventory(request["inventory"], request.get("data", ()), request.get("group_data", ()))
        return [target_of(host) for host in limit_hosts(inventory, request.get("limit", ()))]


def inventory_targets(
    path: str,
    *,
    data: Sequence[str] = (),
    group_data: Sequence[str] = (),
    limit: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> list[InventoryTarget]:
    """The inventory's hosts as targets, in inventory order, read in a child process (see the module doc).

    pyinfra's own warnings are passed on to stderr; :class:`InventoryError` says why it cannot be read.
    """
    if not os.path.exists(path):
        raise InventoryError(f"inventory file {path} does not exist")
    request = {"inventory": path, "data": list(data), "group_data": list(group_data), "limit": list(limit)}
    done = subprocess.run(
        [sys.executable, "-m", "lemfleet.inventory_loader"],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    messages = done.stderr.strip().splitlines()
    if done.returncode != 0:
        raise InventoryError(messages[-1] if messages else f"cannot read inventory {path}")
    if messages:
        print("\n".join(messages), file=sys.stderr)
    return [InventoryTarget.from_dict(entry) for entry in json.loads(done.stdout)]


def main() -> int:
    """Read the request as JSON on stdin, print the targets as JSON; 2 and the reason on stderr when it fails."""
    import pyinfra_cli  # noqa: F401  (patches for gevent first, as the pyinfra command does)

    out = sys.stdout
    sys.stdout = sys.stderr  # inventory files may print
    request = json.load(sys.stdin)
    try:
        found = read_targets(request)
    except InventoryError as err:
        print(err, file=sys.stderr)
        return 2
    except Exception as err:  # the inventory file is user code: report, don't trace back
        print(f"inventory {request.get('inventory')}: {type(err).__name__}: {err}", file=sys.stderr)
        return 2
    out.write(json.dumps([asdict(target) for target in found]))
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
