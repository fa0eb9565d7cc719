"""The shipped verification suite's pytest plugin: prove, host by host, that the fleet serves what was deployed.

pytest loads it through the ``pytest11`` entry point wherever lemfleet is
installed, so the suite runs from an installed wheel as well as from a
checkout. Run it against any fleet with any testinfra backend, for example::

    pytest --pyargs lemfleet.verify --hosts=ssh://gpu1,ssh://gpu2 --junitxml=verify.xml
    pytest --pyargs lemfleet.verify --hosts=paramiko://root@gpu1 --ssh-config=~/.ssh/config
    pytest --pyargs lemfleet.verify --ansible-inventory=hosts.ini --hosts='ansible://all'
    pytest tests/verify --hosts=local://     (from a checkout)

Each host is checked against the record the deploy left on it
(``/etc/lemfleet/deployed.json``), not against constants, so the suite follows
whatever settings the fleet was deployed with.

Every host is observed once, in two round trips (the record, then one shell
command gathering everything the checks need), and all hosts are observed at
the same time; the tests then only compare. Verifying many hosts therefore
takes about as long as verifying one.
"""

from __future__ import annotations

import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from lemfleet.paths import API_KEY_FILE as KEY_FILE
from lemfleet.paths import DEPLOY_RECORD as RECORD
from lemfleet.paths import TLS_KEY_FILE, reach_address, url_host

MARK = "@@lemfleet-verify:"
UNIT_PROPERTIES = (
    "ActiveState,SubState,UnitFileState,NRestarts,MainPID,ProtectSystem,ProtectHome,PrivateTmp,NoNewPrivileges,"
    "CapabilityBoundingSet,Restart,RestrictAddressFamilies,SystemCallFilter"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lemfleet")
    group.addoption(
        "--lemfleet-max-restarts",
        type=int,
        default=3,
        help="NRestarts above this means the service is restarting in a loop (default 3)",
    )


def _address(record: dict[str, Any]) -> str:
    """Where the server is reached on the host itself, as a URL's host part (``[::1]`` for IPv6)."""
    return url_host(reach_address(record["service"]["host"]))


def _curl(record: dict[str, Any], path: str, body: dict[str, Any] | None = None, *, key: bool = True) -> str:
    service = record["service"]
    # The key is read on the host, inside the command: it never crosses to the controller. It is the
    # first line llama-server loads from the file (not empty, not a '#' comment); with no key file
    # the header is empty and llama-server, which then has no keys, ignores it.
    auth = f'-H "Authorization: Bearer $(grep -v -e "^#" -e "^$" {KEY_FILE} 2>/dev/null | head -1)"' if key else ""
    data = f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}" if body else ""
    # server_tls: https, pinned to the recorded public key; curl aborts before sending anything to another.
    tls = service.get("tls") or {}
    pin = f"-k --pinnedpubkey {shlex.quote('sha256//' + tls['spki_sha256'])} " if tls else ""
    return (
        f"curl -sS --max-time 120 -w '\\n%{{http_code}}' {pin}{auth} {data} "
        f"{'https' if tls else 'http'}://{_address(record)}:{service['port']}{path}"
    )


