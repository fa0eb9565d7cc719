"""Time the GPU plan for a 200-host fleet built from the recorded GPU fixtures.

The hosts cycle through every scenario of tests/fixtures/gpu/hosts.py on
Ubuntu 24.04, Debian 12 and Debian 13, each parsed from its recorded output
through the real GpuProbe parser. The bar (issue 5) is at most 1 s for the
plans of 200 hosts. Run from the repository root:

    .venv/bin/python bench/plan_200.py
"""

from __future__ import annotations

import itertools
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lemfleet.roles.gpu_plan import choose_gpu
from lemfleet.roles.settings import SettingsError
from tests.fixtures.gpu.hosts import (
    DEBIAN_12,
    DEBIAN_13,
    SCENARIOS,
    UBUNTU_2404,
    scenario_host,
)

HOSTS = 200
BAR_SECONDS = 1.0


def main() -> int:
    combos = itertools.cycle(itertools.product(sorted(SCENARIOS), (UBUNTU_2404, DEBIAN_12, DEBIAN_13)))
    started = time.perf_counter()
    fleet = [scenario_host(name, release) for name, release in itertools.islice(combos, HOSTS)]
    parsed = time.perf_counter() - started

    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    for facts in fleet:
        try:
            outcomes[choose_gpu(facts, {}).backend] += 1
        except SettingsError:
            outcomes["refused (GPU host would fall back to the CPU)"] += 1
    planned = time.perf_counter() - started

    print(f"hosts: {len(fleet)} ({len(SCENARIOS)} fixture scenarios x 3 OS releases, cycled)")
    print(f"facts parsed from the recorded outputs: {parsed:.3f} s")
    print(f"choose_gpu for {len(fleet)} hosts: {planned:.3f} s ({planned / len(fleet) * 1e3:.2f} ms/host)")
    for outcome, count in sorted(outcomes.items()):
        print(f"  {outcome}: {count}")
    verdict = "within" if planned <= BAR_SECONDS else "OVER"
    print(f"bar: {BAR_SECONDS:.1f} s for {HOSTS} hosts -> {verdict}")
    return 0 if planned <= BAR_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
