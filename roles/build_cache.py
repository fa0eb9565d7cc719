"""The controller's build cache: each artifact with the sha256 its building host recorded (pure file handling).

One entry per build id in ``llama_cpp_build_cache``::

    <build-id>.tar.gz   the build directory, packed on the host that compiled it
    <build-id>.json     its manifest: the bundle's sha256 and every file's, as that host recorded them

The building host writes ``SHA256SUMS`` into the build directory when the
build finishes (roles/llama_cpp.py ``build_script``) and the bundle's sha256
beside the bundle when it packs it. The controller fetches all three, keeps
the bundle only when its sha256 equals the host's record, and writes the
manifest before the bundle is renamed into place, so an entry is never seen
without one. Every host that receives the bundle checks it against the
manifest's sha256 before unpacking it, and the unpacked files against the
per-file sums (roles/build_ops.py); a mismatch is refused and nothing is
installed.

Entries from lemfleet before this manifest existed (a bundle with no
``.json``) are adopted once: the controller computes the sha256 and writes the
manifest with ``recorded_on: controller``; from then on they are checked like
any other. Why that is trusted rather than rebuilt: such a bundle was written
by this controller user's own earlier run, fetched from a host it deployed,
over the SSH connection, into its private cache; adopting it pins that content
from now on. What adoption cannot prove (that nothing replaced the file since)
is open only to someone who can already write this user's home, and so
lemfleet's own code. Delete the two files to have the build compiled again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from lemfleet.roles.llama_sources import file_sha256

SHA256 = re.compile(r"[0-9a-f]{64}")
SUMS = "SHA256SUMS"  # in each build directory, written by the host that built it
# What a build directory holds: sums cover every file but the log.
_PATH = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class BuildTrustError(Exception):
    """An artifact or its record does not check out; nothing was cached or installed."""


@dataclass(frozen=True)
class CacheEntry:
    build_id: str
    bundle: Path
    bundle_sha256: str
    files: dict[str, str] = field(default_factory=dict)  # path in the build dir -> sha256
    built_on: str = ""  # the host that compiled it, or "" for an adopted entry
    recorded_on: str = "host"  # "host", or "controller" for an adopted entry

    def sums_text(self) -> str:
        """The per-file sums in ``sha256sum`` format, for ``sha256sum --check`` on a receiving host."""
        return "".join(f"{sha}  {path}\n" for path, sha in sorted(self.files.items()))

    def described(self) -> str:
        return f"recorded on {self.built_on}" if self.recorded_on == "host" else "recorded by this controller"


def bundle_file(cache: Path, bid: str) -> Path:
    return cache / f"{bid}.tar.gz"


def manifest_file(cache: Path, bid: str) -> Path:
    return cache / f"{bid}.json"


def parse_sums(text: str, where: str) -> dict[str, str]:
    """``sha256sum`` output -> {path: sha256}; only plain relative paths, each once."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        sha, sep, path = line.partition("  ")
        path = path.removeprefix("./")
        if not sep or not SHA256.fullmatch(sha) or not _PATH.fullmatch(path) or ".." in path.split("/"):
            raise BuildTrustError(f"{where}: not a line of sha256 sums: {line[:120]!r}")
        if path in sums:
            raise BuildTrustError(f"{where}: {path} is listed twice")
        sums[path] = sha
    if "bin/llama-server" not in sums:
        raise BuildTrustError(f"{where}: no sha256 for bin/llama-server")
    return sums


def read_entry(cache: Path, bid: str) -> CacheEntry | None:
    """The cache's entry for ``bid``, or None when it has no bundle. A bundle without a manifest is adopted."""
    bundle = bundle_file(cache, bid)
    if not bundle.is_file():
        return None
    path = manifest_file(cache, bid)
    if not path.exists():
        return adopt(cache, bid)
    try:
        data = json.loads(path.read_text())
        sha, files = data["bundle_sha256"], data["files"]
        if data["build_id"] != bid or not SHA256.fullmatch(sha) or not isinstance(files, dict):
            raise ValueError("fields do not match")
        parse_sums("".join(f"{v}  {k}\n" for k, v in files.items()), str(path))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise BuildTrustError(
            f"{path} is not a valid build manifest ({err}); delete it and {bundle.name} to compile build {bid} again"
        ) from err
    return CacheEntry(bid, bundle, sha, dict(files), data.get("built_on", ""), data.get("recorded_on", "host"))


def adopt(cache: Path, bid: str) -> CacheEntry:
    """Record the sha256 of a bundle cached before manifests existed (see the module docstring)."""
    bundle = bundle_file(cache, bid)
    files: dict[str, str] = {}
    with tarfile.open(bundle) as tar:
        for member in tar:
            top, _, rest = member.name.partition("/")
            if top != bid or member.issym() or member.islnk() or ".." in member.name.split("/"):
                raise BuildTrustError(f"{bundle} holds {member.name!r}, not a build directory {bid}/; not adopted")
            if member.isfile() and rest and rest not in ("build.log", SUMS):
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[rest] = _sha256_stream(extracted)
    entry = CacheEntry(bid, bundle, file_sha256(bundle), files, "", "controller")
    parse_sums(entry.sums_text(), str(bundle))
    _write_manifest(cache, entry, {"adopted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return entry


def publish(cache: Path, bid: str, bundle_partial: Path, recorded_sha: str, sums: str, built_on: str) -> CacheEntry:
    """Keep a fetched bundle if its sha256 is the one its building host recorded; else remove it and raise."""
    recorded = recorded_sha.split()[0] if recorded_sha.split() else ""
    try:
        if not SHA256.fullmatch(recorded):
            raise BuildTrustError(f"build {bid}: {built_on} recorded no sha256 for its bundle ({recorded_sha[:80]!r})")
        files = parse_sums(sums, f"{SUMS} of build {bid} on {built_on}")
        actual = file_sha256(bundle_partial)
        if actual != recorded:
            raise BuildTrustError(
                f"build {bid}: the bundle fetched from {built_on} has sha256 {actual}, not the {recorded} "
                "recorded there when it was packed; not cached"
            )
    except BuildTrustError:
        bundle_partial.unlink(missing_ok=True)
        raise
    entry = CacheEntry(bid, bundle_file(cache, bid), recorded, files, built_on, "host")
    _write_manifest(cache, entry, {})
    os.replace(bundle_partial, entry.bundle)
    return entry


def _write_manifest(cache: Path, entry: CacheEntry, extra: dict[str, str]) -> None:
    record = {
        "build_id": entry.build_id,
        "bundle_sha256": entry.bundle_sha256,
        "files": entry.files,
        "built_on": entry.built_on,
        "recorded_on": entry.recorded_on,
        **extra,
    }
    path = manifest_file(cache, entry.build_id)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(partial, path)


def _sha256_stream(stream: IO[bytes]) -> str:
    digest = hashlib.sha256()
    for block in iter(lambda: stream.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def cache_dir(setting: str | None) -> Path | None:
    """The cache folder from ``llama_cpp_build_cache`` (made private to this user when created)."""
    if not setting:
        return None
    path = Path(setting).expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
