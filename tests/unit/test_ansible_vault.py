"""Ansible Vault in Ansible inventories: decrypted with ansible-core, hidden everywhere, refused early when locked.

Every inventory here is encrypted by the real ``ansible-vault`` command from the venv. The pyinfra
side runs in a child process (``pyinfra ... debug-inventory``), as in test_ansible_inventory.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lemfleet.ansible_inventory import ENV_VAR, load_ansible_inventory
from lemfleet.ansible_vault import VaultError
from lemfleet.roles.server import api_keys
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from lemfleet.secret import HIDDEN, Secret, reveal

ROOT = Path(__file__).resolve().parents[2]
ANSIBLE_VAULT = Path(sys.executable).parent / "ansible-vault"
PYINFRA_INVENTORY = ROOT / "inventories" / "ansible.py"

PASSWORD = "correct horse battery staple"
HOST_KEY = "sk-host-vars-0123456789abcdef"  # a !vault value in host_vars/bed-01.yml
FILE_KEY = "sk-vault-file-0123456789abcdef"  # in the encrypted group_vars/fleet/vault.yml
PROXY_PASSWORD = "hunter2-proxy-pass"
PLAINTEXTS = (HOST_KEY, FILE_KEY, PROXY_PASSWORD)


def _vault(*args: str, cwd: Path) -> str:
    # ansible's CLI exits when stdin is non-blocking (as a CI runner's can be): give it a fresh one.
    done = subprocess.run([str(ANSIBLE_VAULT), *args], cwd=cwd, capture_output=True, text=True, check=True,
                          stdin=subprocess.DEVNULL)  # fmt: skip
    return done.stdout


def make_inventory(root: Path, password_file: Path, vault_id: str | None = None) -> Path:
    """hosts.ini with a ``!vault`` host var, an encrypted vars file and plain templates using it."""
    who = ["--vault-id", f"{vault_id}@{password_file}"] if vault_id else ["--vault-password-file", str(password_file)]
    (root / "host_vars").mkdir(parents=True)
    (root / "group_vars" / "fleet").mkdir(parents=True)
    (root / "hosts.ini").write_text("[fleet]\nbed-01 ansible_host=10.77.0.11\nbed-02 ansible_host=10.77.0.12\n")
    host_vars = _vault("encrypt_string", *who, HOST_KEY, "--name", "server_api_key", cwd=root)
    (root / "host_vars" / "bed-01.yml").write_text(host_vars + "server_port: 9000\n")
    secret_file = root / "group_vars" / "fleet" / "vault.yml"
    secret_file.write_text(f"vault_server_api_key: {FILE_KEY}\nvault_proxy_password: {PROXY_PASSWORD}\n")
    _vault("encrypt", *who, str(secret_file), cwd=root)
    (root / "group_vars" / "fleet" / "vars.yml").write_text(
        'server_api_key: "{{ vault_server_api_key }}"\n'
        'apt_proxy: "http://deploy:{{ vault_proxy_password | upper }}@10.77.0.1:3142"\n'
        "server_host: 0.0.0.0\n"
    )
    return root / "hosts.ini"


@pytest.fixture(scope="module")
def password_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vault") / "vault-pass"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory, password_file: Path) -> Path:
    """One encrypted inventory for the module (each ``ansible-vault`` run costs about a second); tests only read it."""
    return make_inventory(tmp_path_factory.mktemp("vault-inventory") / "inv", password_file)


@pytest.fixture(autouse=True)
def _no_ambient_vault(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST", "ANSIBLE_CONFIG"):
        monkeypatch.delenv(name, raising=False)


def _hosts(path: Path) -> dict[str, dict[str, Any]]:
    return {name: data for members in load_ansible_inventory(path).values() for name, data in members}


def _shown(data: Any) -> str:
    """Every way host data gets printed: repr, str, format and JSON through ``to_json`` as pyinfra's encoder does.

    (pyinfra_cli itself is not imported here: it patches the whole process for gevent. The
    debug-inventory test below runs pyinfra's own encoder in a child process.)
    """
    return "\n".join([repr(data), str(data), f"{data}", json.dumps(data, default=lambda value: value.to_json())])


def test_vault_values_are_decrypted_with_the_password_file_and_kept_hidden(
    inventory: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password_file))
    hosts = _hosts(inventory)
    one, two = hosts["bed-01"], hosts["bed-02"]
    # The !vault host var beats the group's template; bed-02 gets the encrypted file's key through it.
    assert isinstance(one["server_api_key"], Secret) and one["server_api_key"].reveal() == HOST_KEY
    assert isinstance(two["server_api_key"], Secret) and two["server_api_key"].reveal() == FILE_KEY
    # A template that uses a secret is a secret, even through a filter.
    assert reveal(two["apt_proxy"]) == f"http://deploy:{PROXY_PASSWORD.upper()}@10.77.0.1:3142"
    assert isinstance(two["apt_proxy"], Secret)
    # Plain values stay plain.
    assert (one["server_port"], one["server_host"], one["ssh_hostname"]) == (9000, "0.0.0.0", "10.77.0.11")
    shown = _shown(hosts)
    assert HIDDEN in shown
    assert not any(text in shown or text.upper() in shown for text in PLAINTEXTS)


def test_a_vault_id_from_the_identity_list_works(
    tmp_path: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inventory = make_inventory(tmp_path / "inv", password_file, vault_id="prod")
    monkeypatch.setenv("ANSIBLE_VAULT_IDENTITY_LIST", f"prod@{password_file}")
    assert reveal(_hosts(inventory)["bed-01"]["server_api_key"]) == HOST_KEY


def test_a_password_script_works(inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "vault-pass.sh"
    script.write_text(f"#!/bin/sh\necho '{PASSWORD}'\n")
    script.chmod(0o700)
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(script))
    assert reveal(_hosts(inventory)["bed-02"]["server_api_key"]) == FILE_KEY


@pytest.mark.parametrize(
    ("password", "error"),
    [
        (None, "no vault secrets found"),
        ("not the password", "Decryption failed"),
        ("missing", "cannot read the password from"),
    ],
    ids=["no-password", "wrong-password", "missing-file"],
)
def test_a_wrong_or_missing_password_is_a_clear_error(
    inventory: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, password: str | None, error: str
) -> None:
    if password == "missing":
        monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "no-such-file"))
    elif password is not None:
        (tmp_path / "wrong").write_text(password)
        monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(tmp_path / "wrong"))
    with pytest.raises(VaultError) as err:
        load_ansible_inventory(inventory)
    message = str(err.value)
    assert error in message
    if password == "missing":
        assert "no-such-file" in message
    else:  # the host and the file or variable that could not be decrypted, and how to give the password
        assert message.startswith("host bed-0")
        assert "vault.yml" in message or "server_api_key" in message
        assert "ANSIBLE_VAULT_PASSWORD_FILE" in message
    assert not any(text in message for text in PLAINTEXTS)


def test_a_password_prompt_is_refused(inventory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANSIBLE_VAULT_IDENTITY_LIST", "prod@prompt")
    with pytest.raises(VaultError, match="asks for a password prompt"):
        load_ansible_inventory(inventory)


def test_an_encrypted_inventory_without_a_password_says_so(tmp_path: Path, password_file: Path) -> None:
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    bed-01:\n      server_api_key: sk-whole-file-0123456789\n")
    _vault("encrypt", "--vault-password-file", str(password_file), str(inventory), cwd=tmp_path)
    with pytest.raises(VaultError, match=r"hosts\.yml is vault-encrypted and no vault password is set"):
        load_ansible_inventory(inventory)


def test_the_settings_check_keeps_a_vault_key_wrapped_and_the_key_file_gets_it(
    inventory: Path, password_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANSIBLE_VAULT_PASSWORD_FILE", str(password_file))
    data = _hosts(inventory)["bed-02"]
    clean = validate(data, "bed-02")
    assert isinstance(clean["server_api_key"], Secret) and isinstance(clean["apt_proxy"], Secret)
    assert not any(text in _shown(clean) for text in PLAINTEXTS)
    assert api_keys(data) == FILE_KEY + "\n"  # what the 0640 key file on the host holds


def test_vault_values_in_the_wrong_place_are_refused_without_showing_them() -> None:
    short = {"server_api_key": Secret("sk-short"), "server_host": "0.0.0.0"}
    with pytest.raises(SettingsError) as err:
        validate(short, "bed-01")
    assert "server_api_key holds a key of 8 characters" in str(err.value)
    assert "sk-short" not in str(err.value)
    misplaced = {"server_port": Secret("9000"), "model_alias": Secret("my-secret-alias")}
    with pytest.raises(SettingsError) as err:
        validate(misplaced, "bed-01")
    message = str(err.value)
    assert "server_port comes from Ansible Vault (value hidden) but is not a secret setting" in message
    assert "model_alias comes from Ansible Vault" in message and "my-secret-alias" not in message


def test_debug_inventory_never_shows_a_decrypted_value(inventory: Path, password_file: Path, tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), ENV_VAR: str(inventory),
           "ANSIBLE_VAULT_PASSWORD_FILE": str(password_file)}  # fmt: skip
    runs = [
        subprocess.run(
            [sys.executable, "-m", "pyinfra", str(PYINFRA_INVENTORY), "debug-inventory", *extra],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=True,
        )
        for extra in ([], ["--json"])
    ]
    outputs = [run.stdout + run.stderr for run in runs]
    hosts = {host["name"]: host["data"] for host in json.loads(runs[1].stdout)}
    assert hosts["bed-02"]["server_api_key"] == HIDDEN
    assert hosts["bed-01"]["server_port"] == 9000
    for output in outputs:
        assert HIDDEN in output
        assert not any(text in output or text.upper() in output for text in PLAINTEXTS)
