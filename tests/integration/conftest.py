"""Fixtures for the integration tier: a local hub with real repos, a real llama-server, a throwaway sshd.

These tests start servers on loopback (the fake Hugging Face hub, HTTP indexes, OpenSSH's sshd,
llama-server) and need what the test-bed tests provide: the build cache holding a llama-server of
the pinned llama.cpp (or ``LEMFLEET_LLAMA_SERVER``), llama.cpp's test vocab (taken from the pinned
sdist), and the Debian packages ``scripts/system-packages.sh`` installs. Every test here carries the
``integration`` marker. A missing prerequisite fails the test and names it: a live test that
quietly did not run proves nothing.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lemfleet.hub import DEFAULT_REPO
from lemfleet.sshtunnel import free_local_port
from lemfleet.testbed.tinygguf import write_tiny_gemma3
from tests.hubserver import HubServer
from tests.integration import llama_bin

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


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
    """A real llama-server of the pinned llama.cpp, looked up when first needed (tests/integration/llama_bin.py)."""
    binary = llama_bin.llama_server()
    if binary is None:
        pytest.fail(llama_bin.MISSING_SERVER)
    return binary


@pytest.fixture(scope="session")
def vocab_gguf() -> Path:
    """llama.cpp's SPM test vocab: from a hand-built tree when there is one, else from the pinned sdist."""
    return llama_bin.vocab()


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory, vocab_gguf: Path) -> Path:
    return write_tiny_gemma3(tmp_path_factory.mktemp("gguf") / "tiny.gguf", vocab_gguf)


SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    if not os.path.exists(SSHD):
        pytest.fail("no OpenSSH sshd here (apt-get install openssh-server; scripts/test.sh installs it as root)")
    work = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(work / name)], check=True)
    shutil.copy(work / "client_key.pub", work / "authorized_keys")
    port = free_local_port()
    config = work / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {work / 'host_key'}\n"
        f"AuthorizedKeysFile {work / 'authorized_keys'}\nPidFile {work / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n"
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                stderr = process.stderr.read().decode() if process.stderr else ""
                pytest.fail(f"sshd did not start: {stderr}")
            time.sleep(0.05)
    yield Sshd(port, getpass.getuser(), work / "client_key", work / "known_hosts")
    process.terminate()
    process.wait(timeout=10)
