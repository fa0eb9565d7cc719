"""Controller side of the llama.cpp source: fetch once, verify, describe.

The three methods give a :class:`Source`: what to push (or clone) and a
``source_id`` that names its exact content, which goes into the build id.

- ``pypi-sdist``: the llama.cpp vendored in a pinned ``llama-cpp-python``
  sdist, fetched as bytes from the configured index (never with ``pip
  download``, which runs the sdist's build backend) and kept only if its
  sha256 matches. Works air-gapped behind a PyPI mirror.
- ``tarball``: a URL or a local path, with a sha256 that must match.
- ``git``: the hosts clone a pinned tag themselves, pinned by commit too
  (``llama_cpp_git_commit``): the controller checks that the tag is that
  commit before any host is touched, and each host checks its clone
  (roles/git_pin.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lemfleet.roles.git_pin import peeled_commit
from lemfleet.roles.sdist_fetch import fetch_sdist, pip_index_url
from lemfleet.roles.settings import SettingsError

CACHE = Path(os.environ.get("LEMFLEET_CACHE", Path.home() / ".cache" / "lemfleet"))


@dataclass(frozen=True)
class Source:
    method: str
    source_id: str
    archive: Path | None = None  # tarball on the controller, pushed to hosts
    strip_prefix: str = ""  # the llama.cpp tree's path inside the archive
    git_url: str | None = None
    git_ref: str | None = None
    sha256: str | None = None
    git_commit: str | None = None  # the commit git_ref must be, checked after every clone (roles/git_pin.py)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha(path: Path, expected: str | None, setting: str, what: str, *, fetched: bool) -> str:
    """Verify ``path``; a fetched file that fails is deleted, a user's own file never is."""
    actual = file_sha256(path)
    if expected is None:
        raise SettingsError(
            [
                f"{setting} is not set, so {what} cannot be verified. "
                f"The file fetched has sha256 {actual}; check it and pin it with {setting}."
            ]
        )
    if actual != expected:
        if fetched:
            path.unlink(missing_ok=True)
        raise SettingsError(
            [
                f"{setting}={expected!r} does not match {what} (its sha256 is {actual}); "
                "the file was rejected. Check the source, or correct the pin."
            ]
        )
    return actual


def sdist_source(settings: dict[str, Any]) -> Source:
    version = settings["llama_cpp_sdist_version"]
    dest = CACHE / "sdist"
    name = f"llama_cpp_python-{version}.tar.gz"
    archive = dest / name
    if not archive.exists():
        # Bytes only, kept only when the sha256 matches: ``pip download`` would run the sdist's build
        # backend (and install its build requirements) before any check (roles/sdist_fetch.py).
        index = settings["llama_cpp_pip_index_url"] or pip_index_url()
        fetch_sdist(
            index, "llama-cpp-python", name, archive, settings["llama_cpp_sdist_sha256"], "llama_cpp_sdist_sha256"
        )
    sha = _check_sha(archive, settings["llama_cpp_sdist_sha256"], "llama_cpp_sdist_sha256", name, fetched=True)
    return Source(
        method="pypi-sdist",
        source_id=f"llama-cpp-python-{version}-{sha[:12]}",
        archive=archive,
        strip_prefix=f"llama_cpp_python-{version}/vendor/llama.cpp",
        sha256=sha,
    )


def tarball_source(settings: dict[str, Any]) -> Source:
    location = settings["llama_cpp_tarball"]
    expected = settings["llama_cpp_tarball_sha256"]
    if location.startswith(("http://", "https://")):
        # A fixed name: the URL's last segment could be "..", or anything else a path must not be.
        archive = CACHE / "tarballs" / (expected or "unverified") / "llama.cpp-source.tar"
        if not archive.exists():
            archive.parent.mkdir(parents=True, exist_ok=True)
            partial = archive.with_suffix(".partial")
            try:
                with httpx.stream("GET", location, follow_redirects=True, timeout=60) as resp:
                    resp.raise_for_status()
                    with partial.open("wb") as fh:
                        for chunk in resp.iter_bytes():
                            fh.write(chunk)
            except httpx.HTTPError as err:
                raise SettingsError([f"llama_cpp_tarball={location!r} could not be fetched: {err}"]) from err
            partial.rename(archive)
    else:
        archive = Path(location).expanduser()
        if not archive.is_file():
            raise SettingsError([f"llama_cpp_tarball={location!r} is not a file on the controller"])
    fetched = location.startswith(("http://", "https://"))
    sha = _check_sha(archive, expected, "llama_cpp_tarball_sha256", str(location), fetched=fetched)
    with tarfile.open(archive) as tar:
        first = tar.next()
        top = first.name.split("/")[0] if first else ""
    return Source("tarball", f"tarball-{sha[:12]}", archive=archive, strip_prefix=top, sha256=sha)


def git_source(settings: dict[str, Any]) -> Source:
    url, ref = settings["llama_cpp_git_url"], settings["llama_cpp_git_ref"]
    commit = settings.get("llama_cpp_git_commit")
    # The settings check allows only http(s) URLs; "--" keeps git from reading anything here as an option
    # (an URL of "--upload-pack=<command>" once ran the command).
    if not url.startswith(("http://", "https://")):
        raise SettingsError([f"llama_cpp_git_url={url!r} is not valid; accepted: an http:// or https:// URL"])
    if settings["llama_cpp_git_check_ref"] and shutil.which("git"):
        proc = subprocess.run(
            [
                "git",
                "-c",
                "protocol.allow=never",
                "-c",
                "protocol.https.allow=always",
                "-c",
                "protocol.http.allow=always",
                "ls-remote",
                "--exit-code",
                "--",
                url,
                f"refs/tags/{ref}",
                f"refs/tags/{ref}^{{}}",
                f"refs/heads/{ref}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode == 2:
            raise SettingsError([f"llama_cpp_git_ref={ref!r} does not exist in {url}"])
        if proc.returncode != 0:
            raise SettingsError(
                [
                    f"llama_cpp_git_url={url!r} could not be read to check llama_cpp_git_ref={ref!r} "
                    f"({proc.stderr.strip()[-200:]}); set llama_cpp_git_check_ref=false to skip the check"
                ]
            )
        check_tag_commit(url, ref, commit, peeled_commit(proc.stdout, ref))
    if commit is None:
        raise SettingsError(
            [f"llama_cpp_git_commit is not set; accepted: the full commit id that tag {ref} of {url} must be"]
        )
    return Source("git", f"git-{ref}-{commit[:12]}", git_url=url, git_ref=ref, git_commit=commit)


def check_tag_commit(url: str, ref: str, commit: str | None, found: str | None) -> None:
    """The tag, as the remote answers it now, must be the pinned commit (the hosts check their clones again)."""
    if commit is None:
        raise SettingsError(
            [
                f"llama_cpp_git_commit is not set, so the clone of llama_cpp_git_ref={ref!r} cannot be verified; "
                f"{url} says it is commit {found}: check it and pin it with llama_cpp_git_commit"
            ]
        )
    if found != commit:
        raise SettingsError(
            [
                f"llama_cpp_git_ref={ref!r} is commit {found} in {url}, not llama_cpp_git_commit={commit!r}: "
                "the tag moved or the pin is wrong; check the commit and correct the pin"
            ]
        )


def prepare_source(settings: dict[str, Any]) -> Source:
    method = settings["llama_cpp_source"]
    if method == "pypi-sdist":
        return sdist_source(settings)
    if method == "tarball":
        return tarball_source(settings)
    return git_source(settings)
