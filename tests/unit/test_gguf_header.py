"""A model is checked to be a GGUF on the controller before it is pushed (the live checks: tests/integration)."""

from __future__ import annotations

import struct

import pytest

from lemfleet.roles.gguf_header import check_file, header_problem
from lemfleet.roles.settings import SettingsError

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
