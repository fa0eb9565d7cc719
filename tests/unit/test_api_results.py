"""The API's pieces that need no host: fleets, result types and their views (the verify suite run on this
machine, read back from its JUnit: tests/integration/test_api_verify_local.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lemfleet import api
from lemfleet.api.checks import ssh_config
from lemfleet.api.fleet import data_items
from lemfleet.api.results import HostDeploy, smoke_from_json
from lemfleet.sshtunnel import InventoryTarget, SshOptions

ROOT = Path(__file__).resolve().parents[2]


def test_data_from_a_mapping_is_written_as_pyinfra_parses_data() -> None:
    # pyinfra's --data parser tries bool, then int, then JSON, then takes the string (API notes); the
    # test-bed API tests deploy with such items. pyinfra_cli is not imported here: it patches for gevent.
    data = {"server_port": 8081, "server_enabled": False, "server_extra_args": ["--jinja"], "model_quant": "Q8_0"}
    assert data_items(data) == (
        "server_port=8081",
        "server_enabled=false",
        'server_extra_args=["--jinja"]',
        "model_quant=Q8_0",
    )


def test_bad_data_items_and_missing_inventories_are_setup_errors(tmp_path: Path) -> None:
    with pytest.raises(api.FleetSetupError, match="data item 'port' is not valid; accepted: KEY=VALUE"):
        data_items(["port"])
    with pytest.raises(api.FleetSetupError, match="is not a file"):
        api.Fleet.from_inventory(tmp_path / "nope.py")
    with pytest.raises(api.FleetSetupError, match="does not exist"):
        api.Fleet.from_ansible(tmp_path / "hosts.ini")
    inventory = tmp_path / "fleet.py"
    inventory.write_text("hosts = ['@local']\n")
    fleet = api.Fleet.from_inventory(inventory, data={"server_port": 8081}).with_data(["server_port=8082"])
    assert fleet.data == ("server_port=8081", "server_port=8082")


def test_a_bad_setting_stops_a_plan_before_any_host(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.py"
    inventory.write_text("hosts = [('unreachable', {'ssh_hostname': '192.0.2.1'})]\n")
    with pytest.raises(api.FleetSetupError, match="server_port=0 is not valid") as raised:
        api.plan(api.Fleet.from_inventory(inventory, data={"server_port": 0}))
    assert "No host was contacted" in str(raised.value)


def test_deploy_results_say_what_changed_and_escape_html() -> None:
    host = HostDeploy.from_json(
        {
            "host": "<gpu-1>",
            "ok": False,
            "operations": [
                {"name": "Unit lemfleet-llama.service", "changed": True, "success": True, "stderr": []},
                {"name": "Health gate", "changed": False, "success": False, "stderr": ["boom"]},
            ],
            "errors": ["rolled back: chat: HTTP 500"],
            "warnings": [],
            "smoke": None,
        }
    )
    assert host.changed == ["Unit lemfleet-llama.service"] and host.rolled_back and host.outcome == "rolled back"
    result = api.FleetDeploy((host,), dry=False, seconds=1.0)
    assert not result.ok and result.changes == 1
    html = result._repr_html_()
    assert "&lt;gpu-1&gt;" in html and "<gpu-1>" not in html
    assert "rolled back" in str(result)
    assert json.loads(json.dumps(result.to_json()))["hosts"][0]["outcome"] == "rolled back"


def test_smoke_results_round_trip_from_the_deploys_json() -> None:
    recorded = json.loads((ROOT / "tests/unit/fixtures/llama-server/smoke-results.json").read_text())["results"]
    results = api.FleetSmoke(tuple(smoke_from_json(r) for r in recorded))
    assert [r.to_json() for r in results.results] == recorded
    assert str(results).splitlines()[0].split()[:6] == ["HOST", "HEALTH", "AUTH", "MODELS", "CHAT", "STREAM"]


def test_ssh_config_reaches_each_host_as_the_inventory_says() -> None:
    ssh = SshOptions(
        "10.0.0.5", port=2222, user="root", key="/k/id", known_hosts_file="/k/known", strict_host_key_checking="yes"
    )
    text = ssh_config([InventoryTarget("gpu-1", ssh), InventoryTarget("@local", None)])
    assert text.splitlines() == [
        "Host gpu-1",
        "    HostName 10.0.0.5",
        "    BatchMode yes",
        "    Port 2222",
        "    User root",
        "    IdentityFile /k/id",
        "    IdentitiesOnly yes",
        "    UserKnownHostsFile /k/known",
        "    StrictHostKeyChecking yes",
    ]
