"""Reach a port on a pyinfra host through the SSH connection pyinfra already holds.

The deploy's smoke step must test a server that listens on the host's
loopback only. Instead of opening a second SSH session, this forwards a
local port over the existing paramiko transport (``direct-tcpip`` channels,
the same thing ``ssh -L`` does). On ``@local`` the port is used directly.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any


def _pump(src: Any, dst: Any) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.close()
        with contextlib.suppress(OSError):
            src.close()


@contextlib.contextmanager
def forward(pyinfra_host: Any, remote_host: str, remote_port: int) -> Iterator[str]:
    """Yield a ``http://127.0.0.1:<port>`` base URL that reaches ``remote_host:remote_port`` on the host."""
    client = getattr(pyinfra_host.connector, "client", None)
    if client is None:  # @local and other non-SSH connectors reach the port as it is
        yield f"http://{remote_host}:{remote_port}"
        return
    transport = client.get_transport()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    stop = threading.Event()

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            try:
                channel = transport.open_channel("direct-tcpip", (remote_host, remote_port), peer)
            except Exception:
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, channel), daemon=True).start()
            threading.Thread(target=_pump, args=(channel, conn), daemon=True).start()

    thread = threading.Thread(target=accept_loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        listener.close()
