"""One compile per build id in a run: a leader compiles, the other hosts with that id wait and receive it.

pyinfra runs every host's deploy code first (in parallel greenlets, in no fixed
order), then the operations. So the hosts that need a build the controller's
cache does not hold *register* while the deploy code runs, and the leader is
chosen when the operations run: the first registered host that asks whether
it compiles (its first compile operation). No mode deadlocks:

- by default pyinfra runs each operation on every host before the next
  operation; the leader is whichever host's greenlet asks first, and its
  publish operation comes before the receive operation, so a follower finds
  the build published, or its leader failed;
- with ``--serial`` pyinfra runs one host's whole deploy after another, in no
  fixed order (its active hosts are a set): the first host run asks first, so
  it leads, and the others run after it has published;
- with ``--no-wait`` a follower waits here until the leader publishes or fails.

Every host runs the same operations in the same order (the leader's compile
and publish are no-ops on followers), so that pyinfra orders them the same on
all hosts. The threading primitives are gevent's under pyinfra (it patches
the process), so a waiting follower lets the other hosts' greenlets run.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

# How long a follower waits for its leader's compile (the slowest GPU builds take about an hour).
WAIT_LIMIT_S = 4 * 3600.0


class BuildShareError(Exception):
    """A follower cannot receive its build: the leader failed, or never published."""


@dataclass
class _Build:
    registered: dict[str, int] = field(default_factory=dict)  # host -> its place in the inventory
    leader: str | None = None
    # Looked up when a build is first asked about, after pyinfra has patched threading for gevent.
    published: threading.Event = field(default_factory=lambda: threading.Event())


class BuildShare:
    """Leader and followers per build id, for one pyinfra run (the module's :data:`SHARE`)."""

    def __init__(self) -> None:
        self._builds: dict[str, _Build] = {}
        self._guard = threading.Lock()

    def _build(self, bid: str) -> _Build:
        with self._guard:
            return self._builds.setdefault(bid, _Build())

    def register(self, bid: str, host: str, order: int) -> None:
        """``host`` (at place ``order`` in the inventory) needs build ``bid`` and the cache lacks it."""
        self._build(bid).registered[host] = order

    def registered(self, bid: str) -> list[str]:
        build = self._build(bid)
        return sorted(build.registered, key=build.registered.__getitem__)

    def leader(self, bid: str, failed: Callable[[str], bool], asking: str | None = None) -> str:
        """The host that compiles ``bid``, chosen once: ``asking`` when it is the first registered host to ask.

        Without an asking host (or when it cannot lead), the first registered host in inventory order
        that has not failed.
        """
        build = self._build(bid)
        with self._guard:
            if build.leader is None:
                if asking is not None and asking in build.registered and not failed(asking):
                    build.leader = asking
                else:
                    order = sorted(build.registered, key=build.registered.__getitem__)
                    alive = [h for h in order if not failed(h)]
                    if not alive:
                        raise BuildShareError(f"build {bid}: every host that needs it has failed; none compiles it")
                    build.leader = alive[0]
            return build.leader

    def is_leader(self, bid: str, host: str, failed: Callable[[str], bool]) -> bool:
        return self.leader(bid, failed, asking=host) == host

    def publish(self, bid: str) -> None:
        """The leader's build is in the controller's cache, with its manifest."""
        self._build(bid).published.set()

    def wait(self, bid: str, failed: Callable[[str], bool], limit_s: float = WAIT_LIMIT_S, poll_s: float = 2.0) -> str:
        """Block until ``bid`` is published; return its leader. Raise when the leader failed or time is up."""
        leader = self.leader(bid, failed)
        build = self._build(bid)
        deadline = time.monotonic() + limit_s
        while not build.published.wait(poll_s):
            if failed(leader):
                raise BuildShareError(
                    f"build {bid} was compiled for this run by {leader}, the first host that needs it, and "
                    f"{leader} failed; this host's builds were left as they were. Fix {leader} (or leave it out "
                    "with --limit) and run again"
                )
            if time.monotonic() > deadline:
                raise BuildShareError(f"build {bid}: {leader} did not publish it within {limit_s:.0f} s")
        return leader


SHARE = BuildShare()
