"""The pieces of the smoke client that need no server: the concurrency bound and load figures."""

from __future__ import annotations

import threading
import time

import pytest

from lemfleet.smoke import run_bounded
from lemfleet.smoke_load import LoadResult, percentiles


def test_run_bounded_never_exceeds_the_bound_and_keeps_order() -> None:
    running, peak, lock = 0, 0, threading.Lock()

    def work(item: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        return item * 10

    assert run_bounded(work, range(12), concurrency=3) == [i * 10 for i in range(12)]
    assert peak == 3


def test_run_bounded_runs_in_parallel() -> None:
    started = time.monotonic()
    run_bounded(lambda _: time.sleep(0.2), range(4), concurrency=4)
    assert time.monotonic() - started < 0.6  # sequential would take 0.8 s


def test_run_bounded_rejects_a_zero_bound() -> None:
    with pytest.raises(ValueError, match="concurrency=0 is not valid; accepted: an integer of 1"):
        run_bounded(str, [1], concurrency=0)


def test_percentiles_use_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentiles(values) == {"p50": 50.0, "p90": 90.0, "p99": 99.0, "max": 100.0}
    assert percentiles([0.5]) == {"p50": 0.5, "p90": 0.5, "p99": 0.5, "max": 0.5}
    assert percentiles([]) == {}


def test_load_passes_only_with_no_failures_and_some_answers() -> None:
    clean = LoadResult("http://h", 50, correct=40, unavailable=10, latency_s={"p50": 1.0})
    assert clean.ok and clean.to_step().status == "passed"
    assert "40 correct, 10 clean 503, 0 failed" in clean.to_step().message
    hung = LoadResult("http://h", 50, correct=49, failed=1, problems={"no answer (hang)": 1})
    assert not hung.ok
    assert hung.to_step().message.endswith("1x no answer (hang)")
    assert not LoadResult("http://h", 5, unavailable=5).ok  # all 503: the host serves nobody
