"""Prometheus targets and the scrape key, from deploy records (no host needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lemfleet.api.prometheus import RULES, PrometheusFiles, target_for
from lemfleet.api_keys import first_key, parse_key_file
from lemfleet.roles.server import api_keys
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from lemfleet.sshtunnel import InventoryTarget, SshOptions

CLIENT, SCRAPE = "client-key-0123456789", "prometheus-scrape-key-0123"
RECORD: dict[str, Any] = {
    "backend": "hip",
    "service": {"unit": "lemfleet-llama.service", "host": "0.0.0.0", "port": 8080},
    "build": {"id": "b1d", "gpu_targets": ["gfx1100"], "cuda_architectures": []},
    "model": {"sha256": "ab" * 32},
}
GPU_1 = InventoryTarget("gpu-1", SshOptions("10.0.0.7"), groups=("gpu-1", "amd", "fleet"))


def test_an_exposed_host_is_a_labelled_target() -> None:
    entry, why = target_for(GPU_1, RECORD)
    assert why is None and entry == {
        "targets": ["10.0.0.7:8080"],
        "labels": {
            "host": "gpu-1", "group": "amd", "backend": "hip", "gpu": "gfx1100",
            "instance_name": "lemfleet-llama.service", "build_id": "b1d", "model_sha256": "ab" * 32,
        },
    }  # fmt: skip


def test_a_loopback_server_and_an_undeployed_host_are_not_targets_and_say_why() -> None:
    loopback = {**RECORD, "service": {**RECORD["service"], "host": "127.0.0.1"}}
    entry, why = target_for(GPU_1, loopback)
    assert entry is None and why is not None and "listens on 127.0.0.1 only" in why and "cannot scrape it" in why
    entry, why = target_for(GPU_1, None)
    assert entry is None and why is not None and "no deployed.json" in why


def test_the_files_point_at_each_other_and_at_the_key_file(tmp_path: Path) -> None:
    entry, _ = target_for(GPU_1, RECORD)
    assert entry is not None
    paths = PrometheusFiles([entry], {}).write(tmp_path, key_file="/etc/prometheus/key")
    config = json.loads(paths[1].read_text())
    job = config["scrape_configs"][0]
    assert job["bearer_token_file"] == "/etc/prometheus/key"
    assert job["file_sd_configs"] == [{"files": [str(paths[0].resolve())]}]
    assert config["rule_files"] == [str(paths[2].resolve())]
    alerts = {rule["alert"] for rule in RULES["groups"][0]["rules"]}
    assert alerts == {"LemfleetInstanceDown", "LemfleetServerRestarted", "LemfleetRequestsDeferred",
                      "LemfleetNoTokensWhileRequestsWait"}  # fmt: skip


def test_the_scrape_key_joins_the_key_file_after_the_client_keys(tmp_path: Path) -> None:
    content = api_keys({"server_api_key": CLIENT, "server_metrics_key": SCRAPE})
    assert content is not None and parse_key_file(content) == [CLIENT, SCRAPE]
    assert first_key(content) == CLIENT  # the smoke step sends a client's key
    keys = tmp_path / "keys"
    keys.write_text(f"# clients\n{CLIENT}")  # no newline at the end
    content = api_keys({"server_api_key_file": str(keys), "server_metrics_key": SCRAPE})
    assert content is not None and parse_key_file(content) == [CLIENT, SCRAPE]


def test_the_scrape_key_is_checked_like_any_key_and_never_echoed() -> None:
    with pytest.raises(SettingsError, match="server_metrics_key holds a key of 5 characters"):
        validate({"server_host": "0.0.0.0", "server_api_key": CLIENT, "server_metrics_key": "short"})
    with pytest.raises(SettingsError, match="the same as server_api_key") as raised:
        validate({"server_host": "0.0.0.0", "server_api_key": CLIENT, "server_metrics_key": CLIENT})
    assert CLIENT not in str(raised.value)
