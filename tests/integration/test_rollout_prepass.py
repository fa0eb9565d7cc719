"""A rollout with a bad setting contacts no host: the host's SSH port is a loopback listener that must stay silent.

(Moved from tests/unit/test_rollout_sessions.py: a test that listens on a port belongs in this tier.)
"""

from __future__ import annotations

from pathlib import Path


def test_a_bad_setting_stops_the_rollout_before_any_host_is_locked(tmp_path: Path) -> None:
    """The pre-pass checks settings while the inventory is read; no SSH session starts before it passes.

    The host's SSH port is a loopback socket this test listens on: a lock or read session (or
    pyinfra's connect) would show as a connection there.
    """
    import socket

    import pytest

    from lemfleet import api

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        inventory = tmp_path / "fleet.py"
        inventory.write_text(f"fleet = [('far', {{'ssh_hostname': '127.0.0.1', 'ssh_port': {port}}})]\n")
        fleet = api.Fleet.from_inventory(inventory, data={"server_port": 0})
        with pytest.raises(api.FleetSetupError, match="server_port"):
            api.rollout(fleet, records=tmp_path / "rollouts")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert not list((tmp_path / "rollouts").glob("lock-*"))  # the fleet's lock is released
