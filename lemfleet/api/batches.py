"""How a rollout splits a fleet into batches, and when a batch has failed too much (pure functions).

``--batches 1,10%,50%,100%`` names how far the rollout has got after each batch: one host, then
10% of the fleet, then half, then all of it. A number counts hosts, a percentage is of the fleet
and rounds up, and each stage must reach further than the one before. When the list stops short
of the whole fleet, a last batch takes the rest. Canary hosts (the inventory's ``canary`` group,
or host data ``rollout_canary: true``) go first, in inventory order, then every other host.

``--max-fail`` is how many hosts of one batch may fail (and be rolled back) before the rollout
stops: ``0`` (the default), a count, or a percentage of the batch, rounded down.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

DEFAULT_BATCHES = "1,10%,50%,100%"
STAGE = re.compile(r"(\d+)(%?)")


class BatchError(ValueError):
    """A --batches or --max-fail value that cannot be used; the message says what is accepted."""


def parse_stages(spec: str) -> list[tuple[int, bool]]:
    """``"1,10%,100%"`` -> ``[(1, False), (10, True), (100, True)]``."""
    stages = []
    for part in (p.strip() for p in spec.split(",")):
        match = STAGE.fullmatch(part)
        if not match or int(match.group(1)) == 0 or (match.group(2) and int(match.group(1)) > 100):
            raise BatchError(
                f"--batches {spec!r} is not valid at {part!r}; accepted: a comma-separated list of host counts "
                "and percentages of the fleet (1 to 100%), each reaching further than the one before, "
                f"e.g. {DEFAULT_BATCHES!r}"
            )
        stages.append((int(match.group(1)), bool(match.group(2))))
    return stages


def order_hosts(hosts: Sequence[str], canaries: Sequence[str]) -> list[str]:
    """Canaries first (in inventory order), then the others (in inventory order)."""
    first = [h for h in hosts if h in set(canaries)]
    return first + [h for h in hosts if h not in set(first)]


def split(hosts: Sequence[str], spec: str = DEFAULT_BATCHES) -> list[list[str]]:
    """The batches, in order; every host is in exactly one, and none is empty."""
    total = len(hosts)
    reached, batches = 0, []
    for count, percent in parse_stages(spec):
        target = min(total, math.ceil(total * count / 100) if percent else count)
        if target < reached:
            raise BatchError(
                f"--batches {spec!r} goes back from {reached} to {target} hosts; each stage must reach further"
            )
        if target > reached:
            batches.append(list(hosts[reached:target]))
            reached = target
    if reached < total:
        batches.append(list(hosts[reached:]))
    return batches


def parse_max_fail(spec: str | int) -> tuple[int, bool]:
    text = str(spec).strip()
    match = STAGE.fullmatch(text)
    if not match or (match.group(2) and int(match.group(1)) > 100):
        raise BatchError(f"--max-fail {spec!r} is not valid; accepted: 0, a number of hosts, or a percentage (0-100%)")
    return int(match.group(1)), bool(match.group(2))


def allowed_failures(spec: str | int, batch_size: int) -> int:
    """How many hosts of a batch of ``batch_size`` may fail before the rollout stops."""
    value, percent = parse_max_fail(spec)
    return math.floor(batch_size * value / 100) if percent else value
