"""Reach loopback-only llama-servers through SSH local port forwards, hosts taken from pyinfra.

A fleet host's server listens on 127.0.0.1 by default, so the controller cannot smoke it
directly. Given the same pyinfra inventory the deploy used, each SSH host gets
``ssh -N -L 127.0.0.1:<free port>:<server_host>:<server_port>`` with the host's own SSH data
(``ssh_hostname``, ``ssh_port``, ``ssh_user``, ``ssh_key``, ``ssh_known_hosts_file``,
``ssh_strict_host_key_checking``, ``ssh_config_file``) and ``BatchMode``, so a missing key fails
at once instead of prompting. ``@local`` hosts are smoked directly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from lemfleet.paths import DEPLOY_RECORD

DEFAULT_SERVER_HOST = "127.0.0.1"
DEFAULT_SERVER_PORT = 8080


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
    """One inventory host to smoke: how to reach it, and where its server listens there."""

    name: str
    ssh: SshOptions | None  # None for @local hosts
    server_host: str = DEFAULT_SERVER_HOST
    server_port: int = DEFAULT_SERVER_PORT
    groups: tuple[str, ...] = ()
    canary: bool = False  # in the inventory's ``canary`` group, or host data ``rollout_canary: true``

    def direct_url(self) -> str:
        return f"http://{_url_host(_reachable(self.server_host))}:{self.server_port}"


def _reachable(address: str) -> str:
    """A wildcard listen address is reached on loopback."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(address, address)


def _url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def load_inventory_targets(inventory_path: str, env: dict[str, str] | None = None) -> list[InventoryTarget]:
    """Read a pyinfra inventory with pyinfra's own loader, in a child process.

    Importing ``pyinfra_cli`` monkey-patches the whole process for gevent (sockets, threads,
    ssl), which must not happen under the smoke client's threads and httpx; a child keeps that
    apart. pyinfra's own warnings are passed on to stderr.
    """
    if not os.path.exists(inventory_path):
        raise ValueError(f"inventory file {inventory_path} does not exist")
    done = subprocess.run(
        [sys.executable, "-m", "lemfleet.sshtunnel", inventory_path],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    messages = done.stderr.strip().splitlines()
    if done.returncode != 0:
        raise ValueError(messages[-1] if messages else f"cannot read inventory {inventory_path}")
    if messages:
        print("\n".join(messages), file=sys.stderr)
    targets = []
    for entry in json.loads(done.stdout):
        ssh_entry = entry.pop("ssh")
        ssh = SshOptions(**ssh_entry) if ssh_entry else None
        entry["groups"] = tuple(entry.get("groups") or ())
        targets.append(InventoryTarget(ssh=ssh, **entry))
    return targets


def read_inventory_in_process(inventory_path: str) -> list[InventoryTarget]:
    """Read the inventory here (only in a process that may be patched by gevent)."""
    from pyinfra.api import State
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.connectors.local import LocalConnector
    from pyinfra.connectors.ssh import SSHConnector
    from pyinfra.context import ctx_state
    from pyinfra_cli.exceptions import UnexpectedExternalError
    from pyinfra_cli.inventory import make_inventory

    try:
        with ctx_state.use(State()):
            inventory = make_inventory(inventory_path, cwd=os.getcwd())
    except UnexpectedExternalError as err:
        cause = err.exception
        raise ValueError(f"inventory {inventory_path}: {type(cause).__name__}: {cause}") from err
    except PyinfraError as err:
        raise ValueError(f"inventory {inventory_path}: {err}") from err
    targets = []
    for host in inventory:
        data: Any = host.data
        server_host = str(data.get("server_host") or DEFAULT_SERVER_HOST)
        server_port = int(data.get("server_port") or DEFAULT_SERVER_PORT)
        groups = tuple(dict.fromkeys(str(group) for group in host.groups))
        canary = "canary" in groups or data.get("rollout_canary") in (True, "true", "yes", 1, "1")
        if issubclass(host.connector_cls, LocalConnector):
            targets.append(InventoryTarget(host.name, None, server_host, server_port, groups, canary))
        elif issubclass(host.connector_cls, SSHConnector):
            ssh = SshOptions(
                hostname=str(data.get("ssh_hostname") or host.name),
                port=int(data.get("ssh_port")) if data.get("ssh_port") else None,
                user=data.get("ssh_user"),
                key=data.get("ssh_key"),
                known_hosts_file=data.get("ssh_known_hosts_file"),
                strict_host_key_checking=data.get("ssh_strict_host_key_checking") or "accept-new",
                config_file=data.get("ssh_config_file"),
            )
            targets.append(InventoryTarget(host.name, ssh, server_host, server_port, groups, canary))
        else:
            raise ValueError(
                f"host {host.name} uses {host.connector_cls.__name__}; lemfleet smoke reaches "
                "inventory hosts over SSH or @local only (give other endpoints as URLs)"
            )
    return targets


def free_local_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def forward(target: InventoryTarget, *, timeout: float = 30.0) -> Iterator[str]:
    """Yield a base URL that reaches ``target``'s server: direct for @local, else via ssh -L."""
    if target.ssh is None:
        yield target.direct_url()
        return
    port = free_local_port()
    spec = f"127.0.0.1:{port}:{_url_host(_reachable(target.server_host))}:{target.server_port}"
    command = target.ssh.command("-N", "-o", "ExitOnForwardFailure=yes", "-o", "ServerAliveInterval=15", "-L", spec)
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(process, port, timeout, target.name)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_listening(process: subprocess.Popen[bytes], port: int, timeout: float, name: str) -> None:
    """ssh binds the local end only after it has logged in, so a connect means the forward is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TunnelError(f"ssh to {name} exited with {process.returncode}: {_stderr(process)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TunnelError(f"ssh to {name} did not open the forward within {timeout:.0f} s")


def _stderr(process: subprocess.Popen[bytes]) -> str:
    if process.stderr is None:
        return ""
    text = process.stderr.read().decode(errors="replace").strip()
    return " / ".join(text.splitlines()[-3:]) or "no message"


def run_on(
    target: InventoryTarget, script: str, *options: str, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a shell ``script`` on ``target``: over ssh with ``options``, or here for an @local host."""
    command = ["sh", "-c", script] if target.ssh is None else target.ssh.command(*options, remote=[script])
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def read_deploy_record(target: InventoryTarget, *, timeout: float = 30.0) -> dict[str, Any] | None:
    """The host's deploy record (:data:`lemfleet.paths.DEPLOY_RECORD`), or None when it is not there."""
    read = ["cat", DEPLOY_RECORD]
    command = read if target.ssh is None else target.ssh.command(remote=read)
    try:
        done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        record = json.loads(done.stdout)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


if __name__ == "__main__":
    try:
        found = read_inventory_in_process(sys.argv[1])
    except ValueError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # the inventory file is user code: report, don't trace back
        print(f"inventory {sys.argv[1]}: {type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps([asdict(target) for target in found]))
