"""The request handler of :class:`tests.hubserver.server.HubServer`: the hub's routes and its CDN's.

Each answer carries the headers ``huggingface_hub`` 2.4 reads (see the
module docstring of :mod:`tests.hubserver.server`); the handler asks its server
for the repository view, the access rules and the next injected fault.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import socket
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

CHUNK = 1024 * 1024
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree|paths-info)/(?P<rev>[^/]+))?/?$")
_CDN = re.compile(r"^/lfs/(?P<sha256>[0-9a-f]{64})$")
logger = logging.getLogger("tests.hubserver")


@dataclass(frozen=True)
class Request:
    """One request as the server saw it. Whether a token came is recorded, never the token."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorized: bool
    client: str = ""  # the peer's IP address


@dataclass(frozen=True)
class Entry:
    """One file of a repo: where it lies, its size and sha256, and whether the hub keeps it in LFS."""

    path: str
    file: Path
    size: int
    sha256: str
    lfs: bool

    @property
    def pointer(self) -> bytes:
        spec = "version https://git-lfs.github.com/spec/v1"
        return f"{spec}\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def git_oid(self) -> str:
        data = self.pointer if self.lfs else self.file.read_bytes()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class Fault:
    """What happens to one file body: cut after N bytes, first byte flipped, or refused."""

    cut_after: int | None = None
    corrupt: bool = False
    status: int | None = None


class Hub(Protocol):
    """What the handler needs of :class:`tests.hubserver.server.HubServer`, which builds it."""

    root: Path
    blobs: dict[str, Entry]
    private: dict[str, frozenset[str]]
    gated: dict[str, frozenset[str]]

    def take_fault(self) -> Fault: ...
    def track(self, connection: socket.socket, alive: bool) -> None: ...
    def commit(self, repo: str) -> str: ...
    def entries(self, repo: str) -> list[Entry]: ...
    def cdn_link(self, entry: Entry, via: str | None = None) -> str: ...
    def signature_ok(self, sha256: str, query: dict[str, list[str]]) -> bool: ...
    def access_error(self, repo: str, token: str | None) -> tuple[int, str, str] | None: ...
    def count(self, sent: int) -> None: ...
    def record(self, request: Request) -> None: ...


