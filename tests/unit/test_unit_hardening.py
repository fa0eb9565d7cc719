"""The unit's network and system-call hardening, and ``server_allow_from``, checked on rendered units.

``systemd-analyze`` reads the rendered units here (``verify`` and ``security --offline=yes``); the test bed
measures the deployed CPU unit and shows that the allow list holds (tests/testbed/test_unit_hardening.py).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lemfleet.roles.plan import HostPlan, ModelInfo, plan_host
from lemfleet.roles.server import render_unit
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from tests.fixtures.gpu.hosts import UBUNTU_2404, scenario_host
from tests.unit.systemd_syntax import unit_directives
from tests.unit.test_server_templates import FACTS

MODEL = ModelInfo("tiny", 5_000_000)
needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def plan(scenario: str | None = None, /, **settings: object) -> HostPlan:
    facts = FACTS if scenario is None else scenario_host(scenario, UBUNTU_2404)
    return plan_host(facts, validate(settings), MODEL)


def unit(p: HostPlan, binary: str = "/opt/lemfleet/llama.cpp/current/bin/llama-server", /, **settings: object) -> str:
    clean = validate(settings)
    key = "/etc/lemfleet/api-key" if clean["server_api_key"] else None
    return render_unit(p, unit_name="lemfleet-llama", user="lemfleet", binary=binary, api_key_file=key,
                       allow_from=clean["server_allow_from"])  # fmt: skip


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in unit_directives(text):
        found.setdefault(key, []).append(value)
    return found


EXPOSED = {"server_host": "0.0.0.0", "server_api_key": "a-long-enough-test-key"}


def test_a_loopback_cpu_unit_talks_to_loopback_only_and_binds_its_port_only():
    d = directives(unit(plan()))
    assert d["IPAddressDeny"] == ["any"]
    assert d["IPAddressAllow"] == ["localhost"]
    assert d["SocketBindDeny"] == ["any"]
    assert d["SocketBindAllow"] == ["tcp:8080"]
    assert d["PrivateMounts"] == ["yes"]
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]


def test_the_bind_rule_follows_the_port():
    d = directives(unit(plan(server_port=9123)))
    assert d["SocketBindAllow"] == ["tcp:9123"]


def test_an_exposed_server_without_an_allow_list_takes_any_address():
    d = directives(unit(plan(**EXPOSED), **EXPOSED))
    assert d["IPAddressDeny"] == ["any"] and d["IPAddressAllow"] == ["any"]


def test_an_allow_list_keeps_loopback_and_the_listen_address():
    settings: dict[str, object] = {**EXPOSED, "server_allow_from": ["10.20.0.0/16", "192.168.1.7", "fd00::/64"]}
    d = directives(unit(plan(**settings), **settings))
    assert d["IPAddressAllow"] == ["localhost 10.20.0.0/16 192.168.1.7/32 fd00::/64"]
    on_address = {**settings, "server_host": "10.20.0.5"}
    d = directives(unit(plan(**on_address), **on_address))
    # The smoke step's SSH tunnel connects from the host to its own listen address.
    assert d["IPAddressAllow"] == ["localhost 10.20.0.5 10.20.0.0/16 192.168.1.7/32 fd00::/64"]


def test_the_allow_list_renders_from_host_data_as_given():
    # pyinfra's --data gives a string; group_data a list. Both render the same.
    p = plan(**EXPOSED)
    for raw in ("10.0.0.0/8,fd00::/64", ["10.0.0.0/8", "fd00::/64"]):
        text = render_unit(p, unit_name="lemfleet-llama", user="lemfleet", binary="/usr/bin/llama-server",
                           api_key_file="/etc/lemfleet/api-key", allow_from=raw)  # fmt: skip
        assert directives(text)["IPAddressAllow"] == ["localhost 10.0.0.0/8 fd00::/64"]
    with pytest.raises(ValueError, match="server_allow_from"):
        render_unit(p, unit_name="lemfleet-llama", user="lemfleet", binary="/usr/bin/llama-server",
                    api_key_file=None, allow_from="10.0.0.0/8\nIPAddressAllow=any")  # fmt: skip


def test_a_loopback_server_ignores_the_allow_list():
    d = directives(unit(plan(server_allow_from="10.0.0.0/8"), server_allow_from="10.0.0.0/8"))
    assert d["IPAddressAllow"] == ["localhost"]


def test_allow_from_takes_a_comma_separated_string():
    assert validate({"server_allow_from": "10.0.0.0/8, 2001:db8::/32"})["server_allow_from"] == [
        "10.0.0.0/8",
        "2001:db8::/32",
    ]
    assert validate({"server_allow_from": []})["server_allow_from"] is None


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("10.0.0.300/8", "'10.0.0.300/8'"),
        ("10.0.0.1/8", "'10.0.0.1/8'"),  # host bits set: a typo for 10.0.0.0/8 would allow a /8 silently
        (["10.0.0.0/8", "any"], "'any'"),
        ("lan.example", "'lan.example'"),
        ({"net": "10.0.0.0/8"}, "{'net': '10.0.0.0/8'}"),
        (["10.0.0.0/8\nExecStartPre=+/bin/sh"], "ExecStartPre"),
    ],
)
def test_a_bad_allow_list_is_refused_by_name_with_what_is_accepted(value, shown):
    with pytest.raises(SettingsError) as err:
        validate({"server_allow_from": value})
    message = str(err.value)
    assert "server_allow_from" in message and shown in message, message
    assert "CIDR" in message or "printable" in message, message


@pytest.mark.parametrize("scenario", ["h100", "a100-mig-2x3g40gb"])
def test_a_cuda_unit_allows_nvidia_uvm_by_class_which_appears_on_first_use(scenario):
    d = directives(unit(plan(scenario)))
    allowed = d["DeviceAllow"]
    assert "char-nvidia-uvm rw" in allowed and "/dev/nvidia-uvm rw" not in allowed, allowed
    assert d["DevicePolicy"] == ["closed"]
    # GPU runtimes bind memory to NUMA nodes (mbind, set_mempolicy): @resources stays allowed there.
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged"]
    assert d["IPAddressAllow"] == ["localhost"]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.service"
    path.write_text(text)
    return path


def _binary(tmp_path: Path) -> str:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return str(binary)


UNITS = {
    "cpu": (None, {}),
    "cpu-exposed": (None, {**EXPOSED, "server_allow_from": "10.0.0.0/8,fd00::/64"}),
    "cuda": ("h100", {}),
    "rocm": ("rx7900xtx", {}),
}


@needs_analyze
@pytest.mark.parametrize("name", sorted(UNITS))
def test_systemd_analyze_verify_accepts_the_hardened_unit(tmp_path, name):
    scenario, settings = UNITS[name]
    path = _write(tmp_path, f"lemfleet-{name}", unit(plan(scenario, **settings), _binary(tmp_path), **settings))
    proc = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False)
    problems = [line for line in proc.stderr.splitlines() if str(path) in line or f"lemfleet-{name}" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


@needs_analyze
@pytest.mark.parametrize(("name", "limit"), [("cpu", 1.2), ("cpu-exposed", 1.2), ("cuda", 2.0), ("rocm", 2.0)])
def test_offline_exposure_is_within_the_goal(tmp_path, name, limit):
    scenario, settings = UNITS[name]
    path = _write(tmp_path, f"lemfleet-{name}", unit(plan(scenario, **settings), _binary(tmp_path), **settings))
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout)
    assert found, proc.stdout[-800:] + proc.stderr[-800:]
    assert float(found.group(1)) <= limit, proc.stdout
