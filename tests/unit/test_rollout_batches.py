"""How a rollout splits a fleet into batches and when it stops; the record it leaves (no host needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lemfleet.api.batches import BatchError, allowed_failures, order_hosts, parse_max_fail, split
from lemfleet.api.locks import LockHeld, Owner, controller_lock_path, release_controller_lock, take_controller_lock
from lemfleet.api.rollout_record import Batch, HostOutcome, RolloutRecord, state_of

HOSTS = [f"h{i:02d}" for i in range(20)]


def test_the_default_batches_start_with_one_host_then_grow() -> None:
    assert [len(b) for b in split(HOSTS)] == [1, 1, 8, 10]
    assert [len(b) for b in split(HOSTS[:4])] == [1, 1, 2]  # 10% of 4 rounds up to the one already done
    assert split(["solo"]) == [["solo"]]
    assert [len(b) for b in split(HOSTS, "2,5")] == [2, 3, 15]  # a list short of the fleet ends with the rest


@pytest.mark.parametrize("spec", ["", "0", "1,,2", "a", "150%", "-1", "1;2"])
def test_bad_batches_name_what_is_accepted(spec: str) -> None:
    with pytest.raises(BatchError, match="accepted: a comma-separated list"):
        split(HOSTS, spec)


def test_batches_must_reach_further_each_time() -> None:
    with pytest.raises(BatchError, match="goes back from 10 to 5 hosts"):
        split(HOSTS, "50%,5")


@given(
    st.lists(st.text(min_size=1, max_size=5), min_size=1, max_size=60, unique=True),
    st.lists(st.tuples(st.integers(1, 100), st.booleans()), min_size=1, max_size=6),
)
def test_every_host_is_in_exactly_one_batch_in_order(hosts: list[str], stages: list[tuple[int, bool]]) -> None:
    spec = ",".join(f"{n}{'%' if pct else ''}" for n, pct in stages)
    try:
        batches = split(hosts, spec)
    except BatchError:
        return  # a spec that goes back is refused, never half-applied
    assert [h for b in batches for h in b] == hosts
    assert all(batches)


def test_canaries_go_first_in_inventory_order() -> None:
    assert order_hosts(["a", "b", "c", "d"], ["d", "b"]) == ["b", "d", "a", "c"]
    assert split(order_hosts(HOSTS, ["h07"]))[0] == ["h07"]


def test_max_fail_counts_hosts_or_a_share_of_the_batch() -> None:
    assert allowed_failures(0, 10) == 0
    assert allowed_failures("2", 10) == 2
    assert allowed_failures("25%", 10) == 2 and allowed_failures("25%", 3) == 0
    for bad in ("x", "-1", "101%", "1.5"):
        with pytest.raises(BatchError, match="--max-fail"):
            parse_max_fail(bad)


def test_the_fleet_lock_refuses_a_second_rollout_and_shows_a_stale_owner(tmp_path: Path) -> None:
    path = controller_lock_path(tmp_path, "/fleet.py")
    first = Owner.me("r1")
    take_controller_lock(path, first)
    with pytest.raises(LockHeld, match=r"held by rollout r1 by .* --break-lock"):
        take_controller_lock(path, Owner.me("r2"))
    dead = Owner("r1", first.controller, first.user, 2**22 + 12345, first.started)  # no such pid
    path.write_text(json.dumps(dead.__dict__))
    with pytest.raises(LockHeld, match="a stale lock"):
        take_controller_lock(path, Owner.me("r2"))
    take_controller_lock(path, Owner.me("r1"))  # the same rollout, resumed after its controller died
    release_controller_lock(path, Owner.me("r1"))
    assert not path.exists()
    take_controller_lock(path, first)
    take_controller_lock(path, Owner.me("r3"), break_lock=True)
    assert json.loads(path.read_text())["rollout"] == "r3"


def test_the_record_round_trips_and_summarises(tmp_path: Path) -> None:
    deployed = {"build": {"id": "b" * 16}, "model": {"sha256": "a" * 64}, "service": {"port": 8080}, "server": {}}
    record = RolloutRecord(
        id="r1", inventory="fleet.py", limit=[], batches_spec="1,100%", max_fail="0", data_keys=["model_path"],
        started=1.0, status="stopped", reason="batch 2: 1 host(s) failed, 0 allowed",
        batches=[
            Batch(1, ["a"], "passed", results=[HostOutcome("a", "updated", None, state_of(deployed), serving_gap_s=1)]),
            Batch(2, ["b"], "failed", 1, results=[HostOutcome("b", "rolled back", errors=["rolled back: x"])]),
        ],
    )  # fmt: skip
    path = record.write(tmp_path)
    again = RolloutRecord.read(tmp_path, "r1")
    assert again == record
    assert json.loads(path.read_text())["batches"][0]["results"][0]["after"]["build_id"] == "b" * 16
    summary = (tmp_path / "r1.md").read_text()
    assert "Stopped: batch 2" in summary and "| a | updated | - | bbbbbbbb / aaaaaaaa / " in summary
    with pytest.raises(ValueError, match="--resume 'nope': no record"):
        RolloutRecord.read(tmp_path, "nope")
