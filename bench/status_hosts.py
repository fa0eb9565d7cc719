"""``lemfleet status`` for 4 hosts against 1 host, measured side by side (bar: <= 1.5x).

    python bench/status_hosts.py [--hosts 4] [--rounds 7]

Needs a test bed of at least ``--hosts`` deployed hosts (``python -m lemfleet.testbed up 4`` and a
deploy). Rounds alternate between the one-host and the many-host command, as a user runs them.
"""

from __future__ import annotations

import argparse
import sys

from common import PROJECT, median, testbed_names, timed_command

sys.path.insert(0, str(PROJECT))


def timed(names: list[str]) -> float:
    limits = [a for name in names for a in ("--limit", name)]
    return timed_command([sys.executable, "-m", "lemfleet", "status", "inventories/testbed.py", *limits])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    names = testbed_names(args.hosts)
    if names is None:
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
