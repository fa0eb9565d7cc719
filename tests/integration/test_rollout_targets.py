"""The rollout takes its hosts from its pre-pass: one read of the inventory, no child of its own for it.

The hosts' SSH ports are loopback ports nobody listens on, so every connection is refused at once.
"""

from __future__ import annotations

import importlib
import socket
from pathlib import Path

import pytest

from lemfleet import api
from lemfleet.sshtunnel import InventoryTarget

rollout_module = importlib.import_module("lemfleet.api.rollout")  # the module: api.rollout is the function


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_pre_pass_hands_over_the_hosts_with_their_ssh_data_before_contacting_them(tmp_path: Path) -> None:
    port = closed_port()
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        f"web = [('a', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, 'ssh_user': 'ops'}}),\n"
        f"       ('b', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, 'rollout_canary': True}})]\n"
    )
    fleet = api.Fleet.from_inventory(inventory, data={"server_port": 8181})
    handed: list[list[InventoryTarget]] = []
    events: list[str] = []
    result = api.deploy(fleet, dry=True, on_targets=handed.append, on_event=lambda e: events.append(e.kind))
    assert [[t.name for t in targets] for targets in handed] == [["a", "b"]]
    a, b = handed[0]
    assert a.ssh is not None and (a.ssh.hostname, a.ssh.port, a.ssh.user) == ("127.0.0.1", port, "ops")
    assert (a.server_port, a.canary, b.canary) == (8181, False, True)  # --data applies
    assert "web" in a.groups
    assert events.index("run_started") < events.index("host_unreachable")
    assert not any(h.ok for h in result.hosts)


def test_a_rollout_reads_no_inventory_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The batches come from the pre-pass's hosts, canary first; the inventory child is never started."""

    def no_child(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rollout read the inventory in a child of its own")

    monkeypatch.setattr(rollout_module, "fleet_targets", no_child)
    port = closed_port()
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        f"fleet = [('a', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}}}),\n"
        f"         ('b', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}, 'rollout_canary': True}})]\n"
    )
    result = api.rollout(api.Fleet.from_inventory(inventory), dry=True, records=tmp_path / "rollouts")
    assert [b.hosts for b in result.record.batches] == [["b"], ["a"]]
    assert {r.outcome for b in result.record.batches for r in b.results} == {"would update"}  # unreachable
