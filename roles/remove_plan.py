"""What ``lemfleet remove`` takes off a host: lemfleet's footprint, read in one round trip, and the plan.

What lemfleet created, and only that, is removed:

- units whose file in ``/etc/systemd/system`` starts with :data:`UNIT_MARK`, or that the deploy
  record names (an earlier lemfleet wrote no mark), (the plain
  ``<unit>.service`` and a ``<unit>@.service`` template with its ``<unit>@N.service``
  instances), stopped and disabled first, with every enable link pointing at them;
- ``/etc/lemfleet`` (environment files, key file, ``deployed.json``), ``/opt/lemfleet``
  (sources, build trees, builds), ``/var/cache/lemfleet`` (driver downloads) and apt's proxy
  file (``80lemfleet-proxy``): names only lemfleet uses;
- in ``/var/lib/lemfleet`` (the service user's home), everything but model directories: the
  last good and previous states, the rollout lock, half-written copies of them;
- in each model directory, the files lemfleet placed (each has its ``.verified`` check record),
  partial downloads and the directory's :data:`DIR_MARK`; the directory itself only when it
  held the mark and is then empty, and ``/var/lib/lemfleet`` when it is then empty;
- the service user (and its group), only when its comment is :data:`USER_COMMENT` or the deploy
  record names it (as :mod:`lemfleet.roles.ownership` adopts a user of an earlier lemfleet).

Kept: operators' drop-ins (``<unit>.service.d``), a user lemfleet did not create, any other file
in a model directory, packages, and the driver repositories, keys and pins (the driver packages
they serve stay installed; the README says why). Each kept object is named in the plan.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from shlex import quote
from typing import Any

from pyinfra.api import FactBase

from lemfleet.roles.apt_proxy import PROXY_FILE
from lemfleet.roles.ops import USER_COMMENT
from lemfleet.roles.ownership import DIR_MARK, UNIT_MARK
from lemfleet.roles.ownership import parse as split_probe
from lemfleet.roles.server import CONFIG_DIR, RECORD_FILE

UNIT_DIR = "/etc/systemd/system"
STATE_DIR = "/var/lib/lemfleet"
LAST_GOOD_LINK = f"{STATE_DIR}/last-good/model"
# Trees and files whose names only lemfleet uses, removed whole, with what they hold.
OWNED_PATHS: tuple[tuple[str, str], ...] = (
    (CONFIG_DIR, "config, key file and deploy record"),
    ("/opt/lemfleet", "llama.cpp sources, build trees and builds"),
    ("/var/cache/lemfleet", "driver downloads"),
    (PROXY_FILE, "apt proxy setting"),
    ("/run/lemfleet-secret", "secret staging"),
)
# What lemfleet keeps in STATE_DIR besides model directories; every other entry there is lemfleet's too.
STATE_NAMES = {"last-good": "last good state", "previous": "previous state", "rollout.lock": "rollout lock"}
DRIVER_MARK = "Managed by lemfleet (drivers)."
DRIVER_FILES = "/etc/apt/preferences.d/* /etc/apt/sources.list.d/* /etc/modprobe.d/*"
DRIVER_KEYRING = "/etc/apt/keyrings/rocm.gpg"
SECTIONS = ("units", "recorded", "loaded", "links", "dropins", "passwd", "group", "paths", "models", "state", "drivers")
UNIT_NAME = re.compile(r"[\w@.-]+\.service")
_PARTIAL = re.compile(r"[0-9a-f]{12}-[^/]*\.partial")


class Record(FactBase[dict[str, Any]]):
    """The host's ``deployed.json`` (``{}`` when missing or unreadable) and where the last good model is."""

    def command(self) -> str:
        return (
            f"head -c 65536 {quote(RECORD_FILE)} 2>/dev/null; echo; echo --link; readlink {quote(LAST_GOOD_LINK)}; true"
        )

    def process(self, output: Iterable[str]) -> dict[str, Any]:
        lines = list(output)
        cut = lines.index("--link") if "--link" in lines else len(lines)
        try:
            record = json.loads("\n".join(lines[:cut]) or "{}")
        except ValueError:
            record = {}
        found = record if isinstance(record, dict) else {}
        link = [line for line in lines[cut + 1 :] if line.strip()]
        return {"record": found, "last_good_model": link[0] if link else None}


