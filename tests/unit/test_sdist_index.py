"""Reading a package index's pages for the llama-cpp-python sdist, without a server (live: tests/integration)."""

from __future__ import annotations

import pytest

from lemfleet.roles.sdist_fetch import PYPI_SIMPLE, find_file, pip_index_url

NAME = "llama_cpp_python-9.9.9.tar.gz"
SHA256 = "5e" * 32


def test_pep_691_json_pages_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    page = b'{"files": [{"filename": "%s", "url": "../../files/%s", "hashes": {"sha256": "%s"}}]}' % (
        NAME.encode(),
        NAME.encode(),
        SHA256.encode(),
    )
    monkeypatch.setattr(
        "lemfleet.roles.sdist_fetch._read",
        lambda url, accept=None: (page, "application/vnd.pypi.simple.v1+json", url),
    )
    url, listed = find_file("https://mirror.example/simple", "llama_cpp.python", NAME)
    assert (url, listed) == (f"https://mirror.example/files/{NAME}", SHA256)


def test_the_index_defaults_to_pips_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple/")
    assert pip_index_url() == "https://mirror.example/simple/"
    monkeypatch.delenv("PIP_INDEX_URL")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    assert pip_index_url() == PYPI_SIMPLE
