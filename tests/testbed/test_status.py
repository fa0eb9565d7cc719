"""``lemfleet status`` against three real hosts: one healthy, one stopped, one cut off."""

from __future__ import annotations

import json
import re

import pytest

from lemfleet import api, testbed
from lemfleet.cli import main
from lemfleet.testbed.hosts import HostRecord
from tests.testbed.conftest import PROJECT, deploy

UNIT = "lemfleet-llama.service"


@pytest.fixture(scope="module")
def three(bed: list[HostRecord], fleet, tiny_model) -> list[HostRecord]:
    for rec in bed[:3]:
        run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
        assert run.returncode == 0, run.output[-3000:]
    return bed[:3]


def test_each_row_says_what_the_host_is_doing(three, tmp_path, capsys):
    healthy, stopped, cut = three
    testbed.ssh(stopped, f"systemctl stop {UNIT}")
    testbed.cut_link(cut.name)
    try:
        fleet = api.Fleet.from_inventory(PROJECT / "inventories" / "testbed.py")
        names = [rec.name for rec in three]
        found = {row.host: row for row in api.status(fleet, limit=names).hosts}
        assert found[healthy.name].ok and found[healthy.name].health == 200, found[healthy.name]
        assert found[healthy.name].uptime_s is not None and found[healthy.name].build_id
        # /metrics, read on the host over SSH (the server listens on loopback only)
        assert (found[healthy.name].processing, found[healthy.name].deferred) == (0, 0), found[healthy.name]
        assert found[stopped.name].processing is None and found[stopped.name].tokens_predicted is None
        assert not found[stopped.name].ok and found[stopped.name].active == "inactive"
        assert "service is inactive" in found[stopped.name].drift
        assert not found[cut.name].reachable and found[cut.name].error
        out = tmp_path / "status.json"
        argv = ["status", str(PROJECT / "inventories" / "testbed.py"), "--json", str(out)]
        assert main([*argv, *(a for n in names for a in ("--limit", n)), "--markdown", str(tmp_path / "s.md")]) == 1
        printed = capsys.readouterr().out
        rows = {row["host"]: row for row in json.loads(out.read_text())["hosts"]}
        # Each row on its own, with what the command saw of it, so a failure says which host and why.
        assert re.search(rf"^{cut.name}\s+unreachable\s", printed, re.M), (rows.get(cut.name), printed)
        assert re.search(rf"^{stopped.name}\s+inactive\s", printed, re.M), (rows.get(stopped.name), printed)
        assert json.loads(out.read_text())["ok"] is False
        print(printed)  # the closing note quotes a sample
    finally:
        testbed.restore_link(cut.name)
        testbed.ssh(stopped, f"systemctl start {UNIT}")
