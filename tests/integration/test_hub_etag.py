"""A hash from the network names a file only when it is exactly 64 hex digits.

The hub's ETag (``X-Linked-Etag`` for an LFS file) becomes ``blobs/<sha256>`` in the controller's
cache and ``<sha256[:12]>-<name>`` on each host. A hub or mirror that answers with anything else
(``../``, quotes, a shell word) must never get that far.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lemfleet.hub import DEFAULT_FILE, DEFAULT_REPO, HubError, resolve_model
from lemfleet.hub_cache import lfs_sha256

if TYPE_CHECKING:
    from tests.integration.conftest import LocalHub

GOOD = "ab" * 32
HOSTILE = ("../" * 21 + "x", "$(touch${IFS}/tmp/pwned)".ljust(64, "a"), "g" * 64, GOOD + "0", GOOD[:-1])


@pytest.fixture(autouse=True)
def _no_ambient_token(no_hf_token: None) -> None:
    """Every test here sees only the tokens it passes or sets."""


@pytest.mark.parametrize(
    ("etag", "sha256"),
    [(GOOD, GOOD), (f'"{GOOD}"', GOOD), (f'W/"{GOOD}"', GOOD), (GOOD.upper(), GOOD), (None, None)]
    + [(text, None) for text in HOSTILE],
)
def test_only_64_hex_digits_count_as_a_sha256(etag: str | None, sha256: str | None) -> None:
    assert lfs_sha256(etag) == sha256


@pytest.mark.parametrize("etag", HOSTILE)
def test_a_hub_answering_a_hostile_etag_is_not_believed(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, etag: str
) -> None:
    server = local_hub.server
    real_entries = server.entries
    monkeypatch.setattr(
        server, "entries", lambda repo: [dataclasses.replace(e, sha256=etag) for e in real_entries(repo)]
    )
    with pytest.raises(HubError, match=f"{DEFAULT_REPO}/{DEFAULT_FILE} is not an LFS file, so set model_sha256"):
        resolve_model(endpoint=local_hub.url, cache_dir=tmp_path)
    assert not (Path("/tmp") / "pwned").exists()
