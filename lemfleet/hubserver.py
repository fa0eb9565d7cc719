"""A local server speaking enough of the Hugging Face hub protocol for ``huggingface_hub``.

It lets the download path be tested, and benchmarked, with the real client on
machines that cannot reach the hub, exactly as a corporate hub mirror is used:
point ``HF_ENDPOINT`` (or ``endpoint=``) at it. Each repo is a directory
``ROOT/<owner>/<name>/``; its files are served at one commit, named ``main``.

What ``huggingface_hub`` 2.4 reads, and this server answers:

- ``HEAD|GET /<repo>/resolve/<rev>/<path>``: ``X-Repo-Commit`` and ``ETag``; an
  LFS file (``*.gguf`` and other large files) answers 302 to a signed URL on a
  second "CDN" port with ``X-Linked-Etag`` (its sha256) and ``X-Linked-Size``.
  The CDN is another origin, so the client drops the token before following.
- ``GET /api/models/<repo>[/revision/<rev>]`` (``model_info``, ``?blobs=true``
  adds sizes and LFS sha256), ``GET .../tree/<rev>`` and
  ``POST .../paths-info/<rev>`` (``get_paths_info``).
- ``Range`` requests (206), and the error headers ``X-Error-Code``
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``, ``GatedRepo``)
  from which the client raises its own error classes.

Faults for tests: cut the next body after N bytes, corrupt the next body,
answer the next requests with an error status.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".bin", ".safetensors", ".pt", ".onnx")
LFS_MIN_SIZE = 10 * 1024 * 1024
_CHUNK = 1024 * 1024
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/(?P<kind>revision|tree|paths-info)/(?P<rev>[^/]+))?/?$")
_CDN = re.compile(r"^/lfs/(?P<sha256>[0-9a-f]{64})$")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it. Whether a token came is recorded, never the token."""

    server: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorized: bool


@dataclass(frozen=True)
class _Entry:
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


