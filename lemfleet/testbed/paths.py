"""Where the test bed keeps things, and the small helpers every part of it shares."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

CACHE_DIR = Path(os.environ.get("LEMFLEET_TESTBED_CACHE", "/var/cache/lemfleet-testbed"))
STATE_DIR = Path(os.environ.get("LEMFLEET_TESTBED_STATE", "/var/lib/lemfleet-testbed"))
STATE_FILE = STATE_DIR / "state.json"
HOSTS_DIR = STATE_DIR / "hosts"
SSH_KEY = STATE_DIR / "id_ed25519"
KNOWN_HOSTS = STATE_DIR / "known_hosts"
SSH_CONFIG = STATE_DIR / "ssh_config"

# Every name the test bed creates on the controller starts with this prefix,
# so that cleanup can find leftovers of a crashed run without a state file.
PREFIX = "lftb"

# The apt proxy listens on this address, held on the controller's loopback
# device and routed to from every host over its veth pair.
PROXY_ADDRESS = "10.213.255.1"
PROXY_PORT = 3142
PROXY_URL = f"http://{PROXY_ADDRESS}:{PROXY_PORT}"

DEBIAN_MIRROR = "http://deb.debian.org/debian"

T = TypeVar("T")


def log(message: str) -> None:
    print(f"[testbed] {message}", file=sys.stderr, flush=True)


def run(
    cmd: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a controller-side command; on failure, raise with its output in the message."""
    proc = subprocess.run(
        list(cmd),
        text=True,
        capture_output=capture,
        input=input_text,
        env=env,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        out = ((proc.stdout or "") + (proc.stderr or "")).strip()[-2000:]
        raise RuntimeError(f"command failed ({proc.returncode}): {shlex.join(cmd)}\n{out}")
    return proc


def retry(action: Callable[[], T], *, attempts: int, delay: float, what: str) -> T:
    """Call ``action`` until it succeeds, backing off between attempts.

    Used for fetches from the package archive, where a passing network hiccup
    must not fail a run.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as err:
            if attempt == attempts:
                raise
            log(f"{what} failed (attempt {attempt}/{attempts}): {str(err).splitlines()[0]}; retrying")
            time.sleep(delay * attempt)
    raise AssertionError("unreachable")


def wait_for(predicate: Callable[[], bool], *, timeout: float, interval: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def require_root() -> None:
    if os.geteuid() != 0:
        raise PermissionError("the test bed needs root (network namespaces, mounts, systemd-nspawn)")
