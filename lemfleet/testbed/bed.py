"""The test bed as a whole: bring hosts up, report on them, inject faults, tear down.

State lives in ``STATE_FILE`` so that the CLI, pytest fixtures and
``inventories/testbed.py`` all see the same hosts. Teardown does not trust
that file alone: it also sweeps every namespace, link, mount and process
carrying the test bed's prefix, which is how a crashed run's leftovers go.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lemfleet.testbed import hosts, proxy, rootfs
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import (
    HOSTS_DIR,
    KNOWN_HOSTS,
    PREFIX,
    PROXY_URL,
    SSH_CONFIG,
    SSH_KEY,
    STATE_DIR,
    STATE_FILE,
    log,
    require_root,
    run,
    wait_for,
)

BOOT_TIMEOUT = 120


@dataclass
class HostStatus:
    name: str
    address: str
    suite: str
    process: str  # running / frozen / dead
    link: str  # up / down
    system: str  # output of `systemctl is-system-running`, or why it could not be read


def load() -> list[HostRecord]:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return []
    return [HostRecord(**h) for h in data.get("hosts", [])]


def save(records: list[HostRecord]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"proxy": PROXY_URL, "hosts": [r.to_json() for r in records]}, indent=2))
    tmp.replace(STATE_FILE)
    _write_ssh_files(records)


def _write_ssh_files(records: list[HostRecord]) -> None:
    lines = []
    config = []
    for rec in records:
        key_file = Path(rec.root) / "etc/ssh/ssh_host_ed25519_key.pub"
        if key_file.exists():
            lines.append(f"{rec.address} {hosts.host_public_key(rec)}")
        config.append(
            f"Host {rec.name} {rec.address}\n  HostName {rec.address}\n  User root\n"
            f"  IdentityFile {SSH_KEY}\n  IdentitiesOnly yes\n  UserKnownHostsFile {KNOWN_HOSTS}\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n"
        )
    KNOWN_HOSTS.write_text("".join(f"{line}\n" for line in lines))
    SSH_CONFIG.write_text("\n".join(config))


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


def add(count: int = 1, suite: str = rootfs.DEFAULT_SUITE, binds: list[str] | None = None) -> list[HostRecord]:
    """Boot ``count`` more hosts beside those already up; return the new ones."""
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
            new.append(hosts.record_for(number, suite, binds))
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


def find(name: str) -> HostRecord:
    for rec in load():
        if rec.name == name:
            return rec
    raise KeyError(f"no test-bed host named {name!r}; up: {', '.join(r.name for r in load()) or 'none'}")


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


# -- teardown --------------------------------------------------------------------


def down(quiet: bool = False) -> None:
    """Remove every host, the proxy's address and process, and all leftovers."""
    require_root()
    records = load()
    for rec in records:
        _stop(rec)
    _sweep()
    proxy.stop()
    proxy.remove_address()
    STATE_FILE.unlink(missing_ok=True)
    KNOWN_HOSTS.unlink(missing_ok=True)
    SSH_CONFIG.unlink(missing_ok=True)
    if not quiet:
        log("test bed is down")


def remove(name: str) -> None:
    """Power one host off and remove its namespace, link, mount and files."""
    rec = find(name)
    _stop(rec)
    run(["umount", rec.root], check=False)
    run(["ip", "netns", "delete", rec.netns], check=False)
    run(["ip", "link", "delete", rec.veth], check=False)
    shutil.rmtree(Path(rec.root).parent, ignore_errors=True)
    save([r for r in load() if r.name != name])


def _stop(rec: HostRecord) -> None:
    if hosts.alive(rec.pid):
        hosts.signal_host(rec, signal.SIGCONT)
        # SIGTERM asks nspawn to shut the container down cleanly.
        os.kill(rec.pid, signal.SIGTERM)
        try:
            wait_for(
                lambda: not hosts.alive(rec.pid),
                timeout=20,
                interval=0.2,
                what=f"{rec.name} to power off",
            )
        except TimeoutError:
            hosts.signal_host(rec, signal.SIGKILL)
            os.kill(rec.pid, signal.SIGKILL)


def _sweep() -> None:
    # nspawn processes left by a crashed run: found by the directory they boot.
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline
            and cmdline[0].endswith(b"systemd-nspawn")
            and any(arg.startswith(f"--directory={HOSTS_DIR}".encode()) for arg in cmdline)
        ):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc_dir.name), signal.SIGKILL)
    time.sleep(0.2)
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(str(HOSTS_DIR))), reverse=True):
        run(["umount", "-l", mount], check=False)
    for netns in run(["ip", "netns", "list"], check=False).stdout.split("\n"):
        name = netns.split(" ")[0]
        if name.startswith(f"{PREFIX}-"):
            run(["ip", "netns", "delete", name], check=False)
    for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(f"{PREFIX}-"):
            run(["ip", "link", "delete", name], check=False)
    shutil.rmtree(HOSTS_DIR, ignore_errors=True)


def leftovers() -> list[str]:
    """Everything of the test bed still on the controller; empty after a clean teardown."""
    found = []
    for proc_dir in Path("/proc").iterdir():
        if proc_dir.name.isdigit():
            try:
                cmdline = (proc_dir / "cmdline").read_bytes()
            except OSError:
                continue
            if b"systemd-nspawn" in cmdline and str(HOSTS_DIR).encode() in cmdline:
                found.append(f"process {proc_dir.name}")
    found += [
        f"mount {line.split()[1]}"
        for line in Path("/proc/mounts").read_text().splitlines()
        if line.split()[1].startswith(str(HOSTS_DIR))
    ]
    found += [
        f"netns {n.split()[0]}"
        for n in run(["ip", "netns", "list"], check=False).stdout.splitlines()
        if n.startswith(f"{PREFIX}-")
    ]
    found += [
        f"link {line.split(':')[1].strip()}"
        for line in run(["ip", "-o", "link", "show"], check=False).stdout.splitlines()
        if line.split(":")[1].strip().startswith(f"{PREFIX}-")
    ]
    if HOSTS_DIR.exists() and any(HOSTS_DIR.iterdir()):
        found.append(f"directory {HOSTS_DIR}")
    if proxy.running():
        found.append("apt-cacher-ng process")
    return found
