"""The unit tier is pure: no sshd, no llama-server, no network, no build cache, no root.

Tests that start a server (even on loopback), reach one, or need what the test bed builds live in
``tests/integration``. To keep this tier honest, every unit test runs with IP sockets refused: a test
that opens a TCP or UDP connection, or listens on a port, fails naming this rule. Unix sockets (which
pyinfra's local connector and gevent use within the process) still work.

Property tests run hypothesis under one of two profiles, both with real examples: ``ci`` (what
``.ci/run`` uses: hypothesis's 100 examples per property, 40 per hostile-value property) and the
quicker ``dev`` default for a developer's ``scripts/test.sh tests/unit`` (20 and 10).
``LEMFLEET_TEST_PROFILE=ci`` picks the first.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

PROFILE = os.environ.get("LEMFLEET_TEST_PROFILE", "dev")
settings.register_profile("ci", max_examples=100, database=None)
settings.register_profile("dev", max_examples=20, database=None)
settings.load_profile(PROFILE)

IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
RULE = "unit tests are pure and open no network connection; a test that needs one belongs in tests/integration"


class NetworkInUnitTest(RuntimeError):
    """A unit test tried to reach or serve the network."""


def _refuse(original: Any) -> Any:
    def guarded(sock: socket.socket, address: Any, *args: Any) -> Any:
        if sock.family in IP_FAMILIES:
            raise NetworkInUnitTest(f"{RULE} (address {address!r})")
        return original(sock, address, *args)

    return guarded


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, _refuse(getattr(socket.socket, name)))
    yield
