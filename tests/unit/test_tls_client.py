"""The fingerprint form clients accept."""

from __future__ import annotations

import pytest

from lemfleet.tls_client import client_verify, normalise


def test_fingerprints_are_normalised_to_lowercase_pairs() -> None:
    assert normalise("AB" * 32) == ":".join(["ab"] * 32)
    assert normalise(":".join(["Cd"] * 32)) == ":".join(["cd"] * 32)


@pytest.mark.parametrize("bad", ["", "ab" * 31, "zz" * 32, "ab" * 33])
def test_anything_else_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="not a sha256 fingerprint"):
        normalise(bad)


def test_plain_http_gets_no_tls_context() -> None:
    assert client_verify("http://127.0.0.1:1", fingerprint="ab" * 32) is True
