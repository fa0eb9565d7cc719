"""No-op rollout vs no-op deploy of the same hosts, measured side by side (bar: <= 2x).

    python bench/rollout_noop.py [--hosts 4] [--rounds 5]

Needs a test bed of at least ``--hosts`` hosts (``python -m lemfleet.testbed up 4``). Every host is
first brought to the wanted state; then, alternating, one round times ``pyinfra inventories/testbed.py
deploy.py`` over the hosts (nothing to do) and one times ``lemfleet rollout`` over the same hosts
(its pre-pass reads the inventory and finds nothing to do, so no batch runs; the host locks and
the deploy-record reads overlap the pre-pass, and the locks' release, in the same SSH sessions,
and the record follow it). Both are run as a user runs them, as commands.

Each deploy must reach every host (pyinfra takes one pattern per ``--limit``: ``--limit a,b``
matches no host, and pyinfra then deploys to none and exits 0, which is how an earlier version
of this bench timed a deploy of no host and saw its first rollout find work), and each rollout
must report every host unchanged.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from common import PROJECT, median, pyinfra, testbed_names, timed_command

sys.path.insert(0, str(PROJECT))

from lemfleet.demo import demo_model


def deploy(names: list[str], limits: list[str], data_args: list[str]) -> float:
    """Seconds of one ``pyinfra inventories/testbed.py deploy.py`` over ``names``; it must reach each of them."""
    seconds, rc, out = pyinfra("inventories/testbed.py", "deploy.py", "-y", *limits, *data_args)
    assert rc == 0, out[-3000:]
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    missed = [name for name in names if not re.search(rf"\[{re.escape(name)}\]\s+Connected", plain)]
    assert not missed and "No host matches" not in out, f"the deploy did not reach {missed}:\n{out[-3000:]}"
    return seconds


def newest_outcomes(records: Path) -> dict[str, str]:
    """Each host's outcome in the newest rollout record of ``records``."""
    newest = max(records.glob("*.json"), key=lambda p: p.stat().st_mtime)
    record = json.loads(newest.read_text())
    return {r["host"]: r["outcome"] for batch in record["batches"] for r in batch["results"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    names = testbed_names(args.hosts)
    if names is None:
        return 2
    data = ["model_source=local", f"model_path={demo_model()}"]
    data_args = [a for item in data for a in ("--data", item)]
    limits = [a for name in names for a in ("--limit", name)]  # one pattern per --limit, as pyinfra takes them
    deploy(names, limits, data_args)
    deploys, rollouts = [], []
    with tempfile.TemporaryDirectory() as records:
        for _ in range(args.rounds):
            deploys.append(deploy(names, limits, data_args))
            command = [sys.executable, "-m", "lemfleet", "rollout", "inventories/testbed.py", *limits, *data_args]
            rollouts.append(timed_command([*command, "--records", records, "--quiet"]))
            outcomes = newest_outcomes(Path(records))
            assert set(outcomes) == set(names) and set(outcomes.values()) == {"unchanged"}, outcomes
    ratio = median(rollouts) / median(deploys)
    print(f"no-op deploy of {len(names)} hosts: median {median(deploys):.2f} s  {[round(s, 2) for s in deploys]}")
    print(f"no-op rollout of {len(names)} hosts: median {median(rollouts):.2f} s  {[round(s, 2) for s in rollouts]}")
    print(f"ratio: {ratio:.2f}x (bar: <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
