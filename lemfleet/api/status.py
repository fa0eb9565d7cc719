"""``status``: what each host of a fleet is running now, read from all hosts at once.

One row per host: whether the service is active, its build id and backend, the model and its
sha256, uptime, restarts, ``/health``, requests processing and deferred and tokens predicted (from
llama-server's ``/metrics``), the last smoke test's tokens/s (from the controller's smoke
results), and drift: whether the host still matches its ``deployed.json`` (the current build link,
the model file as lemfleet placed it, the unit active). A host is read in two SSH round trips
(its record, then one command gathering the rest, over one shared connection); an unreachable
host is a row that says so.

``/health`` and ``/metrics`` are fetched on the host itself, over SSH: a server that listens on
loopback (the default) cannot be reached, or scraped by Prometheus, from another machine.
``/metrics`` needs a key when the server has one; the host's key file is read there, and the key
goes to curl on its standard input (never on a command line, where other users could see it).

A server with TLS (``server_tls``; its record has ``service.tls``) is probed over https, and curl sends
a request only once the server's public key is the one the record pins (``--pinnedpubkey``,
:func:`lemfleet.tls_client.curl_pin`), so the key never reaches another server. The certificate it
serves is read too (``openssl s_client``, which TLS hosts have) and compared with the recorded
fingerprint, the one clients pin: another certificate is drift.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lemfleet.api.display import html_table, text_table
from lemfleet.api.fleet import Fleet, fleet_targets
from lemfleet.paths import API_KEY_FILE as KEY_FILE
from lemfleet.paths import DEPLOY_RECORD, reach_address, url_host
from lemfleet.sshtunnel import InventoryTarget, run_on
from lemfleet.tls_client import curl_pin, normalise, recorded_fingerprint, recorded_spki, same_certificate

CURRENT = "/opt/lemfleet/llama.cpp/current"
MARK = "@@lemfleet-status:"
CODE = "@@code "
HEADERS = ("host", "state", "backend", "build", "model", "sha256", "uptime", "restarts", "health", "requests",
           "tokens", "tokens/s", "drift")  # fmt: skip
# The first key of the key file, escaped for a curl config line ("\" and '"'), handed to curl on stdin.
METRICS_AUTH = (
    f"k=$(grep -v '^#' {KEY_FILE} 2>/dev/null | grep -m 1 . | sed 's/[\\\\\"]/\\\\&/g'); "
    """if [ -n "$k" ]; then printf 'header = "Authorization: Bearer %s"\\n' "$k"; fi"""
)


@dataclass(frozen=True)
class HostStatus:
    host: str
    reachable: bool
    deployed: bool = False
    active: str | None = None  # systemd ActiveState
    backend: str | None = None
    build_id: str | None = None
    model: str | None = None
    model_sha256: str | None = None
    uptime_s: int | None = None
    restarts: int | None = None
    health: int | None = None  # HTTP status of /health, 0 when nothing answered
    processing: int | None = None  # llamacpp:requests_processing; None when /metrics could not be read
    deferred: int | None = None  # llamacpp:requests_deferred
    tokens_predicted: int | None = None  # llamacpp:tokens_predicted_total, since the server started
    tokens_per_s: float | None = None
    scheme: str = "http"  # https for a server_tls host, probed with its recorded pin
    tls_sha256: str | None = None  # the fingerprint of the certificate the server presents (https only)
    drift: tuple[str, ...] = ()
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.reachable and self.deployed and self.active == "active" and self.health == 200 and not self.drift

    def cells(self) -> list[Any]:
        if not self.reachable:
            return [self.host, "unreachable", *[None] * 10, self.error]
        if not self.deployed:
            return [self.host, "not deployed", *[None] * 11]
        uptime = None if self.uptime_s is None else _duration(self.uptime_s)
        sha = (self.model_sha256 or "")[:12] or None
        drift = "; ".join(self.drift) or "none"
        build = (self.build_id or "")[:12] or None
        state = self.active if self.active != "active" else ("ok" if self.ok else "active")
        requests = None if self.processing is None else f"{self.processing} run, {self.deferred} wait"
        health = f"{self.health} https" if self.scheme == "https" else self.health
        return [self.host, state, self.backend, build, self.model, sha, uptime, self.restarts, health,
                requests, self.tokens_predicted, self.tokens_per_s, drift]  # fmt: skip


def _duration(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days}d{hours}h" if days else f"{hours}h{rest // 60}m" if hours else f"{rest // 60}m{rest % 60}s"


@dataclass(frozen=True)
class FleetStatus:
    hosts: tuple[HostStatus, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "hosts": [{**asdict(h), "ok": h.ok} for h in self.hosts]}

    def __str__(self) -> str:
        return text_table(HEADERS, [h.cells() for h in self.hosts])

    def markdown(self) -> str:
        rows = [[str(c if c is not None else "-").replace("|", "\\|") for c in h.cells()] for h in self.hosts]
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"

    def _repr_html_(self) -> str:
        bad = sum(not h.ok for h in self.hosts)
        return html_table(HEADERS, [h.cells() for h in self.hosts], caption=f"Status: {bad} host(s) need attention")


def status_command(record: dict[str, Any]) -> str:
    """One shell command printing, in marked sections, what the row needs (read-only)."""
    service, model = record["service"], record["model"]
    unit, path = shlex.quote(service["unit"]), shlex.quote(model["path"])
    address = url_host(reach_address(service["host"]))
    base, tls = f"{address}:{int(service['port'])}", ""
    if recorded_fingerprint(record):  # server_tls: https, to the pinned public key only
        try:
            tls = " " + curl_pin(recorded_spki(record) or "")
        except ValueError:
            tls = " --pinnedpubkey sha256//none"  # no valid pin recorded: nothing is sent (drift says why)
    url = f"https://{base}" if tls else f"http://{base}"
    sections = {
        "unit": f"systemctl show {unit} -p ActiveState -p NRestarts -p ActiveEnterTimestamp",
        "now": "date +%s",
        "since": f'date -d "$(systemctl show {unit} -p ActiveEnterTimestamp --value)" +%s 2>/dev/null || echo -',
        "current": f"readlink -f {CURRENT}",
        "model": f"cat {path}.verified 2>/dev/null; stat -c '%s %Y' {path} 2>/dev/null || echo missing",
        "metrics": f"{METRICS_AUTH} | curl -s -m 10{tls} -K - -w '\\n{CODE}%{{http_code}}\\n' {url}/metrics",
        "health": f"curl -s -o /dev/null -m 10{tls} -w '%{{http_code}}\\n' {url}/health",
    }
    if tls:
        sections["tls"] = (
            f"openssl s_client -connect {base} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 "
            "2>/dev/null || echo -"
        )
    return "; ".join(f"echo {MARK}{name}; {cmd}" for name, cmd in sections.items())


def _sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(MARK):
            current = found.setdefault(line[len(MARK) :], [])
        elif current is not None and line.strip():
            current.append(line.strip())
    return found


def parse_metrics(lines: list[str]) -> dict[str, float]:
    """``llamacpp:`` samples from the metrics section, or ``{}`` unless /metrics answered 200 (pure).

    llama-server exports each of its metrics once, without labels: ``name value``.
    """
    if not lines or lines[-1] != f"{CODE}200":
        return {}
    found: dict[str, float] = {}
    for line in lines[:-1]:
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith("llamacpp:"):
            try:
                found[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return found


def _count(metrics: dict[str, float], name: str) -> int | None:
    value = metrics.get(f"llamacpp:{name}")
    return None if value is None else int(value)


def host_status(name: str, record: dict[str, Any], text: str, smoke: dict[str, Any] | None) -> HostStatus:
    """The row for a host from its record and the status command's output (pure)."""
    out = _sections(text)
    unit = dict(line.split("=", 1) for line in out.get("unit", []) if "=" in line)
    build = record.get("build") or {}
    model = record.get("model") or {}
    drift = []
    current = (out.get("current") or [""])[0]
    if current != build.get("path"):
        drift.append(f"build link points at {current or 'nothing'}, the record says {build.get('path')}")
    placed = out.get("model") or []
    if placed == ["missing"] or not placed:
        drift.append(f"model {model.get('path')} is missing")
    elif len(placed) == 2:
        sha, size, mtime = [*placed[0].split(), "", "", ""][:3]
        if sha != model.get("sha256") or placed[1] != f"{size} {mtime}":
            drift.append("model file changed since lemfleet placed it")
    # A model the operator placed (model_source=host) has no check record: nothing to compare with.
    active = unit.get("ActiveState")
    if active != "active":
        drift.append(f"service is {active}")
    now, since = (out.get("now") or ["-"])[0], (out.get("since") or ["-"])[0]
    uptime = int(now) - int(since) if active == "active" and now.isdigit() and since.isdigit() else None
    health = (out.get("health") or ["0"])[0]
    metrics = parse_metrics(out.get("metrics") or [])
    served, pinned = None, recorded_fingerprint(record)
    if pinned:
        served = _served(out)
        drift += _tls_drift(record, pinned, served)
    return HostStatus(
        host=name,
        reachable=True,
        deployed=True,
        active=active,
        backend=record.get("backend"),
        build_id=build.get("id"),
        model=model.get("file"),
        model_sha256=model.get("sha256"),
        uptime_s=uptime,
        restarts=int(unit["NRestarts"]) if unit.get("NRestarts", "").isdigit() else None,
        health=int(health) if health.isdigit() else 0,
        processing=_count(metrics, "requests_processing"),
        deferred=_count(metrics, "requests_deferred"),
        tokens_predicted=_count(metrics, "tokens_predicted_total"),
        tokens_per_s=(smoke or {}).get("decode_tokens_per_s"),
        scheme="https" if pinned else "http",
        tls_sha256=served,
        drift=tuple(drift),
    )