class Footprint(FactBase[dict[str, list[str]]]):
    """Everything of lemfleet's that may be on the host, one section per kind (read-only)."""

    def command(self, users: Sequence[str], model_dirs: Sequence[str], units: Sequence[str] = ()) -> str:
        return footprint_command(users, model_dirs, units)

    def process(self, output: Iterable[str]) -> dict[str, list[str]]:
        return parse(output)


def footprint_command(users: Sequence[str], model_dirs: Sequence[str], units: Sequence[str] = ()) -> str:
    """One read-only shell command printing each section of :class:`Footprint`.

    ``units`` are the unit files a deploy record names: an earlier lemfleet wrote its unit
    without the mark, and its record is how ownership.py knows the unit is lemfleet's.
    """
    unit_words = " ".join(quote(u) for u in units)
    user_words = " ".join(quote(u) for u in users)
    dir_words = " ".join(quote(d) for d in model_dirs)
    path_words = " ".join(quote(p) for p, _ in OWNED_PATHS)
    mark = quote(UNIT_MARK)
    return (
        f'echo --units; for f in {UNIT_DIR}/*.service; do [ -f "$f" ] && [ ! -L "$f" ] && '
        f'head -n 1 "$f" | grep -qF {mark} && basename "$f"; done; '
        f'echo --recorded; for u in {unit_words}; do [ -f "{UNIT_DIR}/$u" ] && echo "$u"; done; '
        "echo --loaded; systemctl list-units --all --plain --no-legend --full --type=service 2>/dev/null; "
        f"echo --links; find {UNIT_DIR} -mindepth 2 -maxdepth 2 -type l "
        r"\( -path '*.wants/*' -o -path '*.requires/*' \) -printf '%p\t%l\n' 2>/dev/null; "
        f'echo --dropins; for d in {UNIT_DIR}/*.service.d; do [ -d "$d" ] || continue; echo "$d/"; '
        f'for f in "$d"/*; do [ -f "$f" ] || continue; if head -n 1 "$f" | grep -qF {mark}; '
        'then echo "+$f"; else echo "-$f"; fi; done; done; '
        f'echo --passwd; for u in {user_words}; do getent passwd "$u"; done; '
        f'echo --group; for u in {user_words}; do getent group "$u"; done; '
        f'echo --paths; for p in {path_words}; do if [ -e "$p" ] || [ -L "$p" ]; then echo "$p"; fi; done; '
        f'echo --models; for d in {dir_words}; do [ -d "$d" ] && [ ! -L "$d" ] && echo "$d/" && '
        "find \"$d\" -mindepth 1 -maxdepth 1 -printf '%p\\n'; done; "
        f"echo --state; [ -d {STATE_DIR} ] && echo {STATE_DIR}/ && "
        f"find {STATE_DIR} -mindepth 1 -maxdepth 1 -printf '%p\\n'; "
        f"echo --drivers; grep -lsF -e {quote(DRIVER_MARK)} -e {quote(DRIVER_KEYRING)} {DRIVER_FILES}; "
        f"[ -e {DRIVER_KEYRING} ] && echo {DRIVER_KEYRING}; true"
    )


def parse(lines: Iterable[str]) -> dict[str, list[str]]:
    return split_probe(lines, SECTIONS)


@dataclass(frozen=True)
class Candidates:
    """Where to look on a host: this deploy's settings and what the host's deploy record names."""

    users: tuple[str, ...]
    model_dirs: tuple[str, ...]
    recorded_unit: str | None = None
    recorded_user: str | None = None


