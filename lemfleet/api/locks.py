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
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lemfleet.sshtunnel import InventoryTarget, run_on

HOST_LOCK = "/var/lib/lemfleet/rollout.lock"
SSH_FAILED = 255  # ssh's own exit status when it cannot connect or log in


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


def take_host_locks(targets: Sequence[InventoryTarget], owner: Owner, *, break_lock: bool = False) -> list[str]:
    """Lock every host (in parallel); return the problems (held by another rollout, unreachable)."""
    mine = shlex.quote(json.dumps(asdict(owner)))
    lock = shlex.quote(HOST_LOCK)
    script = (
        f"mkdir -p {shlex.quote(str(Path(HOST_LOCK).parent))} && "
        + (f"rm -f {lock} && " if break_lock else "")
        + f"if (set -C; printf %s {mine} > {lock}) 2>/dev/null; then echo taken; else cat {lock}; fi"
    )

    def take(target: InventoryTarget) -> str | None:
        done = run_on(target, script)
        if done.returncode == SSH_FAILED:
            return None  # unreachable: nothing can change it either, and its batch reports it as failed
        if done.returncode != 0:
            return f"{target.name}: cannot take the rollout lock: {done.stderr.strip()[-300:] or done.returncode}"
        answer = done.stdout.strip()
        if answer == "taken":
            return None
        held = _read_owner(answer)
        if held is not None and held.rollout == owner.rollout:
            return None  # ours, from before a resume
        what = held.describe() if held else "an unreadable owner"
        return f"{target.name}: {HOST_LOCK} is held by {what}; break it with --break-lock"

    with ThreadPoolExecutor(max_workers=min(32, max(1, len(targets)))) as pool:
        return [p for p in pool.map(take, targets) if p]


def release_host_locks(targets: Sequence[InventoryTarget], owner: Owner) -> None:
    lock = shlex.quote(HOST_LOCK)
    rollout = shlex.quote(f'"rollout": "{owner.rollout}"')
    script = f"grep -qF {rollout} {lock} 2>/dev/null && rm -f {lock}; true"
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(targets)))) as pool:
        list(pool.map(lambda target: run_on(target, script), targets))