class HubHandler(BaseHTTPRequestHandler):
    """Answers one request for the hub or its CDN; ``hub`` and ``role`` are set per server."""

    protocol_version = "HTTP/1.1"
    hub: Hub
    role: str

    def setup(self) -> None:
        super().setup()
        self.hub.track(self.connection, alive=True)

    def finish(self) -> None:
        self.hub.track(self.connection, alive=False)
        super().finish()

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.role, format % args)

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_GET(self) -> None:
        self._dispatch(body=True)

    def do_POST(self) -> None:
        self._dispatch(body=True)

    def _dispatch(self, body: bool) -> None:
        url = urlsplit(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        form = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        seen = Request(
            self.role, self.command, path, self.headers.get("Range"), token is not None, self.client_address[0]
        )
        self.hub.record(seen)
        if self.role == "cdn":
            self._cdn(path, query, body)
        elif match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["rev"], match["path"], token, body)
        elif match := _API.match(path):
            paths = parse_qs(form).get("paths", [])
            self._api(match["repo"], match["kind"], match["rev"] or "main", token, query, paths)
        else:  # e.g. /api/agent-harnesses, which the client fetches best-effort
            self._error(404, "", "Not found", body=body)

    def _open_repo(self, repo: str, rev: str, token: str | None, body: bool) -> str | None:
        """The commit of ``repo`` at ``rev``, or ``None`` once an error has been sent."""
        if not (self.hub.root / repo).is_dir():
            self._error(404, "RepoNotFound", "Repository not found", body=body)
            return None
        if (denied := self.hub.access_error(repo, token)) is not None:
            self._error(*denied, body=body)
            return None
        commit = self.hub.commit(repo)
        if rev not in ("main", commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", body=body)
            return None
        return commit

    def _resolve(self, repo: str, rev: str, path: str, token: str | None, body: bool) -> None:
        if (commit := self._open_repo(repo, rev, token, body)) is None:
            return
        entry = next((e for e in self.hub.entries(repo) if e.path == path), None)
        headers = {"X-Repo-Commit": commit}
        if entry is None:
            self._error(404, "EntryNotFound", "Entry not found", headers, body=body)
            return
        headers["ETag"] = f'"{entry.git_oid}"'
        if not entry.lfs:
            self._file(entry, headers, body)
            return
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
        headers["X-Linked-Size"] = str(entry.size)
        # The CDN link names the address this client used, so that a client on another
        # network (a test-bed host behind its gateway) can follow the redirect too.
        headers["Location"] = self.hub.cdn_link(entry, via=_hostname(self.headers.get("Host")))
        self._send(302, headers, b"", body)

    def _cdn(self, path: str, query: dict[str, list[str]], body: bool) -> None:
        match = _CDN.match(path)
        entry = self.hub.blobs.get(match["sha256"]) if match else None
        if entry is None or not self.hub.signature_ok(entry.sha256, query):
            self._error(403, "", "AccessDenied: bad or expired signature", body=body)
            return
        disposition = f'attachment; filename="{Path(entry.path).name}"'
        self._file(entry, {"ETag": f'"{entry.sha256}"', "Content-Disposition": disposition}, body)

    def _file(self, entry: Entry, headers: dict[str, str], body: bool) -> None:
        fault = self.hub.take_fault() if body else Fault()
        if fault.status is not None:
            self._error(fault.status, "", "Unavailable (injected fault)", body=body)
            return
        span = self._range(entry.size)
        if span is None:
            return
        start, end = span
        if self.headers.get("Range") is not None:
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers.update({"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        status = 206 if "Content-Range" in headers else 200
        self._send(status, headers, None, body, length=end - start + 1)
        if body:
            self._body(entry, start, end - start + 1, fault)

    def _range(self, size: int) -> tuple[int, int] | None:
        """``(first, last)`` byte wanted, or ``None`` once a 416 has been sent."""
        wanted = self.headers.get("Range")
        if wanted is None:
            return 0, size - 1
        refused = {"Content-Range": f"bytes */{size}"}
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
        if match is None or not (match[1] or match[2]):
            self._error(416, "", "Bad range", refused)
            return None
        if match[1]:
            start, end = int(match[1]), min(int(match[2] or size - 1), size - 1)
        else:  # suffix range: the last N bytes
            start, end = max(size - int(match[2]), 0), size - 1
        if start >= size or start > end:
            self._error(416, "", "Range not satisfiable", refused)
            return None
        return start, end

    def _body(self, entry: Entry, start: int, remaining: int, fault: Fault) -> None:
        cut, corrupt = fault.cut_after, fault.corrupt
        with entry.file.open("rb") as handle:
            handle.seek(start)
            while remaining > 0 and (chunk := handle.read(min(CHUNK, remaining))):
                if corrupt:
                    chunk, corrupt = bytes([chunk[0] ^ 0xFF]) + chunk[1:], False
                if cut is not None and len(chunk) >= cut:
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.hub.count(cut)
                    self.close_connection = True
                    return
                self.wfile.write(chunk)
                self.hub.count(len(chunk))
                remaining -= len(chunk)
                cut = None if cut is None else cut - len(chunk)

    def _api(
        self,
        repo: str,
        kind: str | None,
        rev: str,
        token: str | None,
        query: dict[str, list[str]],
        paths: list[str],
    ) -> None:
        if (commit := self._open_repo(repo, rev, token, True)) is None:
            return
        entries = self.hub.entries(repo)
        if kind == "paths-info":
            self._json([_tree_item(e) for e in entries if e.path in paths])
        elif kind == "tree":
            self._json([_tree_item(e) for e in entries])
        else:
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = [_sibling(e, blobs) for e in entries]
            gated = "manual" if repo in self.hub.gated else False
            info = {"id": repo, "modelId": repo, "sha": commit, "siblings": siblings}
            self._json({**info, "private": repo in self.hub.private, "gated": gated})

    def _json(self, payload: object) -> None:
        self._send(200, {"Content-Type": "application/json"}, json.dumps(payload).encode(), True)

    def _error(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None, body: bool = True
    ) -> None:
        headers = {**(headers or {}), "X-Error-Message": message, "Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        self._send(status, headers, json.dumps({"error": message}).encode(), body)

    def _send(self, status: int, headers: dict[str, str], data: bytes | None, body: bool, length: int = 0) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data) if data is not None else length))
        self.end_headers()
        if body and data:
            self.wfile.write(data)


def _hostname(host_header: str | None) -> str | None:
    """The host part of a ``Host`` header (``10.213.1.1:8000``, ``[::1]:8000``), if any."""
    if not host_header:
        return None
    return urlsplit(f"//{host_header}").hostname


def _sibling(entry: Entry, blobs: bool) -> dict[str, object]:
    if not blobs:
        return {"rfilename": entry.path}
    lfs = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
    return {"rfilename": entry.path, "blobId": entry.git_oid, "size": entry.size} | ({"lfs": lfs} if entry.lfs else {})


def _tree_item(entry: Entry) -> dict[str, object]:
    item: dict[str, object] = {"type": "file", "path": entry.path, "size": entry.size, "oid": entry.git_oid}
    if entry.lfs:
        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
    return item


def handler_for(hub: Hub, role: str) -> type[BaseHTTPRequestHandler]:
    """A handler class bound to ``hub``, answering as its hub (``"hub"``) or its CDN (``"cdn"``)."""
    return type(f"{role.title()}Handler", (HubHandler,), {"hub": hub, "role": role})
