"""transaction: a deploy that changes what serves keeps the last good state until the new one passes the gate.

The last good state is what served when the health gate last passed on
the host: the build link, the model file, the unit, environment and key
files, and ``deployed.json``. It is kept, not serving, under
``/var/lib/lemfleet/last-good/`` (root only, as it may hold the key file)::

    build -> /opt/lemfleet/llama.cpp/<build-id>     the build it ran
    model -> /var/lib/lemfleet/models/<file>        the model it served
    unit, env, api-key, deployed.json               copies, owner and mode kept
    digest                                          what the state was, to tell a rerun

A deploy then goes: adopt (a host of an earlier lemfleet, whose
``deployed.json`` has no ``schema_version``, gets its serving state taken as
the last good one) → change build, model and files → restart → gate
(roles/gate.py) → on a pass, write ``deployed.json`` and keep this state as
the last good one, then prune; on a failure, restore the last good state
(:func:`restore_script`) and restart it, or, with no last good state, stop
and disable the unit. There is one port, so the host does not serve while
the new state is checked; that gap is measured, not avoided.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta

from lemfleet.roles.hoststate import state
from lemfleet.roles.llama_cpp import CURRENT, LAST_GOOD_BUILD
from lemfleet.roles.model import LAST_GOOD_MODEL
from lemfleet.roles.ops import put_text, q
from lemfleet.roles.server import API_KEY_FILE, RECORD_FILE, env_path, unit_path

LAST_GOOD = "/var/lib/lemfleet/last-good"
# The build and model links are read by the prune steps of roles/llama_cpp.py and roles/model.py.
assert f"{LAST_GOOD}/build" == LAST_GOOD_BUILD and f"{LAST_GOOD}/model" == LAST_GOOD_MODEL
ADOPTED = "adopted"  # the digest of a state taken over from an earlier lemfleet

# What the gate does when it fails: put the last good state back, stop the unit (no last good state
# yet: a first deploy), or only report (the state that failed is the last good one itself).
Fallback = Literal["restore", "stop", "report"]


@dataclass(frozen=True)
class Layout:
    """Where the serving state lives on a host; tests point it into a temporary directory."""

    unit: str
    env: str
    last_good: str = LAST_GOOD
    current: str = CURRENT
    api_key: str = API_KEY_FILE
    record: str = RECORD_FILE

    @classmethod
    def for_unit(cls, unit_name: str) -> Layout:
        return cls(unit=unit_path(unit_name), env=env_path(unit_name))

    @property
    def digest_file(self) -> str:
        return f"{self.last_good}/digest"

    def copies(self) -> list[tuple[str, str]]:
        """(name in the last good directory, live path) of each file kept by copy."""
        return [("unit", self.unit), ("env", self.env), ("api-key", self.api_key), ("deployed.json", self.record)]


def managed_paths(layout: Layout) -> list[str]:
    """The paths this step reads, for the one state probe (roles/hoststate.py)."""
    return [layout.digest_file, layout.record, layout.current]


def state_digest(serving_digest: str, build_dir: str, model_path: str, record: dict[str, Any]) -> str:
    """One id for everything that serves: the server step's files, the build, the model and the record."""
    parts = [serving_digest, build_dir, model_path, json.dumps(record, sort_keys=True)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def snapshot_script(layout: Layout, build: str, model: str, digest: str) -> str:
    """Shell that makes the live state the last good one; ``build`` and ``model`` are shell words.

    The new copy is made beside the old one and swapped in by rename, so a
    cut-off run leaves the old last good state whole.
    """
    good, new, old = layout.last_good, f"{layout.last_good}.new", f"{layout.last_good}.old"
    lines = [
        "set -e",
        f"rm -rf {q(new)} {q(old)}",
        f"install -d -m 700 {q(new)}",
        f"ln -s {build} {q(new + '/build')}",
        f"ln -s {model} {q(new + '/model')}",
        *(f"if [ -e {q(live)} ]; then cp -p {q(live)} {q(new + '/' + name)}; fi" for name, live in layout.copies()),
        f"echo {q(digest)} > {q(new + '/digest')}",
        f"if [ -e {q(good)} ]; then mv -T {q(good)} {q(old)}; fi",
        f"mv -T {q(new)} {q(good)}",
        f"rm -rf {q(old)}",
    ]
    return "\n".join(lines)


def adopt_script(layout: Layout) -> str:
    """Shell that takes the serving state of a host deployed by an earlier lemfleet as the last good one.

    It runs only where there is no last good state yet, a ``deployed.json``
    and a ``current`` build link; the model is the one the environment file
    names (``LEMFLEET_MODEL``).
    """
    guard = (
        f"if [ -e {q(layout.digest_file)} ] || [ ! -f {q(layout.record)} ] || [ ! -L {q(layout.current)} ]; "
        "then exit 0; fi"
    )
    build = f"build=$(readlink {q(layout.current)})"
    # Unquoted in the environment files of earlier lemfleets, double-quoted since roles/values.py.
    model = f"""model=$(sed -n 's/^LEMFLEET_MODEL=//p' {q(layout.env)} | tail -n 1 | sed 's/^"\\(.*\\)"$/\\1/')"""

    return "\n".join([guard, build, model, snapshot_script(layout, '"$build"', '"$model"', ADOPTED)])


def restore_script(layout: Layout) -> str:
    """Shell that puts the last good state back in place (files and build link; the service is not touched).

    Each file is copied beside its live path and renamed over it; a file the
    last good state did not have (an API key added since) is removed.
    """
    good = layout.last_good
    lines = [
        "set -e",
        f"if [ ! -e {q(layout.digest_file)} ]; then echo 'lemfleet: no last good state in {good}' >&2; exit 1; fi",
        f'if [ -L {q(good + "/build")} ]; then ln -sfn "$(readlink {q(good + "/build")})" {q(layout.current)}.new '
        f"&& mv -T {q(layout.current)}.new {q(layout.current)}; fi",
    ]
    for name, live in layout.copies():
        kept = q(f"{good}/{name}")
        lines.append(
            f"if [ -e {kept} ]; then cp -p {kept} {q(live)}.lemfleet-new && mv -f {q(live)}.lemfleet-new {q(live)}; "
            f"else rm -f {q(live)}; fi"
        )
    return "\n".join(lines)


def fallback(layout: Layout, digest: str) -> Fallback:
    """What a failed gate falls back to, decided from the host's state before the deploy changed it."""
    kept = state(layout.digest_file)
    if kept.exists:
        return "report" if kept.sha256 == _file_sha256(digest) else "restore"
    if state(layout.record).exists and state(layout.current).kind == "link":
        return "restore"  # adopted by this run
    return "stop"


def _file_sha256(digest: str) -> str:
    return hashlib.sha256(f"{digest}\n".encode()).hexdigest()


@operation()
def adopt_last_good(layout: Layout):
    """Take the serving state of a host deployed by an earlier lemfleet as the last good one."""
    if state(layout.digest_file).exists or not state(layout.record).exists or state(layout.current).kind != "link":
        host.noop("the host has a last good state, or nothing serves yet")
        return
    yield adopt_script(layout)


@operation()
def keep_last_good(layout: Layout, build: str, model: str, digest: str):
    """Make the state that just passed the gate the last good one."""
    if state(layout.digest_file).sha256 == _file_sha256(digest):
        host.noop("this state is already the last good one")
        return
    yield snapshot_script(layout, q(build), q(model), digest)


def commit(
    layout: Layout, record: dict[str, Any], build: str, model: str, digest: str, passed: Callable[[], bool]
) -> OperationMeta:
    """After a passing gate: write the record, keep the state as the last good one; returns the keeping step."""
    put_text(
        name="Deploy record",
        dest=layout.record,
        content=json.dumps(record, indent=2, sort_keys=True) + "\n",
        _if=passed,
    )
    return keep_last_good(
        name="Keep this state as the last good one", layout=layout, build=build, model=model, digest=digest, _if=passed
    )
