"""lemfleet's own pyinfra operations, for what pyinfra's operations don't do atomically.

Each reads facts, compares them with the wanted state and yields commands
only when something must change, so a second run yields nothing.
"""

from __future__ import annotations

import shlex
from typing import IO, Any

from pyinfra import host
from pyinfra.api import FileUploadCommand, operation
from pyinfra.facts.files import File, Link, Sha256File


def q(value: str) -> str:
    return shlex.quote(value)


@operation()
def atomic_link(path: str, target: str, previous: str | None = None):
    """Point the symlink ``path`` at ``target`` with one rename, never leaving it missing.

    + previous: where to keep a link to the old target, for rollback
    """
    current = host.get_fact(Link, path=path)
    old_target = current.get("link_target") if current else None
    if old_target == target:
        host.noop(f"{path} already points at {target}")
        return
    if previous and old_target:
        yield f"ln -sfn {q(old_target)} {q(previous)}.new && mv -T {q(previous)}.new {q(previous)}"
    yield f"ln -sfn {q(target)} {q(path)}.new && mv -T {q(path)}.new {q(path)}"


@operation()
def verified_upload(
    src: str | IO[Any],
    dest: str,
    sha256: str,
    mode: str = "644",
    user: str = "root",
    group: str = "root",
):
    """Upload ``src`` to ``dest`` unless ``dest`` already has ``sha256``.

    The file goes to a temporary name beside ``dest`` and is renamed into
    place only after its sha256 on the host matches, so a truncated or
    corrupt transfer never reaches ``dest`` and whatever was there stays.
    """
    if host.get_fact(Sha256File, path=dest) == sha256:
        host.noop(f"{dest} already has sha256 {sha256[:12]}")
        return
    tmp = f"{dest}.partial"
    yield FileUploadCommand(src, tmp, remote_temp_filename=host.get_temp_filename(dest))
    yield (
        f"chown {q(user)}:{q(group)} {q(tmp)} && chmod {mode} {q(tmp)} && "
        f"echo {q(sha256 + '  ' + tmp)} | sha256sum --check --status "
        f"|| {{ rm -f {q(tmp)}; echo 'sha256 mismatch after transfer to {dest}' >&2; exit 1; }}; "
        f"mv -f {q(tmp)} {q(dest)}"
    )


@operation()
def script_unless_exists(path: str, script: str, why: str):
    """Run ``script`` only when ``path`` does not exist; the script must create it.

    + why: shown in the noop line when nothing is needed
    """
    if host.get_fact(File, path=path):
        host.noop(why)
        return
    yield script


@operation(is_idempotent=False)
def fail(message: str):
    """Fail this host with ``message``, leaving every other host to carry on."""
    yield f"echo {q('lemfleet: ' + message)} >&2; exit 1"
