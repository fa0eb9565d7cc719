"""Where each llama-server instance's files live, and the step that leaves no stale instance behind.

One instance is the plain unit ``<unit>.service`` with ``/etc/lemfleet/<unit>.env``.
Several are the template ``<unit>@.service``; instance N has

- ``/etc/lemfleet/<unit>@N.env``: its tunables (port, threads, device variables);
- ``/etc/systemd/system/<unit>@N.service.d/lemfleet-instance.conf``: its environment
  file, ``SocketBindAllow=`` for its own port and ``DeviceAllow=`` for its own
  devices, which a template cannot vary by instance.

A user's own drop-ins (``systemctl edit``, ``override.conf``) sort after
``lemfleet-instance.conf`` and are never touched. Switching layouts
(``server_instances``) stops, disables and removes what the new layout does not
have: the instances past the new count, the template, or the plain unit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation
from pyinfra.api.operation import OperationMeta

from lemfleet.paths import CONFIG_DIR
from lemfleet.paths import DEPLOY_RECORD as RECORD
from lemfleet.roles.instances import Instance
from lemfleet.roles.ops import directory, put_text
from lemfleet.roles.plan import HostPlan

UNIT_DIR = "/etc/systemd/system"
DROPIN = "lemfleet-instance.conf"
RECORD_MARK = "--lemfleet-record--"


def template_path(unit_name: str) -> str:
    return f"{UNIT_DIR}/{unit_name}@.service"


def dropin_dir(unit_name: str, index: int) -> str:
    return f"{UNIT_DIR}/{unit_name}@{index}.service.d"


def dropin_path(unit_name: str, index: int) -> str:
    return f"{dropin_dir(unit_name, index)}/{DROPIN}"


def instance_env_path(unit_name: str, index: int) -> str:
    return f"{CONFIG_DIR}/{unit_name}@{index}.env"


def instance_paths(unit_name: str, count: int) -> list[str]:
    """The files of instances 0..count-1 and the template (for the state probe and the last good state)."""
    paths = [template_path(unit_name)]
    for index in range(count):
        paths += [dropin_dir(unit_name, index), dropin_path(unit_name, index), instance_env_path(unit_name, index)]
    return paths


@dataclass(frozen=True)
class Present:
    """What the host has of a unit's instances before this deploy."""

    indexes: frozenset[int] = frozenset()  # instances with a drop-in, an env file or a loaded unit
    template: bool = False
    plain: bool = False
    record: dict[str, Any] | None = None  # the deploy record (deployed.json) before this deploy

    @property
    def recorded_units(self) -> list[tuple[str, int]]:
        """(unit, port) of each llama-server the record names: its instances, or its one service."""
        record = self.record or {}
        listed = record.get("instances")
        if isinstance(listed, list):
            return [(str(i["unit"]), int(i["port"])) for i in listed if isinstance(i, dict) and "unit" in i]
        service = record.get("service")
        if isinstance(service, dict) and "unit" in service and "port" in service:
            return [(str(service["unit"]), int(service["port"]))]
        return []

    @property
    def count(self) -> int:
        """One past the highest instance index found: every index below it is checked."""
        return max(self.indexes) + 1 if self.indexes else 0


class InstanceUnits(FactBase[Present]):
    """The instances of a unit the host has: files and units systemd knows. Sample output::

    /etc/systemd/system/lemfleet-llama@.service
    /etc/systemd/system/lemfleet-llama@0.service.d
    /etc/lemfleet/lemfleet-llama@1.env
    lemfleet-llama@1.service loaded active running llama-server serving tiny (lemfleet)
    """

    def command(self, unit_name: str) -> str:
        u = quote(unit_name)
        return (
            f"ls -d {UNIT_DIR}/{u}.service {UNIT_DIR}/{u}@.service {UNIT_DIR}/{u}@*.service.d "
            f"{CONFIG_DIR}/{u}@*.env 2>/dev/null; "
            f"systemctl list-units --all --plain --no-legend {quote(unit_name + '@*.service')} 2>/dev/null; "
            f"echo {RECORD_MARK}; head -c 65536 {RECORD} 2>/dev/null; true"
        )

    def process(self, output: Iterable[str]) -> Present:
        return parse_present(output)


def parse_present(lines: Iterable[str]) -> Present:
    """The instance indexes, template and plain unit named in the fact's output (pure)."""
    indexes: set[int] = set()
    template = plain = False
    lines = list(lines)
    record = None
    if RECORD_MARK in lines:
        at = lines.index(RECORD_MARK)
        lines, text = lines[:at], "\n".join(lines[at + 1 :])
        try:
            record = json.loads(text) if text.strip() else None
        except ValueError:
            record = None
    for line in lines:
        word = line.split()[0] if line.split() else ""
        name = word.rsplit("/", 1)[-1]
        if name.endswith("@.service"):
            template = True
        elif match := re.fullmatch(r".+@(\d+)\.(?:service\.d|env|service)", name):
            indexes.add(int(match.group(1)))
        elif name.endswith(".service") and word.startswith("/"):
            plain = True
    return Present(frozenset(indexes), template, plain, record if isinstance(record, dict) else None)


