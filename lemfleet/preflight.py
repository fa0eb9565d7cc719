"""The settings check of a ``pyinfra … deploy.py`` run, made before pyinfra contacts any host.

pyinfra 3 offers no hook between loading the inventory and connecting: it has no
hooks since 1.0, and ``State.init`` resets the state's callback handlers, so a
``host_before_connect`` callback cannot be registered from ``config.py``. What
pyinfra does run first is ``config.py``, from inside its own command line. So
this repo's ``config.py`` calls :func:`check_cli_run`, which

1. reads the run's arguments from pyinfra's command line (click's current
   context): the inventory, ``--limit``, ``--exclude``, ``--data`` and
   ``--group-data``;
2. loads the inventory with pyinfra's own loader, as ``lemfleet plan`` does;
3. validates the settings of every host the run will touch.

One bad value stops the run with every problem listed and no host contacted. So
does a ``--limit`` that matches no host or group: pyinfra would warn, deploy to
no host and exit 0, and ``--limit a,b`` (one pattern per ``--limit`` in pyinfra)
looks like a run over two hosts while it changes nothing.
Commands other than a deploy (``exec``, ``fact``) use no settings and are not
checked. The packaged deploy (``lemfleet.deploy``) checks each host's settings
again when it is called, which is the check another project's ``deploy.py``
gets: after pyinfra has connected, before anything changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from lemfleet.inventory_loader import InventoryError, load_inventory, matching
from lemfleet.roles.controller import FleetSettingsError, validate_hosts


def check_cli_run() -> None:
    """Validate every host of the pyinfra deploy run being started; raise ``FleetSettingsError`` on a bad one."""
    context = click.get_current_context(silent=True)
    if context is None:  # not pyinfra's command line: the API and `lemfleet plan` check for themselves
        return
    check_run(context.params)


def check_run(params: Mapping[str, Any]) -> None:
    """The check, given pyinfra's command-line parameters (names as pyinfra's ``cli`` takes them)."""
    if not params.get("inventory") or not any(str(op).endswith(".py") for op in params.get("operations") or ()):
        return
    try:
        inventory = load_inventory(
            params["inventory"], tuple(params.get("data") or ()), tuple(params.get("group_data") or ())
        )
    except InventoryError:
        return  # pyinfra loads the inventory next and reports the problem in its own words
    if unmatched := [pattern for pattern in params.get("limit") or () if not matching(inventory, [pattern])]:
        raise FleetSettingsError(unmatched_limits(unmatched))
    hosts = matching(inventory, params.get("limit") or ()) if params.get("limit") else list(inventory)
    excluded = set(matching(inventory, params.get("exclude") or ()))
    validate_hosts([h for h in hosts if h not in excluded])


def unmatched_limits(patterns: list[str]) -> str:
    """Why a run whose ``--limit`` patterns match no host stops (pyinfra would deploy to none, exit 0)."""
    lines = []
    for pattern in patterns:
        split = [part for part in pattern.split(",") if part]
        hint = (
            f"; pyinfra takes one pattern per --limit: {' '.join(f'--limit {p}' for p in split)}"
            if len(split) > 1
            else ""
        )
        lines.append(f"--limit {pattern!r} matches no host or group of the inventory{hint}")
    return "\n".join(lines) + "\nNo host was contacted."