def candidates(settings: dict[str, Any], found: dict[str, Any]) -> Candidates:
    """The user names, model directories and recorded unit to look at (pure)."""
    record = found.get("record") or {}
    service: dict[str, Any] = record["service"] if isinstance(record.get("service"), dict) else {}
    model: dict[str, Any] = record["model"] if isinstance(record.get("model"), dict) else {}
    users = [settings["server_user"], service.get("user")]
    dirs = [settings["model_dir"], f"{STATE_DIR}/models"]
    for path in (model.get("path"), found.get("last_good_model")):
        if isinstance(path, str) and path.startswith("/"):
            dirs.append(posixpath.dirname(path))
    unique = lambda items: tuple(sorted({i for i in items if isinstance(i, str) and i}))  # noqa: E731
    unit = service.get("unit")
    user = service.get("user")
    return Candidates(
        users=unique(users),
        model_dirs=unique(d.rstrip("/") or "/" for d in dirs if isinstance(d, str)),
        recorded_unit=unit if isinstance(unit, str) and UNIT_NAME.fullmatch(unit) else None,
        recorded_user=user if isinstance(user, str) and user else None,
    )


@dataclass(frozen=True)
class Removal:
    """One object to remove: what it is (the operation's name) and the shell that removes it."""

    what: str
    commands: tuple[str, ...]


@dataclass(frozen=True)
class RemovalPlan:
    removals: tuple[Removal, ...]
    kept: tuple[str, ...]


def _unit_removal(unit: str, loaded: list[str], links: list[tuple[str, str]]) -> Removal:
    template = unit.endswith("@.service")
    prefix = unit[: -len(".service")]
    instances = sorted(
        {name for name in loaded if template and name.startswith(prefix) and name.endswith(".service")}
        | {posixpath.basename(link) for link, _ in links if template and posixpath.basename(link).startswith(prefix)}
    )
    own_links = sorted(link for link, target in links if posixpath.basename(target) == unit)
    commands = [f"systemctl disable --now {quote(name)} 2>/dev/null || true" for name in [*instances, unit]]
    commands.append("rm -f " + " ".join(quote(p) for p in [f"{UNIT_DIR}/{unit}", *own_links]))
    commands.append("systemctl daemon-reload")
    commands += [f"systemctl reset-failed {quote(name)} 2>/dev/null || true" for name in [*instances, unit]]
    shown = f"unit {unit}" + (f" and its instances {', '.join(instances)}" if instances else "")
    return Removal(f"Remove {shown}", tuple(commands))


def _dropin_removals(entries: list[str], units: list[str]) -> tuple[list[Removal], list[str]]:
    """Drop-ins lemfleet wrote (first line :data:`UNIT_MARK`, as an instance's own settings) go; operators' stay."""
    removals: list[Removal] = []
    kept: list[str] = []
    templates = [u[: -len(".service")] for u in units if u.endswith("@.service")]
    for directory in (e[:-1] for e in entries if e.endswith("/")):
        files = [e[1:] for e in entries if e[:1] in "+-" and posixpath.dirname(e[1:]) == directory]
        ours = [f for f in files if f"+{f}" in entries]
        others = [f for f in files if f not in ours]
        unit = posixpath.basename(directory)[: -len(".d")]
        if ours:
            commands = ["rm -f -- " + " ".join(quote(f) for f in ours)]
            commands += [f"rmdir -- {quote(directory)}"] if not others else []
            removals.append(Removal(f"Remove lemfleet's drop-in(s) for {unit}", (*commands, "systemctl daemon-reload")))
        if others and (ours or unit in units or any(unit.startswith(t) for t in templates)):
            kept += [f"{f} (an operator's drop-in; lemfleet never writes one)" for f in others]
    return removals, kept


