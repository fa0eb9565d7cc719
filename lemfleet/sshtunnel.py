"""Remote access to fleet hosts: SSH options from host data, one port forward, commands over SSH.

A host's llama-server listens on 127.0.0.1 by default, so neither the deploy's health gate nor
the controller (``lemfleet smoke``, ``status``, ``load``) can reach it directly. :func:`forward`
gives them a local base URL that reaches it, in one of two ways:

- during a deploy (``via=`` the pyinfra host), over the SSH connection pyinfra already holds:
  ``direct-tcpip`` channels on its paramiko transport, the same thing ``ssh -L`` does, with no
  second login and whatever authentication pyinfra used (a password or a key passphrase in host
  data included);
- from the controller, which holds no connection, through ``ssh -N -L`` with the host's own SSH
  data (:meth:`SshOptions.from_host_data`) and ``BatchMode``, so a missing key fails at once
  instead of prompting.

``@local`` hosts are reached directly. Either way the server's listen address is turned into
the address to reach by :func:`lemfleet.paths.reach_address`, and the URL brackets IPv6.

While the server is down (starting, or crash-looping) every poll of ``/health`` opens a channel
the host refuses; paramiko and ssh each say so in a line per refusal (``Secsh channel N open
FAILED``, ``channel N: open failed``). Those lines say nothing a person can act on, so they are
held back while the forward is open and summed up in one line when it closes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lemfleet.paths import DEPLOY_RECORD, LOOPBACK, SERVER_HOST, SERVER_PORT, reach_address, url_host

DEFAULT_SERVER_HOST = SERVER_HOST  # where a host's data does not say (server_host, server_port)
DEFAULT_SERVER_PORT = SERVER_PORT

logger = logging.getLogger(__name__)


class TunnelError(RuntimeError):
    """The forward could not be opened; the message carries ssh's own words."""


@dataclass(frozen=True)
class SshOptions:
    hostname: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    known_hosts_file: str | None = None
    strict_host_key_checking: str = "accept-new"  # pyinfra's own default
    config_file: str | None = None

    @classmethod
    def from_host_data(cls, name: str, data: Any) -> SshOptions:
        """The options pyinfra's SSH connector takes from host data (``ssh_hostname``, ``ssh_port``, …)."""
        return cls(
            hostname=str(data.get("ssh_hostname") or name),
            port=int(data.get("ssh_port")) if data.get("ssh_port") else None,
            user=data.get("ssh_user"),
            key=data.get("ssh_key"),
            known_hosts_file=data.get("ssh_known_hosts_file"),
            strict_host_key_checking=data.get("ssh_strict_host_key_checking") or "accept-new",
            config_file=data.get("ssh_config_file"),
        )

    def command(self, *options: str, remote: Sequence[str] = ()) -> list[str]:
        """``ssh``, non-interactive, with these settings, ``options``, the host and ``remote``."""
        cmd = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]
        cmd += ["-o", f"StrictHostKeyChecking={self.strict_host_key_checking}"]
        if self.config_file:
            cmd += ["-F", os.path.expanduser(self.config_file)]
        if self.known_hosts_file:
            cmd += ["-o", f"UserKnownHostsFile={os.path.expanduser(self.known_hosts_file)}"]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.user:
            cmd += ["-l", self.user]
        if self.key:
            cmd += ["-i", os.path.expanduser(self.key), "-o", "IdentitiesOnly=yes"]
        return [*cmd, *options, self.hostname, *remote]


@dataclass(frozen=True)
class InventoryTarget:
    """One inventory host: how to reach it, and where its server listens there."""

    name: str
    ssh: SshOptions | None  # None for @local hosts
    server_host: str = DEFAULT_SERVER_HOST
    server_port: int = DEFAULT_SERVER_PORT
    groups: tuple[str, ...] = ()
    canary: bool = False  # in the inventory's ``canary`` group, or host data ``rollout_canary: true``

    def direct_url(self) -> str:
        return f"http://{url_host(reach_address(self.server_host))}:{self.server_port}"

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> InventoryTarget:
        """The inverse of :func:`dataclasses.asdict` (how the inventory loader's child hands targets over)."""
        ssh = entry.get("ssh")
        return cls(
            name=entry["name"],
            ssh=SshOptions(**ssh) if ssh else None,
            server_host=entry.get("server_host", DEFAULT_SERVER_HOST),
            server_port=int(entry.get("server_port", DEFAULT_SERVER_PORT)),
            groups=tuple(entry.get("groups") or ()),
            canary=bool(entry.get("canary")),
        )


