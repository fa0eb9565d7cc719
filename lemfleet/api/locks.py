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
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
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
) -> dict[str, HostSession]:
    """``script`` then a read of ``paths``, in one SSH session per host (in parallel).

    A host that cannot be reached, or does not answer within ``SESSION_TIMEOUT``, gives no problem and no
    files: nothing can change on it either, and the run that would change it reports it.
    """

    def one(target: InventoryTarget) -> HostSession:
        try:
            done = run_on(target, f"{script}; rc=$?{_read_script(paths)}; exit $rc", timeout=SESSION_TIMEOUT)
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
    return _sessions(targets, _lock_script(owner, break_lock), read, _lock_answer(owner))


def _lock_script(owner: Owner, break_lock: bool) -> str:
    """Shell that takes the host's lock for ``owner`` (prints ``taken``) or prints who holds it."""
    mine = shlex.quote(json.dumps(asdict(owner)))
    lock = shlex.quote(HOST_LOCK)
    return (
        f"mkdir -p {shlex.quote(str(Path(HOST_LOCK).parent))} && "
        + (f"rm -f {lock} && " if break_lock else "")
        + f"if (set -C; printf %s {mine} > {lock}) 2>/dev/null; then echo taken; else cat {lock}; echo; fi"
    )


def _lock_answer(owner: Owner) -> Callable[[InventoryTarget, str], str | None]:
    """What the lock script printed, as the host's problem: None when the lock is ``owner``'s."""

    def answer(target: InventoryTarget, head: str) -> str | None:
        if head == "taken":
            return None
        held = _read_owner(head)
        if held is not None and held.rollout == owner.rollout:
            return None  # ours, from before a resume
        what = held.describe() if held else "an unreadable owner"
        return f"{target.name}: {HOST_LOCK} is held by {what}; break it with --break-lock"

    return answer


def _release_script(owner: Owner) -> str:
    """Shell that removes the host's lock when ``owner``'s rollout holds it."""
    lock = shlex.quote(HOST_LOCK)
    rollout = shlex.quote(f'"rollout": "{owner.rollout}"')
    return f"(grep -qF {rollout} {lock} 2>/dev/null && rm -f {lock}; true)"


HELD = "--- lemfleet lock held"
RELEASED = "released\n"


@dataclass
class HeldLocks:
    """The rollout's host locks, each session still open once it took its lock and read its files.

    Releasing needs no SSH login of its own: :meth:`release` writes ``release`` to each open
    session, which removes the lock (only this rollout's) and reads the files asked for. A session
    that died meanwhile (a cut link, a rebooted host) is released in a new session, as before.
    A controller that dies closes the sessions without that word: the locks stay, shown as stale.
    """

    owner: Owner
    targets: list[InventoryTarget]
    sessions: dict[str, HostSession]  # as :func:`lock_hosts` answers
    waiting: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # host -> its open session

    def release(self, *, read: Sequence[str] = ()) -> dict[str, HostSession]:
        """Release every lock this rollout took, reading ``read`` after it; each host's files."""
        assert not any("\n" in path for path in read), "one path a line"
        words = ("release\n" + "".join(f"{path}\n" for path in read)).encode()

        def one(target: InventoryTarget) -> HostSession | None:
            process = self.waiting.pop(target.name, None)
            if process is None:
                return None
            timer = threading.Timer(SESSION_TIMEOUT, process.kill)
            timer.start()
            try:
                assert process.stdin and process.stdout
                process.stdin.write(words)
                process.stdin.close()
                text = process.stdout.read().decode(errors="replace")
                if process.wait() != 0 or not text.startswith(RELEASED):
                    return None  # the session ended before it released: a session of its own does
            except OSError:
                return None
            finally:
                timer.cancel()
                _close(process)
            return HostSession(None, _split(text[len(RELEASED) :], read)[1])

        with ThreadPoolExecutor(max_workers=max(1, min(32, len(self.targets)))) as pool:
            done = dict(zip((t.name for t in self.targets), pool.map(one, self.targets), strict=True))
        again = [t for t in self.targets if done[t.name] is None]
        done.update(release_host_locks(again, self.owner, read=read) if again else {})
        return {name: session for name, session in done.items() if session is not None}


def _close(process: subprocess.Popen[bytes]) -> None:
    """End a session: its stdin closed (a waiting session then ends without releasing), killed if it lingers."""
    try:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def hold_host_locks(
    targets: Sequence[InventoryTarget],
    owner: Owner,
    *,
    break_lock: bool = False,
    read: Sequence[str] = (),
) -> HeldLocks:
    """:func:`lock_hosts`, with each session kept open until :meth:`HeldLocks.release` (in parallel)."""
    lock, rollout = shlex.quote(HOST_LOCK), shlex.quote(f'"rollout": "{owner.rollout}"')
    loop = f'while IFS= read -r p; do printf "%s\\n" {shlex.quote(MARK)}"$p"; cat -- "$p" 2>/dev/null; done'
    script = (
        f"{_lock_script(owner, break_lock)}; rc=$?{_read_script(read)}; printf '\\n%s %s\\n' {shlex.quote(HELD)} $rc; "
        f'if [ $rc -eq 0 ] && grep -qF {rollout} {lock} 2>/dev/null && read -r word && [ "$word" = release ]; '
        f"then {_release_script(owner)}; echo released; {loop}; fi; exit $rc"
    )
    held = HeldLocks(owner, list(targets), {})
    answer = _lock_answer(owner)

    def one(target: InventoryTarget) -> HostSession:
        command = ["sh", "-c", script] if target.ssh is None else target.ssh.command(remote=[script])
        try:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError:
            return HostSession(None, dict.fromkeys(read))
        assert process.stdout and process.stderr
        timer = threading.Timer(SESSION_TIMEOUT, process.kill)
        timer.start()
        lines: list[bytes] = []
        rc: int | None = None
        try:
            for line in iter(process.stdout.readline, b""):
                if line.startswith(f"{HELD} ".encode()):
                    rc = int(line.split()[-1])
                    break
                lines.append(line)
        finally:
            timer.cancel()
        if rc is None:  # ssh could not connect or log in, or no answer in time
            _close(process)
            return HostSession(None, dict.fromkeys(read))  # unreachable: its batch reports it as failed
        head, files = _split(b"".join(lines).decode(errors="replace")[:-1], read)  # [:-1]: printed before the mark
        if rc != 0:
            stderr = process.stderr.read().decode(errors="replace")  # the script ends: nothing to wait for
            _close(process)
            return HostSession(f"{target.name}: cannot take the rollout lock: {stderr.strip()[-300:] or rc}", files)
        problem = answer(target, head.strip())
        if problem is None:
            held.waiting[target.name] = process
        else:
            _close(process)  # held by another rollout: the script ends without waiting
        return HostSession(problem, files)

    if targets:
        with ThreadPoolExecutor(max_workers=min(32, len(targets))) as pool:
            held.sessions = dict(zip((t.name for t in targets), pool.map(one, targets), strict=True))
    return held


def release_host_locks(
    targets: Sequence[InventoryTarget], owner: Owner, *, read: Sequence[str] = ()
) -> dict[str, HostSession]:
    """Release this rollout's locks, reading ``read`` in the same SSH session (the state after it)."""
    return _sessions(targets, _release_script(owner), read, lambda target, head: None)
