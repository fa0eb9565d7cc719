"""Reach a port on a pyinfra host through the SSH connection pyinfra already holds.

The deploy's smoke step must test a server that listens on the host's
loopback only. Instead of opening a second SSH session, this forwards a
local port over the existing paramiko transport (``direct-tcpip`` channels,
the same thing ``ssh -L`` does). On ``@local`` the port is used directly.

While the server is down (starting, or crash-looping) every poll of
``/health`` opens a channel the host refuses, and paramiko logs each refusal
as an ERROR line (``Secsh channel N open FAILED``). Those lines say nothing a
person can act on, so they are held back while the forward is open and
summed up in one line when it closes.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

logger = logging.getLogger(__name__)


class RefusedChannels(logging.Filter):
    """Drops paramiko's ``Secsh channel N open FAILED`` records and counts them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last_reason = ""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Secsh channel") and "open FAILED" in message:
            self.count += 1
            self.last_reason = message.split("open FAILED:", 1)[-1].strip()
            return False
        return True

    def summary(self, target: str) -> str | None:
        if not self.count:
            return None
        return (
            f"{self.count} connection(s) to {target} refused on the host while the server was down ({self.last_reason})"
        )


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
    refused = RefusedChannels()
    paramiko_log = logging.getLogger(transport.get_log_channel())
    paramiko_log.addFilter(refused)

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
        paramiko_log.removeFilter(refused)
        summary = refused.summary(f"{remote_host}:{remote_port}")
        if summary and hasattr(pyinfra_host, "log_styled"):  # a pyinfra host: the line goes with its others
            pyinfra_host.log_styled(summary, fg="yellow", log_func=logging.getLogger("pyinfra").info)
        elif summary:
            logger.info("%s: %s", getattr(pyinfra_host, "name", "host"), summary)
