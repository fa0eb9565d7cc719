"""The llama-cpp-python sdist is fetched as bytes and kept only when its sha256 matches; nothing in it runs.

The index is a real one on loopback (the simple repository API as PyPI serves it) offering a
hostile sdist whose build backend writes a marker file when imported. ``pip download`` runs that
backend before any hash could be checked (the last test shows it); lemfleet's fetch must not.
The index pages' parsing alone: ``tests/unit/test_sdist_index.py``.
"""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lemfleet.roles import llama_sources
from lemfleet.roles.settings import SettingsError

VERSION = "9.9.9"
NAME = f"llama_cpp_python-{VERSION}.tar.gz"


@dataclass
class Index:
    url: str
    root: Path
    marker: Path
    sha256: str

    def list_with(self, sha256: str) -> None:
        """Make the project page state ``sha256`` for the file (a lying or stale index)."""
        page = self.root / "simple" / "llama-cpp-python" / "index.html"
        page.write_text(f'<html><body><a href="../../files/{NAME}#sha256={sha256}">{NAME}</a></body></html>\n')


def _hostile_sdist(marker: Path) -> bytes:
    """An sdist whose in-tree build backend writes ``marker`` as soon as anything imports it."""
    files = {
        "pyproject.toml": (
            '[build-system]\nrequires = []\nbuild-backend = "backend"\nbackend-path = ["."]\n'
            f'[project]\nname = "llama-cpp-python"\nversion = "{VERSION}"\n'
        ),
        "backend.py": f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n",
        "PKG-INFO": f"Metadata-Version: 2.1\nName: llama-cpp-python\nVersion: {VERSION}\n",
        "vendor/llama.cpp/CMakeLists.txt": "project(llama.cpp)\n",
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"llama_cpp_python-{VERSION}/{path}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    root = tmp_path / "index"
    (root / "simple" / "llama-cpp-python").mkdir(parents=True)
    (root / "files").mkdir()
    marker = tmp_path / "backend-ran"
    sdist = _hostile_sdist(marker)
    (root / "files" / NAME).write_bytes(sdist)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    made = Index(
        f"http://127.0.0.1:{server.server_address[1]}/simple/", root, marker, hashlib.sha256(sdist).hexdigest()
    )
    made.list_with(made.sha256)
    yield made
    server.shutdown()
    server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(llama_sources, "CACHE", tmp_path / "cache")
    return tmp_path / "cache"


def _settings(index_url: str, sha256: str | None) -> dict[str, object]:
    return {
        "llama_cpp_sdist_version": VERSION,
        "llama_cpp_sdist_sha256": sha256,
        "llama_cpp_pip_index_url": index_url,
    }


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_the_pinned_sdist_is_fetched_and_nothing_in_it_runs(index: Index, cache: Path) -> None:
    source = llama_sources.sdist_source(_settings(index.url, index.sha256))
    assert source.archive == cache / "sdist" / NAME and source.sha256 == index.sha256
    assert source.strip_prefix == f"llama_cpp_python-{VERSION}/vendor/llama.cpp"
    assert not index.marker.exists()
    assert _leftovers(cache) == [NAME]


def test_a_file_index_works_too(index: Index, cache: Path) -> None:
    source = llama_sources.sdist_source(_settings((index.root / "simple").as_uri() + "/", index.sha256))
    assert source.sha256 == index.sha256 and not index.marker.exists()


def test_a_wrong_pin_keeps_nothing_and_runs_nothing(index: Index, cache: Path) -> None:
    pin = "0" * 64
    with pytest.raises(SettingsError, match=f"llama_cpp_sdist_sha256='{pin}' does not match {NAME}"):
        llama_sources.sdist_source(_settings(index.url, pin))
    assert _leftovers(cache) == [] and not index.marker.exists()


def test_an_index_that_lies_about_the_hash_is_caught_by_the_bytes(index: Index, cache: Path) -> None:
    pin = "1" * 64
    index.list_with(pin)  # the page claims the pin; the file is still the hostile one
    with pytest.raises(SettingsError, match=f"its sha256 is {index.sha256}\\); the file was removed"):
        llama_sources.sdist_source(_settings(index.url, pin))
    assert _leftovers(cache) == [] and not index.marker.exists()


def test_an_unpinned_sdist_says_what_to_pin(index: Index, cache: Path) -> None:
    with pytest.raises(SettingsError, match=f"llama_cpp_sdist_sha256 is not set.*It has sha256 {index.sha256}"):
        llama_sources.sdist_source(_settings(index.url, None))
    assert _leftovers(cache) == [] and not index.marker.exists()


def test_a_missing_version_is_named(index: Index, cache: Path) -> None:
    with pytest.raises(SettingsError, match=r"llama_cpp_python-1\.2\.3\.tar\.gz is not listed at"):
        llama_sources.sdist_source({**_settings(index.url, index.sha256), "llama_cpp_sdist_version": "1.2.3"})


def test_pip_download_would_have_run_the_backend(index: Index, tmp_path: Path) -> None:
    """Why lemfleet does not use ``pip download``: it runs the sdist's backend before any hash check."""
    pip = [sys.executable, "-m", "pip", "download", "--isolated", "--no-deps", "--no-binary", ":all:"]
    subprocess.run(
        [*pip, "--index-url", index.url, "-d", str(tmp_path / "pip"), f"llama-cpp-python=={VERSION}"],
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert index.marker.read_text() == "ran"