class HubServer:
    """The hub (``url``) and its CDN, each a ``ThreadingHTTPServer`` on 127.0.0.1.

    ``private`` and ``gated`` map a repo id to the tokens that may read it; any
    token that appears there, or in ``tokens``, is a valid credential.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] = (),
        private: Mapping[str, Iterable[str]] | None = None,
        gated: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.root, self.host = Path(root), host
        self.private = {repo: frozenset(t) for repo, t in (private or {}).items()}
        self.gated = {repo: frozenset(t) for repo, t in (gated or {}).items()}
        self.tokens = frozenset(tokens).union(*self.private.values(), *self.gated.values())
        self.requests: list[Request] = []
        self.bytes_sent = 0  # file-body bytes written by both servers
        self._faults: list[Fault] = []
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._secret = secrets.token_bytes(16)
        self._hashes: dict[tuple[Path, int, int], str] = {}
        self.blobs: dict[str, _Entry] = {}
        self._hub = ThreadingHTTPServer((host, port), _handler(self, "hub"))
        self._cdn = ThreadingHTTPServer((host, 0), _handler(self, "cdn"))
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._hub.server_port}"

    @property
    def cdn_url(self) -> str:
        return f"http://{self.host}:{self._cdn.server_port}"

    def start(self) -> HubServer:
        for server in (self._hub, self._cdn):
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop listening and drop kept-alive connections, as a vanished hub would."""
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()
        with self._lock:
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults -------------------------------------------------------------

    def cut_next_body(self, after_bytes: int) -> None:
        """Close the connection after ``after_bytes`` bytes of a file body.

        Faults queue up: each file-body request (GET) takes the oldest one.
        """
        self._add_fault(Fault(cut_after=after_bytes))

    def corrupt_next_body(self) -> None:
        """Flip the bits of the first byte of a file body; its headers stay right."""
        self._add_fault(Fault(corrupt=True))

    def refuse_next(self, count: int = 1, status: int = 503) -> None:
        """Answer ``count`` file-body requests with ``status`` and no body."""
        for _ in range(count):
            self._add_fault(Fault(status=status))

    def _add_fault(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take_fault(self) -> Fault:
        with self._lock:
            return self._faults.pop(0) if self._faults else Fault()

    def track(self, connection: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(connection)

    # -- repository view ----------------------------------------------------

    def commit(self, repo: str) -> str:
        """The commit id of a repo: a hash of its file names and contents."""
        listing = "".join(f"{e.path}\0{e.sha256}\n" for e in self.entries(repo))
        return hashlib.sha1(f"{repo}\n{listing}".encode()).hexdigest()

    def entries(self, repo: str) -> list[_Entry]:
        base = self.root / repo
        files = sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [self._entry(base, file) for file in files]

    def _entry(self, base: Path, file: Path) -> _Entry:
        stat = file.stat()
        key = (file, stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
            self._hashes[key] = digest.hexdigest()
        lfs = file.suffix in LFS_SUFFIXES or stat.st_size >= LFS_MIN_SIZE
        path = file.relative_to(base).as_posix()
        return _Entry(path, file, stat.st_size, self._hashes[key], lfs)

    def cdn_link(self, entry: _Entry) -> str:
        self.blobs[entry.sha256] = entry
        expires = str(int(time.time()) + 3600)
        query = f"expires={expires}&signature={self._sign(entry.sha256, expires)}"
        return f"{self.cdn_url}/lfs/{entry.sha256}?{query}&name={quote(entry.path)}"

    def _sign(self, sha256: str, expires: str) -> str:
        return hmac.new(self._secret, f"{sha256}:{expires}".encode(), "sha256").hexdigest()

    def signature_ok(self, sha256: str, query: dict[str, list[str]]) -> bool:
        expires, signature = query.get("expires", ["0"])[0], query.get("signature", [""])[0]
        fresh = expires.isdigit() and int(expires) > time.time()
        return fresh and hmac.compare_digest(signature, self._sign(sha256, expires))

    def access_error(self, repo: str, token: str | None) -> tuple[int, str, str] | None:
        """``(status, X-Error-Code, X-Error-Message)`` when ``token`` may not read ``repo``."""
        if token is not None and token not in self.tokens:
            return 401, "", "Invalid credentials in Authorization header"
        if repo in self.private and token not in self.private[repo]:
            return (401 if token is None else 404), "RepoNotFound", "Repository not found"
        if repo in self.gated and token is None:
            return 401, "GatedRepo", f"Access to model {repo} is restricted; please log in."
        if repo in self.gated and token not in self.gated[repo]:
            return 403, "GatedRepo", f"Access to model {repo} is restricted; ask for access."
        return None

    def count(self, sent: int) -> None:
        with self._lock:
            self.bytes_sent += sent


class _Handler(BaseHTTPRequestHandler):
    """Answers one request for the hub or its CDN; ``hub`` and ``role`` are set per server."""

    protocol_version = "HTTP/1.1"
    hub: HubServer
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
        self.hub.requests.append(Request(self.role, self.command, path, self.headers.get("Range"), token is not None))
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
        headers["Location"] = self.hub.cdn_link(entry)
        self._send(302, headers, b"", body)

    def _cdn(self, path: str, query: dict[str, list[str]], body: bool) -> None:
        match = _CDN.match(path)
        entry = self.hub.blobs.get(match["sha256"]) if match else None
        if entry is None or not self.hub.signature_ok(entry.sha256, query):
            self._error(403, "", "AccessDenied: bad or expired signature", body=body)
            return
        disposition = f'attachment; filename="{Path(entry.path).name}"'
        self._file(entry, {"ETag": f'"{entry.sha256}"', "Content-Disposition": disposition}, body)

    def _file(self, entry: _Entry, headers: dict[str, str], body: bool) -> None:
        fault = self.hub.take_fault() if body else Fault()
        if fault.status is not None:
            self._error(fault.status, "", "Unavailable (injected fault)", body=body)
            return
        cut, corrupt = fault.cut_after, fault.corrupt
        start, end, status = 0, entry.size - 1, 200
        if (wanted := self.headers.get("Range")) is not None:
            match = re.fullmatch(r"bytes=(\d*)-(\d*)", wanted.strip())
            if match is None or not (match[1] or match[2]):
                self._error(416, "", "Bad range", {"Content-Range": f"bytes */{entry.size}"})
                return
            if match[1]:
                start, end = int(match[1]), min(int(match[2] or end), end)
            else:  # suffix range: the last N bytes
                start = max(entry.size - int(match[2]), 0)
            if start >= entry.size or start > end:
                self._error(416, "", "Range not satisfiable", {"Content-Range": f"bytes */{entry.size}"})
                return
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
        headers.update({"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"})
        self._send(status, headers, None, body, length=end - start + 1)
        if not body:
            return
        remaining = end - start + 1
        with entry.file.open("rb") as handle:
            handle.seek(start)
            while remaining > 0 and (chunk := handle.read(min(_CHUNK, remaining))):
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
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        body: bool = True,
    ) -> None:
        headers = {
            **(headers or {}),
            "X-Error-Message": message,
            "Content-Type": "application/json",
        }
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


def _sibling(entry: _Entry, blobs: bool) -> dict[str, object]:
    if not blobs:
        return {"rfilename": entry.path}
    lfs = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
    return {"rfilename": entry.path, "blobId": entry.git_oid, "size": entry.size} | ({"lfs": lfs} if entry.lfs else {})


def _tree_item(entry: _Entry) -> dict[str, object]:
    item: dict[str, object] = {"type": "file", "path": entry.path, "size": entry.size}
    item["oid"] = entry.git_oid
    if entry.lfs:
        item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
    return item


def _handler(hub: HubServer, role: str) -> type[BaseHTTPRequestHandler]:
    return type(f"{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lemfleet.hubserver",
        description="Serve ROOT/<owner>/<name>/ directories over the Hugging Face hub protocol.",
    )
    parser.add_argument("--root", type=Path, required=True, help="directory of <owner>/<name> repos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--gated", action="append", default=[], metavar="REPO", help="gated repo")
    parser.add_argument("--private", action="append", default=[], metavar="REPO", help="private repo")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file whose first line is the token that may read gated and private repos",
    )
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip() if args.token_file else None
    allowed = [token] if token else []
    server = HubServer(
        args.root,
        host=args.host,
        port=args.port,
        private={repo: allowed for repo in args.private},
        gated={repo: allowed for repo in args.gated},
    )
    with server:
        print(f"HF_ENDPOINT={server.url} (CDN {server.cdn_url}); Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
