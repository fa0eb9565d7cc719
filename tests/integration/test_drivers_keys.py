"""Repository keys by fingerprint and keyring packages by sha256, run for real with curl, gpg and sh.

The key server is loopback HTTP; the keys are made here with gpg. A swapped key (an attacker's, or a
file that also carries an extra key) must leave the keyring as it was and fail the host.
"""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.operation import add_op
from pyinfra.context import ctx_host, ctx_state

from lemfleet.roles.drivers.keys import download_script, key_script, pinned_download, pinned_key


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class KeyServer:
    root: Path
    url: str
    keys: dict[str, tuple[str, bytes]]  # name -> (fingerprint, armored key)

    def serve(self, name: str, *contents: bytes) -> str:
        (self.root / name).write_bytes(b"".join(contents))
        return f"{self.url}/{name}"


def _gpg(home: Path, *args: str) -> str:
    done = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *args],
        capture_output=True,
        check=True,
    )
    return done.stdout.decode()


@pytest.fixture(scope="module")
def made_keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    home = tmp_path_factory.mktemp("gnupg")
    home.chmod(0o700)
    keys = {}
    for name in ("vendor", "attacker"):
        _gpg(home, "--quick-gen-key", f"{name} <{name}@example.invalid>", "ed25519", "sign", "never")
        colons = _gpg(home, "--with-colons", "--list-keys", f"{name}@example.invalid")
        fingerprint = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
        armored = subprocess.run(
            ["gpg", "--homedir", str(home), "--armor", "--export", fingerprint], capture_output=True, check=True
        ).stdout
        keys[name] = (fingerprint, armored)
    return keys


@pytest.fixture
def server(tmp_path: Path, made_keys: dict[str, tuple[str, bytes]]) -> Iterator[KeyServer]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield KeyServer(root, f"http://127.0.0.1:{httpd.server_address[1]}", made_keys)
    httpd.shutdown()
    httpd.server_close()


def _sh(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={**os.environ, "LC_ALL": "C"})


def _fingerprints(keyring: Path) -> list[str]:
    home = keyring.parent / "check-home"
    home.mkdir(mode=0o700, exist_ok=True)
    colons = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--show-keys", "--with-colons", str(keyring)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = colons.splitlines()
    return [lines[i + 1].split(":")[9] for i, line in enumerate(lines) if line.startswith("pub:")]


def test_the_pinned_key_is_dearmored_into_the_keyring(server: KeyServer, tmp_path: Path) -> None:
    fingerprint, armored = server.keys["vendor"]
    url = server.serve("rocm.gpg.key", armored)
    keyring = tmp_path / "keyrings" / "rocm.gpg"
    keyring.parent.mkdir()
    done = _sh(key_script(url, str(keyring), (fingerprint.lower(),), protocols="http"))
    assert done.returncode == 0, done.stderr
    assert keyring.read_bytes()[:1] != b"-"  # binary, as apt's signed-by wants
    assert _fingerprints(keyring) == [fingerprint]
    assert sorted(p.name for p in keyring.parent.iterdir()) == ["check-home", "rocm.gpg"]


@pytest.mark.parametrize("served", [("attacker",), ("vendor", "attacker")], ids=["swapped", "extra-key"])
def test_any_other_key_leaves_the_keyring_as_it_was(server: KeyServer, tmp_path: Path, served: tuple[str, ...]) -> None:
    fingerprint = server.keys["vendor"][0]
    url = server.serve("rocm.gpg.key", *(server.keys[name][1] for name in served))
    keyring = tmp_path / "keyrings" / "rocm.gpg"
    keyring.parent.mkdir()
    keyring.write_bytes(b"the keyring apt trusts today")
    done = _sh(key_script(url, str(keyring), (fingerprint,), protocols="http"))
    assert done.returncode == 1
    assert server.keys["attacker"][0] in done.stderr and f"not the pinned {fingerprint}" in done.stderr
    assert keyring.read_bytes() == b"the keyring apt trusts today"
    assert [p.name for p in keyring.parent.iterdir()] == ["rocm.gpg"]


def test_a_keyring_package_is_placed_only_with_its_pinned_sha256(server: KeyServer, tmp_path: Path) -> None:
    body = b"!<arch>\ndebian-binary   a keyring package\n"
    url = server.serve("cuda-keyring_1.1-1_all.deb", body)
    dest = tmp_path / "downloads" / "cuda-keyring_1.1-1_all.deb"
    dest.parent.mkdir()
    wrong = _sh(download_script(url, str(dest), "0" * 64, protocols="http"))
    assert wrong.returncode == 1 and "not the pinned " + "0" * 64 in wrong.stderr
    assert list(dest.parent.iterdir()) == []
    right = _sh(download_script(url, str(dest), hashlib.sha256(body).hexdigest(), protocols="http"))
    assert right.returncode == 0, right.stderr
    assert dest.read_bytes() == body


def test_the_operations_do_nothing_once_the_pinned_files_are_there(server: KeyServer, tmp_path: Path) -> None:
    fingerprint, armored = server.keys["vendor"]
    keyring, deb = tmp_path / "rocm.gpg", tmp_path / "keyring.deb"
    assert _sh(key_script(server.serve("k", armored), str(keyring), (fingerprint,), protocols="http")).returncode == 0
    deb.write_bytes(b"deb")
    inventory = Inventory((["@local"], {}))
    state = State(inventory, Config())
    connect_all(state)
    host = inventory.get_host("@local")

    def commands(op: object, **kwargs: object) -> list[str]:
        with ctx_state.use(state), ctx_host.use(host):
            meta = add_op(state, op, **kwargs)[host]
            return [str(c) for c in state.get_op_data_for_host(host, meta._hash).command_generator()]

    assert commands(pinned_key, url="https://x/k", dest=str(keyring), fingerprints=(fingerprint,)) == []
    other = server.keys["attacker"][0]
    assert commands(pinned_key, url="https://x/k", dest=str(keyring), fingerprints=(other,)) != []
    assert commands(pinned_download, url="https://x/d", dest=str(deb), sha256=hashlib.sha256(b"deb").hexdigest()) == []
    assert commands(pinned_download, url="https://x/d", dest=str(deb), sha256="1" * 64) != []
    host.disconnect()
