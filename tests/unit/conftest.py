"""Fixtures for the model tests: a local hub with real repos, and the tiny gemma3 GGUF."""

from __future__ import annotations

import hashlib
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lemfleet.hub import DEFAULT_REPO
from lemfleet.testbed.tinygguf import write_tiny_gemma3
from tests.hubserver import HubServer
from tests.unit import llama_bin

# llama.cpp's SPM test vocab: from a hand-built tree when there is one, else from the pinned sdist.
VOCAB_GGUF = llama_bin.vocab()

LEM_REPO = DEFAULT_REPO
GOOD_TOKEN = "hf_lemfleetUnitGoodToken7f3a9c"  # may read the gated and private repos
OTHER_TOKEN = "hf_lemfleetUnitOtherToken51be0"  # a valid account without access
MIB = 1024 * 1024

# (repo, file) -> size; contents are seeded random bytes. BIG spans several of the client's
# 10 MiB download chunks, so a cut transfer leaves something to resume.
REPO_FILES = {
    (LEM_REPO, "LEM-Gemma3-1B-Q4_K_M.gguf"): 1_000_003,
    (LEM_REPO, "LEM-Gemma3-1B-Q8_0.gguf"): 1_500_007,
    (LEM_REPO, "LEM-Gemma3-1B-BF16.gguf"): 2_500_011,
    (LEM_REPO, "mmproj-LEM-Gemma3-1B-F16.gguf"): 300_001,
    (LEM_REPO, "README.md"): 1_234,
    ("acme/gated", "model-Q4_K_M.gguf"): 400_009,
    ("acme/private", "model-Q4_K_M.gguf"): 400_013,
    ("acme/big-GGUF", "big-Q4_K_M.gguf"): 3 * 10 * MIB + 12_345,
}


@dataclass
class LocalHub:
    """A running :class:`HubServer` over :data:`REPO_FILES`."""

    server: HubServer
    root: Path
    good_token: str = GOOD_TOKEN  # may read acme/gated and acme/private
    other_token: str = OTHER_TOKEN  # a valid account without access to them

    @property
    def url(self) -> str:
        return self.server.url

    def path(self, repo: str, filename: str) -> Path:
        return self.root / repo / filename

    def sha256(self, repo: str, filename: str) -> str:
        return hashlib.sha256(self.path(repo, filename).read_bytes()).hexdigest()

    def cdn_gets(self) -> list[str | None]:
        """The ``Range`` header of every CDN GET so far (``None`` for a whole file)."""
        return [r.range for r in self.server.requests if r.server == "cdn" and r.method == "GET"]


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hub")
    for index, ((repo, filename), size) in enumerate(sorted(REPO_FILES.items())):
        path = root / repo / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random.Random(index).randbytes(size))
    return root


@pytest.fixture
def local_hub(hub_root: Path) -> Iterator[LocalHub]:
    server = HubServer(
        hub_root,
        tokens=[OTHER_TOKEN],
        gated={"acme/gated": [GOOD_TOKEN]},
        private={"acme/private": [GOOD_TOKEN]},
    )
    with server:
        yield LocalHub(server, hub_root)


@pytest.fixture
def no_hf_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No token from the environment or a stored login, and online whatever the shell says."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)


@pytest.fixture
def free_port() -> Callable[[], int]:
    def pick() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    return pick


@pytest.fixture(scope="session")
def llama_server_bin() -> Path:
    """A real llama-server of the pinned llama.cpp, looked up when first needed (tests/unit/llama_bin.py)."""
    binary = llama_bin.llama_server()
    if binary is None:
        pytest.fail(llama_bin.MISSING_SERVER)
    return binary


@pytest.fixture(scope="session")
def vocab_gguf() -> Path:
    return VOCAB_GGUF


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, vocab_gguf: Path) -> Path:
    return write_tiny_gemma3(tmp_path_factory.mktemp("gguf") / "tiny.gguf", vocab_gguf)
