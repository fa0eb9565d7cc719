"""Issue bar: `up` of 4 hosts with a warm cache <= 60 s; a first run (debootstrap included) <= 10 min.

    python bench/testbed_up.py [--cold]

The warm figure boots 4 hosts from the cached root filesystem. With --cold the
run first uses an empty cache directory, so the root filesystem is
debootstrapped and every package comes from Debian's archive through a cold
proxy, as on a fresh machine. Tears the test bed down before and after.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from common import PROJECT


def timed_up(count: int, env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "lemfleet.testbed", "up", str(count)],
        cwd=PROJECT,
        env=env,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - started


def down(env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "lemfleet.testbed", "down"], cwd=PROJECT, env=env, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cold", action="store_true")
    parser.add_argument("--hosts", type=int, default=4)
    args = parser.parse_args()
    env = dict(os.environ)
    down(env)
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="lftb-cold-") as cache:
            cold_env = {**env, "LEMFLEET_TESTBED_CACHE": cache}
            seconds = timed_up(args.hosts, cold_env)
            down(cold_env)
        print(f"cold up {args.hosts} (debootstrap + cold proxy): {seconds:.1f} s (bar: 600 s)")
    seconds = timed_up(args.hosts, env)
    print(f"warm up {args.hosts}: {seconds:.1f} s (bar: 60 s)")
    down(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