def _served(out: dict[str, list[str]]) -> str | None:
    """The fingerprint in openssl's ``sha256 Fingerprint=AB:CD:...`` line, normalised; None if unreadable."""
    line = (out.get("tls") or ["-"])[0]
    try:
        return normalise(line.split("=", 1)[1]) if "=" in line else None
    except ValueError:
        return None


def _tls_drift(record: dict[str, Any], pinned: str, served: str | None) -> list[str]:
    """What differs between the certificate a TLS host serves and the one its record pins (pure)."""
    drift = []
    try:
        curl_pin(recorded_spki(record) or "")
    except ValueError:
        drift.append("deployed.json records no valid public-key pin (service.tls.spki_sha256): nothing was sent")
    if served is None:
        drift.append("the served certificate could not be read (openssl s_client)")
    elif not same_certificate(served, pinned):
        drift.append(f"serves the certificate sha256 {served}, deployed.json pins {pinned}")
    return drift


def _shared(control: Path) -> list[str]:
    """ssh options that let a host's two round trips share one connection."""
    return ["-o", "ControlMaster=auto", "-o", f"ControlPath={control}/%C", "-o", "ControlPersist=5"]


def _read(target: InventoryTarget, smoke_dir: Path, control: Path) -> HostStatus | list[HostStatus]:
    try:
        got = run_on(target, f"cat {DEPLOY_RECORD} 2>/dev/null || echo '{{}}'", *_shared(control))
    except subprocess.TimeoutExpired:
        return HostStatus(target.name, reachable=False, error="ssh timed out")
    if got.returncode != 0:
        return HostStatus(target.name, reachable=False, error=(got.stderr.strip().splitlines() or ["ssh failed"])[-1])
    try:
        record = json.loads(got.stdout or "{}")
    except json.JSONDecodeError:
        return HostStatus(target.name, reachable=True, error=f"{DEPLOY_RECORD} is not JSON")
    if not record.get("service"):
        return HostStatus(target.name, reachable=True)
    # Here, not at the top: roles.record brings pyinfra and the build steps, which `import lemfleet.api`
    # (every lemfleet command) need not load.
    from lemfleet.roles.record import instance_records

    rows = []
    each_instance = instance_records(record)  # one row per instance (server_instances): "<host>@<N>"
    for index, one in enumerate(each_instance):
        done = run_on(target, status_command(one), *_shared(control))
        instance = one["service"]["unit"].removesuffix(".service").rpartition("@")[2]
        name = f"{target.name}@{instance}" if len(each_instance) > 1 else target.name
        smoke_file = smoke_dir / f"{name if index else target.name}.json"  # as the health gate saves them
        smoke = json.loads(smoke_file.read_text()) if smoke_file.is_file() else None
        rows.append(host_status(name, one, done.stdout, smoke))
    return rows


def status(fleet: Fleet, *, limit: Iterable[str] | None = None, smoke_dir: str | Path = "out/smoke") -> FleetStatus:
    """A :class:`FleetStatus` row per host of the fleet (or ``limit``), every host read at the same time."""
    targets = fleet_targets(fleet, limit)
    if not targets:
        raise ValueError("no host to read")
    with (
        tempfile.TemporaryDirectory(prefix="lemfleet-ssh-") as control,
        ThreadPoolExecutor(min(32, len(targets))) as pool,
    ):
        read = list(pool.map(lambda t: _read(t, Path(smoke_dir), Path(control)), targets))
    return FleetStatus(tuple(row for rows in read for row in (rows if isinstance(rows, list) else [rows])))
