"""``load``: hold concurrent chat requests against each host of a fleet, with latency percentiles.

The same load run as ``lemfleet smoke --load`` (:mod:`lemfleet.smoke_load`), host by host through an
SSH forward (an inventory host's server may listen on loopback only), as a typed result that prints
as a table and renders as HTML in a notebook. Hosts are loaded one after the other, so that one
host's figures are not another's queueing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lemfleet.api.display import TableView, html_table, text_table
from lemfleet.api.fleet import Fleet, fleet_targets
from lemfleet.smoke import CheckFailed
from lemfleet.smoke_load import LoadResult, load_test
from lemfleet.sshtunnel import TunnelError, forward

POINTS = ("p50", "p90", "p99", "max")
HEADERS = ("host", "status", "requests", "correct", "503", "failed", *(f"{p} s" for p in POINTS), "seconds", "problems")


@dataclass(frozen=True)
class HostLoad:
    host: str
    result: LoadResult | None
    error: str = ""  # the host could not be reached (no forward, no health)

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok

    def cells(self) -> list[Any]:
        r = self.result
        if r is None:
            return [self.host, "failed", *(["-"] * (len(HEADERS) - 3)), self.error[:160]]
        problems = "; ".join(f"{n}x {text}" for text, n in r.problems.items())
        latency = [f"{r.latency_s[p]:.2f}" if p in r.latency_s else None for p in POINTS]
        status = "pass" if r.ok else "fail"
        return [self.host, status, r.requests, r.correct, r.unavailable, r.failed, *latency, r.seconds, problems]


@dataclass(frozen=True)
class FleetLoad(TableView):
    hosts: tuple[HostLoad, ...]

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and all(h.ok for h in self.hosts)

    def __getitem__(self, name: str) -> HostLoad:
        return next(h for h in self.hosts if h.host == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "hosts": [
                {"host": h.host, "ok": h.ok, "error": h.error, "result": h.result.to_json() if h.result else None}
                for h in self.hosts
            ],
        }

    def __str__(self) -> str:
        return text_table(HEADERS, [h.cells() for h in self.hosts])

    def _repr_html_(self) -> str:
        caption = f"Load: {len(self.hosts)} host(s), latency percentiles in seconds"
        return html_table(HEADERS, [h.cells() for h in self.hosts], caption=caption)


def load(
    fleet: Fleet,
    *,
    limit: Iterable[str] | None = None,
    requests: int = 8,
    api_key: str | None = None,
    model: str | None = None,
    max_tokens: int = 8,
    timeout: float = 600.0,
    health_timeout: float = 300.0,
) -> FleetLoad:
    """``requests`` chat completions at once against each host; every one must end correct or a clean 503."""
    if requests < 1:
        raise ValueError(f"requests={requests!r} is not valid; accepted: an integer of 1 or more")
    targets = fleet_targets(fleet, limit)
    if not targets:
        raise ValueError("no host to load")
    hosts = []
    for target in targets:
        try:
            with forward(target) as url:
                result = load_test(
                    url,
                    requests=requests,
                    api_key=api_key,
                    model_alias=model,
                    max_tokens=max_tokens,
                    timeout=timeout,
                    health_timeout=health_timeout,
                )
        except (TunnelError, CheckFailed) as err:  # no forward, or /health never answered 200
            hosts.append(HostLoad(target.name, None, f"{type(err).__name__}: {err}"))
            continue
        hosts.append(HostLoad(target.name, result))
    return FleetLoad(tuple(hosts))
