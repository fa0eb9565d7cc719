"""The remote-access layer without a host: URLs, the listen-address rule, SSH options from host data.

The forwards themselves run against a real sshd in tests/integration/test_forward.py.
"""

from __future__ import annotations

from dataclasses import asdict
from types import SimpleNamespace

import pytest

from lemfleet.paths import reach_address, url_host
from lemfleet.sshtunnel import InventoryTarget, SshOptions, forward


@pytest.mark.parametrize(
    ("listen", "reached"),
    [("0.0.0.0", "127.0.0.1"), ("::", "127.0.0.1"), ("", "127.0.0.1"), ("::1", "::1"), ("10.0.0.7", "10.0.0.7")],
)
def test_a_wildcard_listen_address_is_reached_on_ipv4_loopback(listen: str, reached: str) -> None:
    assert reach_address(listen) == reached


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("::1", "http://[::1]:8080"),
        ("fd00::7", "http://[fd00::7]:8080"),
        ("::", "http://127.0.0.1:8080"),
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("10.0.0.7", "http://10.0.0.7:8080"),
        ("localhost", "http://localhost:8080"),
    ],
)
def test_a_local_host_is_reached_directly_with_ipv6_in_brackets(listen: str, url: str) -> None:
    # The controller's @local host, and the deploy's @local host (a pyinfra host with no SSH client).
    with forward(InventoryTarget("@local", None, listen, 8080)) as base:
        assert base == url
    pyinfra_local = SimpleNamespace(name="@local", connector=SimpleNamespace())
    with forward(InventoryTarget("@local", None, listen, 8080), via=pyinfra_local) as base:
        assert base == url


def test_url_host_brackets_only_ipv6() -> None:
    assert [url_host(a) for a in ("::1", "[::1]", "127.0.0.1", "gpu-1")] == ["[::1]", "[::1]", "127.0.0.1", "gpu-1"]


def test_ssh_options_come_from_host_data_as_pyinfra_reads_them() -> None:
    data = {"ssh_hostname": "10.0.0.7", "ssh_port": "2222", "ssh_user": "deploy", "ssh_key": "~/.ssh/fleet",
            "ssh_known_hosts_file": "kh", "ssh_config_file": "cfg"}  # fmt: skip
    options = SshOptions.from_host_data("gpu-1", data)
    assert options == SshOptions("10.0.0.7", 2222, "deploy", "~/.ssh/fleet", "kh", "accept-new", "cfg")
    assert SshOptions.from_host_data("gpu-1", {}) == SshOptions("gpu-1")
    command = SshOptions.from_host_data("gpu-1", {"ssh_strict_host_key_checking": "yes"}).command(remote=["true"])
    assert command[-2:] == ["gpu-1", "true"] and "StrictHostKeyChecking=yes" in command and "BatchMode=yes" in command


def test_a_target_survives_the_loader_child_s_json() -> None:
    target = InventoryTarget("gpu-1", SshOptions("10.0.0.7", 22), "::", 9000, ("gpu-1", "amd"), canary=True)
    assert InventoryTarget.from_dict(asdict(target)) == target
    assert InventoryTarget.from_dict(asdict(InventoryTarget("@local", None))) == InventoryTarget("@local", None)
