"""rollback: put a host back on its previous build and model by hand, through the same health gate.

``lemfleet rollback`` (lemfleet/api/rollback.py) runs this through
lemfleet/rollback_deploy.py. The previous state is the one the last passing
change replaced, kept under ``/var/lib/lemfleet/previous/`` by
roles/transaction.py with its build link, model link, unit, environment and
key files and ``deployed.json``. On each host:

1. With no previous state, the host fails with a clear message and nothing
   changes (a host deployed once, or only by a lemfleet before rollback).
2. The previous state's files and build link are put in place; the units
   only the serving state has are stopped, the previous state's restarted
   (every instance of ``server_instances``, or the one unit).
3. The health gate (roles/gate.py) checks it as a deploy's new state is
   checked, against what the previous ``deployed.json`` says serves (units,
   ports, alias, backend, GPU layers). A failure puts the state that served
   before the rollback back (the last good state) and fails the host.
4. On a pass the two kept states swap places: the rolled-back state is the
   last good one, and the one it replaced is the previous, so a second
   rollback goes forward again.

A distro build's packages move with the state (roles/distro_release.py):
step 2 reinstalls and holds the previous state's kept .debs, and after a pass
the distribution's packages the rolled-back state does not use are purged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from shlex import quote
from typing import Any

from pyinfra import host, logger
from pyinfra.api import FactBase, FunctionCommand, StringCommand, operation
from pyinfra.operations import server

from lemfleet.roles.distro_release import distro_packages, packages_of_record, release_after_gate
from lemfleet.roles.facts.host import MARK, split_sections
from lemfleet.roles.gate import Target, restart_commands
from lemfleet.roles.server_units import Present
from lemfleet.roles.transaction import LAST_GOOD, Layout, restore_script, swap_script


@dataclass(frozen=True)
class KeptStates:
    """What the host keeps of its previous state: its digest and its record."""

    previous_digest: str | None
    previous_record: dict[str, Any] | None

    def targets(self, unit_name: str, defaults: dict[str, Any]) -> list[Target]:
        """What the gate checks: every llama-server the previous record names (its instances, or its one unit)."""
        return targets_of(self.previous_record, unit_name, defaults)

    def instance_count(self) -> int:
        """One past the highest instance index the previous record names (0: one plain unit)."""
        return _count(unit for unit, _ in Present(record=self.previous_record).recorded_units)


def targets_of(record: dict[str, Any] | None, unit_name: str, defaults: dict[str, Any]) -> list[Target]:
    """The gate's targets for the state ``record`` describes; the settings where it is silent."""
    record = record or {}
    service, model, server_ = record.get("service") or {}, record.get("model") or {}, record.get("server") or {}
    units = Present(record=record).recorded_units or [(f"{unit_name}.service", int(defaults["server_port"]))]
    return [
        Target(
            port=port,
            listen_host=str(service.get("host") or defaults["server_host"]),
            alias=str(model.get("alias") or ""),
            backend=str(record.get("backend") or "cpu"),
            unit=unit,
            n_gpu_layers=int(server_.get("n_gpu_layers") or 0),
        )
        for unit, port in units
    ]


def _count(units: Iterable[str]) -> int:
    indexes = [int(m.group(1)) for u in units if (m := re.search(r"@(\d+)\.service$", u))]
    return max(indexes) + 1 if indexes else 0


def kept_command(layout: Layout) -> str:
    parts = [
        ("previous-digest", f"{layout.previous}/digest"),
        ("previous-record", f"{layout.previous}/deployed.json"),
    ]
    return "; ".join(f"echo {quote(MARK + name)}; cat {quote(path)} 2>/dev/null" for name, path in parts) + "; true"


def parse_kept(lines: Iterable[str]) -> KeptStates:
    """The output of :func:`kept_command`, by section; a record that is not JSON counts as none."""
    sections = split_sections(lines)

    def text(name: str) -> str | None:
        value = "\n".join(sections.get(name, [])).strip()
        return value or None

    record_text = text("previous-record")
    try:
        record = json.loads(record_text) if record_text else None
    except json.JSONDecodeError:
        record = None
    return KeptStates(text("previous-digest"), record if isinstance(record, dict) else None)


class Kept(FactBase[KeptStates]):
    """The kept states of roles/transaction.py, as :class:`KeptStates`. Sample output::

    @@lemfleet:previous-digest
    5f0c...
    @@lemfleet:previous-record
    {"schema_version": 2, ...}
    """

    def command(self, last_good: str) -> str:
        return kept_command(Layout(unit="", env="", last_good=last_good))

    def process(self, output: Iterable[str]) -> KeptStates:
        return parse_kept(output)


def kept_states() -> KeptStates:
    return host.get_fact(Kept, last_good=LAST_GOOD)


def rollback_layout(unit_name: str, present: Present, kept: KeptStates) -> Layout:
    """The files to put back: the plain unit's, and those of every instance either state has."""
    count = max(present.count, kept.instance_count(), 1 if present.template else 0)
    return Layout.for_unit(unit_name, count)


def _fail(message: str) -> FunctionCommand:
    def failed(state, host) -> bool:  # pyinfra passes both by name
        host.log_styled(message, fg="red", log_func=logger.error)
        return False

    return FunctionCommand(failed, (), {})


def no_previous_message(layout: Layout) -> str:
    return (
        f"no previous state to roll back to: {layout.previous} is missing (the host has passed the gate "
        "with one state only, or was last changed by a lemfleet that kept no previous state); nothing was changed"
    )


@operation(is_idempotent=False)
def put_back_previous(layout: Layout, kept: KeptStates, serving: list[str], previous: list[str]):
    """Put the previous state's files and build in place, then stop the units only the serving state has
    and restart the previous state's (``serving``, ``previous``: unit names); without one, fail the host."""
    if kept.previous_digest is None:
        yield _fail(no_previous_message(layout))
        return
    yield StringCommand(put_back_commands(layout, serving, previous))


def put_back_commands(layout: Layout, serving: list[str], previous: list[str]) -> str:
    """Stop and disable the units only the serving state has (while their files are there to disable),
    put the previous state's files and build back, then restart and enable its units."""
    gone = [quote(unit) for unit in serving if unit not in previous]
    lines = [
        f"systemctl disable --now {u} 2>/dev/null || true\nsystemctl reset-failed {u} 2>/dev/null || true" for u in gone
    ]
    lines.append(restore_script(layout, layout.previous))
    lines += [restart_commands(unit) + f"\nsystemctl enable {quote(unit)} 2>/dev/null || true" for unit in previous]
    return "\n".join(lines)


def keep_rolled_back(layout: Layout, passed: Any) -> None:
    """After a passing gate: the rolled-back state is the last good one, the one it replaced the previous;
    the distribution's packages it does not use (a rollback from the distro source to a compiled one) go."""
    server.shell(name="Keep the rolled-back state as the last good one", commands=[swap_script(layout)], _if=passed)
    release_after_gate(distro_packages(), packages_of_record(kept_states().previous_record), passed)
