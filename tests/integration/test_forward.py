"""The one port forward (lemfleet.sshtunnel.forward), both ways it rides, to a throwaway sshd.

- ``via`` a pyinfra host: channels on the deploy's open paramiko transport (the health gate);
- ``ssh -L`` with the host's SSH data (the controller: smoke, status, load).

Each reaches a server that listens on loopback only, also when the server's listen address is a
wildcard (``::`` is reached on 127.0.0.1, lemfleet.paths.reach_address). While nothing listens,
each connection is refused on the host; paramiko and ssh each log a line per refusal, and the
forward must turn those into one summary line rather than a flood.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import paramiko
import pytest

from lemfleet.sshtunnel import InventoryTarget, Refusals, SshOptions, forward, free_local_port
from tests.integration.conftest import Sshd


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"status":"ok"}')

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def loopback_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def paramiko_client(sshd: Sshd) -> Iterator[paramiko.SSHClient]:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=sshd.port, username=sshd.user, key_filename=str(sshd.key),
                   look_for_keys=False, allow_agent=False)  # fmt: skip
    yield client
    client.close()


def _ssh(sshd: Sshd) -> SshOptions:
    return SshOptions("127.0.0.1", sshd.port, sshd.user, str(sshd.key), str(sshd.known_hosts))


def _open(way: str, sshd: Sshd, client: paramiko.SSHClient, listen: str, port: int) -> AbstractContextManager[str]:
    if way == "transport":  # the gate: the pyinfra host's own connection, no SSH data needed
        fake_host = SimpleNamespace(name="tb-forward", connector=SimpleNamespace(client=client))
        return forward(InventoryTarget("tb-forward", None, listen, port), via=fake_host)
    return forward(InventoryTarget("tb-forward", _ssh(sshd), listen, port))


@pytest.mark.parametrize("way", ["transport", "ssh"])
@pytest.mark.parametrize("listen", ["127.0.0.1", "0.0.0.0", "::"])
def test_forward_reaches_a_loopback_server(
    way: str, listen: str, sshd: Sshd, paramiko_client: paramiko.SSHClient, loopback_port: int
) -> None:
    with _open(way, sshd, paramiko_client, listen, loopback_port) as base:
        assert base.startswith("http://127.0.0.1:") and not base.endswith(f":{loopback_port}")
        for _ in range(3):  # each a new connection and channel; the server's close must reach the client
            assert httpx.get(f"{base}/health", timeout=5).json() == {"status": "ok"}


@pytest.mark.parametrize("way", ["transport", "ssh"])
def test_refused_channels_give_one_summary_line(
    way: str, sshd: Sshd, paramiko_client: paramiko.SSHClient, caplog: pytest.LogCaptureFixture
) -> None:
    closed = free_local_port()  # nothing listens there on the sshd's side
    caplog.set_level(logging.INFO)
    with _open(way, sshd, paramiko_client, "127.0.0.1", closed) as base:
        for _ in range(6):
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{base}/health", timeout=5)
    # The filter is gone once the forward closed: paramiko's own logging is left as it was.
    transport = paramiko_client.get_transport()
    assert transport is not None
    paramiko_log = logging.getLogger(transport.get_log_channel())
    assert not [f for f in paramiko_log.filters if isinstance(f, Refusals)]
    messages = [r.getMessage() for r in caplog.records]
    assert not [m for m in messages if "open FAILED" in m and m.startswith("Secsh")], messages
    summaries = [m for m in messages if "refused on the host while the server was down" in m]
    assert len(summaries) == 1, messages
    refused = 6 if way == "transport" else 7  # ssh -L: one more, the check that the forward is up
    assert summaries[0].startswith(f"tb-forward: {refused} connection(s) to 127.0.0.1:{closed} refused on the host")
