"""lemfleet's own pyinfra operations: atomic where pyinfra's are not, and cheap to rerun.

Each reads the host's state from one shared fact (``roles/hoststate.py``),
compares it with the wanted state and yields commands only when something
must change, so a second run yields nothing and costs one round trip for
all of them together. Files are written to a temporary name beside their
destination and renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping
from io import StringIO
from shlex import quote
from typing import IO, Any

from pyinfra import host, logger
from pyinfra import state as pyinfra_state
from pyinfra.api import FactBase, FileUploadCommand, FunctionCommand, operation
from pyinfra.facts.files import FileContents
from pyinfra.operations.util.files import generate_color_diff

from lemfleet.roles import push_stream
from lemfleet.roles.hoststate import path_state


def _owned(path: str, mode: str, user: str, group: str) -> str:
    return f"chown {quote(user)}:{quote(group)} {quote(path)} && chmod {quote(mode)} {quote(path)}"


@operation()
def directory(path: str, mode: str = "755", user: str = "root", group: str = "root"):
    """A directory with this mode and owner."""
    current = path_state(path)
    if current.kind == "dir" and (current.mode, current.user, current.group) == (mode, user, group):
        host.noop(f"directory {path} is in place")
        return
    if current.kind not in ("dir", "missing"):
        yield f"rm -f {quote(path)}"
    yield f"mkdir -p {quote(path)} && {_owned(path, mode, user, group)}"


# Privilege switches under which pyinfra uploads as the login user to a temporary file, then copies it as root.
ESCALATION = ("_sudo", "_su_user", "_doas", "_dzdo")
UPLOAD_DIR = ".lemfleet-upload"


class LoginAccount(FactBase[tuple[str, str, str]]):
    """The account pyinfra logs in as, before any sudo/su: user, primary group and home.

    Sample output::

        deploy
        deploy
        /home/deploy
    """

    def command(self) -> str:
        return "id -un && id -gn && echo ~"

    def process(self, output: list[str]) -> tuple[str, str, str]:
        user, group, home = output[:3]
        return user, group, home


def _private_staging(dest: str) -> tuple[list[str], str | None]:
    """Where a secret is staged when pyinfra uploads as one user and writes as another.

    pyinfra's SSH connector then puts the content in a temporary file that the login user's umask
    leaves readable to all (``/tmp/pyinfra-<hash>``) before copying it as root. Staging it instead in
    a directory of the login user's own home, mode 0700, keeps it from every other account.
    Returns the commands that make that directory and the staging path, or ``([], None)`` when no
    escalation is in use and the upload goes straight into the 0600 file.
    """
    arguments: Mapping[str, Any] = host.current_op_global_arguments or {}
    if not any(arguments.get(name) for name in ESCALATION):
        return [], None
    user, group, home = host.get_fact(LoginAccount, _sudo=False, _su_user=None, _doas=False, _dzdo=False)
    staging = f"{home}/{UPLOAD_DIR}"
    make = f"install -d -m 700 -o {quote(user)} -g {quote(group)} {quote(staging)}"
    return [make], f"{staging}/{os.path.basename(dest)}.lemfleet-new"


@operation()
def put_text(dest: str, content: str, mode: str = "644", user: str = "root", group: str = "root",
             secret: bool = False):  # fmt: skip
    """A small file with exactly ``content``, renamed into place.

    + secret: the temporary file is created 0600 before the content is
      written into it, and no diff of the content is ever shown (others
      show theirs under pyinfra's ``--diff``, as files.put does); under
      sudo/su the upload is staged in a 0700 directory of the login
      user's home, not in a world-readable /tmp file
    """
    wanted = hashlib.sha256(content.encode()).hexdigest()
    current = path_state(dest)
    if current.kind == "file" and (current.sha256, current.mode, current.user, current.group) == (
        wanted, mode, user, group,
    ):  # fmt: skip
        host.noop(f"{dest} is up to date")
        return
    if pyinfra_state.config.DIFF and not secret:
        _show_diff(dest, current.kind == "file", content)
    tmp = f"{dest}.lemfleet-new"
    staging = None
    if secret:
        yield f"install -m 600 /dev/null {quote(tmp)}"
        make_staging, staging = _private_staging(dest)
        yield from make_staging
    yield FileUploadCommand(StringIO(content), tmp, remote_temp_filename=staging or host.get_temp_filename(dest))
    yield f"{_owned(tmp, mode, user, group)} && mv -f {quote(tmp)} {quote(dest)}"


def _show_diff(dest: str, exists: bool, content: str) -> None:
    """Under ``--diff``, the change as pyinfra's files.put shows it (a secret's content is never shown)."""
    before: list[str] = (host.get_fact(FileContents, path=dest) or []) if exists else []
    host.log(f"Will {'change' if exists else 'create'} {dest}", logger.info)
    for line in generate_color_diff(before, content.splitlines()):
        logger.info("  %s", line)
    logger.info("")


@operation()
def absent(path: str):
    """No file or link at ``path``."""
    if not path_state(path).exists:
        host.noop(f"{path} is absent")
        return
    yield f"rm -f {quote(path)}"


@operation()
def atomic_link(path: str, target: str, previous: str | None = None):
    """Point the symlink ``path`` at ``target`` with one rename, never leaving it missing.

    + previous: where to keep a link to the old target, for rollback
    """
    current = path_state(path)
    if current.kind == "link" and current.target == target:
        host.noop(f"{path} already points at {target}")
        return
    if previous and current.target:
        yield f"ln -sfn {quote(current.target)} {quote(previous)}.new && mv -T {quote(previous)}.new {quote(previous)}"
    yield f"ln -sfn {quote(target)} {quote(path)}.new && mv -T {quote(path)}.new {quote(path)}"


def place_verified(tmp: str, dest: str, sha256: str, what: str) -> str:
    """Shell that checks ``tmp`` against ``sha256``, renames it to ``dest`` and records the check.

    On a mismatch ``tmp`` is removed and ``dest`` is left as it was. This reads ``tmp`` once more;
    a push from the controller hashes the bytes as they arrive instead (roles/push_stream.py).
    """
    return (
        push_stream.HASHER + f'got=$($h < {quote(tmp)}); [ "${{got%% *}}" = {quote(sha256)} ] '
        f"|| {{ rm -f {quote(tmp)}; echo {quote(f'sha256 mismatch for {what}: rejected, {dest} left as it was')} >&2; "
        f"exit 1; }}; " + push_stream.place_command(tmp, dest, sha256)
    )


@operation()
def verified_upload(src: str | IO[Any], dest: str, sha256: str, mode: str = "644"):
    """Upload ``src`` to ``dest`` unless ``dest`` is already that file (by recorded sha256).

    The file goes to a temporary name beside ``dest`` and is renamed into
    place only after its sha256 on the host matches, so a truncated or
    corrupt transfer never reaches ``dest`` and whatever was there stays.
    A large file from a path is hashed on the host as it arrives, under the
    operation's sudo/doas too (roles/push_stream.py); anything else goes
    through pyinfra's upload and is hashed after it arrived.
    """
    if path_state(dest).verified_sha256() == sha256:
        host.noop(f"{dest} already has sha256 {sha256[:12]}")
        return
    tmp = f"{dest}.partial"
    what = f"the copy of {dest}"
    if isinstance(src, str) and push_stream.can_stream(src):
        script = push_stream.stream_script(tmp, dest, sha256, mode, what)
        yield FunctionCommand(push_stream.push, (src, push_stream.remote_command(script, push_stream.escalation())), {})
        return
    yield FileUploadCommand(src, tmp, remote_temp_filename=host.get_temp_filename(dest))
    yield f"chmod {quote(mode)} {quote(tmp)} && " + place_verified(tmp, dest, sha256, what)


@operation()
def script_unless_exists(path: str, script: str, why: str):
    """Run ``script`` only when ``path`` does not exist; the script must create it.

    + why: shown in the noop line when nothing is needed
    """
    if path_state(path).exists:
        host.noop(why)
        return
    yield script


@operation(is_idempotent=False)
def fail(message: str):
    """Fail this host with ``message``, leaving every other host to carry on."""
    yield f"echo {quote('lemfleet: ' + message)} >&2; exit 1"


# The GECOS comment that marks a user as lemfleet's (roles/ownership.py refuses to take over any other).
USER_COMMENT = "lemfleet service user"


class SystemUser(FactBase):
    """A user's passwd entry and groups, in one round trip (pyinfra's server.user reads four facts).

    Sample output::

        lemfleet:x:999:999::/var/lib/lemfleet:/usr/sbin/nologin
        lemfleet render video
    """

    def command(self, user: str) -> str:
        return f"getent passwd {quote(user)} && id -nG {quote(user)} || true"

    def process(self, output: Iterable[str]) -> dict[str, Any] | None:
        lines = list(output)
        if not lines:
            return None
        fields = lines[0].split(":")
        return {"home": fields[5], "shell": fields[6], "groups": set(lines[1].split()) if len(lines) > 1 else set()}


@operation()
def system_user(user: str, home: str, shell: str = "/usr/sbin/nologin", groups: Iterable[str] = ()):
    """A system user (and group of the same name) with this home and shell, in at least ``groups``."""
    current = host.get_fact(SystemUser, user=user)
    wanted = set(groups)
    if current is None:
        extra = f" --groups {quote(','.join(sorted(wanted)))}" if wanted else ""
        yield (
            f"useradd --system --user-group --comment {quote(USER_COMMENT)} --home-dir {quote(home)} --no-create-home "
            f"--shell {quote(shell)}{extra} {quote(user)}"
        )
        return
    if (current["home"], current["shell"]) != (home, shell):
        yield f"usermod --home {quote(home)} --shell {quote(shell)} {quote(user)}"
    missing = wanted - current["groups"]
    if missing:
        yield f"usermod --append --groups {quote(','.join(sorted(missing)))} {quote(user)}"
    if (current["home"], current["shell"]) == (home, shell) and not missing:
        host.noop(f"user {user} is in place")
