"""Hold N concurrent chat requests against one endpoint and count how each one ended.

llama-server serves ``-np`` slots and queues the rest, so under load every request must end
either with a correct answer or with a clean 503 (``unavailable_error``, the server's own way
of saying "busy"); a hang, a reset connection or a 5xx crash is a failure. The latency
percentiles show what a user waits when the fleet is busy.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from lemfleet.smoke import DEFAULT_PROMPT, Step, run_bounded, wait_for_health


@dataclass
class LoadResult:
    url: str
    requests: int
    correct: int = 0
    unavailable: int = 0
    failed: int = 0
    problems: dict[str, int] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.correct > 0

    def summary(self) -> str:
        latency = ", ".join(f"{k} {v:.2f} s" for k, v in self.latency_s.items())
        return (
            f"{self.requests} requests in {self.seconds:.1f} s: {self.correct} correct, "
            f"{self.unavailable} clean 503, {self.failed} failed; latency {latency or '-'}"
        )

    def to_step(self) -> Step:
        """The load run as one check, so JUnit and the report can show it like the others."""
        if self.ok:
            return Step("load", "passed", self.summary(), self.seconds)
        problems = "; ".join(f"{n}x {text}" for text, n in self.problems.items())
        return Step("load", "failed", f"{self.summary()}; {problems or 'no correct answer'}")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def percentiles(values: list[float]) -> dict[str, float]:
    """Nearest-rank p50, p90 and p99 plus the maximum; empty input gives an empty mapping."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in (50, 90, 99)}
    out["max"] = ordered[-1]
    return {k: round(v, 3) for k, v in out.items()}


def _one_request(
    client: httpx.Client, url: str, headers: dict[str, str], body: dict[str, Any]
) -> tuple[str, float, str]:
    """Return (outcome, seconds, problem) where outcome is correct, unavailable or failed."""
    started = time.monotonic()
    try:
        response = client.post(url, headers=headers, json=body)
    except httpx.TimeoutException:
        return "failed", time.monotonic() - started, "no answer before the timeout (hang)"
    except httpx.TransportError as err:
        return "failed", time.monotonic() - started, f"{type(err).__name__}"
    seconds = time.monotonic() - started
    if response.status_code == 503:
        try:
            kind = response.json()["error"]["type"]
        except (ValueError, KeyError, TypeError):
            return "failed", seconds, "503 without llama-server's JSON error body"
        return (
            ("unavailable", seconds, "")
            if kind == "unavailable_error"
            else (
                "failed",
                seconds,
                f"503 {kind}",
            )
        )
    if response.status_code != 200:
        return "failed", seconds, f"HTTP {response.status_code}"
    try:
        text = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return "failed", seconds, "200 without a chat completion body"
    return ("correct", seconds, "") if text else ("failed", seconds, "200 with empty text")


def load_test(
    base_url: str,
    *,
    requests: int = 50,
    api_key: str | None = None,
    model_alias: str | None = None,
    timeout: float = 600.0,
    health_timeout: float = 300.0,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 8,
) -> LoadResult:
    """Send ``requests`` chat completions at once (after /health is ok) and classify each."""
    if requests < 1:
        raise ValueError(f"requests={requests!r} is not valid; accepted: an integer of 1 or more")
    base = base_url.rstrip("/")
    result = LoadResult(url=base, requests=requests)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if model_alias:
        body["model"] = model_alias
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=requests)
    with httpx.Client(timeout=timeout, limits=limits) as client:
        wait_for_health(base, timeout=health_timeout, client=client)
        started = time.monotonic()
        outcomes = run_bounded(
            lambda _: _one_request(client, f"{base}/v1/chat/completions", headers, body),
            range(requests),
            requests,
        )
        result.seconds = round(time.monotonic() - started, 3)
    counts = Counter(outcome for outcome, _, _ in outcomes)
    result.correct, result.unavailable = counts["correct"], counts["unavailable"]
    result.failed = counts["failed"]
    result.problems = dict(Counter(problem for outcome, _, problem in outcomes if problem))
    result.latency_s = percentiles([seconds for _, seconds, _ in outcomes])
    return result
