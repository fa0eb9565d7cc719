"""The shipped verification suite, the smoke CLI and Ansible interop, against a real deployed fleet."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.testbed.paths import KNOWN_HOSTS, PROXY_URL, SSH_CONFIG, SSH_KEY
from tests.testbed.conftest import PROJECT, deploy, pyinfra

UNIT = "lemfleet-llama.service"


def verify(*hosts: testbed.HostRecord, junit: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``pytest tests/verify`` against the hosts over SSH, as a user's CI job runs it."""
    specs = ",".join(f"ssh://{h.name}" for h in hosts)
    cmd = [sys.executable, "-m", "pytest", "tests/verify", "-p", "no:cacheprovider", "-q", "-rf",
           f"--hosts={specs}", f"--ssh-config={SSH_CONFIG}"]  # fmt: skip
    if junit:
        cmd.append(f"--junitxml={junit}")
    return subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def hosts(fleet, tiny_model):
    """tb1 and tb2, redeployed to the default settings (earlier tests may have changed them)."""
    for rec in fleet:
        run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
        assert run.returncode == 0, run.output[-3000:]
    return fleet


@pytest.fixture
def restore(hosts, tiny_model):
    """Put tb2 back to the default deploy after a sabotage."""
    yield hosts[1]
    run = deploy(hosts[1].name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]


def test_suite_passes_on_a_deployed_fleet_and_writes_junit(hosts, tmp_path):
    junit = tmp_path / "verify.xml"
    result = verify(*hosts, junit=junit)
    assert result.returncode == 0, result.stdout[-3000:]
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    cases = [c.get("name", "") for c in suite.iter("testcase")]
    checks = {name.split("[")[0] for name in cases}
    assert len(checks) >= 10
    for rec in hosts:
        # One case per host and check.
        assert sum(f"[ssh://{rec.name}]" in name for name in cases) == len(checks)


def _fails_with(rec: testbed.HostRecord, check: str, fragment: str) -> None:
    result = verify(rec)
    assert result.returncode != 0, result.stdout[-2000:]
    failed = [line for line in result.stdout.splitlines() if line.startswith("FAILED")]
    assert any(check in line for line in failed), result.stdout[-3000:]
    assert fragment in result.stdout, result.stdout[-3000:]


def test_a_stopped_service_fails(restore):
    testbed.ssh(restore, f"systemctl stop {UNIT}")
    _fails_with(restore, "test_service_active_enabled_and_not_looping", "is inactive")


def test_a_replaced_model_fails(restore):
    path = json.loads(testbed.ssh(restore, "cat /etc/lemfleet/deployed.json"))["model"]["path"]
    testbed.ssh(restore, f"head -c 4096 /dev/urandom >> {path}")
    _fails_with(restore, "test_model_file_matches_its_sha256", "is not the deployed model")


def test_removed_hardening_fails(restore):
    testbed.ssh(
        restore,
        f"mkdir -p /etc/systemd/system/{UNIT}.d && printf '[Service]\\nProtectSystem=no\\nProtectHome=no\\n' "
        f"> /etc/systemd/system/{UNIT}.d/zz-unsafe.conf && systemctl daemon-reload && systemctl restart {UNIT}",
    )
    try:
        _fails_with(restore, "test_unit_sandbox_is_in_place", "sandbox settings changed")
    finally:
        testbed.ssh(restore, f"rm -rf /etc/systemd/system/{UNIT}.d && systemctl daemon-reload")


def test_a_port_rebound_to_every_address_without_a_key_fails(restore):
    testbed.ssh(
        restore,
        "sed -i 's/^LEMFLEET_HOST=.*/LEMFLEET_HOST=0.0.0.0/' /etc/lemfleet/lemfleet-llama.env && "
        f"systemctl restart {UNIT} && sleep 2",
    )
    _fails_with(restore, "test_listens_only_on_the_configured_address", "listens on ['0.0.0.0']")


