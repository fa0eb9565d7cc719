"""Fetch a source distribution from a package index as bytes only, and keep it only if its sha256 matches.

``pip download`` of an sdist is not a download: to learn the sdist's metadata pip installs its
build requirements from the index into a temporary environment and runs its build backend
(``prepare_metadata_for_build_wheel``), all before lemfleet could check the file's sha256. A
tampered index or mirror would run code on the controller that way. This module reads the index
itself with the simple repository API (PEP 503 HTML, PEP 691 JSON), downloads the one file into a
partial file, and renames it into place only when its sha256 equals the pin; nothing from the
index is ever executed or unpacked on the controller.

The index is the ``llama_cpp_pip_index_url`` setting, else pip's own index URL
(``PIP_INDEX_URL``, or ``global.index-url`` in pip's configuration), else PyPI. http(s) and
``file://`` indexes are read; pip's ``extra-index-url`` and ``find-links`` are not.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import httpx

from lemfleet.roles.settings import SettingsError

PYPI_SIMPLE = "https://pypi.org/simple/"
ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
TIMEOUT = 60
_ANCHOR = re.compile(r"<a\s[^>]*?href\s*=\s*[\"']([^\"']+)[\"'][^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)


def pip_index_url() -> str:
    """The index pip itself would use for a plain ``pip download`` (its configuration only, no index access)."""
    if os.environ.get("PIP_INDEX_URL", "").strip():
        return os.environ["PIP_INDEX_URL"].split()[0]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"],
        capture_output=True,
        text=True,
        check=False,
    )
    configured = proc.stdout.strip()
    return configured if proc.returncode == 0 and configured else PYPI_SIMPLE


def _read(url: str, accept: str | None = None) -> tuple[bytes, str, str]:
    """(body, content type, final URL) of an http(s) or file:// URL."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        if path.is_dir():
            path = path / "index.html"
        return path.read_bytes(), "text/html", url
    response = httpx.get(url, headers={"Accept": accept} if accept else {}, follow_redirects=True, timeout=TIMEOUT)
    response.raise_for_status()
    return response.content, response.headers.get("content-type", ""), str(response.url)


def find_file(index: str, project: str, filename: str) -> tuple[str, str | None]:
    """(URL, sha256 the index lists or None) of ``filename`` on ``project``'s page of ``index``."""
    page = index.rstrip("/") + "/" + re.sub(r"[-_.]+", "-", project).lower() + "/"
    body, content_type, final_url = _read(page, ACCEPT)
    if "json" in content_type:
        for entry in json.loads(body).get("files", []):
            if entry.get("filename") == filename:
                return urljoin(final_url, entry["url"]), (entry.get("hashes") or {}).get("sha256")
    else:
        for href, text in _ANCHOR.findall(body.decode("utf-8", "replace")):
            if html.unescape(re.sub(r"<[^>]+>", "", text)).strip() == filename:
                link, _, fragment = html.unescape(href).partition("#")
                listed = fragment.removeprefix("sha256=") if fragment.startswith("sha256=") else None
                return urljoin(final_url, link), listed
    raise FileNotFoundError(f"{filename} is not listed at {page}")


def _download(url: str, partial: Path) -> str:
    """Write ``url`` to ``partial``; return its sha256."""
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        if urlsplit(url).scheme == "file":
            with Path(unquote(urlsplit(url).path)).open("rb") as source:
                while block := source.read(1 << 20):
                    out.write(block)
                    digest.update(block)
        else:
            with httpx.stream("GET", url, follow_redirects=True, timeout=TIMEOUT) as response:
                response.raise_for_status()
                for block in response.iter_bytes():
                    out.write(block)
                    digest.update(block)
    return digest.hexdigest()


def fetch_sdist(index: str, project: str, filename: str, dest: Path, expected: str | None, setting: str) -> Path:
    """Download ``filename`` of ``project`` to ``dest`` if its sha256 is ``expected``; else :class:`SettingsError`.

    ``setting`` names the pin in the messages. A file that fails leaves nothing behind.
    """
    where = f"{filename} from {index}"
    try:
        url, listed = find_file(index, project, filename)
        if expected and listed and listed.lower() != expected:
            raise SettingsError(
                [f"{setting}={expected!r} does not match {where}: the index lists sha256 {listed}; nothing was fetched"]
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
        try:
            actual = _download(url, partial)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    except (httpx.HTTPError, OSError, ValueError) as err:
        if isinstance(err, SettingsError):
            raise
        raise SettingsError([f"{setting}: {where} could not be fetched: {err}"]) from err
    if actual != expected:
        partial.unlink()
        if expected is None:
            raise SettingsError(
                [f"{setting} is not set, so {where} cannot be verified. It has sha256 {actual}; check it and pin it."]
            )
        raise SettingsError(
            [f"{setting}={expected!r} does not match {where} (its sha256 is {actual}); the file was removed"]
        )
    shutil.move(partial, dest)
    return dest
