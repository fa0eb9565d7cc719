"""First rollout to 3 identical bare hosts vs first deploy to 1 bare host, uncached (bar: <= 1.3x).

    python bench/first_rollout.py [--hosts 3] [--batches 1,10%,50%,100%]

Both runs compile llama.cpp: each gets a new, empty build cache (``llama_cpp_build_cache``), so
the controller's own cache is neither used nor changed. One bare host is booted and deployed
(``pyinfra inventories/testbed.py deploy.py``), then removed; then ``--hosts`` bare hosts are
booted and rolled out to (``lemfleet rollout``), then removed. With build once, the rollout's first
batch compiles, publishes the build with its sha256 to the controller, and the later batches
receive it, so the rollout should cost one compile plus the batches' deploys. Prints both times,
the ratio, and which host compiled. Takes 30 minutes or more (two compiles of ~13 min on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT, deploy_args, pyinfra, timed_command

sys.path.insert(0, str(PROJECT))

from lemfleet import testbed
from lemfleet.demo import demo_model


def built_on(cache: Path) -> list[str]:
    return [json.loads(p.read_text())["built_on"] for p in sorted(cache.glob("*.json"))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--batches", default="1,10%,50%,100%")
    args = parser.parse_args()
    model = ["model_source=local", f"model_path={demo_model()}"]
    with tempfile.TemporaryDirectory() as work:
        single_cache, fleet_cache, records = (Path(work) / name for name in ("single", "fleet", "records"))
        (rec,) = testbed.add(1)
        try:
            seconds, rc, out = pyinfra(*deploy_args(rec.name, *model, f"llama_cpp_build_cache={single_cache}"))
            assert rc == 0, out[-3000:]
            single = seconds
        finally:
            testbed.remove(rec.name)
        print(f"first deploy to 1 bare host: {single:.1f} s (compiled on {built_on(single_cache)})", flush=True)

        hosts = testbed.add(args.hosts)
        try:
            data = [*model, f"llama_cpp_build_cache={fleet_cache}"]
            limits = [a for h in hosts for a in ("--limit", h.name)]
            command = [sys.executable, "-m", "lemfleet", "rollout", "inventories/testbed.py", "--quiet",
                       "--batches", args.batches, "--records", str(records), *limits,
                       *[a for d in data for a in ("--data", d)]]  # fmt: skip
            started = time.monotonic()
            timed_command(command)
            rollout = time.monotonic() - started
        finally:
            for h in hosts:
                testbed.remove(h.name)
        compiled = built_on(fleet_cache)
        print(f"first rollout to {args.hosts} bare hosts: {rollout:.1f} s (compiled on {compiled}: one compile)")
        print(f"ratio: {rollout / single:.2f}x (bar: <= 1.3x)")
        return 0 if len(compiled) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
