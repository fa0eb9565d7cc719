"""Ansible inventories (INI and YAML) read by ansible-core and handed to pyinfra.

The pyinfra side runs in a child process (``pyinfra ... debug-inventory --json``), because
pyinfra's CLI patches the whole process for gevent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lemfleet.ansible_inventory import ENV_VAR, inventory_path_from_env, load_ansible_inventory
from lemfleet.inventory_loader import inventory_targets

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures" / "ansible"
INI = FIXTURES / "ini" / "hosts.ini"
YAML = FIXTURES / "yaml" / "hosts.yml"
PYINFRA_INVENTORY = ROOT / "inventories" / "ansible.py"


def _hosts(groups: dict[str, list[tuple[str, dict[str, Any]]]]) -> dict[str, dict[str, Any]]:
    return {name: data for members in groups.values() for name, data in members}


def test_ini_groups_become_pyinfra_groups() -> None:
    groups = load_ansible_inventory(INI)
    assert {g: [name for name, _ in members] for g, members in groups.items()} == {
        "cpu": ["bed-03"],
        "fleet": ["bed-01", "bed-02", "bed-03"],
        "gpu": ["bed-01", "bed-02"],
    }


def test_ini_vars_follow_ansible_precedence() -> None:
    hosts = _hosts(load_ansible_inventory(INI))
    # [gpu:vars] server_port=9000 changes the setting for the group ...
    assert hosts["bed-01"]["server_port"] == 9000
    # ... a host var beats it, and hosts outside the group keep the role default.
    assert hosts["bed-02"]["server_port"] == 8081
    assert "server_port" not in hosts["bed-03"]
    assert hosts["bed-01"]["ssh_user"] == "root"  # host var beats [fleet:vars]
    assert hosts["bed-02"]["ssh_user"] == "deploy"


def test_ini_connection_vars_map_to_pyinfra_ssh_data() -> None:
    hosts = _hosts(load_ansible_inventory(INI))
    assert hosts["bed-01"] == {
        "ssh_hostname": "10.77.0.11",
        "ssh_user": "root",
        "ssh_key": "/etc/lemfleet/testbed/id_ed25519",
        "_sudo": True,  # ansible_become=yes
        "server_port": 9000,
        "server_host": "0.0.0.0",
        "model_quant": "Q4_K_M",
    }
    assert hosts["bed-02"]["ssh_port"] == 2222
    assert all(not key.startswith("ansible_") for data in hosts.values() for key in data)


def test_yaml_group_vars_and_host_vars_directories_are_read() -> None:
    hosts = _hosts(load_ansible_inventory(YAML))
    assert hosts["mi300-01"]["server_port"] == 9100  # group_vars/amd.yml
    assert hosts["h100-01"]["server_port"] == 8080  # group_vars/all.yml
    assert hosts["mi300-01"]["gpu_targets"] == ["gfx942"]  # host_vars/mi300-01.yml
    assert hosts["mi300-01"]["last_reviewed"] == "2026-11-01"  # a YAML date, as plain text
    assert type(hosts["mi300-01"]["server_port"]) is int  # no ansible tagged types


def test_yaml_templates_are_rendered_and_host_vars_win() -> None:
    hosts = _hosts(load_ansible_inventory(YAML))
    assert hosts["mi300-01"]["ssh_hostname"] == "mi300-01.fleet.example.net"
    assert hosts["radeon-01"]["ssh_hostname"] == "192.168.7.20"
    assert hosts["h100-01"]["ssh_port"] == 2200


def test_values_without_vault_are_plain(caplog: pytest.LogCaptureFixture) -> None:
    # Vault-encrypted values are decrypted and kept hidden: tests/unit/test_ansible_vault.py.
    hosts = _hosts(load_ansible_inventory(YAML))
    assert hosts["h100-01"]["gpu_vendor"] == "nvidia"
    assert not caplog.text


def test_local_connection_becomes_pyinfra_local() -> None:
    groups = load_ansible_inventory(YAML)
    [(name, data)] = groups["workstation"]
    assert name == "@local"
    assert not any(key.startswith("ssh_") for key in data)


def test_unsupported_connection_is_refused_by_name(tmp_path: Path) -> None:
    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[win]\nbox ansible_connection=winrm\n")
    with pytest.raises(ValueError, match="host box: ansible_connection='winrm' is not supported"):
        load_ansible_inventory(inventory)


@pytest.mark.parametrize(
    ("content", "error"),
    [(None, "does not exist"), ("# nothing here\n", "lists no hosts")],
)
def test_unusable_inventories_are_named(tmp_path: Path, content: str | None, error: str) -> None:
    inventory = tmp_path / "hosts.ini"
    if content is not None:
        inventory.write_text(content)
    with pytest.raises(ValueError, match=f"Ansible inventory {inventory} {error}"):
        load_ansible_inventory(inventory)


def test_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(ValueError, match=f"{ENV_VAR} is not set; point it at an Ansible"):
        inventory_path_from_env()
    monkeypatch.setenv(ENV_VAR, str(INI))
    assert inventory_path_from_env() == str(INI)


def _pyinfra_view(inventory: Path, cwd: Path) -> dict[str, dict[str, Any]]:
    # cwd is empty so that only the inventory module is under test (no config.py, group_data); HOME too, where
    # ansible-core makes its ~/.ansible/tmp (the user's own may not exist or be writable).
    done = subprocess.run(
        [sys.executable, "-m", "pyinfra", str(PYINFRA_INVENTORY), "debug-inventory", "--json"],
        env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), ENV_VAR: str(inventory)},
        capture_output=True,
        text=True,
        cwd=cwd,
        check=True,
    )
    return {host["name"]: host for host in json.loads(done.stdout)}


@pytest.mark.parametrize("inventory", [INI, YAML], ids=["ini", "yaml"])
def test_pyinfra_loads_the_inventory_module(inventory: Path, tmp_path: Path) -> None:
    hosts = _pyinfra_view(inventory, tmp_path)
    expected = _hosts(load_ansible_inventory(inventory))
    assert set(hosts) == set(expected)
    for name, host in hosts.items():
        assert {k: v for k, v in host["data"].items() if k in expected[name]} == expected[name]
        assert "ansible" in host["groups"]  # pyinfra's group named after the inventory file
    first = "bed-01" if inventory == INI else "mi300-01"
    assert {"gpu" if inventory == INI else "amd"} <= set(hosts[first]["groups"])


def test_smoke_targets_take_the_server_port_from_group_vars(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_VAR, str(INI))
    targets = {t.name: t for t in inventory_targets(str(PYINFRA_INVENTORY))}
    assert (targets["bed-01"].server_host, targets["bed-01"].server_port) == ("0.0.0.0", 9000)
    assert targets["bed-02"].server_port == 8081
    assert targets["bed-03"].server_port == 8080  # lemfleet's default
    bed_02 = targets["bed-02"].ssh
    assert bed_02 is not None and (bed_02.hostname, bed_02.port) == ("10.77.0.12", 2222)
