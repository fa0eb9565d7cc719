"""gate: the health gate a new serving state must pass, and what happens when it does not.

The gate passes on all of: the unit stays up and ``/health`` answers 200
(503 while the model loads is expected); the smoke checks (auth when a key
is configured, models, chat, stream; :func:`lemfleet.smoke.smoke_check`);
and, on a GPU plan, the offload check of the start's own journal. It runs
through the deploy's SSH connection, so a loopback-only server is tested
as it is; a pass changes nothing, so a rerun still reports no change.

While it waits it watches the unit: a server that exits (a model that does
not load, an argument llama-server rejects) fails the gate at once rather
than at the health deadline, and the journal lines of that start (that
invocation only) go into the report.

On a failure, by the fallback roles/transaction.py chose before the deploy:

- ``restore``: put the last good state back, restart it, check it again,
  and fail the host with ``rolled back: <reason>``;
- ``stop``: a first deploy has nothing to go back to; stop and disable the
  unit so it does not crash-loop, keep its files, fail the host;
- ``report``: the state that failed is the last good one; fail the host.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

import httpx
from cryptography import x509
from pyinfra import host, logger, state
from pyinfra.api import FunctionCommand, StringCommand, deploy, operation
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS

from lemfleet.api_keys import first_key
from lemfleet.roles.server_tls import fingerprint
from lemfleet.roles.smoke import DEFAULTS, LOAD_LINES, MODEL_BUFFER, OFFLOADED, offload_problem, smoke_key
from lemfleet.roles.transaction import Fallback, Layout, restore_script
from lemfleet.smoke import CHECKS, SmokeResult, Step, smoke_check
from lemfleet.sshtunnel import InventoryTarget, forward
from lemfleet.tls_client import pinned_context

JOURNAL_LINES = 20
POLL_S = 0.5

# Each host's gate verdict in this run, read by the steps that may only follow a pass.
_passed: dict[str, bool] = {}


def passed_on(host_name: str) -> Callable[[], bool]:
    """A callable for ``_if=``: whether the gate passed on ``host_name`` in this run."""
    return lambda: _passed.get(host_name) is True


@dataclass(frozen=True)
class Target:
    """What the gate checks on one host."""

    port: int
    listen_host: str
    alias: str
    backend: str
    unit: str  # "<name>.service"
    n_gpu_layers: int = 0
    tls_fingerprint: str | None = None  # server_tls: the sha256 the gate pins (roles/server_tls.py)


@dataclass
class Verdict:
    ok: bool
    reason: str = ""
    invocation: str = ""  # the systemd invocation the gate watched
    result: SmokeResult | None = None
    notes: list[str] = field(default_factory=list)


def _shell(command: str) -> tuple[bool, str]:
    """Run ``command`` on the host with the current operation's sudo/su settings; (ok, stdout)."""
    arguments = {k: v for k, v in (host.current_op_global_arguments or {}).items() if k in CONNECTOR_ARGUMENT_KEYS}
    ok, output = host.run_shell_command(StringCommand(command), **arguments)
    return ok, output.stdout


