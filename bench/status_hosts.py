"""``lemfleet status`` for 4 hosts against 1 host, measured side by side (bar: <= 1.5x).

    python bench/status_hosts.py [--hosts 4] [--rounds 7]

Needs a test bed of at least ``--hosts`` deployed hosts (``python -m lemfleet.testbed up 4`` and a
deploy). Rounds alternate between the one-host and the many-host command, as a user runs them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import PROJECT, median

sys.path.insert(0, str(PROJECT))

from lemfleet import testbed


def timed(names: list[str]) -> float:
    limits = [a for name in names for a in ("--limit", name)]
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "lemfleet", "status", "inventories/testbed.py", *limits],
        cwd=PROJECT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    names = [rec.name for rec in testbed.load()][: args.hosts]
    if len(names) < args.hosts:
        print(f"the test bed has {len(names)} hosts; run: python -m lemfleet.testbed up {args.hosts}", file=sys.stderr)
        return 2
    one, many = [], []
    for _ in range(args.rounds):
        one.append(timed(names[:1]))
        many.append(timed(names))
    print(f"status of 1 host: median {median(one):.2f} s  {[round(s, 2) for s in one]}")
    print(f"status of {len(names)} hosts: median {median(many):.2f} s  {[round(s, 2) for s in many]}")
    print(f"ratio: {median(many) / median(one):.2f}x (bar: <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
