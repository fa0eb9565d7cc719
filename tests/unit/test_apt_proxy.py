"""apt_proxy: credentials never in a message or an operation name, and a file holding them is 0640.

The step is collected by pyinfra's own API against this machine (@local), as in
tests/integration/test_drivers_deploy.py: real facts, generated commands, nothing executed.
"""

from __future__ import annotations

from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.context import ctx_host, ctx_state

from lemfleet.roles.apt_proxy import PATHS, PROXY_FILE, check_proxy, configure_apt_proxy, redact_url
from lemfleet.roles.hoststate import declare
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from lemfleet.secret import Secret

PASSWORD = "s3cret-proxy-pass"
WITH_CREDENTIALS = f"http://deploy:{PASSWORD}@10.77.0.1:3142"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (WITH_CREDENTIALS, "http://***@10.77.0.1:3142"),
        ("https://user@proxy.example/path@x", "https://***@proxy.example/path@x"),
        ("http://a:b@c@proxy:8080/", "http://***@proxy:8080/"),
        ("http://10.77.0.1:3142", "http://10.77.0.1:3142"),
    ],
)
def test_redact_url_hides_the_user_info_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "value",
    [
        f"ftp://deploy:{PASSWORD}@proxy:21",
        f"http://deploy:{PASSWORD}@proxy:3142/ x",
        f'http://deploy:{PASSWORD}"@proxy',
        f"http://deploy:{PASSWORD}@proxy\n:3142",
        f"http://deploy:{PASSWORD}@proxy\x00",
        f"-http://deploy:{PASSWORD}@proxy",
    ],
)
def test_a_bad_proxy_is_refused_without_showing_its_credentials(value: str) -> None:
    with pytest.raises(SettingsError) as err:
        validate({"apt_proxy": value}, "bed-01")
    message = str(err.value)
    assert "apt_proxy" in message and "accepted:" in message
    assert PASSWORD not in message


def test_a_non_string_proxy_is_refused_by_type() -> None:
    with pytest.raises(ValueError, match=r"apt_proxy is not valid \(of type dict, value hidden\)"):
        check_proxy("apt_proxy", {"url": WITH_CREDENTIALS})


@pytest.fixture
def collect() -> Iterator[Any]:
    states: list[State] = []

    def run(proxy: Any) -> list[tuple[str, list[object]]]:
        inventory = Inventory((["@local"], {"apt_proxy": proxy}))
        state = State(inventory, Config())
        states.append(state)
        connect_all(state)
        host = inventory.get_host("@local")
        with ctx_state.use(state), ctx_host.use(host):
            declare(PATHS)
        add_deploy(state, configure_apt_proxy)
        ops: list[tuple[str, list[object]]] = []
        with ctx_state.use(state), ctx_host.use(host):
            for op_hash in state.get_op_order():
                (name,) = state.get_op_meta(op_hash).names
                ops.append((name, list(state.get_op_data_for_host(host, op_hash).command_generator())))
        return ops

    yield run
    for state in states:
        for host in state.inventory:
            host.disconnect()


def _uploaded(commands: list[object]) -> str:
    for command in commands:
        src = getattr(command, "src", None)
        if isinstance(src, StringIO):
            return src.getvalue()
    raise AssertionError("nothing uploaded")


@pytest.mark.parametrize("proxy", [WITH_CREDENTIALS, Secret(WITH_CREDENTIALS)], ids=["plain", "from-vault"])
def test_credentials_stay_out_of_the_operation_and_the_file_is_0640(collect: Any, proxy: Any) -> None:
    [(name, commands)] = collect(proxy)
    assert name == "Configure the apt proxy | Use the apt proxy http://***@10.77.0.1:3142"
    assert (
        _uploaded(commands)
        == f'// Managed by lemfleet (setting apt_proxy).\nAcquire::http::Proxy "{WITH_CREDENTIALS}";\n'
    )
    shell = "\n".join(str(c) for c in commands if not hasattr(c, "src"))
    assert PASSWORD not in shell
    # Created 0600 before the content is written, then 0640 root:root and renamed into place.
    assert shell.startswith(f"install -m 600 /dev/null {PROXY_FILE}.lemfleet-new")
    assert f"chown root:root {PROXY_FILE}.lemfleet-new && chmod 640" in shell


def test_a_proxy_without_credentials_stays_readable(collect: Any) -> None:
    [(name, commands)] = collect("http://10.77.0.1:3142")
    assert name.endswith("Use the apt proxy http://10.77.0.1:3142")
    assert "chmod 644" in "\n".join(str(c) for c in commands)