class Refusals(logging.Filter):
    """Counts the host's refusals of forwarded connections; as a logging filter, drops paramiko's lines of them."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.last_reason = ""

    def note(self, reason: str) -> None:
        self.count += 1
        self.last_reason = reason.strip()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Secsh channel") and "open FAILED" in message:
            self.note(message.split("open FAILED:", 1)[-1])
            return False
        return True

    def summary(self, target: str) -> str | None:
        if not self.count:
            return None
        return (
            f"{self.count} connection(s) to {target} refused on the host while the server was down ({self.last_reason})"
        )


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK[0], 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def forward(target: InventoryTarget, *, via: Any = None, timeout: float = 30.0) -> Iterator[str]:
    """Yield a ``http://`` base URL that reaches ``target``'s server (see the module doc).

    ``via``: the pyinfra host being deployed; its open SSH connection carries the forward, and the
    refusal summary goes out as one of its log lines. Without it, ``target.ssh`` says how to log in.
    """
    remote = reach_address(target.server_host)
    client = getattr(getattr(via, "connector", None), "client", None)
    if client is None and target.ssh is None:  # @local and other non-SSH connectors reach the port as it is
        yield target.direct_url()
        return
    refusals = Refusals()
    try:
        if client is not None:
            with _over_transport(client.get_transport(), remote, target.server_port, refusals) as port:
                yield f"http://{LOOPBACK[0]}:{port}"
        else:
            assert target.ssh is not None
            with _over_ssh(target.ssh, remote, target.server_port, refusals, timeout, target.name) as port:
                yield f"http://{LOOPBACK[0]}:{port}"
    finally:
        summary = refusals.summary(f"{url_host(remote)}:{target.server_port}")
        if summary and hasattr(via, "log_styled"):  # a pyinfra host: the line goes with its others
            via.log_styled(summary, fg="yellow", log_func=logging.getLogger("pyinfra").info)
        elif summary:
            logger.info("%s: %s", target.name, summary)


def _pump(src: Any, dst: Any) -> None:
    """Copy ``src`` to ``dst`` until either ends, then end both (a socket or a paramiko channel each).

    ``shutdown`` before ``close``: the other pump is blocked reading the same socket, and a bare
    ``close`` would neither send the end on (the client would wait for it) nor wake that reader.
    """
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for end in (dst, src):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                end.close()


@contextlib.contextmanager
def _over_transport(transport: Any, remote: str, remote_port: int, refusals: Refusals) -> Iterator[int]:
    """A local listener whose every connection is a ``direct-tcpip`` channel on ``transport``; yields its port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((LOOPBACK[0], 0))
    listener.listen(16)
    stop = threading.Event()
    paramiko_log = logging.getLogger(transport.get_log_channel())
    paramiko_log.addFilter(refusals)

    def accept_loop() -> None:
        while not stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            try:
                channel = transport.open_channel("direct-tcpip", (remote, remote_port), peer)
            except Exception:
                conn.close()
                continue
            threading.Thread(target=_pump, args=(conn, channel), daemon=True).start()
            threading.Thread(target=_pump, args=(channel, conn), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()
        paramiko_log.removeFilter(refusals)


@contextlib.contextmanager
def _over_ssh(
    ssh: SshOptions, remote: str, remote_port: int, refusals: Refusals, timeout: float, name: str
) -> Iterator[int]:
    """``ssh -N -L`` from a free local port to ``remote:remote_port`` on the host; yields the local port.

    ssh's stderr is read all along (a pipe left unread would stall ssh once a long wait had
    filled it with refusals): refusals are counted, the rest kept for the error message.
    """
    port = free_local_port()
    spec = f"{LOOPBACK[0]}:{port}:{url_host(remote)}:{remote_port}"
    command = ssh.command("-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", "-L", spec)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    said: deque[str] = deque(maxlen=3)

    def read_stderr() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode(errors="replace").strip()
            if "open failed" in line:
                refusals.note(line.split("open failed:", 1)[-1])
            elif line:
                said.append(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        _wait_listening(process, port, timeout, name, said, reader)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        reader.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(
    process: subprocess.Popen[bytes], port: int, timeout: float, name: str, said: deque[str], reader: threading.Thread
) -> None:
    """ssh binds the local end only after it has logged in, so a connect means the forward is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reader.join(timeout=5)  # its last words
            raise TunnelError(f"ssh to {name} exited with {process.returncode}: {' / '.join(said) or 'no message'}")
        try:
            with socket.create_connection((LOOPBACK[0], port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TunnelError(f"ssh to {name} did not open the forward within {timeout:.0f} s")


def run_on(
    target: InventoryTarget, script: str, *options: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a shell ``script`` on ``target``: over ssh with ``options``, or here for an @local host."""
    command = ["sh", "-c", script] if target.ssh is None else target.ssh.command(*options, remote=[script])
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def read_deploy_record(target: InventoryTarget) -> dict[str, Any] | None:
    """The host's deploy record (:data:`lemfleet.paths.DEPLOY_RECORD`), or None when it is not there."""
    read = ["cat", DEPLOY_RECORD]
    command = read if target.ssh is None else target.ssh.command(remote=read)
    try:
        done = subprocess.run(command, capture_output=True, timeout=30.0, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        record = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None