def _model_removals(entries: list[str]) -> tuple[list[Removal], list[str], set[str]]:
    """Per model directory: remove lemfleet's files, then the directory when it was lemfleet's and is empty."""
    removals: list[Removal] = []
    kept: list[str] = []
    emptied: set[str] = set()
    dirs = [e[:-1] for e in entries if e.endswith("/")]
    for directory in dirs:
        inside = [e for e in entries if posixpath.dirname(e) == directory and not e.endswith("/")]
        names = {posixpath.basename(e) for e in inside}
        ours = {n for n in names if n.endswith(".verified") or f"{n}.verified" in names or _PARTIAL.fullmatch(n)}
        ours |= {DIR_MARK} & names
        others = sorted(names - ours)
        paths = [f"{directory}/{n}" for n in sorted(ours)]
        commands = ["rm -f -- " + " ".join(quote(p) for p in paths)] if paths else []
        if DIR_MARK in names and not others:
            commands.append(f"rmdir -- {quote(directory)}")
            emptied.add(directory)
        if commands:
            models = sorted(n for n in ours if n.endswith(".gguf"))
            removals.append(Removal(f"Remove models in {directory}: {', '.join(models) or 'no model, only marks'}",
                                    tuple(commands)))  # fmt: skip
        if others:
            kept.append(f"{directory}: {', '.join(others)} (not placed by lemfleet)")
    return removals, kept, emptied


def plan_removal(observed: dict[str, list[str]], users: Sequence[str], recorded_user: str | None = None) -> RemovalPlan:
    """What to remove and what to keep on a host, from its :class:`Footprint` (pure).

    A user is lemfleet's when its comment is :data:`USER_COMMENT`, or when the deploy record
    names it (``recorded_user``: an earlier lemfleet created it without the comment).
    """
    removals: list[Removal] = []
    kept: list[str] = []
    loaded = [next((w for w in line.split() if w.endswith(".service")), "") for line in observed["loaded"]]
    links = [(line.split("\t", 1)[0], line.split("\t", 1)[1]) for line in observed["links"] if "\t" in line]
    units = sorted(set(observed["units"]) | set(observed["recorded"]))
    removals += [_unit_removal(unit, loaded, links) for unit in units]
    dropins, dropins_kept = _dropin_removals(observed["dropins"], units)
    removals += dropins
    kept += dropins_kept
    present = set(observed["paths"])
    removals += [Removal(f"Remove {path} ({what})", (f"rm -rf -- {quote(path)}",)) for path, what in OWNED_PATHS
                 if path in present]  # fmt: skip
    model_dirs = {e[:-1] for e in observed["models"] if e.endswith("/")}
    for entry in sorted(e for e in observed["state"] if not e.endswith("/") and e not in model_dirs):
        what = STATE_NAMES.get(posixpath.basename(entry), "lemfleet's state")
        removals.append(Removal(f"Remove {entry} ({what})", (f"rm -rf -- {quote(entry)}",)))
    model_removals, model_kept, emptied = _model_removals(observed["models"])
    removals += model_removals
    kept += model_kept
    left = [e for e in observed["state"] if e in model_dirs and e not in emptied]
    if f"{STATE_DIR}/" in observed["state"] and not left:
        removals.append(Removal(f"Remove {STATE_DIR}, empty now", (f"rmdir -- {quote(STATE_DIR)}",)))
    groups = {line.split(":", 1)[0]: line.split(":") for line in observed["group"]}
    for line in observed["passwd"]:
        fields = line.split(":")
        if len(fields) < 7 or fields[0] not in users:
            continue
        name, gid, comment = fields[0], fields[3], fields[4]
        if comment != USER_COMMENT and name != recorded_user:
            kept.append(f"user {name} (lemfleet did not create it: its comment is {comment!r})")
            continue
        commands = [f"userdel -- {quote(name)}"]
        group = groups.get(name)
        if group and len(group) > 2 and group[2] == gid:
            commands.append(f"if getent group {quote(name)} >/dev/null; then groupdel -- {quote(name)}; fi")
        removals.append(Removal(f"Remove user {name} and its group", tuple(commands)))
    kept += [f"{path} (driver repository: the driver packages stay)" for path in observed["drivers"]]
    return RemovalPlan(tuple(removals), tuple(kept))