def test_a_world_readable_key_file_fails(restore, tiny_model):
    run = deploy(
        restore.name, "model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0",
        "server_api_key=verify-suite-key",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    assert "verify-suite-key" not in run.output
    assert verify(restore).returncode == 0
    testbed.ssh(restore, "chmod 644 /etc/lemfleet/api-key")
    _fails_with(restore, "test_api_key_file", "has mode 0o644, expected 0o640")


def test_an_exposed_server_refuses_requests_without_a_key(restore, tiny_model):
    run = deploy(
        restore.name, "model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0",
        "server_api_key=verify-suite-key",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-3000:]
    smoke = json.loads((PROJECT / "out" / "smoke" / f"{restore.name}.json").read_text())
    auth = {step["name"]: step for step in smoke["steps"]}["auth"]
    assert auth["status"] == "passed" and "HTTP 401" in auth["message"], auth
    assert verify(restore).returncode == 0
    # What the deploy now refuses, done by hand: a key file of comments, which llama-server loads as no
    # key at all and so serves everyone. The verify suite must catch it.
    testbed.ssh(restore, f"echo '# rotated out' > /etc/lemfleet/api-key && systemctl restart {UNIT} && sleep 2")
    _fails_with(restore, "test_endpoint_refuses_requests_without_a_key", "answered 200 to a request without a key")


@pytest.mark.parametrize("key", ["   ", "#verify-suite-key-commented"])
def test_a_key_that_would_turn_auth_off_is_refused_before_any_connection(hosts, key):
    rec = hosts[0]
    count = "journalctl -q -u ssh.service --no-pager | grep -c 'Accepted publickey'"
    before = int(testbed.ssh(rec, count))
    run = deploy(rec.name, "server_host=0.0.0.0", f"server_api_key={key}", timeout=120)
    after = int(testbed.ssh(rec, count))
    assert run.returncode != 0
    assert "server_api_key" in run.output and "No host was contacted" in run.output, run.output[-2000:]
    assert key.strip() not in run.output or not key.strip()
    assert after == before + 1  # only the ssh call above, none from pyinfra


ANSIBLE_INI = """\
[fleet]
{hosts}

[fleet:vars]
ansible_user=root
ansible_ssh_private_key_file={key}
ssh_known_hosts_file={known_hosts}
ssh_strict_host_key_checking=yes
apt_proxy={proxy}
model_source=local
model_path={model}

[moved]
{moved}

[moved:vars]
server_port=8081
"""

ANSIBLE_YAML = """\
all:
  vars:
    ansible_user: root
    ansible_ssh_private_key_file: {key}
    ssh_known_hosts_file: {known_hosts}
    ssh_strict_host_key_checking: "yes"
    apt_proxy: {proxy}
    model_source: local
    model_path: {model}
  children:
    fleet:
      hosts:
{hosts}
    moved:
      vars:
        server_port: 8081
      hosts:
        {moved}:
"""


@pytest.mark.parametrize("kind", ["ini", "yaml"])
def test_an_ansible_inventory_deploys_with_its_group_vars(hosts, tiny_model, tmp_path, kind):
    first, second = hosts
    common = {"key": SSH_KEY, "known_hosts": KNOWN_HOSTS, "proxy": PROXY_URL, "model": tiny_model}
    if kind == "ini":
        lines = "\n".join(f"{r.name} ansible_host={r.address}" for r in hosts)
        text = ANSIBLE_INI.format(hosts=lines, moved=second.name, **common)
    else:
        lines = "\n".join(f"        {r.name}:\n          ansible_host: {r.address}" for r in hosts)
        text = ANSIBLE_YAML.format(hosts=lines, moved=second.name, **common)
    inventory = tmp_path / f"hosts.{kind}"
    inventory.write_text(text)
    try:
        run = pyinfra("inventories/ansible.py", "deploy.py", "-y", env={"LEMFLEET_ANSIBLE_INVENTORY": str(inventory)})
        assert run.returncode == 0, run.output[-3000:]
        ports = {
            r.name: json.loads(testbed.ssh(r, "cat /etc/lemfleet/deployed.json"))["service"]["port"] for r in hosts
        }
        assert ports == {first.name: 8080, second.name: 8081}
        assert "127.0.0.1:8081" in testbed.ssh(second, "ss -Htln 'sport = :8081'")
    finally:
        back = deploy(second.name, "model_source=local", f"model_path={tiny_model}")
        assert back.returncode == 0, back.output[-3000:]


def test_smoke_cli_reaches_loopback_servers_through_ssh_and_writes_reports(hosts, tmp_path):
    out_json, out_junit = tmp_path / "smoke.json", tmp_path / "smoke.xml"
    inventory = tmp_path / "deployed.py"
    names = ", ".join(repr(h.name) for h in hosts)
    inventory.write_text(
        "from inventories.testbed import _host\nfrom lemfleet.testbed import find\n\n"
        f"fleet = [_host(find(name)) for name in ({names},)]\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "lemfleet", "smoke", "--inventory", str(inventory),
         "--json", str(out_json), "--junit", str(out_junit)],
        cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out_json.read_text())
    rows = results if isinstance(results, list) else results.get("results", [])
    assert {r["host"] for r in rows} >= {h.name for h in hosts}
    assert all(r["ok"] for r in rows if r["host"] in {h.name for h in hosts})
    assert ET.parse(out_junit).getroot().iter("testcase")
    report = subprocess.run([sys.executable, "-m", "lemfleet", "report", str(out_json)], cwd=PROJECT,
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert "| " in report.stdout and hosts[0].name in report.stdout


def test_fifty_concurrent_chats_against_one_host(hosts):
    rec = hosts[0]
    forward = subprocess.Popen(["ssh", "-F", str(SSH_CONFIG), "-N", "-L", "18090:127.0.0.1:8080", rec.name])
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "lemfleet", "smoke", "--load", "50", "http://127.0.0.1:18090"],
            cwd=PROJECT, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        forward.terminate()
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "50" in proc.stdout
