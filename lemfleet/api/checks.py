"""``smoke`` and ``verify``: prove a deployed fleet serves, as typed results.

``smoke`` talks to each endpoint the way a client would (through an SSH forward for an inventory
host, whose server may listen on loopback only). ``verify`` runs the shipped testinfra suite
against the fleet's hosts and reads its JUnit XML, one case per host and check.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lemfleet.api.fleet import Fleet, fleet_targets
from lemfleet.api.results import CheckResult, FleetSmoke, FleetVerify
from lemfleet.smoke import CHECKS, SmokeResult, Step, run_bounded, smoke_check
from lemfleet.sshtunnel import InventoryTarget, SshOptions, TunnelError, forward
from lemfleet.sshtunnel import read_deploy_record as read_record
from lemfleet.tls_client import https, pinned_context, recorded_fingerprint

VERIFY_SUITE = "lemfleet.verify"
"""The shipped suite, run as ``pytest --pyargs lemfleet.verify`` wherever lemfleet is installed."""


def smoke_target(target: InventoryTarget, options: dict[str, Any]) -> SmokeResult:
    """Smoke one inventory host through its forward; a failed tunnel fails the host."""
    try:
        with forward(target) as url:
            record = read_record(target) or {}
            pin = recorded_fingerprint(record)
            if pin:  # server_tls: https, with the certificate the deploy recorded (lemfleet.tls_client)
                url = https(url)
                try:
                    options = {**options, "verify": pinned_context(url, pin)}
                except OSError as err:  # not the recorded certificate (PinMismatch), or no handshake
                    return _tls_failed(target, str(err))
            result = smoke_check(url, host=target.name, backend=record.get("backend"), **options)
    except TunnelError as err:
        via = target.ssh.hostname if target.ssh else "localhost"
        result = SmokeResult(host=target.name, url=f"ssh://{via}")
        result.steps = [Step("tunnel", "failed", str(err))]
        result.steps += [Step(n, "skipped", "not run: no tunnel") for n in CHECKS]
        return result
    if target.ssh is not None:
        where = f"{target.server_host}:{target.server_port} on {target.ssh.hostname}"
        result.steps.insert(0, Step("tunnel", "passed", f"forwarded to {where}"))
    return result


def _tls_failed(target: InventoryTarget, problem: str) -> SmokeResult:
    """A host whose certificate could not be checked: nothing was sent to it."""
    result = SmokeResult(host=target.name, url=f"https://{target.server_host}:{target.server_port}")
    result.steps = [Step("tls", "failed", problem)]
    result.steps += [Step(n, "skipped", "not run: the certificate was not checked") for n in CHECKS]
    return result


def _targets(fleet: Fleet | None, urls: Iterable[str], limit: Iterable[str] | None) -> list[str | InventoryTarget]:
    targets: list[str | InventoryTarget] = list(urls)
    if fleet is not None:
        targets += fleet_targets(fleet, limit)
    if not targets:
        raise ValueError("nothing to smoke: give a fleet or at least one URL")
    return targets


def smoke(
    fleet: Fleet | None = None,
    *,
    urls: Iterable[str] = (),
    limit: Iterable[str] | None = None,
    api_key: str | None = None,
    model: str | None = None,
    timeout: float = 120.0,
    health_timeout: float = 300.0,
    concurrency: int = 8,
) -> FleetSmoke:
    """Health, auth (with a key: requests without one must get 401), models, chat and stream, per endpoint."""
    options: dict[str, Any] = {
        "api_key": api_key,
        "model_alias": model,
        "timeout": timeout,
        "health_timeout": health_timeout,
    }

    def one(target: str | InventoryTarget) -> SmokeResult:
        return smoke_check(target, **options) if isinstance(target, str) else smoke_target(target, options)

    return FleetSmoke(tuple(run_bounded(one, _targets(fleet, urls, limit), concurrency)))


# -- verify ---------------------------------------------------------------------------------


def ssh_config(targets: Iterable[InventoryTarget]) -> str:
    """An OpenSSH config with one ``Host`` block per inventory host, from its pyinfra SSH data."""
    blocks = []
    for target in targets:
        ssh: SshOptions | None = target.ssh
        if ssh is None:
            continue
        lines = [f"Host {target.name}", f"    HostName {ssh.hostname}", "    BatchMode yes"]
        if ssh.port:
            lines.append(f"    Port {ssh.port}")
        if ssh.user:
            lines.append(f"    User {ssh.user}")
        if ssh.key:
            lines += [f"    IdentityFile {Path(ssh.key).expanduser()}", "    IdentitiesOnly yes"]
        if ssh.known_hosts_file:
            lines.append(f"    UserKnownHostsFile {Path(ssh.known_hosts_file).expanduser()}")
        lines.append(f"    StrictHostKeyChecking {ssh.strict_host_key_checking}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


CASE_HOST = re.compile(r"\[(?:\w+://)?([^\]]+)\]$")


def read_junit(path: Path) -> tuple[CheckResult, ...]:
    """One :class:`CheckResult` per test case of the verify suite's JUnit XML."""
    checks = []
    for case in ET.parse(path).getroot().iter("testcase"):
        name = case.get("name", "")
        match = CASE_HOST.search(name)
        host = match.group(1) if match else "?"
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        message = (problem.get("message") or "") if problem is not None else ""
        checks.append(CheckResult(host, name.split("[")[0], problem is None, message))
    return tuple(checks)


def verify(
    fleet: Fleet,
    *,
    limit: Iterable[str] | None = None,
    max_restarts: int | None = None,
    suite: str | None = None,
    timeout: float = 900.0,
) -> FleetVerify:
    """Run the verify suite on the fleet's hosts (over SSH, from the inventory's SSH data)."""
    targets = fleet_targets(fleet, limit)
    if not targets:
        raise ValueError("no host to verify")
    specs = [f"ssh://{t.name}" if t.ssh else "local://" for t in targets]
    with tempfile.TemporaryDirectory(prefix="lemfleet-verify-") as tmp:
        config, junit = Path(tmp) / "ssh_config", Path(tmp) / "verify.xml"
        config.write_text(ssh_config(targets))
        command = [sys.executable, "-m", "pytest", "--pyargs", suite or VERIFY_SUITE, "-p", "no:cacheprovider", "-q",
                   f"--hosts={','.join(specs)}", f"--ssh-config={config}", f"--junitxml={junit}"]  # fmt: skip
        if max_restarts is not None:
            command.append(f"--lemfleet-max-restarts={max_restarts}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if not junit.is_file():
            raise RuntimeError(f"the verify suite did not run (exit {done.returncode}):\n{done.stdout[-2000:]}")
        return FleetVerify(read_junit(junit))
