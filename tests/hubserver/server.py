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

Bound to all addresses (``host="0.0.0.0"``), it serves clients on other
networks too, such as test-bed hosts that reach this machine at their gateway:
give them ``url_at(gateway)`` as ``HF_ENDPOINT``. The CDN link in each redirect
names the address the client used, so every client can follow it.

Faults for tests: cut the next body after N bytes, corrupt the next body,
answer the next requests with an error status. The request handler lives in
:mod:`tests.hubserver.handler`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import secrets
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from tests.hubserver.handler import CHUNK, Entry, Fault, Request, handler_for

__all__ = ["LFS_MIN_SIZE", "LFS_SUFFIXES", "Fault", "HubServer", "Request", "main"]

LFS_SUFFIXES = (".gguf", ".bin", ".safetensors", ".pt", ".onnx")
LFS_MIN_SIZE = 10 * 1024 * 1024
WILDCARDS = ("0.0.0.0", "::", "")


class HubServer:
    """The hub (``url``) and its CDN, each a ``ThreadingHTTPServer`` on ``host`` (127.0.0.1).

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
        self.blobs: dict[str, Entry] = {}
        self._hub = ThreadingHTTPServer((host, port), handler_for(self, "hub"))
        self._cdn = ThreadingHTTPServer((host, 0), handler_for(self, "cdn"))
        self._threads: list[threading.Thread] = []

    @property
    def address(self) -> str:
        """Where clients on this machine reach the servers: ``host``, or loopback for a wildcard."""
        return "127.0.0.1" if self.host in WILDCARDS else self.host

    @property
    def url(self) -> str:
        return self.url_at(self.address)

    @property
    def cdn_url(self) -> str:
        return f"http://{self.address}:{self._cdn.server_port}"

    def url_at(self, address: str) -> str:
        """The hub's URL for a client that reaches this machine at ``address`` (e.g. its gateway)."""
        host = f"[{address}]" if ":" in address else address
        return f"http://{host}:{self._hub.server_port}"

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

    def entries(self, repo: str) -> list[Entry]:
        base = self.root / repo
        files = sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith("."))
        return [self._entry(base, file) for file in files]

    def _entry(self, base: Path, file: Path) -> Entry:
        stat = file.stat()
        key = (file, stat.st_size, stat.st_mtime_ns)
        if key not in self._hashes:
            digest = hashlib.sha256()
            with file.open("rb") as handle:
                while chunk := handle.read(CHUNK):
                    digest.update(chunk)
            self._hashes[key] = digest.hexdigest()
        lfs = file.suffix in LFS_SUFFIXES or stat.st_size >= LFS_MIN_SIZE
        path = file.relative_to(base).as_posix()
        return Entry(path, file, stat.st_size, self._hashes[key], lfs)

    def cdn_link(self, entry: Entry, via: str | None = None) -> str:
        """A signed CDN URL for ``entry``, on the address ``via`` that the client used, if known."""
        self.blobs[entry.sha256] = entry
        expires = str(int(time.time()) + 3600)
        query = f"expires={expires}&signature={self._sign(entry.sha256, expires)}"
        base = self.cdn_url
        if via and self.host in (*WILDCARDS, via):
            host = f"[{via}]" if ":" in via else via
            base = f"http://{host}:{self._cdn.server_port}"
        return f"{base}/lfs/{entry.sha256}?{query}&name={quote(entry.path)}"

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

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hubserver",
        description="Serve ROOT/<owner>/<name>/ directories over the Hugging Face hub protocol.",
    )
    parser.add_argument("--root", type=Path, required=True, help="directory of <owner>/<name> repos")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 also serves other machines, which put this machine's "
                        "address in their HF_ENDPOINT")  # fmt: skip
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
