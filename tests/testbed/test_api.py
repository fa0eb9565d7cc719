"""The Python API against real test-bed hosts: objects and live events, never text to parse."""

from __future__ import annotations

import json

import pytest

from lemfleet import api, testbed
from tests.testbed.conftest import PROJECT

INVENTORY = PROJECT / "inventories" / "testbed.py"


@pytest.fixture(scope="module")
def fleet(fleet, tiny_model):  # the session's deployed tb1 and tb2 (tests/testbed/conftest.py)
    names = [rec.name for rec in fleet]
    return names, api.Fleet.from_inventory(INVENTORY, data={"model_source": "local", "model_path": str(tiny_model)})


def test_plan_gives_each_host_its_plan(fleet):
    names, testbed_fleet = fleet
    planned = api.plan(testbed_fleet, limit=names)
    assert [h.host for h in planned.hosts] == names and planned.ok
    assert {h.backend for h in planned.hosts} == {"cpu"}
    assert all("backend" in h.reasons for h in planned.hosts)
    html = planned._repr_html_()
    assert all(f"<td>{name}</td>" in html for name in names) and "<details>" in html
    assert json.loads(json.dumps(planned.to_json()))["ok"] is True


def test_a_bad_setting_raises_before_any_host_is_contacted(fleet):
    names, testbed_fleet = fleet
    rec = testbed.load()[0]
    count = "journalctl -q -u ssh.service --no-pager | grep -c 'Accepted publickey'"
    before = int(testbed.ssh(rec, count))
    events: list[api.Event] = []
    with pytest.raises(api.FleetSetupError, match="server_port=70000 is not valid"):
        api.deploy(testbed_fleet, limit=names, data={"server_port": 70000}, on_event=events.append)
    assert events == []
    assert int(testbed.ssh(rec, count)) == before + 1  # only the ssh call above


def test_a_no_op_deploy_reports_zero_changes_with_live_events(fleet):
    names, testbed_fleet = fleet
    events: list[api.Event] = []
    result = api.deploy(testbed_fleet, limit=names, on_event=events.append)
    assert result.ok, result.log[-3000:]
    assert result.changes == 0, [(h.host, h.changed) for h in result.hosts]
    assert [h.outcome for h in result.hosts] == ["unchanged"] * len(names)
    kinds = [e.kind for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "result"
    for name in names:
        done = [e for e in events if e.kind == "operation_done" and e.host == name]
        assert done and not any(e.changed for e in done)
        assert {e.host for e in events if e.kind == "host_connected"} == set(names)
    # Events arrive while the run goes on, not all at the end.
    assert events[-1].time - events[0].time > 0.5
    for host in result.hosts:
        assert host.smoke is not None and host.smoke.ok, host
        assert host.smoke.decode_tokens_per_s
    assert "unchanged" in str(result) and "<table>" in result._repr_html_()


def test_a_changed_setting_shows_as_changes_and_a_dry_run_changes_nothing(fleet):
    names, testbed_fleet = fleet
    first = names[0]
    dry = api.deploy(testbed_fleet, limit=[first], data={"server_ctx_size": 2048}, dry=True)
    assert dry.dry and dry[first].changed, dry.log[-2000:]
    assert any(name.endswith("| Service environment") for name in dry[first].changed), dry[first].changed
    still = api.deploy(testbed_fleet, limit=[first])
    assert still.changes == 0, still[first].changed  # the dry run changed nothing
    changed = api.deploy(testbed_fleet, limit=[first], data={"server_ctx_size": 2048})
    assert changed.ok and any(n.endswith("| Service environment") for n in changed[first].changed), changed.log[-3000:]
    back = api.deploy(testbed_fleet, limit=[first])
    assert back.ok and any(n.endswith("| Service environment") for n in back[first].changed)


def test_smoke_and_verify_return_typed_results(fleet):
    names, testbed_fleet = fleet
    smoked = api.smoke(testbed_fleet, limit=names)
    assert smoked.ok and [r.host for r in smoked.results] == names
    assert all(r.decode_tokens_per_s for r in smoked.results)
    verified = api.verify(testbed_fleet, limit=names)
    assert verified.ok, verified.failures()
    assert verified.hosts == names
    checks = {c.check for c in verified.checks}
    assert "test_endpoint_chat" in checks and len(checks) >= 10
    assert "fail" not in str(verified)
