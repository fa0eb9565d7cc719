"""One rollout per fleet at a time: a lock on the controller, and one on each host it touches.

The controller's lock is a file created exclusively under the rollout directory (one per
inventory); the host's is ``/var/lib/lemfleet/rollout.lock``, created exclusively over SSH, so a
second controller is refused too. Each holds the owner: rollout id, controller host, user, pid and
start time. A lock whose owner is gone (its pid no longer runs on this controller) is shown as
stale; the operator breaks it with ``--break-lock``. A resumed rollout keeps its id, so it takes
its own locks back.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lemfleet.sshtunnel import InventoryTarget, run_on

HOST_LOCK = "/var/lib/lemfleet/rollout.lock"
SSH_FAILED = 255  # ssh's own exit status when it cannot connect or log in
SESSION_TIMEOUT = 30.0  # seconds one lock or read session may take


class LockHeld(RuntimeError):
    """Another rollout holds the fleet or a host; the message names the owner and how to break it."""


@dataclass(frozen=True)
class Owner:
    rollout: str
    controller: str
    user: str
    pid: int
    started: float

    @classmethod
    def me(cls, rollout: str) -> Owner:
        return cls(rollout, socket.gethostname(), getpass.getuser(), os.getpid(), round(time.time(), 3))

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"rollout {self.rollout} by {self.user}@{self.controller} (pid {self.pid}), since {when}"

    def stale(self) -> bool:
        """Known dead: started on this controller by a process that no longer runs."""
        if self.controller != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def _read_owner(text: str) -> Owner | None:
    try:
        return Owner(**json.loads(text))
    except (ValueError, TypeError):
        return None


def controller_lock_path(directory: Path, inventory: str) -> Path:
    return directory / f"lock-{hashlib.sha256(inventory.encode()).hexdigest()[:12]}.json"


def take_controller_lock(path: Path, owner: Owner, *, break_lock: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = _read_owner(path.read_text()) if path.exists() else None
            if held is not None and held.rollout == owner.rollout and held.stale():
                path.unlink(missing_ok=True)  # this rollout, resumed after its controller died
                continue
            if break_lock:
                path.unlink(missing_ok=True)
                break_lock = False
                continue
            what = held.describe() if held else "an unreadable owner"
            state = "a stale lock (its process is gone)" if held and held.stale() else "the lock"
            raise LockHeld(f"{state} of this fleet is held by {what}; {path}; break it with --break-lock") from None
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(owner), out)
        return


def release_controller_lock(path: Path, owner: Owner) -> None:
    held = _read_owner(path.read_text()) if path.exists() else None
    if held is not None and held.rollout == owner.rollout:
        path.unlink(missing_ok=True)


MARK = "--- lemfleet file "


@dataclass(frozen=True)
class HostSession:
    """One host's answer to one SSH session: the lock problem (None: taken, or not asked) and the files read."""

    problem: str | None
    files: dict[str, str | None]  # path -> its text, None when missing or unreadable (or the host unreachable)


def _read_script(paths: Sequence[str]) -> str:
    return "".join(f"; echo {shlex.quote(MARK + path)}; cat {shlex.quote(path)} 2>/dev/null" for path in paths)


def _split(text: str, paths: Sequence[str]) -> tuple[str, dict[str, str | None]]:
    """(what the script printed before the first file, each file's text) of a session's output."""
    head, files = text, dict[str, str | None].fromkeys(paths)
    for path in reversed(paths):
        marker = f"{MARK}{path}\n"
        at = head.rfind(marker)
        if at == -1:
            continue
        body = head[at + len(marker) :]
        files[path] = body if body else None
        head = head[:at]
    return head, files


def _sessions(
    targets: Sequence[InventoryTarget],
    script: str,
    paths: Sequence[str],
    answer: Callable[[InventoryTarget, str], str | None],
    timeout: float = SESSION_TIMEOUT,
) -> dict[str, HostSession]:
    """``script`` then a read of ``paths``, in one SSH session per host (in parallel).

    A host that cannot be reached, or does not answer within ``timeout``, gives no problem and no
    files: nothing can change on it either, and the run that would change it reports it.
    """

    def one(target: InventoryTarget) -> HostSession:
        try:
            done = run_on(target, f"{script}; rc=$?{_read_script(paths)}; exit $rc", timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            return HostSession(None, dict.fromkeys(paths))  # as unreachable: its batch reports the host
        if done.returncode == SSH_FAILED:
            return HostSession(None, dict.fromkeys(paths))  # unreachable: its batch reports it as failed
        head, files = _split(done.stdout, paths)
        if done.returncode != 0:
            problem = f"{target.name}: cannot take the rollout lock: {done.stderr.strip()[-300:] or done.returncode}"
            return HostSession(problem, files)
        return HostSession(answer(target, head.strip()), files)

    if not targets:
        return {}
    with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
        return dict(zip((t.name for t in targets), pool.map(one, targets), strict=True))


def read_files(targets: Sequence[InventoryTarget], paths: Sequence[str]) -> dict[str, HostSession]:
    """Read ``paths`` on every host, one SSH session each, without locking."""
    return _sessions(targets, "true", paths, lambda target, head: None)


def lock_hosts(
    targets: Sequence[InventoryTarget], owner: Owner, *, break_lock: bool = False, read: Sequence[str] = ()
) -> dict[str, HostSession]:
    """Lock every host and read ``read`` in the same SSH session (in parallel); each host's problem and files."""
    mine = shlex.quote(json.dumps(asdict(owner)))
    lock = shlex.quote(HOST_LOCK)
    script = (
        f"mkdir -p {shlex.quote(str(Path(HOST_LOCK).parent))} && "
        + (f"rm -f {lock} && " if break_lock else "")
        + f"if (set -C; printf %s {mine} > {lock}) 2>/dev/null; then echo taken; else cat {lock}; echo; fi"
    )

    def answer(target: InventoryTarget, head: str) -> str | None:
        if head == "taken":
            return None
        held = _read_owner(head)
        if held is not None and held.rollout == owner.rollout:
            return None  # ours, from before a resume
        what = held.describe() if held else "an unreadable owner"
        return f"{target.name}: {HOST_LOCK} is held by {what}; break it with --break-lock"

    return _sessions(targets, script, read, answer)


def take_host_locks(targets: Sequence[InventoryTarget], owner: Owner, *, break_lock: bool = False) -> list[str]:
    """Lock every host (in parallel); return the problems (held by another rollout, unreachable)."""
    return [s.problem for s in lock_hosts(targets, owner, break_lock=break_lock).values() if s.problem]


def release_host_locks(
    targets: Sequence[InventoryTarget], owner: Owner, *, read: Sequence[str] = ()
) -> dict[str, HostSession]:
    """Release this rollout's locks, reading ``read`` in the same SSH session (the state after it)."""
    lock = shlex.quote(HOST_LOCK)
    rollout = shlex.quote(f'"rollout": "{owner.rollout}"')
    script = f"(grep -qF {rollout} {lock} 2>/dev/null && rm -f {lock}; true)"
    return _sessions(targets, script, read, lambda target, head: None)