class UnitWatch:
    """Reads the unit's state; says when the start the gate watches has ended."""

    PROPERTIES = ("ActiveState", "SubState", "Result", "NRestarts", "InvocationID", "ExecMainStatus")

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.first: dict[str, str] | None = None
        self.invocation = ""

    def read(self) -> dict[str, str]:
        props = " ".join(f"-p {p}" for p in self.PROPERTIES)
        _, out = _shell(f"systemctl show {props} {quote(self.unit)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def ended(self) -> str | None:
        """Why the watched start is over (the server exited), or None while it is up or loading."""
        now = self.read()
        if not now:  # the read itself failed; the next poll tries again
            return None
        if self.first is None:
            self.first, self.invocation = now, now.get("InvocationID", "")
        return start_ended(self.unit, self.first, now)


def start_ended(unit: str, first: dict[str, str], now: dict[str, str]) -> str | None:
    """Why the start seen as ``first`` (``systemctl show`` properties) is over by ``now``, or None.

    Over means: systemd restarted the server (NRestarts or the invocation
    changed), it waits to restart it (``auto-restart``), or the unit is
    failed or stopped.
    """
    restarted = now.get("NRestarts") != first.get("NRestarts") or now.get("InvocationID") != first.get("InvocationID")
    if restarted or now.get("SubState") == "auto-restart" or now.get("ActiveState") in ("failed", "inactive"):
        return (
            f"{unit} exited during start (exit status {now.get('ExecMainStatus', '?')}, "
            f"{now.get('ActiveState')}/{now.get('SubState')}, result {now.get('Result')})"
        )
    return None


def journal(invocation: str) -> list[str]:
    """The last lines the journal holds for one start of the unit: its process's and systemd's about it."""
    if not invocation:
        return []
    ok, out = _shell(
        f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={quote(invocation)} + INVOCATION_ID={quote(invocation)} "
        f"| tail -n {JOURNAL_LINES}"
    )
    return out.splitlines() if ok else []


def _wait_for_start(base: str, watch: UnitWatch, timeout: float) -> str | None:
    """Poll /health until 200 while watching the unit; why the start failed, or None.

    Over https the poll does not check the certificate (the server is not up to be pinned yet, and
    /health is sent nothing secret); every check that sends the key runs under the pin.
    """
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    with httpx.Client(timeout=10.0, verify=not base.startswith("https://")) as http:
        while True:
            ended = watch.ended()
            if ended:
                return ended
            try:
                response = http.get(f"{base}/health")
            except httpx.TransportError as err:
                last = f"{type(err).__name__}"
            else:
                if response.status_code == 200:
                    return None
                if response.status_code != 503:
                    return f"/health answered HTTP {response.status_code}"
                last = "HTTP 503 (loading)"
            if time.monotonic() > deadline:
                return f"/health not 200 after {timeout:.0f} s; last answer: {last}"
            time.sleep(POLL_S)


def check(target: Target, restored_key_file: str | None = None) -> Verdict:
    """The whole gate on the current host, at execution time.

    With ``restored_key_file`` it checks the last good state just put back:
    whatever model it serves, with the key in that file (read over the
    deploy's connection, never shown), and not the offload, which that state
    passed when it became the last good one.
    """
    data = host.data
    watch = UnitWatch(target.unit)
    pin = _fingerprint_on_host(restored_key_file) if restored_key_file else target.tls_fingerprint
    server = InventoryTarget(host.name, None, target.listen_host, target.port)
    with forward(server, via=host) as plain:  # over the deploy's own SSH connection
        base = "https://" + plain.removeprefix("http://") if pin else plain
        problem = _wait_for_start(base, watch, float(data.get("smoke_health_timeout")))
        if problem:
            failed = SmokeResult(host=host.name, url=base, backend=target.backend)
            failed.steps = [Step("health", "failed", problem)] + [
                Step(name, "skipped", "not run: the server did not start") for name in CHECKS[1:]
            ]
            return Verdict(False, problem, watch.invocation, failed)
        if not data.get("smoke_enabled"):
            return Verdict(True, invocation=watch.invocation, notes=["smoke checks off (smoke_enabled=False)"])
        try:
            verify = pinned_context(base, pin) if pin else True
        except (OSError, ValueError) as err:  # PinMismatch is an ssl.SSLError, an OSError
            problem = f"TLS: {err}"
            failed = SmokeResult(host=host.name, url=base, backend=target.backend)
            failed.steps = [Step("health", "failed", problem)]
            return Verdict(False, problem, watch.invocation, failed)
        with httpx.Client(timeout=120.0, verify=verify) as http:
            result = smoke_check(
                base,
                api_key=_key_on_host(restored_key_file) if restored_key_file else smoke_key(data),
                model_alias=None if restored_key_file else target.alias,
                host=host.name,
                backend=target.backend,
                health_timeout=60,
                max_tokens=data.get("smoke_max_tokens"),
                client=http,
            )
    result.url = f"{'https' if pin else 'http'}://{target.listen_host}:{target.port}"
    if not result.ok:
        problems = "; ".join(f"{s.name}: {s.message}" for s in result.failures())
        return Verdict(False, f"smoke test failed: {problems}", watch.invocation, result)
    if target.backend != "cpu" and not restored_key_file:
        problem = _offload(target, watch.invocation)
        if problem:
            return Verdict(False, f"offload check failed: {problem}", watch.invocation, result)
    return Verdict(True, invocation=watch.invocation, result=result)


def _key_on_host(key_file: str) -> str | None:
    """The first key in the host's key file, as llama-server reads it; None when there is no file."""
    ok, content = _shell(f"cat {quote(key_file)} 2>/dev/null || true")
    return first_key(content) if ok and content else None


def _fingerprint_on_host(key_file: str) -> str | None:
    """The sha256 of the TLS certificate beside ``key_file`` on the host (a restored state's), or None."""
    cert_file = str(Path(key_file).with_name("tls.crt"))
    ok, content = _shell(f"cat {quote(cert_file)} 2>/dev/null || true")
    if not (ok and "BEGIN CERTIFICATE" in content):
        return None
    return fingerprint(x509.load_pem_x509_certificates(content.encode())[0])


def _offload(target: Target, invocation: str) -> str | None:
    _, text = _shell(
        f"journalctl --no-pager -o cat _SYSTEMD_INVOCATION_ID={quote(invocation)} | grep -E {quote(LOAD_LINES)}"
    )
    if not (OFFLOADED.search(text) or MODEL_BUFFER.search(text)):
        host.log_styled(f"warning: the {target.backend} server's log does not say where it loaded the model "
                        "(server_log_verbosity below 4?)", fg="yellow", log_func=logger.warning)  # fmt: skip
    return offload_problem(text, target.backend, target.n_gpu_layers)


def _save(result: SmokeResult | None, instance: str | None = None) -> None:
    """``<host>.json`` for the first (or only) instance, ``<host>@<unit instance>.json`` for the others."""
    if result is None:
        return
    out = Path(host.data.get("smoke_results_dir"))
    out.mkdir(parents=True, exist_ok=True)
    name = f"{host.name}@{instance.rsplit('@', 1)[-1]}" if instance else host.name
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(result.to_json(), indent=2))
    os.replace(tmp, out / f"{name}.json")


