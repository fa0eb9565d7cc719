"""A model is checked to be a GGUF on the controller before it is pushed."""

from __future__ import annotations

import functools
import http.server
import struct
import threading

import pytest

from lemfleet.roles.gguf_header import check_file, header_problem
from lemfleet.roles.model_source import resolve
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate

LFS = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4d5a2b0d0f6a7c1e3b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a\nsize 806058240\n"
)


def test_a_gguf_header_passes(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\0" * 64)
    check_file(path, "model_path")


def test_a_git_lfs_pointer_is_named_as_such(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(LFS)
    with pytest.raises(SettingsError, match=r"model_path.*git-LFS pointer file, not the model"):
        check_file(path, "model_path")


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        (b"", "not a GGUF"),
        (b"<html>", "not a GGUF"),
        (b"GGML" + struct.pack("<I", 3), "not a GGUF"),
        (b"GGUF" + struct.pack("<I", 1), "version 1"),
        (b"GGUF" + struct.pack("<I", 99), "version 99"),
    ],
)
def test_other_files_are_refused_with_the_reason(head, reason):
    assert reason in (header_problem(head, "model_url: https://h/m.gguf") or "")


def test_a_real_gguf_passes(tiny_gguf):
    """The GGUF the test suite writes with the gguf package passes the same check."""
    check_file(tiny_gguf, "model_path")


@pytest.fixture
def served(tmp_path):
    """A loopback HTTP server over ``tmp_path``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_model_the_hosts_download_is_checked_on_the_controller_first(served):
    """model_delivery=host: the controller reads the first bytes of the URL, so a pointer never reaches a host."""
    root, base = served
    (root / "pointer-Q4_K_M.gguf").write_bytes(LFS)
    (root / "real-Q4_K_M.gguf").write_bytes(b"GGUF" + struct.pack("<I", 3) + b"\0" * 64)
    common = {"model_source": "url", "model_sha256": "0" * 64, "model_delivery": "host"}
    with pytest.raises(SettingsError, match="git-LFS pointer"):
        resolve(validate({**common, "model_url": f"{base}/pointer-Q4_K_M.gguf"}))
    model = resolve(validate({**common, "model_url": f"{base}/real-Q4_K_M.gguf"}))
    assert (model.filename, model.alias, model.url) == ("real-Q4_K_M.gguf", "real", f"{base}/real-Q4_K_M.gguf")
