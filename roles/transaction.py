"""transaction: a deploy that changes what serves keeps the last good state until the new one passes the gate.

The last good state is what served when the health gate last passed on
the host: the build link, the model file, the unit, environment and key
files, and ``deployed.json``. It is kept, not serving, under
``/var/lib/lemfleet/last-good/`` (root only, as it may hold the key file)::

    build -> /opt/lemfleet/llama.cpp/<build-id>     the build it ran
    model -> /var/lib/lemfleet/models/<file>        the model it served
    unit, env, api-key, tls.crt, tls.key,
    deployed.json                                   copies, owner and mode kept
    digest                                          what the state was, to tell a rerun

and the one before it, the state the last passing change replaced, under
``/var/lib/lemfleet/previous/`` in the same layout: ``lemfleet rollback``
(roles/rollback.py) puts it back by hand, through the same gate, and then the
two swap places, so a second rollback goes forward again. The prune steps
never remove the build or model either of them uses.

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
from pathlib import PurePosixPath
from shlex import quote
from typing import Any, Literal

from pyinfra import host
from pyinfra.api import operation
from pyinfra.api.operation import OperationMeta

from lemfleet.paths import LAST_GOOD_DIR, PREVIOUS_DIR
from lemfleet.roles import server_tls
from lemfleet.roles.distro_release import reinstall_script, release_failed_script, remember_failed_script
from lemfleet.roles.hoststate import path_state
from lemfleet.roles.llama_cpp import CURRENT, LAST_GOOD_BUILD, PREVIOUS_BUILD
from lemfleet.roles.model_delivery import LAST_GOOD_MODEL, PREVIOUS_MODEL
from lemfleet.roles.ops import put_text
from lemfleet.roles.server import API_KEY_FILE, RECORD_FILE, env_path, unit_path
from lemfleet.roles.server_units import dropin_path, instance_env_path, template_path

LAST_GOOD = LAST_GOOD_DIR
PREVIOUS = PREVIOUS_DIR
# The build and model links are read by the prune steps of roles/llama_cpp.py and roles/model_delivery.py.
assert f"{LAST_GOOD}/build" == LAST_GOOD_BUILD and f"{LAST_GOOD}/model" == LAST_GOOD_MODEL
assert f"{PREVIOUS}/build" == PREVIOUS_BUILD and f"{PREVIOUS}/model" == PREVIOUS_MODEL
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
    # The template unit and each instance's environment file and drop-in (roles/server_units.py), as
    # (name in the last good directory, live path): those of the new layout and of the host's present one.
    instance_files: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_unit(cls, unit_name: str, instances: int = 0) -> Layout:
        """The layout of ``unit_name``, with the files of instances 0 to ``instances`` - 1 and the template."""
        files = [("unit@", template_path(unit_name))] if instances else []
        for index in range(instances):
            files += [(f"env@{index}", instance_env_path(unit_name, index)),
                      (f"dropin@{index}", dropin_path(unit_name, index))]  # fmt: skip
        return cls(unit=unit_path(unit_name), env=env_path(unit_name), instance_files=tuple(files))

    @property
    def digest_file(self) -> str:
        return f"{self.last_good}/digest"

    @property
    def previous(self) -> str:
        """The previous state, beside the last good one (``PREVIOUS`` on a host)."""
        return str(PurePosixPath(self.last_good).with_name("previous"))

    def copies(self) -> list[tuple[str, str]]:
        """(name in the last good directory, live path) of each file kept by copy."""
        return [("unit", self.unit), ("env", self.env), *self.instance_files, ("api-key", self.api_key),
                *self.tls_files(), ("deployed.json", self.record)]  # fmt: skip

    def tls_files(self) -> list[tuple[str, str]]:
        """The certificate and key of server_tls, beside the key file (``/etc/lemfleet``; a test's folder)."""
        folder = PurePosixPath(self.api_key).parent
        return [(name, str(folder / name)) for name in ("tls.crt", "tls.key")]


assert Layout(unit="", env="").previous == PREVIOUS
assert [live for _, live in Layout(unit="", env="").tls_files()] == [server_tls.CERT_FILE, server_tls.KEY_FILE]


def managed_paths(layout: Layout) -> list[str]:
    """The paths this step reads, for the one state probe (roles/hoststate.py)."""
    return [layout.digest_file, layout.record, layout.current]


def state_digest(serving_digest: str, build_dir: str, model_path: str, record: dict[str, Any]) -> str:
    """One id for everything that serves: the server step's files, the build, the model and the record."""
    parts = [serving_digest, build_dir, model_path, json.dumps(record, sort_keys=True)]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def snapshot_script(layout: Layout, build: str, model: str, digest: str) -> str:
    """Shell that makes the live state the last good one; ``build`` and ``model`` are shell words.

    The last good state it replaces becomes the previous one (the one before
    that is removed). The new copy is made beside the old one and swapped in
    by rename, so a cut-off run leaves the old last good state whole, or, cut
    between the two renames, as the previous state.
    """
    good, new = layout.last_good, f"{layout.last_good}.new"
    prev, gone = layout.previous, f"{layout.previous}.old"
    lines = [
        "set -e",
        f"rm -rf {quote(new)} {quote(gone)} {quote(good + '.old')}",
        f"install -d -m 700 {quote(new)}",
        f"ln -s {build} {quote(new + '/build')}",
        f"ln -s {model} {quote(new + '/model')}",
        *(
            f"if [ -e {quote(live)} ]; then cp -p {quote(live)} {quote(new + '/' + name)}; fi"
            for name, live in layout.copies()
        ),
        f"echo {quote(digest)} > {quote(new + '/digest')}",
        f"if [ -e {quote(prev)} ] && [ -e {quote(good)} ]; then mv -T {quote(prev)} {quote(gone)}; fi",
        f"if [ -e {quote(good)} ]; then mv -T {quote(good)} {quote(prev)}; fi",
        f"mv -T {quote(new)} {quote(good)}",
        f"rm -rf {quote(gone)}",
    ]
    return "\n".join(lines)


def adopt_script(layout: Layout) -> str:
    """Shell that takes the serving state of a host deployed by an earlier lemfleet as the last good one.

    It runs only where there is no last good state yet, a ``deployed.json``
    and a ``current`` build link; the model is the one the environment file
    names (``LEMFLEET_MODEL``).
    """
    guard = (
        f"if [ -e {quote(layout.digest_file)} ] || [ ! -f {quote(layout.record)} ] || [ ! -L "
        f"{quote(layout.current)} ]; "
        "then exit 0; fi"
    )
    build = f"build=$(readlink {quote(layout.current)})"
    # Unquoted in the environment files of earlier lemfleets, double-quoted since roles/values.py.
    model = f"""model=$(sed -n 's/^LEMFLEET_MODEL=//p' {quote(layout.env)} | tail -n 1 | sed 's/^"\\(.*\\)"$/\\1/')"""

    return "\n".join([guard, build, model, snapshot_script(layout, '"$build"', '"$model"', ADOPTED)])


def restore_script(layout: Layout, kept: str | None = None) -> str:
    """Shell that puts a kept state back in place (files and build link; the service is not touched).

    ``kept`` is the directory of the state: the last good one by default, or
    ``layout.previous`` for a rollback. Each file is copied beside its live
    path and renamed over it; a file the kept state did not have (an API key
    added since) is removed. A kept distro build's packages go back first:
    its kept .debs are reinstalled and held (roles/distro_release.py). After
    a failed gate (the last good state), the distribution packages the failed
    state installed and the kept one does not name are purged last.
    """
    good = kept or layout.last_good
    what = "last good" if good == layout.last_good else "previous"
    missing = quote(f"lemfleet: no {what} state in {good}")
    automatic = good == layout.last_good
    lines = [
        "set -e",
        f"if [ ! -e {quote(good + '/digest')} ]; then echo {missing} >&2; exit 1; fi",
        # The build the failed gate saw, before its link moves: its distribution packages go at the end.
        *([remember_failed_script(layout.current)] if automatic else []),
        # A distro build's packages first (roles/distro_release.py): a reinstall that fails changes nothing else.
        reinstall_script(good + "/build"),
        f"if [ -L {quote(good + '/build')} ]; then "
        f'ln -sfn "$(readlink {quote(good + "/build")})" {quote(layout.current)}.new '
        f"&& mv -T {quote(layout.current)}.new {quote(layout.current)}; fi",
    ]
    for name, live in layout.copies():
        kept_file = quote(f"{good}/{name}")
        # An instance's drop-in directory goes with its drop-in (a user's own drop-ins keep it).
        folder = quote(str(PurePosixPath(live).parent)) if name.startswith("dropin@") else ""
        lines.append(
            f"if [ -e {kept_file} ]; then {f'mkdir -p {folder} && ' if folder else ''}cp -p {kept_file} "
            f"{quote(live)}.lemfleet-new && mv -f {quote(live)}.lemfleet-new {quote(live)}; "
            f"else rm -f {quote(live)}{f'; rmdir {folder} 2>/dev/null || true' if folder else ''}; fi"
        )
    if automatic:  # a manual rollback purges the serving state's packages only after its gate (roles/rollback.py)
        lines.append(release_failed_script(good + "/build"))
    return "\n".join(lines)


def swap_script(layout: Layout) -> str:
    """Shell that swaps the last good and the previous state, after a rollback passed the gate."""
    good, prev, tmp = quote(layout.last_good), quote(layout.previous), quote(f"{layout.last_good}.swap")
    return "\n".join(
        [
            "set -e",
            f"rm -rf {tmp}",
            f"if [ -e {good} ]; then mv -T {good} {tmp}; fi",
            f"mv -T {prev} {good}",
            f"if [ -e {tmp} ]; then mv -T {tmp} {prev}; fi",
        ]
    )


def fallback(layout: Layout, digest: str) -> Fallback:
    """What a failed gate falls back to, decided from the host's state before the deploy changed it."""
    kept = path_state(layout.digest_file)
    if kept.exists:
        return "report" if kept.sha256 == _file_sha256(digest) else "restore"
    if path_state(layout.record).exists and path_state(layout.current).kind == "link":
        return "restore"  # adopted by this run
    return "stop"


def _file_sha256(digest: str) -> str:
    return hashlib.sha256(f"{digest}\n".encode()).hexdigest()


@operation()
def adopt_last_good(layout: Layout):
    """Take the serving state of a host deployed by an earlier lemfleet as the last good one."""
    if (
        path_state(layout.digest_file).exists
        or not path_state(layout.record).exists
        or path_state(layout.current).kind != "link"
    ):
        host.noop("the host has a last good state, or nothing serves yet")
        return
    yield adopt_script(layout)


@operation()
def keep_last_good(layout: Layout, build: str, model: str, digest: str):
    """Make the state that just passed the gate the last good one."""
    if path_state(layout.digest_file).sha256 == _file_sha256(digest):
        host.noop("this state is already the last good one")
        return
    yield snapshot_script(layout, quote(build), quote(model), digest)


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
