"""The hardened unit on a real host: its measured exposure, and an IP allow list that holds.

The host is booted with ``firewall=True`` (lemfleet.testbed.hosts.FIREWALL_NSPAWN_ARGS): a unified cgroup
hierarchy and bpf() allowed, as on a real Debian 12 host. On the other test-bed hosts systemd starts the
unit but cannot load its IP filter, so a refused client would prove nothing there.

Traffic goes only to the test-bed host: from the controller's side of its link (the address given in
``server_allow_from``), and from the apt proxy's address on the controller, which the host routes back
to but which is not in the list.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from lemfleet import testbed
from lemfleet.testbed import teardown
from lemfleet.testbed.paths import PROXY_ADDRESS
from tests.testbed.conftest import deploy

UNIT = "lemfleet-llama.service"
KEY = "unit-hardening-test-key-0123"


@pytest.fixture(scope="module")
def guarded(fleet: list[testbed.HostRecord], tiny_model: Path) -> Iterator[testbed.HostRecord]:
    """One more host, where systemd enforces IPAddressDeny=; the build comes from the fleet's (cached) one."""
    rec = testbed.add(1, firewall=True)[0]
    try:
        run = deploy(rec.name, "model_source=local", f"model_path={tiny_model}")
        assert run.returncode == 0, run.output[-4000:]
        yield rec
    finally:
        teardown.remove(rec.name)


def exposure(rec: testbed.HostRecord) -> float:
    out = testbed.ssh(rec, f"systemd-analyze security --no-pager {UNIT}", check=False)
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out)
    assert found, out[-800:]
    return float(found.group(1))


def http_status(rec: testbed.HostRecord, source: str, port: int = 8080) -> str:
    """The status line the server sends to a client at ``source`` (an address of the controller)."""
    with socket.socket() as sock:
        sock.settimeout(4)
        sock.bind((source, 0))
        sock.connect((rec.address, port))
        sock.sendall(f"GET /v1/models HTTP/1.1\r\nHost: {rec.address}\r\nConnection: close\r\n\r\n".encode())
        return sock.recv(200).decode(errors="replace").split("\r\n", 1)[0]


def reaches(rec: testbed.HostRecord, source: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(4)
        sock.bind((source, 0))
        try:
            sock.connect((rec.address, port))
        except OSError:
            return False
        return True


def test_the_deployed_cpu_unit_is_at_most_1_2_exposed(guarded: testbed.HostRecord) -> None:
    # The deploy passed its smoke gate (health, models, chat, stream) under the hardened unit.
    assert exposure(guarded) <= 1.2
    shown = testbed.ssh(guarded, f"systemctl show -p IPAddressDeny -p IPAddressAllow -p PrivateMounts {UNIT}")
    # systemctl prints the allow list in no fixed order.
    props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    assert set(props["IPAddressAllow"].split()) == {"127.0.0.0/8", "::1/128"}, shown
    assert "PrivateMounts=yes" in shown, shown


def test_an_exposed_server_takes_loopback_and_the_allow_list_only(
    guarded: testbed.HostRecord, tiny_model: Path
) -> None:
    allowed = guarded.gateway  # the controller's end of this host's link
    run = deploy(
        guarded.name, "model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0",
        f"server_api_key={KEY}", f"server_allow_from={allowed}/32",
    )  # fmt: skip
    assert run.returncode == 0, run.output[-4000:]  # the smoke step reaches it over loopback, 401 check included
    assert exposure(guarded) <= 1.2

    on_host = testbed.ssh(guarded, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v1/models")
    assert on_host == "401"
    assert http_status(guarded, allowed) == "HTTP/1.1 401 Unauthorized"

    # The proxy's address is routed to and from the host (its sshd answers), but is not in the list.
    assert reaches(guarded, PROXY_ADDRESS, 22)
    assert not reaches(guarded, PROXY_ADDRESS, 8080)
    assert testbed.ssh(guarded, f"systemctl is-active {UNIT}").strip() == "active"
