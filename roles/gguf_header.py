"""Is this file a GGUF? Checked on the controller before a model is pushed or named to a host.

A GGUF starts with the magic ``GGUF`` and a little-endian uint32 version
(ggml's ``gguf.cpp``: ``GGUF_MAGIC``, ``GGUF_VERSION`` 3; version 1 is no
longer read). The usual impostor is a git-LFS pointer, the small text file a
``git clone`` without ``git lfs`` leaves where the model should be; it gets a
message of its own, because its sha256 and size say nothing useful.
"""

from __future__ import annotations

import struct
from pathlib import Path

from lemfleet.errors import SettingsError

MAGIC = b"GGUF"
VERSIONS = (2, 3)
LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def header_problem(head: bytes, what: str) -> str | None:
    """Why the first bytes ``head`` of ``what`` are not a GGUF llama-server reads; None when they are."""
    if head.startswith(LFS_POINTER):
        return (
            f"{what} is a git-LFS pointer file, not the model: fetch the real file "
            "(git lfs pull, or download it from the hub) and point lemfleet at that"
        )
    if len(head) < 8 or head[:4] != MAGIC:
        return f"{what} is not a GGUF file (it does not start with the magic 'GGUF': {head[:8]!r})"
    (version,) = struct.unpack("<I", head[4:8])
    if version not in VERSIONS:
        return f"{what} is GGUF version {version}; accepted: version {' or '.join(map(str, VERSIONS))}"
    return None


def check_file(path: Path, setting: str) -> None:
    """Raise :class:`SettingsError`, naming ``setting``, unless ``path`` starts like a GGUF."""
    with path.open("rb") as fh:
        head = fh.read(len(LFS_POINTER))
    problem = header_problem(head, f"{setting}: {path}")
    if problem:
        raise SettingsError([problem])
