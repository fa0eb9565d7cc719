"""The test bed as a whole: bring hosts up, report on them, inject faults.

Which hosts are up is kept by ``registry.py`` and teardown is in
``teardown.py``; this module uses both.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lemfleet.testbed import hosts, proxy, rootfs
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import (
    SSH_CONFIG,
    SSH_KEY,
    STATE_DIR,
    log,
    require_root,
    run,
    wait_for,
)
from lemfleet.testbed.registry import find, load, save
from lemfleet.testbed.teardown import down

BOOT_TIMEOUT = 120


@dataclass
class HostStatus:
    name: str
    address: str
    suite: str
    process: str  # running / frozen / dead
    link: str  # up / down
    system: str  # output of `systemctl is-system-running`, or why it could not be read


def ensure_key() -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    if not SSH_KEY.exists():
        run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "lemfleet-testbed",
                "-f",
                str(SSH_KEY),
            ]
        )


def ssh(rec: HostRecord | str, command: str, *, check: bool = True, timeout: float = 60) -> str:
    """Run ``command`` on a host over SSH as root and return its stdout."""
    name = rec if isinstance(rec, str) else rec.name
    proc = run(["ssh", "-F", str(SSH_CONFIG), name, command], check=check, timeout=timeout)
    return proc.stdout


def _ssh_ready(rec: HostRecord) -> bool:
    try:
        with socket.create_connection((rec.address, 22), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH")
    except OSError:
        return False


def _system_state(rec: HostRecord, wait: bool) -> str:
    cmd = "systemctl is-system-running" + (" --wait" if wait else "")
    try:
        proc = run(["ssh", "-F", str(SSH_CONFIG), rec.name, cmd], check=False, timeout=BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "timeout"
    out = proc.stdout.strip()
    if out:
        return out
    err = proc.stderr.strip().splitlines()
    return err[-1] if err else "unknown"


def _wait_booted(rec: HostRecord) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    state = "unknown"
    while time.monotonic() < deadline:
        state = _system_state(rec, wait=True)
        if state in ("running", "degraded", "maintenance", "stopping"):
            break
        time.sleep(0.5)
    return state


def up(count: int, suite: str = rootfs.DEFAULT_SUITE) -> list[HostRecord]:
    """Tear down whatever is there, then boot ``count`` fresh hosts of ``suite``."""
    require_root()
    down(quiet=True)
    return add(count, suite)


def add(
    count: int = 1, suite: str = rootfs.DEFAULT_SUITE, binds: list[str] | None = None, firewall: bool = False
) -> list[HostRecord]:
    """Boot ``count`` more hosts beside those already up; return the new ones.

    ``firewall`` boots them where systemd can enforce a unit's IP allow list (hosts.FIREWALL_NSPAWN_ARGS).
    """
    require_root()
    ensure_key()
    proxy.start()
    lower = rootfs.ensure(suite)
    records = load()
    taken = {r.number for r in records}
    new: list[HostRecord] = []
    number = 1
    while len(new) < count:
        if number not in taken:
            new.append(hosts.record_for(number, suite, binds, firewall))
        number += 1
    started = time.monotonic()
    for rec in new:
        hosts.mount_overlay(rec, lower)
        hosts.write_identity(rec)
        hosts.create_network(rec)
        hosts.boot(rec)
        records.append(rec)
        save(records)
    for rec in new:
        wait_for(
            lambda r=rec: _ssh_ready(r) or not hosts.alive(r.pid),  # type: ignore[misc]
            timeout=BOOT_TIMEOUT,
            interval=0.2,
            what=f"{rec.name} to answer on SSH",
        )
        if not hosts.alive(rec.pid):
            tail = (Path(rec.root).parent / "console.log").read_text()[-1500:]
            raise RuntimeError(f"{rec.name}: systemd-nspawn exited during boot:\n{tail}")
        # Early in boot systemctl may answer "unknown" (no bus yet) or "starting".
        state = _wait_booted(rec)
        if state not in ("running", "degraded"):
            raise RuntimeError(f"{rec.name}: systemctl is-system-running said {state!r}")
    log(
        f"{len(new)} host(s) up in {time.monotonic() - started:.1f}s: "
        + ", ".join(f"{r.name}={r.address}" for r in new)
    )
    return new


def status() -> list[HostStatus]:
    result = []
    for rec in load():
        if not hosts.alive(rec.pid):
            process = "dead"
        elif _frozen(rec):
            process = "frozen"
        else:
            process = "running"
        link = "up" if "state UP" in run(["ip", "link", "show", rec.veth], check=False).stdout else "down"
        system = _system_state(rec, wait=False) if process == "running" and link == "up" else "-"
        result.append(HostStatus(rec.name, rec.address, rec.suite, process, link, system))
    return result


def _frozen(rec: HostRecord) -> bool:
    pids = hosts.container_pids(rec)
    if not pids:
        return False
    try:
        return Path(f"/proc/{pids[0]}/stat").read_text().split(") ")[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


# -- faults ----------------------------------------------------------------------


def freeze(name: str) -> None:
    hosts.signal_host(find(name), signal.SIGSTOP)


def thaw(name: str) -> None:
    hosts.signal_host(find(name), signal.SIGCONT)


def kill(name: str) -> None:
    rec = find(name)
    hosts.signal_host(rec, signal.SIGKILL)
    if hosts.alive(rec.pid):
        os.kill(rec.pid, signal.SIGKILL)


def cut_link(name: str) -> None:
    hosts.set_link(find(name), up=False)


def restore_link(name: str) -> None:
    hosts.set_link(find(name), up=True)
