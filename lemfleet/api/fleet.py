"""A fleet: the inventory a run reads, and the settings given on top of it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemfleet.inventory_loader import InventoryError, inventory_targets
from lemfleet.sshtunnel import InventoryTarget

ANSIBLE_INVENTORY = Path(__file__).with_name("ansible_fleet.py")
"""A pyinfra inventory file that reads the Ansible inventory named by LEMFLEET_ANSIBLE_INVENTORY."""


class FleetSetupError(ValueError):
    """The inventory cannot be read, or a setting is invalid; no host was contacted."""


def data_items(data: Mapping[str, Any] | Iterable[str] | None) -> tuple[str, ...]:
    """``--data`` items (``key=value``) from a mapping or from items; values as pyinfra parses them."""
    if data is None:
        return ()
    if isinstance(data, Mapping):
        return tuple(f"{key}={_cli_value(value)}" for key, value in data.items())
    items = tuple(data)
    for item in items:
        if "=" not in item or item.startswith("="):
            raise FleetSetupError(f"data item {item!r} is not valid; accepted: KEY=VALUE")
    return items


def _cli_value(value: Any) -> str:
    """The text pyinfra's ``--data`` parser turns back into ``value`` (bool, int, JSON, else string)."""
    if isinstance(value, bool | int | float | list | dict) or value is None:
        return json.dumps(value)
    return str(value)


@dataclass(frozen=True)
class Fleet:
    """A pyinfra inventory (or an Ansible one), with settings that override its host data.

    ``Fleet.from_inventory("inventories/fleet.py")`` or ``Fleet.from_ansible("hosts.ini")``;
    ``data`` is what ``--data`` gives the pyinfra command, and wins over host and group data.
    """

    inventory: str
    data: tuple[str, ...] = ()
    group_data: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_inventory(
        cls, path: str | os.PathLike[str], data: Mapping[str, Any] | Iterable[str] | None = None
    ) -> Fleet:
        inventory = Path(path)
        if not inventory.is_file():
            raise FleetSetupError(f"inventory {str(path)!r} is not a file; accepted: a pyinfra inventory (.py)")
        return cls(str(inventory.resolve()), data_items(data))

    @classmethod
    def from_ansible(cls, path: str | os.PathLike[str], data: Mapping[str, Any] | Iterable[str] | None = None) -> Fleet:
        inventory = Path(path)
        if not inventory.exists():
            raise FleetSetupError(
                f"Ansible inventory {str(path)!r} does not exist; accepted: an INI, YAML or directory"
            )
        env = {"LEMFLEET_ANSIBLE_INVENTORY": str(inventory.resolve())}
        return cls(str(ANSIBLE_INVENTORY), data_items(data), env=env)

    def with_data(self, data: Mapping[str, Any] | Iterable[str] | None) -> Fleet:
        """This fleet with more ``--data`` items (later items win)."""
        return Fleet(self.inventory, self.data + data_items(data), self.group_data, self.env)


def fleet_targets(fleet: Fleet, limit: str | Iterable[str] | None = None) -> list[InventoryTarget]:
    """The fleet's hosts as SSH targets, in inventory order, with the fleet's ``data`` and ``group_data``,
    narrowed as pyinfra's ``--limit`` narrows (each pattern a group name or a glob over host names).

    Raises :class:`FleetSetupError` when the inventory cannot be read or a pattern matches nothing.
    """
    patterns = [limit] if isinstance(limit, str) else list(limit or ())
    try:
        return inventory_targets(
            fleet.inventory, data=fleet.data, group_data=fleet.group_data, limit=patterns, env=fleet.env
        )
    except InventoryError as err:
        raise FleetSetupError(str(err)) from err
