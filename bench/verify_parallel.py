"""Issue bar: verifying 4 hosts takes at most 1.5x verifying 1 host, because it runs in parallel.

    python bench/verify_parallel.py [--rounds 3]

Deploys the demo model to 4 test-bed hosts (booting any that are missing; the
build comes from the controller's build cache after the first), then times
the shipped suite (`pytest tests/verify`) on 1 host and on 4 hosts, alternating,
and prints the medians. The suite observes all its hosts at once (see
tests/verify/plugin.py), so no extra workers are needed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from common import PROJECT, deploy_args, median, pyinfra

sys.path.insert(0, str(PROJECT))

from lemfleet import testbed
from lemfleet.demo import demo_model
from lemfleet.testbed.paths import SSH_CONFIG


def timed_suite(names: list[str]) -> float:
    cmd = [sys.executable, "-m", "pytest", "tests/verify", "-q", "-p", "no:cacheprovider",
           f"--hosts={','.join(f'ssh://{n}' for n in names)}", f"--ssh-config={SSH_CONFIG}"]  # fmt: skip
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    hosts = testbed.load()
    if len(hosts) < 4:
        hosts += testbed.add(4 - len(hosts))
    names = [h.name for h in hosts[:4]]
    model = demo_model()
    for name in names:
        _, rc, out = pyinfra(*deploy_args(name, "model_source=local", f"model_path={model}"))
        assert rc == 0, out[-2000:]
    one, four = [], []
    for _ in range(args.rounds):
        one.append(timed_suite(names[:1]))
        four.append(timed_suite(names))
    print(f"verify 1 host: median {median(one):.1f} s  {[round(s, 1) for s in one]}")
    print(f"verify 4 hosts: median {median(four):.1f} s  {[round(s, 1) for s in four]}")
    print(f"ratio: {median(four) / median(one):.2f}x (bar: <= 1.5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
