"""Take over nothing lemfleet did not create: the service user, the unit file and the model directory.

The settings check refuses the system's own names (``roles/reserved.py``);
this step looks at the host, before the deploy changes anything there, and
fails the host when one of the three exists but is not lemfleet's. What is
lemfleet's:

- a user whose GECOS comment is :data:`USER_COMMENT` (set when lemfleet
  creates it);
- a unit file whose first line is :data:`UNIT_MARK` (the template's first
  line), never one that shadows a packaged unit under ``/usr/lib/systemd``;
- a model directory holding :data:`DIR_MARK`, which lemfleet writes when it
  creates the directory, and which an operator may write to hand lemfleet a
  directory of their own.

Earlier lemfleet versions marked none of these. Their deploy record
(``/etc/lemfleet/deployed.json``) names the user, the unit and the model
path they used, so those are adopted (and marked) rather than refused, and
upgrading a fleet goes through.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterable
from shlex import quote
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, operation

from lemfleet.paths import DEPLOY_RECORD as RECORD
from lemfleet.roles.ops import USER_COMMENT

UNIT_MARK = "# Managed by lemfleet"
DIR_MARK = ".lemfleet-owned"
VENDOR_UNIT_DIRS = ("/usr/lib/systemd/system", "/lib/systemd/system")
SECTIONS = ("passwd", "unit", "vendor", "dir", "record")


class Ownership(FactBase[dict[str, list[str]]]):
    """What the host has under lemfleet's names, one section per object. Sample output::

    --passwd
    lemfleet:x:998:998:lemfleet service user:/var/lib/lemfleet:/usr/sbin/nologin
    --unit
    # Managed by lemfleet: changes here are overwritten on the next deploy.
    --vendor
    --dir
    dir
    marked
    --record
    {"record_version": 1, "service": {"unit": "lemfleet-llama.service", "user": "lemfleet"}, ...}
    """

    def command(self, user: str, unit_name: str, model_dir: str) -> str:
        unit = f"{unit_name}.service"
        vendor = " ".join(quote(f"{d}/{unit}") for d in VENDOR_UNIT_DIRS)
        return (
            f"echo --passwd; getent passwd {quote(user)}; "
            f"echo --unit; head -n 1 {quote('/etc/systemd/system/' + unit)} 2>/dev/null; "
            f'echo --vendor; for f in {vendor}; do [ -e "$f" ] && echo "$f"; done; '
            f"echo --dir; [ -d {quote(model_dir)} ] && echo dir; [ -e {quote(model_dir + '/' + DIR_MARK)} ] && "
            f"echo marked; "
            f"echo --record; head -c 65536 {quote(RECORD)} 2>/dev/null; echo; true"
        )

    def process(self, output: Iterable[str]) -> dict[str, list[str]]:
        return parse(output)


def parse(lines: Iterable[str], names: Iterable[str] = SECTIONS) -> dict[str, list[str]]:
    """Probe output split at ``--<name>`` lines (``names``) into its sections' non-blank lines."""
    sections: dict[str, list[str]] = {name: [] for name in names}
    current = None
    for line in lines:
        if line.startswith("--") and line[2:] in sections:
            current = line[2:]
        elif current and line.strip():
            sections[current].append(line.rstrip("\n"))
    return sections


def _record(observed: dict[str, list[str]]) -> dict[str, Any]:
    try:
        record = json.loads("\n".join(observed["record"]) or "{}")
    except ValueError:
        return {}
    return record if isinstance(record, dict) else {}


def problems(observed: dict[str, list[str]], user: str, unit_name: str, model_dir: str) -> list[str]:
    """Why this deploy may not take the user, unit or directory it is set to; empty when it may (pure)."""
    record = _record(observed)
    service: dict[str, Any] = record["service"] if isinstance(record.get("service"), dict) else {}
    model: dict[str, Any] = record["model"] if isinstance(record.get("model"), dict) else {}
    found: list[str] = []

    if observed["passwd"]:
        fields = observed["passwd"][0].split(":")
        comment = fields[4] if len(fields) > 4 else ""
        if comment != USER_COMMENT and service.get("user") != user:
            found.append(
                f"server_user={user!r}: the host already has this user and lemfleet did not create it "
                f"(its comment is {comment!r}, not {USER_COMMENT!r}); lemfleet would re-home it and lock its "
                "login. Choose a user of lemfleet's own."
            )
    if observed["vendor"]:
        found.append(
            f"server_unit_name={unit_name!r}: {observed['vendor'][0]} is a unit a package installed; "
            "lemfleet's unit would shadow it. Choose another unit name."
        )
    elif (
        observed["unit"]
        and not observed["unit"][0].startswith(UNIT_MARK)
        and service.get("unit") != (f"{unit_name}.service")
    ):
        found.append(
            f"server_unit_name={unit_name!r}: /etc/systemd/system/{unit_name}.service exists and lemfleet did not "
            "write it. Choose another unit name, or remove that unit first."
        )
    recorded_dir = posixpath.dirname(model["path"]) if isinstance(model.get("path"), str) else None
    if "dir" in observed["dir"] and "marked" not in observed["dir"] and recorded_dir != model_dir:
        found.append(
            f"model_dir={model_dir!r} exists and lemfleet did not create it; lemfleet would chown, chmod and prune "
            f"it. Choose a directory lemfleet creates, or hand this one over by creating {model_dir}/{DIR_MARK}."
        )
    return found


@operation()
def claim(user: str, unit_name: str, model_dir: str):
    """Fail the host if the user, unit or model directory is not lemfleet's; mark what lemfleet adopts or makes.

    Runs before any other step changes the host. A model directory that is
    missing is created here with its mark, so that it is lemfleet's from the start.
    """
    observed = host.get_fact(Ownership, user=user, unit_name=unit_name, model_dir=model_dir)
    found = problems(observed, user, unit_name, model_dir)
    if found:
        yield f"echo {quote('lemfleet: refusing to take over what it did not create: ' + ' '.join(found))} >&2; exit 1"
        return
    commands = []
    if observed["passwd"] and observed["passwd"][0].split(":")[4:5] != [USER_COMMENT]:
        commands.append(f"usermod --comment {quote(USER_COMMENT)} {quote(user)}")  # adopted from an earlier version
    if "marked" not in observed["dir"]:
        commands.append(f"mkdir -p {quote(model_dir)} && touch {quote(model_dir + '/' + DIR_MARK)}")
    if not commands:
        host.noop(f"user {user}, unit {unit_name} and {model_dir} are lemfleet's")
    yield from commands
