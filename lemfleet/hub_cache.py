"""The controller's ``huggingface_hub`` cache, read through the client's public API.

The cache is the client's own (``HF_HUB_CACHE``, snapshots linking to blobs
named by sha256), so a model fetched by lemfleet is found by any other tool
using the hub client, and the other way round. These helpers find a cached
file or revision, remove one that failed verification, and hash files.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Protocol

from huggingface_hub import constants, scan_cache_dir, try_to_load_from_cache
from huggingface_hub import errors as hf_errors


class CachedModel(Protocol):
    """What locates one file in the cache (a :class:`lemfleet.hub.ResolvedModel`)."""

    @property
    def repo(self) -> str: ...
    @property
    def filename(self) -> str: ...
    @property
    def revision(self) -> str: ...


SHA256 = re.compile(r"[0-9a-f]{64}")


def lfs_sha256(etag: str | None) -> str | None:
    """The sha256 an ETag (or a blob's file name) states, or None when it is not exactly 64 hex digits.

    Only then may it name a file (``blobs/<sha256>``, ``<sha256[:12]>-<name>`` on a host): an ETag
    comes from the network, and ``../`` or a quote in one would otherwise reach a path or a command.
    """
    text = (etag or "").strip().removeprefix("W/").strip('"').lower()
    return text if SHA256.fullmatch(text) else None


def sha256_file(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def cache_root(cache_dir: Path | str | None) -> Path:
    """``cache_dir``, or the client's ``HF_HUB_CACHE``."""
    return Path(cache_dir or constants.HF_HUB_CACHE)


def cached_file(model: CachedModel, root: Path) -> Path | None:
    """The snapshot path of ``model`` at its commit, if the cache has it."""
    found = try_to_load_from_cache(model.repo, model.filename, cache_dir=root, revision=model.revision)
    return Path(found) if isinstance(found, str) else None


def forget(model: CachedModel, root: Path) -> None:
    """Remove a cached file that failed verification: its snapshot link and its blob."""
    pointer = cached_file(model, root)
    if pointer is not None:
        pointer.resolve().unlink(missing_ok=True)
        pointer.unlink(missing_ok=True)


def cached_revision(
    repo: str, revision: str, cache_dir: Path | str | None
) -> tuple[str, dict[str, tuple[int, str]]] | None:
    """``(commit, {filename: (size, sha256)})`` of the cached GGUFs of ``repo`` at ``revision``."""
    try:
        cache = scan_cache_dir(cache_root(cache_dir))
    except hf_errors.CacheNotFound:
        return None
    for cached_repo in cache.repos:
        if cached_repo.repo_id != repo or cached_repo.repo_type != "model":
            continue
        for rev in cached_repo.revisions:
            if revision in rev.refs or rev.commit_hash == revision:
                files = {}
                for file in rev.files:
                    name = file.file_path.relative_to(rev.snapshot_path).as_posix()
                    if name.endswith(".gguf"):
                        sha = file.blob_path.name
                        sha = lfs_sha256(sha) or sha256_file(file.blob_path)
                        files[name] = (file.size_on_disk, sha)
                return rev.commit_hash, files
    return None
