"""The deploy's port forward over a real paramiko transport to a throwaway sshd.

While the server behind it is down, each connection is refused on the host;
paramiko logs every refusal as an ERROR line, and the forward must turn those
into one summary line rather than a flood.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import httpx
import paramiko
import pytest

from lemfleet.forward import RefusedChannels, forward
from lemfleet.sshtunnel import free_local_port
from tests.integration.conftest import Sshd


def test_refused_channels_give_one_summary_line(sshd: Sshd, caplog: pytest.LogCaptureFixture) -> None:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=sshd.port, username=sshd.user, key_filename=str(sshd.key),
                   look_for_keys=False, allow_agent=False)  # fmt: skip
    fake_host = SimpleNamespace(name="tb-forward", connector=SimpleNamespace(client=client))
    closed = free_local_port()  # nothing listens there on the sshd's side
    caplog.set_level(logging.INFO)
    try:
        with forward(fake_host, "127.0.0.1", closed) as base:
            for _ in range(6):
                with pytest.raises(httpx.TransportError):
                    httpx.get(f"{base}/health", timeout=5)
        # The filter is gone once the forward closed: paramiko's own logging is left as it was.
        transport = client.get_transport()
        assert transport is not None
        paramiko_log = logging.getLogger(transport.get_log_channel())
        assert not [f for f in paramiko_log.filters if isinstance(f, RefusedChannels)]
    finally:
        client.close()
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "open FAILED" in m and m.startswith("Secsh")], messages
    summaries = [m for m in messages if "refused on the host while the server was down" in m]
    assert len(summaries) == 1, messages
    assert summaries[0].startswith(f"tb-forward: 6 connection(s) to 127.0.0.1:{closed} refused on the host"), summaries
