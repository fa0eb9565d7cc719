"""No-op rollout vs no-op deploy of the same hosts, measured side by side (bar: <= 2x).

    python bench/rollout_noop.py [--hosts 4] [--rounds 5]

Needs a test bed of at least ``--hosts`` hosts (``python -m lemfleet.testbed up 4``). Every host is
first brought to the wanted state; then, alternating, one round times ``pyinfra inventories/testbed.py
deploy.py`` over the hosts (nothing to do) and one times ``lemfleet rollout`` over the same hosts
(its pre-pass finds nothing to do, so no batch runs; the inventory read, the host locks and the
deploy-record reads overlap the pre-pass, and the locks' release and the record follow it). Both
are run as a user runs them, as commands.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from common import PROJECT, median, pyinfra, testbed_names, timed_command

sys.path.insert(0, str(PROJECT))

from lemfleet.demo import demo_model


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
    limit = ",".join(names)
    _, rc, out = pyinfra("inventories/testbed.py", "deploy.py", "-y", "--limit", limit, *data_args)
    assert rc == 0, out[-3000:]
    deploys, rollouts = [], []
    with tempfile.TemporaryDirectory() as records:
        for _ in range(args.rounds):
            seconds, rc, out = pyinfra("inventories/testbed.py", "deploy.py", "-y", "--limit", limit, *data_args)
            assert rc == 0, out[-3000:]
            deploys.append(seconds)
            limits = [a for name in names for a in ("--limit", name)]
            command = [sys.executable, "-m", "lemfleet", "rollout", "inventories/testbed.py", *limits, *data_args]
            rollouts.append(timed_command([*command, "--records", records, "--quiet"]))
    ratio = median(rollouts) / median(deploys)
    print(f"no-op deploy of {len(names)} hosts: median {median(deploys):.2f} s  {[round(s, 2) for s in deploys]}")
    print(f"no-op rollout of {len(names)} hosts: median {median(rollouts):.2f} s  {[round(s, 2) for s in rollouts]}")
    print(f"ratio: {ratio:.2f}x (bar: <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