def stale_commands(unit_name: str, present: Present, keep: Sequence[int], templated: bool) -> list[str]:
    """Shell that stops, disables and removes what the new layout lacks (pure)."""
    commands = []
    for index in sorted(present.indexes - set(keep)):
        unit = quote(f"{unit_name}@{index}.service")
        commands += [
            f"systemctl disable --now {unit} 2>/dev/null || true",
            f"systemctl reset-failed {unit} 2>/dev/null || true",
            f"rm -f {quote(dropin_path(unit_name, index))} {quote(instance_env_path(unit_name, index))}",
            f"rmdir {quote(dropin_dir(unit_name, index))} 2>/dev/null || true",
        ]
    if present.template and not templated:
        commands.append(f"rm -f {quote(template_path(unit_name))}")
    if present.plain and templated:
        unit = quote(f"{unit_name}.service")
        commands += [
            f"systemctl disable --now {unit} 2>/dev/null || true",
            f"systemctl reset-failed {unit} 2>/dev/null || true",
            f"rm -f {quote(f'{UNIT_DIR}/{unit_name}.service')} {quote(f'{CONFIG_DIR}/{unit_name}.env')}",
        ]
    if commands:
        commands.append("systemctl daemon-reload")
    return commands


@operation()
def remove_stale(unit_name: str, present: Present, keep: Sequence[int], templated: bool):
    """Stop, disable and remove the units and files of instances the new layout does not have."""
    commands = stale_commands(unit_name, present, keep, templated)
    if not commands:
        host.noop(f"no stale instance of {unit_name}")
        return
    yield "\n".join(commands)


def instance_plan(plan: HostPlan, instance: Instance) -> HostPlan:
    """The plan as one instance serves it: its own port, threads, devices and split."""
    return replace(plan, port=instance.port, threads=instance.threads, run_env=dict(instance.env),
                   device_nodes=instance.device_nodes, tensor_split=instance.tensor_split)  # fmt: skip


def whole(plan: HostPlan) -> Instance:
    """The one instance of a plan made without instances: the whole plan as one plain unit."""
    return Instance(None, plan.port, plan.threads, dict(plan.run_env), plan.device_nodes, ("cpu",), plan.tensor_split)


def layout_of(plan: HostPlan) -> tuple[Instance, ...]:
    return plan.instances or (whole(plan),)


@dataclass(frozen=True)
class Written:
    """What writing the units produced: each unit with the steps that must restart it, and the texts."""

    units: list[tuple[str, list[OperationMeta]]]
    reload_when: list[OperationMeta]
    texts: list[str]


def write_units(
    plan: HostPlan,
    *,
    unit_name: str,
    unit_text: str,
    env_text: Callable[[HostPlan, str], str],
    dropin_text: Callable[[Instance, str], str],
) -> Written:
    """Write the unit (plain or template) and each instance's environment file and drop-in."""
    instances = layout_of(plan)
    if instances[0].index is None:
        env = env_text(instance_plan(plan, instances[0]), unit_name)
        environment = put_text(name="Service environment", dest=f"{CONFIG_DIR}/{unit_name}.env", content=env)
        unit = put_text(name=f"Unit {unit_name}.service", dest=f"{UNIT_DIR}/{unit_name}.service", content=unit_text)
        return Written([(f"{unit_name}.service", [unit, environment])], [unit], [unit_text, env])
    template = put_text(name=f"Template unit {unit_name}@.service", dest=template_path(unit_name), content=unit_text)
    written = Written([], [template], [unit_text])
    for instance in instances:
        index = instance.index or 0
        name = instance.name(unit_name)
        env = env_text(instance_plan(plan, instance), name)
        dropin = dropin_text(instance, instance_env_path(unit_name, index))
        environment = put_text(name=f"Environment of {name}", dest=instance_env_path(unit_name, index), content=env)
        directory(name=f"Drop-in directory of {name}", path=dropin_dir(unit_name, index))
        own = put_text(name=f"Drop-in of {name}: its port and devices", dest=dropin_path(unit_name, index),
                       content=dropin)  # fmt: skip
        written.units.append((instance.unit(unit_name), [template, environment, own]))
        written.reload_when.append(own)
        written.texts.extend([env, dropin])
    return written
