"""The test bed's package proxy: a private apt-cacher-ng instance on the controller.

Hosts have no route out. apt on each host is pointed at this proxy, which
listens on ``PROXY_ADDRESS`` (an address on the controller's loopback
device, routed to over each host's veth pair) and fetches from Debian's
archive. Its cache lives under ``CACHE_DIR`` and survives teardown, so later
runs install packages without touching the network.
"""

from __future__ import annotations

import os
import signal
import subprocess

import httpx

from lemfleet.testbed.paths import (
    CACHE_DIR,
    DEBIAN_MIRROR,
    PROXY_ADDRESS,
    PROXY_PORT,
    STATE_DIR,
    log,
    run,
    wait_for,
)

CONF_DIR = STATE_DIR / "apt-cacher-ng"
PID_FILE = CONF_DIR / "apt-cacher-ng.pid"
ACNG_CACHE = CACHE_DIR / "apt-cacher-ng"

# apt-cacher-ng's stock remapping sends Debian requests to a mirror list that
# this network cannot resolve; one backend, the CDN, works everywhere.
ACNG_CONF = """\
CacheDir: {cache}
LogDir: {logs}
SupportDir: /usr/lib/apt-cacher-ng
Port: {port}
BindAddress: 127.0.0.1 {address}
PidFile: {pidfile}
Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian
Remap-secdeb: security.debian.org deb.debian.org/debian-security ; deb.debian.org/debian-security
ExThreshold: 4
# Retry upstream fetches so that a passing hiccup does not fail a run.
NetworkTimeout: 60
DlMaxRetries: 5
"""


def _address_present() -> bool:
    out = run(["ip", "-o", "addr", "show", "dev", "lo"]).stdout
    return f" {PROXY_ADDRESS}/32 " in out


def ensure_address() -> None:
    if not _address_present():
        run(["ip", "addr", "add", f"{PROXY_ADDRESS}/32", "dev", "lo"])


def remove_address() -> None:
    if _address_present():
        run(["ip", "addr", "del", f"{PROXY_ADDRESS}/32", "dev", "lo"])


def _pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def _answers() -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{PROXY_PORT}/acng-report.html", timeout=2)
    except httpx.HTTPError:
        return False
    return True


def start() -> None:
    """Start the proxy unless it already runs; idempotent."""
    ensure_address()
    if _pid() is not None and _answers():
        return
    logs = CONF_DIR / "log"
    for d in (CONF_DIR, logs, ACNG_CACHE):
        d.mkdir(parents=True, exist_ok=True)
    (CONF_DIR / "acng.conf").write_text(
        ACNG_CONF.format(cache=ACNG_CACHE, logs=logs, port=PROXY_PORT, address=PROXY_ADDRESS, pidfile=PID_FILE)
    )
    (CONF_DIR / "backends_debian").write_text(DEBIAN_MIRROR + "/\n")
    # apt-cacher-ng drops to its own user when started as root; it must own its dirs.
    for d in (ACNG_CACHE, logs, CONF_DIR):
        run(["chown", "-R", "apt-cacher-ng:apt-cacher-ng", str(d)], check=False)
    log(f"starting apt-cacher-ng on {PROXY_ADDRESS}:{PROXY_PORT} (cache {ACNG_CACHE})")
    subprocess.Popen(
        ["apt-cacher-ng", "-c", str(CONF_DIR), "ForeGround=1"],
        stdout=(logs / "stdout.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(_answers, timeout=30, interval=0.3, what="apt-cacher-ng to answer")


def stop() -> None:
    pid = _pid()
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        try:
            wait_for(lambda: _pid() is None, timeout=10, interval=0.2, what="apt-cacher-ng to stop")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
    # A proxy started by a crashed run with another pid file is found by its config path.
    run(["pkill", "-f", f"apt-cacher-ng -c {CONF_DIR}"], check=False)
    PID_FILE.unlink(missing_ok=True)


def running() -> bool:
    return _pid() is not None
