"""Taking the test bed down: one host, or everything, including a crashed run's leftovers.

Teardown does not trust the state file alone: it also sweeps every
namespace, link, mount and process carrying the test bed's prefix.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from lemfleet.testbed import hosts, proxy
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import (
    HOSTS_DIR,
    KNOWN_HOSTS,
    PREFIX,
    SSH_CONFIG,
    STATE_FILE,
    log,
    require_root,
    run,
    wait_for,
)
from lemfleet.testbed.registry import find, load, save


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
