"""The shipped verification suite: prove, host by host, that the fleet serves what was deployed.

Run it against any fleet with any testinfra backend, for example::

    pytest tests/verify --hosts=ssh://gpu1,ssh://gpu2 --junitxml=verify.xml
    pytest tests/verify --ansible-inventory=hosts.ini --hosts='ansible://all'
    pytest tests/verify --hosts=local://

Each host is checked against the record the deploy left on it
(``/etc/lemfleet/deployed.json``), not against constants, so the suite follows
whatever settings the fleet was deployed with.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

RECORD = "/etc/lemfleet/deployed.json"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lemfleet")
    group.addoption("--lemfleet-max-restarts", type=int, default=3,
                    help="NRestarts above this means the service is restarting in a loop (default 3)")  # fmt: skip


@pytest.fixture(scope="module")
def record(host: Any) -> dict[str, Any]:
    f = host.file(RECORD)
    if not f.exists:
        pytest.fail(f"{RECORD} is missing on {host.backend.hostname}: this host was not deployed by lemfleet")
    return json.loads(f.content_string)


@pytest.fixture(scope="module")
def unit_props(host: Any, record: dict[str, Any]) -> dict[str, str]:
    return host.service(record["service"]["unit"]).systemd_properties


@pytest.fixture(scope="module")
def max_restarts(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--lemfleet-max-restarts"))