def instance_records(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record as each llama-server of the host sees it: ``service`` naming that instance's unit and port.

    A record lists its instances (``server_instances``); one from before instances names one service.
    """
    listed = record.get("instances") or [{"unit": record["service"]["unit"], "port": record["service"]["port"]}]
    return [{**record, "service": {**record["service"], "unit": i["unit"], "port": i["port"]}} for i in listed]


HOST_WIDE = ("current", "build", "model", "key", "tls_key")


def observe_command(record: dict[str, Any], *, host_wide: bool = True) -> str:
    """One shell command printing, in marked sections, everything the checks compare.

    Without ``host_wide`` it leaves out what every instance shares (the build, the model's sha256,
    the key file), which the first instance's command reads once for the host.
    """
    unit, service, model, build = record["service"]["unit"], record["service"], record["model"], record["build"]
    chat = {
        "model": model["alias"],
        "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}],
    }
    sections = {
        "unit": f"systemctl show {shlex.quote(unit)} -p {UNIT_PROPERTIES}",
        "user": f"ps -o user= -p $(systemctl show {shlex.quote(unit)} -p MainPID --value)",
        "current": "readlink -f /opt/lemfleet/llama.cpp/current",
        "build": f"cat {shlex.quote(build['path'])}/build.json",
        "model": f"sha256sum {shlex.quote(model['path'])} | cut -d' ' -f1",
        "listen": f"ss -Htln 'sport = :{service['port']}'",
        "key": f"stat -c '%a %U' {KEY_FILE} 2>/dev/null || echo missing",
        "tls_key": f"stat -c '%a %U %G' {TLS_KEY_FILE} 2>/dev/null || echo missing",
        "health": _curl(record, "/health"),
        "models": _curl(record, "/v1/models"),
        "chat": _curl(record, "/v1/chat/completions", chat),
        # A server with a key file must refuse a request without a key (an empty key list turns auth off).
        "no_key": f"if [ -e {KEY_FILE} ]; then {_curl(record, '/v1/models', key=False)}; else echo no key file; fi",
    }
    if not host_wide:
        sections = {name: cmd for name, cmd in sections.items() if name not in HOST_WIDE}
    # The leading echo ends a section whose last line (curl's status code) has no newline.
    return "; ".join(f"echo; echo {MARK}{name}; {cmd} 2>&1" for name, cmd in sections.items())


def parse_sections(text: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = found.setdefault(line[len(MARK) :], [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v).strip() for k, v in found.items()}


def observe(host: Any) -> dict[str, Any]:
    """The record and the host's observed state, or the reason there is none."""
    record_file = host.run(f"cat {RECORD}")
    if record_file.rc != 0:
        return {"error": f"{RECORD} is missing: this host was not deployed by lemfleet"}
    record = json.loads(record_file.stdout)
    instances = []
    for index, each in enumerate(instance_records(record)):
        out = parse_sections(host.run(observe_command(each, host_wide=index == 0)).stdout)
        props = dict(line.split("=", 1) for line in out.get("unit", "").splitlines() if "=" in line)
        instances.append({"record": each, "unit": props, **{k: v for k, v in out.items() if k != "unit"}})
    # The first instance's observation is the host's (build, model, key); "instances" holds every one.
    return {**instances[0], "record": record, "instances": instances}


def _hosts(config: pytest.Config) -> list[Any]:
    # Imported here, not at the top: pytest loads this plugin in every environment where lemfleet is
    # installed, with or without the verify extra (pytest-testinfra); only running the suite needs it.
    import testinfra

    specs = config.option.hosts.split(",") if config.option.hosts else [None]
    return testinfra.get_hosts(  # the same call pytest-testinfra makes for the host fixture
        specs,
        connection=config.option.connection,
        ssh_config=config.option.ssh_config,
        ssh_identity_file=config.option.ssh_identity_file,
        sudo=config.option.sudo,
        sudo_user=config.option.sudo_user,
        ansible_inventory=config.option.ansible_inventory,
        force_ansible=config.option.force_ansible,
    )


@pytest.fixture(scope="session")
def observations(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    hosts = _hosts(request.config)
    with ThreadPoolExecutor(max_workers=min(32, len(hosts))) as pool:
        found = dict(zip((h.backend.get_pytest_id() for h in hosts), pool.map(observe, hosts), strict=True))
    return found


@pytest.fixture
def seen(host: Any, observations: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """This host's observation; a host without a deploy record fails every check, saying so."""
    found = observations[host.backend.get_pytest_id()]
    if "error" in found:
        pytest.fail(f"{host.backend.hostname}: {found['error']}")
    return found


@pytest.fixture(scope="session")
def max_restarts(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--lemfleet-max-restarts"))
