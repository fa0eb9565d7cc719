"""``lemfleet rollout`` on three real test-bed hosts: batches, a canary, rollback, stop, resume, locks.

The fleet is tb1, tb2 and tb3 serving the tiny model. One inventory, written per test, can give
tb2 a model that passes its sha256 check but does not load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lemfleet import api, testbed
from lemfleet.api.locks import HOST_LOCK, LockHeld
from lemfleet.testbed.hosts import HostRecord
from tests.testbed.conftest import PROJECT, deploy, pyinfra

UNIT = "lemfleet-llama.service"


def on_host(rec: HostRecord, command: str) -> str:
    return testbed.ssh(rec, command, check=False, timeout=120).strip()


def inventory(path: Path, tiny_model: Path, tb2_model: Path | None = None) -> api.Fleet:
    """tb1..tb3 as inventories/testbed.py has them, tb1 the canary, each with its model file in host data.

    The model goes in host data, not in the fleet's data: ``--data`` wins over host data, and tb2's
    own model must be able to differ.
    """
    models = {name: str(tiny_model) for name in ("tb1", "tb2", "tb3")}
    if tb2_model is not None:
        models["tb2"] = str(tb2_model)
    overrides: dict[str, dict[str, Any]] = {name: {"model_path": model} for name, model in models.items()}
    overrides["tb1"]["rollout_canary"] = True
    path.write_text(
        "from inventories.testbed import _host, _records\n"
        f"_overrides = {overrides!r}\n"
        "fleet = [(h[0], {**h[1], **_overrides.get(h[0], {})}) for h in map(_host, _records) "
        "if h[0] in ('tb1', 'tb2', 'tb3')]\n"
    )
    return api.Fleet.from_inventory(path, data={"model_source": "local"})


def broken_model(path: Path) -> Path:
    """Passes its sha256 (the controller hashes it) and the GGUF header check, but does not load."""
    path.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + os.urandom(64 * 1024))
    return path


@pytest.fixture(scope="module")
def three(bed: list[HostRecord], fleet, tiny_model: Path) -> Iterator[list[HostRecord]]:
    for rec in bed[:3]:
        run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
        assert run.returncode == 0, run.output[-3000:]
    yield bed[:3]
    for rec in bed[:3]:
        deploy(rec.name, "model_source=local", f"model_path={tiny_model}")


def test_a_rollout_with_nothing_to_do_passes_as_no_ops(three, tiny_model, tmp_path):
    fleet = inventory(tmp_path / "fleet.py", tiny_model)
    events: list[api.Event] = []
    result = api.rollout(fleet, records=tmp_path / "rollouts", on_event=events.append)
    assert result.ok and result.record.status == "completed", result
    assert [b.hosts for b in result.record.batches] == [["tb1"], ["tb2"], ["tb3"]]
    assert {r.outcome for b in result.record.batches for r in b.results} == {"unchanged"}
    assert not [e for e in events if e.kind == "batch_started"]  # no batch had work: none ran
    assert result.path is not None and json.loads(result.path.read_text())["status"] == "completed"


def test_a_rollout_right_after_a_plain_deploy_of_the_fleet_finds_every_host_unchanged(three, tiny_model, tmp_path):
    """One plain ``pyinfra ... deploy.py`` over all three hosts (one ``--limit`` each: pyinfra takes one
    pattern per ``--limit``, and ``--limit tb1,tb2,tb3`` would match no host and deploy to none), then
    ``lemfleet rollout`` with the same settings: nothing to do, no batch runs, every host unchanged."""
    names = [rec.name for rec in three]
    data = ["model_source=local", f"model_path={tiny_model}"]
    run = pyinfra("inventories/testbed.py", "deploy.py", "-y", "--json",
                  *[a for n in names for a in ("--limit", n)], *[a for d in data for a in ("--data", d)])  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    reached = {h for op in run.json["results"]["operations"] for h in op["success"] + op["no_change"]}
    assert reached == set(names), run.output[-3000:]  # the deploy reached every host
    events: list[api.Event] = []
    fleet = api.Fleet.from_inventory(PROJECT / "inventories" / "testbed.py", data=data)
    result = api.rollout(fleet, limit=names, records=tmp_path / "rollouts", on_event=events.append)
    assert result.ok, result
    assert {r.host: r.outcome for b in result.record.batches for r in b.results} == dict.fromkeys(names, "unchanged")
    assert not [e for e in events if e.kind == "batch_started"]
    assert on_host(three[0], f"test -e {HOST_LOCK} && echo held || echo free") == "free"  # released


def test_a_model_that_does_not_load_stops_the_rollout_and_resume_finishes_it(three, tiny_model, tmp_path):
    records = tmp_path / "rollouts"
    tb1, tb2, tb3 = three
    good_sha = json.loads(on_host(tb2, "cat /etc/lemfleet/deployed.json"))["model"]["sha256"]
    tb3_before = on_host(tb3, f"cat /etc/lemfleet/deployed.json; md5sum /etc/systemd/system/{UNIT}")
    bad = inventory(tmp_path / "fleet.py", tiny_model, broken_model(tmp_path / "broken-Q4_K_M.gguf"))
    change = {"server_ctx_size": 2048}

    dry = api.rollout(bad, data=change, dry=True, records=records)
    assert [b.status for b in dry.record.batches] == ["would run"] * 3
    assert (
        on_host(tb1, "grep -c 'CTX_SIZE=.\\?2048' /etc/lemfleet/lemfleet-llama.env || true") == "0"
    )  # --dry: no change

    stopped = api.rollout(bad, data=change, records=records)
    assert not stopped.ok and stopped.record.status == "stopped", stopped
    batch1, batch2, batch3 = stopped.record.batches
    assert batch1.status == "passed" and batch1.results[0].outcome == "updated"
    assert batch2.status == "failed" and batch2.results[0].outcome == "rolled back", batch2
    assert batch3.status == "not reached" and batch3.results[0].outcome == "not reached"
    assert "batch 2" in (stopped.record.reason or "")
    # tb2 serves its last good state; tb3 was never touched.
    assert json.loads(on_host(tb2, "cat /etc/lemfleet/deployed.json"))["model"]["sha256"] == good_sha
    assert batch2.results[0].after and batch2.results[0].after["model_sha256"] == good_sha
    assert on_host(tb3, f"cat /etc/lemfleet/deployed.json; md5sum /etc/systemd/system/{UNIT}") == tb3_before
    assert on_host(tb2, f"test -e {HOST_LOCK} && echo held || echo free") == "free"  # locks released
    summary = (records / f"{stopped.record.id}.md").read_text()
    assert "rolled back" in summary and "not reached" in summary

    fixed = inventory(tmp_path / "fleet.py", tiny_model)
    resumed = api.rollout(fixed, data=change, resume=stopped.record.id, records=records)
    assert resumed.ok and resumed.record.id == stopped.record.id, resumed
    outcomes = {r.host: r.outcome for b in resumed.record.batches for r in b.results}
    assert outcomes == {"tb1": "unchanged", "tb2": "updated", "tb3": "updated"}
    for rec in three:
        assert on_host(rec, "grep -c 'CTX_SIZE=.\\?2048' /etc/lemfleet/lemfleet-llama.env") == "1"


def test_a_second_controller_is_refused_by_the_host_lock(three, tiny_model, tmp_path):
    tb1 = three[0]
    owner = {"rollout": "other", "controller": "elsewhere", "user": "ops", "pid": 1, "started": 0}
    on_host(tb1, f"mkdir -p /var/lib/lemfleet && echo '{json.dumps(owner)}' > {HOST_LOCK}")
    fleet = inventory(tmp_path / "fleet.py", tiny_model)
    try:
        with pytest.raises(LockHeld, match=r"tb1: .* is held by rollout other by ops@elsewhere"):
            api.rollout(fleet, data={"server_ctx_size": 1024}, records=tmp_path / "rollouts")
        assert on_host(tb1, "grep -c 'CTX_SIZE=.\\?1024' /etc/lemfleet/lemfleet-llama.env || true") == "0"
        broken = api.rollout(fleet, data={"server_ctx_size": 1024}, records=tmp_path / "rollouts", break_lock=True)
        assert broken.ok, broken
    finally:
        on_host(tb1, f"rm -f {HOST_LOCK}")


def test_the_cli_prints_the_batches_of_a_dry_rollout(three, tiny_model, tmp_path, capsys):
    from lemfleet.cli import main

    path = tmp_path / "fleet.py"
    inventory(path, tiny_model)
    argv = ["rollout", str(path), "--dry", "--data", "model_source=local", "--data", f"model_path={tiny_model}"]
    assert main([*argv, "--data", "server_ctx_size=512", "--records", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "batch 1 (would run):\n  tb1: would update; would change: " in out
    assert main(["rollout", str(path), "--batches", "50%,10%"]) == 2
    assert "goes back from" in capsys.readouterr().err


def test_a_host_cut_off_fails_alone_and_max_fail_decides(three, tiny_model, tmp_path):
    tb3 = three[2]
    fleet = inventory(tmp_path / "fleet.py", tiny_model)
    change = {"server_ctx_size": 1536}
    testbed.cut_link(tb3.name)
    try:
        stopped = api.rollout(fleet, data=change, batches="1,100%", records=tmp_path / "r")
        assert stopped.record.status == "stopped", stopped
        batch2 = {r.host: r.outcome for r in stopped.record.batches[1].results}
        assert batch2 == {"tb2": "updated", "tb3": "failed"}  # the others in the batch finish
        tolerated = api.rollout(fleet, data=change, batches="1,100%", max_fail="1", records=tmp_path / "r")
        assert tolerated.ok and tolerated.record.status == "completed", tolerated
        outcomes = {r.host: r.outcome for b in tolerated.record.batches for r in b.results}
        assert outcomes == {"tb1": "unchanged", "tb2": "unchanged", "tb3": "failed"}
    finally:
        testbed.restore_link(tb3.name)
