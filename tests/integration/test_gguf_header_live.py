"""The GGUF check on real files: the tiny gemma3 GGUF, and a model served over loopback HTTP."""

from __future__ import annotations

import functools
import http.server
import struct
import threading

import pytest

from lemfleet.roles.gguf_header import check_file
from lemfleet.roles.model_source import resolve
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate
from tests.unit.test_gguf_header import LFS


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
