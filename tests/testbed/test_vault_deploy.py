"""An Ansible inventory whose API keys are vault-encrypted deploys, and the key lands only in the key file.

The inventory is encrypted by the real ``ansible-vault`` command; the deploy is pyinfra's CLI with
inventories/ansible.py, as a team with an Ansible fleet runs it. After the deploy the decrypted key is
found in exactly one file on the host (the 0640 key file), in no pyinfra output, record or smoke
report, and a wrong password stops the run before any SSH connection.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

from lemfleet import testbed
from lemfleet.testbed.paths import KNOWN_HOSTS, PROXY_URL, SSH_KEY
from tests.testbed.conftest import PROJECT, PyinfraRun, deploy, pyinfra

ANSIBLE_VAULT = Path(sys.executable).parent / "ansible-vault"
INVENTORY = """\
[fleet]
{name} ansible_host={address}

[fleet:vars]
ansible_user=root
ansible_ssh_private_key_file={key}
ssh_known_hosts_file={known_hosts}
ssh_strict_host_key_checking=yes
apt_proxy={proxy}
model_source=local
model_path={model}
server_host=0.0.0.0
"""
# Where a decrypted key could end up on a host: everything lemfleet or pyinfra writes, logs and temp files.
SEARCHED = "/etc /var/lib /var/log /var/cache /var/tmp /opt /root /home /tmp /run"


def _vault_inventory(root: Path, rec: testbed.HostRecord, model: Path, password: Path, key: str) -> Path:
    """hosts.ini whose host's server_api_key comes from an encrypted vars file through a template."""
    (root / "group_vars" / "fleet").mkdir(parents=True)
    inventory = root / "hosts.ini"
    inventory.write_text(
        INVENTORY.format(
            name=rec.name, address=rec.address, key=SSH_KEY, known_hosts=KNOWN_HOSTS, proxy=PROXY_URL, model=model
        )
    )
    vault = root / "group_vars" / "fleet" / "vault.yml"
    vault.write_text(f"vault_server_api_key: {key}\n")
    # ansible's CLI exits when stdin is non-blocking (as a CI runner's can be): give it a fresh one.
    encrypt = [str(ANSIBLE_VAULT), "encrypt", "--vault-password-file", str(password), str(vault)]
    subprocess.run(encrypt, check=True, stdin=subprocess.DEVNULL)
    (root / "group_vars" / "fleet" / "vars.yml").write_text('server_api_key: "{{ vault_server_api_key }}"\n')
    return inventory


def _deploy(inventory: Path, password: Path, rec: testbed.HostRecord) -> PyinfraRun:
    env = {"LEMFLEET_ANSIBLE_INVENTORY": str(inventory), "ANSIBLE_VAULT_PASSWORD_FILE": str(password)}
    return pyinfra("inventories/ansible.py", "deploy.py", "-y", "-v", "--limit", rec.name, env=env)


def _files_holding(rec: testbed.HostRecord, text: str) -> list[str]:
    found = testbed.ssh(rec, f"grep -rlF --no-messages -e {text} {SEARCHED} || true", timeout=300)
    return sorted(found.split())


def test_a_vault_key_is_written_only_into_the_hosts_key_file(fleet, tiny_model, tmp_path):
    rec = fleet[0]
    key = f"vault-{secrets.token_hex(16)}"
    password = tmp_path / "vault-pass"
    password.write_text(f"{secrets.token_hex(12)}\n")
    inventory = _vault_inventory(tmp_path / "inv", rec, tiny_model, password, key)
    try:
        run = _deploy(inventory, password, rec)
        assert run.returncode == 0, run.output[-3000:]
        assert key not in run.output
        debug = pyinfra(
            "inventories/ansible.py",
            "debug-inventory",
            env={"LEMFLEET_ANSIBLE_INVENTORY": str(inventory), "ANSIBLE_VAULT_PASSWORD_FILE": str(password)},
        )
        assert debug.returncode == 0 and key not in debug.output
        assert "hidden: decrypted from Ansible Vault" in debug.output
        # The key file holds it, root-owned, 0640, readable by the service's group.
        assert testbed.ssh(rec, "stat -c '%a %U %G' /etc/lemfleet/api-key").strip() == "640 root lemfleet"
        assert testbed.ssh(rec, "cat /etc/lemfleet/api-key") == key + "\n"
        # ... and it is the only file on the host that does, besides the rollback copy of the last good state
        # (roles/transaction.py: a root-only directory, the copy's owner and mode kept); the record and the
        # smoke report do not.
        assert _files_holding(rec, key) == ["/etc/lemfleet/api-key", "/var/lib/lemfleet/last-good/api-key"]
        modes = testbed.ssh(rec, "stat -c '%a %U %G' /var/lib/lemfleet/last-good /var/lib/lemfleet/last-good/api-key")
        assert modes.split("\n")[:2] == ["700 root root", "640 root lemfleet"]
        record = testbed.ssh(rec, "cat /etc/lemfleet/deployed.json")
        assert json.loads(record)["service"]["api_key_required"] is True and key not in record
        smoke = (PROJECT / "out" / "smoke" / f"{rec.name}.json").read_text()
        assert key not in smoke and "HTTP 401" in smoke  # the key was needed, and it worked
        journal = testbed.ssh(rec, "journalctl --no-pager --all -o json", timeout=300)
        assert key not in journal
    finally:
        back = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
        assert back.returncode == 0, back.output[-3000:]


def test_a_wrong_vault_password_stops_the_run_before_any_connection(fleet, tiny_model, tmp_path):
    rec = fleet[0]
    password = tmp_path / "vault-pass"
    password.write_text("the right one\n")
    inventory = _vault_inventory(tmp_path / "inv", rec, tiny_model, password, f"vault-{secrets.token_hex(16)}")
    wrong = tmp_path / "wrong-pass"
    wrong.write_text("not the right one\n")
    count = "journalctl -q -u ssh.service --no-pager | grep -c 'Accepted publickey'"
    before = int(testbed.ssh(rec, count))
    run = _deploy(inventory, wrong, rec)
    after = int(testbed.ssh(rec, count))
    assert run.returncode != 0
    assert "cannot decrypt" in run.output and "vault.yml" in run.output, run.output[-2000:]
    assert after == before + 1  # only the ssh call above, none from pyinfra
