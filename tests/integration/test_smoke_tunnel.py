"""``lemfleet smoke --inventory``: loopback-only servers reached through real SSH forwards.

A throwaway ``sshd`` (OpenSSH, on a free loopback port, key auth only; the ``sshd`` fixture in
``tests/integration/conftest.py``) stands in for a fleet host's SSH; the llama-server behind it
listens on 127.0.0.1 only, as deployed servers do.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet.cli import main
from lemfleet.inventory_loader import inventory_targets
from lemfleet.smoke import CHECKS
from lemfleet.sshtunnel import TunnelError, forward, free_local_port
from tests.integration.conftest import Sshd
from tests.integration.test_smoke_live import (
    LiveServer,
    start_llama_server,
    stop,
    wait_until_healthy,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loopback_llama(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path) -> Iterator[LiveServer]:
    from tests.integration.test_smoke_live import make_tiny_gguf

    work = tmp_path_factory.mktemp("tunnel-llama")
    server = start_llama_server(llama_server_bin, make_tiny_gguf(work / "tiny.gguf"), work)
    try:
        wait_until_healthy(server)
        yield server
    finally:
        stop(server)


def _ssh_data(sshd: Sshd, port: int | None = None) -> dict[str, object]:
    return {
        "ssh_hostname": "127.0.0.1",
        "ssh_port": port or sshd.port,
        "ssh_user": sshd.user,
        "ssh_key": str(sshd.key),
        "ssh_known_hosts_file": str(sshd.known_hosts),
    }


def _server_port(server: LiveServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


def test_forward_reaches_a_loopback_server(sshd: Sshd, loopback_llama: LiveServer, tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.py"
    data = {**_ssh_data(sshd), "server_port": _server_port(loopback_llama)}
    inventory.write_text(f"gpu = [('gpu-01', {data!r})]\n")
    [target] = inventory_targets(str(inventory))
    assert target.ssh is not None and target.ssh.port == sshd.port
    with forward(target) as url:
        assert url.startswith("http://127.0.0.1:") and url != loopback_llama.url
        import httpx

        assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}


def test_a_refused_ssh_connection_says_why(sshd: Sshd, tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.py"
    inventory.write_text(f"gpu = [('gpu-02', {_ssh_data(sshd, free_local_port())!r})]\n")
    [target] = inventory_targets(str(inventory))
    refused = r"ssh to gpu-02 exited with 255: .*Connection refused"
    with pytest.raises(TunnelError, match=refused), forward(target):
        pass


def test_cli_smokes_an_inventory_through_tunnels(sshd: Sshd, loopback_llama: LiveServer, tmp_path: Path) -> None:
    port = _server_port(loopback_llama)
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        "gpu = [\n"
        f"    ('gpu-01', { ({**_ssh_data(sshd), 'server_port': port})!r}),\n"
        f"    ('gpu-02', { ({**_ssh_data(sshd), 'server_port': free_local_port()})!r}),\n"
        f"    ('gpu-03', {_ssh_data(sshd, free_local_port())!r}),\n"
        "]\n"
        f"workstation = [('@local', {{'server_port': {port}}})]\n"
    )
    out, junit = tmp_path / "smoke.json", tmp_path / "smoke.xml"
    argv = ["smoke", "--inventory", str(inventory), "--api-key-file", str(loopback_llama.key_file)]
    argv += ["--health-timeout", "2", "--json", str(out), "--junit", str(junit)]
    assert main(argv) == 1
    results = {r["host"]: r for r in json.loads(out.read_text())["results"]}
    steps = {host: {s["name"]: s["status"] for s in r["steps"]} for host, r in results.items()}
    assert steps["gpu-01"] == {"tunnel": "passed", **dict.fromkeys(CHECKS, "passed")}
    assert steps["gpu-02"]["tunnel"] == "passed" and steps["gpu-02"]["health"] == "failed"
    assert steps["gpu-03"] == {"tunnel": "failed", **dict.fromkeys(CHECKS, "skipped")}
    assert steps["@local"] == dict.fromkeys(CHECKS, "passed")
    assert results["gpu-01"]["model"] == "tiny-test"
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert len(cases) == 6 + 6 + 6 + 5


def test_cli_smokes_an_ansible_inventory(
    sshd: Sshd, loopback_llama: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ansible INI -> inventories/ansible.py (pyinfra) -> SSH forward -> smoke; the server port
    # comes from the group's vars, as a team would set it.
    hosts = tmp_path / "hosts.ini"
    hosts.write_text(
        "[gpu]\n"
        f"gpu-01 ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user={sshd.user} "
        f"ansible_ssh_private_key_file={sshd.key} ssh_known_hosts_file={sshd.known_hosts}\n"
        f"[gpu:vars]\nserver_port={_server_port(loopback_llama)}\n"
    )
    monkeypatch.setenv("LEMFLEET_ANSIBLE_INVENTORY", str(hosts))
    out = tmp_path / "smoke.json"
    argv = ["smoke", "--inventory", str(ROOT / "inventories" / "ansible.py"), "--json", str(out)]
    assert main([*argv, "--api-key-file", str(loopback_llama.key_file)]) == 0
    [result] = json.loads(out.read_text())["results"]
    assert result["host"] == "gpu-01" and result["ok"]