def _fail(message: str, lines: list[str]) -> FunctionCommand:
    """A command that fails the host, printing ``message`` and the journal lines of the failed start."""
    journal_text = "\n".join(f"    {line}" for line in lines)
    text = message + (f"\n  journal of the failed start:\n{journal_text}" if lines else "")

    def failed(state, host) -> bool:  # pyinfra passes both by name
        host.log_styled(text, fg="red", log_func=logger.error)
        return False

    return FunctionCommand(failed, (), {})


def restart_commands(unit: str) -> str:
    return (
        f"systemctl daemon-reload\nsystemctl reset-failed {quote(unit)} 2>/dev/null || true\n"
        f"systemctl restart {quote(unit)}"
    )


def _check_all(targets: Sequence[Target], restored_key_file: str | None = None) -> Verdict:
    """Every instance in turn (they started together); the first that fails is the verdict."""
    verdict = Verdict(False, "no instance to check")
    for index, target in enumerate(targets):
        verdict = check(target, restored_key_file)
        if not restored_key_file:
            _save(verdict.result, None if index == 0 else target.unit.removesuffix(".service"))
        if not verdict.ok:
            if len(targets) > 1:
                verdict.reason = f"{target.unit}: {verdict.reason}"
            return verdict
    return verdict


def restore_commands(layout: Layout, new: Sequence[str], restored: Sequence[str]) -> str:
    """Put the last good state back whole: stop and disable the new layout's units it lacks (while their
    files are still there to disable), restore the files, then restart and enable its own units."""
    gone = [quote(unit) for unit in new if unit not in restored]
    lines = [f"systemctl disable --now {unit} 2>/dev/null || true\nsystemctl reset-failed {unit} 2>/dev/null || true"
             for unit in gone]  # fmt: skip
    lines.append(restore_script(layout))
    lines += [restart_commands(unit) + f"\nsystemctl enable {quote(unit)} 2>/dev/null || true" for unit in restored]
    return "\n".join(lines)


@operation(is_idempotent=False)
def health_gate(target: Target | Sequence[Target], fallback: Fallback, layout: Layout, restored: Sequence[Target] = ()):
    """Check the serving state at execution time; yield commands only when it fails.

    ``target`` is the one server or every instance; ``restored`` the instances of the last good state,
    which a rollback restarts and checks (by default the same as ``target``).
    """
    if not state.is_executing:
        return
    targets = [target] if isinstance(target, Target) else list(target)
    previous = list(restored) or targets
    verdict = _check_all(targets)
    _passed[host.name] = verdict.ok
    if verdict.ok:
        smoke = verdict.result
        detail = (
            f"ttft {smoke.time_to_first_token_s}s, {smoke.decode_tokens_per_s} tokens/s, reply {smoke.reply!r}"
            if smoke
            else "; ".join(verdict.notes)
        )
        every = f" ({len(targets)} instances)" if len(targets) > 1 else ""
        host.log_styled(f"gate passed{every}: {detail}", fg="green", log_func=logger.info)
        return
    time.sleep(1.0)  # journald may still be writing what the server said as it exited
    lines = journal(verdict.invocation)
    units = [t.unit for t in targets]
    if fallback == "restore":
        yield StringCommand(restore_commands(layout, units, [t.unit for t in previous]))
        again = _check_all(previous, restored_key_file=layout.api_key)
        outcome = (
            "the last good state serves again"
            if again.ok
            else f"but the last good state does not pass the gate either: {again.reason}"
        )
        yield _fail(f"rolled back: {verdict.reason}; {outcome}", lines)
    elif fallback == "stop":
        stop = "; ".join(
            f"systemctl disable --now {quote(u)}; systemctl reset-failed {quote(u)} || true" for u in units
        )
        yield StringCommand(stop)
        yield _fail(
            f"failed: {verdict.reason}; there is no last good state to go back to, so {', '.join(units)} "
            f"{'is' if len(units) == 1 else 'are'} stopped and disabled (the files are kept for diagnosis)",
            lines,
        )
    else:
        yield _fail(f"failed: {verdict.reason}", lines)


@deploy("Health gate", data_defaults=DEFAULTS)
def gate(
    target: Target | Sequence[Target], fallback: Fallback, layout: Layout, restored: Sequence[Target] = ()
) -> None:
    """Gate the host's new serving state (every instance); :func:`passed_on` then says whether it passed."""
    health_gate(name="Health gate", target=target, fallback=fallback, layout=layout, restored=restored)
