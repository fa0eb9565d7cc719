"""model_delivery=host with a token: the token stays on the controller when the hub gives a signed link.

The host download is collected by pyinfra's own API against this machine (@local), with the real
hub client asking the local hub (tests/hubserver) for the gated repo's file. Nothing is executed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from typing import TYPE_CHECKING, Any

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.context import ctx_host, ctx_state

from lemfleet.roles.hoststate import declare
from lemfleet.roles.model_fetch import SECRET_DIR, host_download

if TYPE_CHECKING:
    from tests.integration.conftest import LocalHub

GOOD_TOKEN = "hf_lemfleetUnitGoodToken7f3a9c"  # tests/integration/conftest.py: may read acme/gated
REPO, FILE = "acme/gated", "model-Q4_K_M.gguf"


@dataclass(frozen=True)
class Model:
    url: str
    sha256: str


@pytest.fixture
def collect(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Iterator[Any]:
    monkeypatch.setenv("HF_TOKEN", GOOD_TOKEN)
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", local_hub.url)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@local")
    dest = str(tmp_path / "model.gguf")

    def run(model: Model) -> list[Any]:
        with ctx_state.use(state), ctx_host.use(host):
            declare([dest])
            meta = add_op(state, host_download, model=model, dest=dest)[host]
            return list(state.get_op_data_for_host(host, meta._hash).command_generator())

    yield run
    host.disconnect()


def _text(commands: list[Any]) -> str:
    return "\n".join(str(c) for c in commands)


def _uploads(commands: list[Any]) -> list[str]:
    return [c.src.getvalue() for c in commands if isinstance(getattr(c, "src", None), StringIO)]


def test_a_gated_lfs_file_is_fetched_by_its_signed_link_and_no_token_leaves(local_hub: LocalHub, collect: Any) -> None:
    url = f"{local_hub.url}/{REPO}/resolve/main/{FILE}"
    commands = collect(Model(url, local_hub.sha256(REPO, FILE)))
    text = _text(commands)
    assert _uploads(commands) == [] and GOOD_TOKEN not in text and SECRET_DIR not in text
    assert "--url 'http://127.0.0.1:" in text and "/lfs/" in text and "signature=" in text  # the CDN's link
    assert f"download of {url} failed" in text  # messages name the hub URL, not the signed link
    assert "failed" in text and "signature=" not in text.split("download of", 1)[1].split("failed", 1)[0]


def test_a_file_the_hub_serves_itself_gets_the_token_in_a_private_header_file(
    local_hub: LocalHub, collect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A hub (or mirror) that serves the bytes itself, with no redirect to another host.
    server = local_hub.server
    real = server.entries
    monkeypatch.setattr(server, "entries", lambda repo: [dataclasses.replace(e, lfs=False) for e in real(repo)])
    url = f"{local_hub.url}/{REPO}/resolve/main/{FILE}"
    commands = collect(Model(url, local_hub.sha256(REPO, FILE)))
    assert _uploads(commands) == [f"Authorization: Bearer {GOOD_TOKEN}\n"]
    shell = _text([c for c in commands if not isinstance(getattr(c, "src", None), StringIO)])
    assert GOOD_TOKEN not in shell  # only ever in the uploaded file
    assert f"mkdir -m 700 {SECRET_DIR} && install -m 600 /dev/null {SECRET_DIR}/auth-header" in shell
    assert f"-H @{SECRET_DIR}/auth-header" in shell and f"rm -rf {SECRET_DIR}" in shell
