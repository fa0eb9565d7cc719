"""Find a GGUF on the Hugging Face hub (or a mirror) and bring it into the controller's cache.

:func:`resolve_model` turns the model settings (repo, file or quant, revision)
into one exact file: its commit, URL, sha256 and size, taken from the hub's own
metadata (for an LFS file the ``X-Linked-Etag`` is its sha256). :func:`download`
brings that file into the ``huggingface_hub`` cache and checks its sha256.

``huggingface_hub`` supplies the protocol, the cache, ``HF_TOKEN``,
``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, the retries within one call and the
progress bar. It deletes its partial file when a download fails, though, so a
1 GB transfer cut off near its end would start again from zero. Here the bytes
go to a partial file of our own beside the cache's blobs, through the client's
``http_get`` with a ``Range`` from where the last run stopped, and the file is
only moved into the cache once its sha256 matches.

Errors are :class:`HubError` (or :class:`lemfleet.roles.settings.SettingsError` for a
setting that names something the repo lacks) with a message saying what to do
(:mod:`lemfleet.hub_errors`). The token never appears in them, nor in the logs.
The cache is the client's own, read through its API (:mod:`lemfleet.hub_cache`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import errors as hf_errors
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.utils import WeakFileLock, build_hf_headers

from lemfleet.hub_cache import cache_root, cached_file, cached_revision, forget, lfs_sha256, sha256_file
from lemfleet.hub_errors import OFFLINE_ERRORS, HubError, IntegrityError, explain
from lemfleet.quants import choose_file, model_files

__all__ = [
    "DEFAULT_FILE",
    "DEFAULT_REPO",
    "PARTIAL_SUFFIX",
    "HubError",
    "IntegrityError",
    "ResolvedModel",
    "download",
    "explain",
    "resolve_model",
    "sha256_file",
]

DEFAULT_REPO = "lthn/LEM-Gemma3-1B-GGUF"
DEFAULT_FILE = "LEM-Gemma3-1B-Q4_K_M.gguf"
PARTIAL_SUFFIX = ".lemfleet-partial"
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """One exact GGUF: ``revision`` is a commit id, ``url`` resolves at that commit."""

    repo: str
    revision: str
    filename: str
    url: str
    sha256: str
    size: int
    files: tuple[tuple[str, int], ...] = ()  # the repo's model GGUFs and sizes, for quant=auto
    ref: str = "main"  # the branch, tag or commit asked for
    reason: str = ""  # why this file, in words for the plan


def resolve_model(
    repo: str = DEFAULT_REPO,
    filename: str | None = None,
    quant: str | None = None,
    revision: str = "main",
    endpoint: str | None = None,
    token: str | None = None,
    *,
    sha256: str | None = None,
    memory_budget_bytes: int | None = None,
    context_bytes_estimate: int = 0,
    cache_dir: Path | str | None = None,
) -> ResolvedModel:
    """Resolve the settings to one file: online, or from the cache when offline or unreachable.

    ``filename`` wins over ``quant``; with neither, the repo's Q4_K_M (or its
    only GGUF). ``quant="auto"`` needs ``memory_budget_bytes``. ``sha256`` is a
    pin that the hub must agree with.
    """
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    choice = (filename, quant, memory_budget_bytes, context_bytes_estimate)
    if constants.HF_HUB_OFFLINE:
        return _resolve_cached(repo, choice, revision, endpoint, sha256, cache_dir, None)
    try:
        api = HfApi(endpoint=endpoint, token=token)
        info = api.model_info(repo, revision=revision, files_metadata=True)
        files = [
            (s.rfilename, s.lfs.size if s.lfs else s.size or 0)
            for s in info.siblings or []
            if s.rfilename.endswith(".gguf")
        ]
        chosen, reason = choose_file(repo, files, *choice)
        url = hf_hub_url(repo, chosen, revision=info.sha, endpoint=endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except OFFLINE_ERRORS as err:
        return _resolve_cached(repo, choice, revision, endpoint, sha256, cache_dir, err)
    except hf_errors.HfHubHTTPError as err:
        raise explain(err, repo, filename, revision, endpoint, token) from err
    hub_sha256 = lfs_sha256(meta.etag)
    if hub_sha256 is None:  # a git (non-LFS) file: its ETag is a sha1; or not a hash at all
        if not sha256:
            raise HubError(f"{repo}/{chosen} is not an LFS file, so set model_sha256 for it")
        hub_sha256 = sha256.lower()
    if sha256 and sha256.lower() != hub_sha256:
        raise IntegrityError(
            f"model_sha256={sha256!r} does not match {repo}/{chosen} at {info.sha}, whose "
            f"sha256 is {hub_sha256}; fix the pin, or set model_revision to the commit you checked"
        )
    size = int(meta.size or 0)
    return _resolved(repo, str(info.sha), chosen, url, hub_sha256, size, files, revision, reason)


def _resolved(
    repo: str,
    commit: str,
    chosen: str,
    url: str,
    sha256: str,
    size: int,
    files: list[tuple[str, int]],
    ref: str,
    reason: str,
) -> ResolvedModel:
    models = model_files(repo, files)
    pairs = tuple((f.filename, f.size) for f in models)
    return ResolvedModel(repo, commit, chosen, url, sha256, size, pairs, ref, reason)


def _resolve_cached(
    repo: str,
    choice: tuple[str | None, str | None, int | None, int],
    revision: str,
    endpoint: str,
    sha256: str | None,
    cache_dir: Path | str | None,
    error: Exception | None,
) -> ResolvedModel:
    why = "HF_HUB_OFFLINE is set"
    if error is not None:
        why = f"{endpoint} cannot be reached ({type(error).__name__})"
    found = cached_revision(repo, revision, cache_dir)
    if found is None:
        raise HubError(
            f"{why} and {repo}@{revision} is not in the cache at {cache_root(cache_dir)}; "
            "warm the cache by running once where the hub or HF_ENDPOINT mirror is reachable, "
            "set HF_ENDPOINT to a reachable mirror, or use a local model path"
        )
    commit, cached = found
    files = [(name, size) for name, (size, _) in cached.items()]
    chosen, reason = choose_file(repo, files, *choice)
    size, blob_sha = cached[chosen]
    if sha256 and sha256.lower() != blob_sha:
        raise IntegrityError(f"model_sha256={sha256!r} does not match the cached {chosen}")
    logger.warning("%s: using %s/%s at %s from the cache", why, repo, chosen, commit)
    url = hf_hub_url(repo, chosen, revision=commit, endpoint=endpoint)
    reason += " (from the cache: offline)"
    return _resolved(repo, commit, chosen, url, blob_sha, size, files, revision, reason)


def download(resolved: ResolvedModel, cache_dir: Path | str | None = None, token: str | None = None) -> Path:
    """The verified file in the controller's cache, downloading or resuming it if needed.

    ``HF_HUB_OFFLINE=1`` serves only from the cache. A cached copy whose
    sha256 is wrong is removed and fetched again; a fetched file whose sha256
    is wrong is removed and :class:`IntegrityError` is raised.
    """
    root = cache_root(cache_dir)
    endpoint = resolved.url.split(f"/{resolved.repo}/resolve/", 1)[0]
    cached = cached_file(resolved, root)
    if cached is not None:
        if sha256_file(cached) == resolved.sha256:
            return cached
        logger.warning("cached %s does not match sha256 %s; fetching it again", cached, resolved.sha256)
        forget(resolved, root)
    if constants.HF_HUB_OFFLINE:
        raise HubError(
            f"HF_HUB_OFFLINE is set and {resolved.repo}/{resolved.filename} is not in the cache "
            f"at {root}; warm the cache by running once with the hub or a mirror reachable"
        )
    blob = root / repo_folder_name(repo_id=resolved.repo, repo_type="model") / "blobs" / resolved.sha256
    fetched = not blob.is_file()
    try:
        if fetched:
            _fetch(resolved, blob, token, endpoint)
        path = hf_hub_download(
            resolved.repo,
            resolved.filename,
            revision=resolved.ref,
            cache_dir=root,
            token=token,
            endpoint=endpoint,
        )
    except OFFLINE_ERRORS as err:
        raise HubError(
            f"{endpoint} cannot be reached ({type(err).__name__}) while fetching "
            f"{resolved.filename}; check the network or proxy, or set HF_ENDPOINT to a reachable "
            "mirror; a partial file is kept and the next run resumes it"
        ) from err
    except hf_errors.RevisionNotFoundError as err:
        raise HubError(
            f"{resolved.repo} no longer has commit {resolved.revision} (resolved from "
            f"{resolved.ref!r}): its history was rewritten; run again to resolve it anew"
        ) from err
    except hf_errors.HfHubHTTPError as err:
        raise explain(err, resolved.repo, resolved.filename, resolved.ref, endpoint, token) from err
    # A blob fetched here was verified before it was moved in; one found there is checked now.
    verified = fetched and Path(path).resolve().name == resolved.sha256
    if not verified and sha256_file(path) != resolved.sha256:
        raise IntegrityError(f"{resolved.repo}/{resolved.filename} changed on the hub after resolving; run again")
    return Path(path)


def _fetch(resolved: ResolvedModel, blob: Path, token: str | None, endpoint: str) -> None:
    """Fill ``<blob>.lemfleet-partial`` from where it stopped, verify it, move it to ``blob``."""
    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    partial.parent.mkdir(parents=True, exist_ok=True)
    meta = get_hf_file_metadata(resolved.url, token=token, endpoint=endpoint)
    if lfs_sha256(meta.etag) != resolved.sha256:
        raise IntegrityError(f"{resolved.url} now has ETag {meta.etag!r}, not {resolved.sha256}; resolve again")
    headers = build_hf_headers(token=token)
    if urlsplit(meta.location).netloc != urlsplit(resolved.url).netloc:
        headers.pop("authorization", None)  # a signed CDN URL; the token stays with the hub
    # The lock huggingface_hub itself takes for this blob, so neither writes it twice at once.
    lock = blob.parents[2] / ".locks" / blob.parents[1].name / f"{resolved.sha256}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(lock):
        have = partial.stat().st_size if partial.exists() else 0
        if have > resolved.size:
            partial.unlink()
            have = 0
        if have:
            logger.info("resuming %s at byte %d of %d", resolved.filename, have, resolved.size)
        with partial.open("ab") as handle:
            try:
                http_get(
                    meta.location,
                    handle,
                    resume_size=have,
                    headers=headers,
                    expected_size=resolved.size,
                    displayed_filename=resolved.filename,
                )
            except (OSError, httpx2.TransportError) as err:
                status = getattr(getattr(err, "response", None), "status_code", None)
                why = f"HTTP {status}" if status else f"{type(err).__name__}: {err}"
                raise HubError(
                    f"the transfer of {resolved.filename} stopped at byte {handle.tell()} of "
                    f"{resolved.size} ({why}); the partial file is kept at {partial} and the "
                    "next run resumes it"
                ) from err
        actual = sha256_file(partial)
        if actual != resolved.sha256:
            partial.unlink()
            raise IntegrityError(
                f"{resolved.repo}/{resolved.filename} arrived with sha256 {actual}, not "
                f"{resolved.sha256}; the file was removed: run again, check any HF_ENDPOINT mirror"
            )
        os.replace(partial, blob)
