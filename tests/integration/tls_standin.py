"""A loopback https server made with Python's ``ssl``: the stand-in for a llama-server built with OpenSSL.

``serve_https`` serves whatever ``answer`` gives for a request's path and Authorization header, records
each request it read, and tolerates clients that refuse the handshake (a pin that does not match).
"""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# (path, Authorization header or None) -> (status code, body)
Answer = Callable[[str, "str | None"], tuple[int, bytes]]


@contextmanager
def serve_https(context: ssl.SSLContext, answer: Answer, seen: list[str]) -> Iterator[int]:
    """Serve https on 127.0.0.1 with ``context`` until the block ends; yields the port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(f"{self.path} {self.headers.get('Authorization')}")
            code, body = answer(self.path, self.headers.get("Authorization"))
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that refused the handshake

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
