"""Prometheus for a fleet: file_sd targets from each host's deploy record, a scrape config and alert rules.

llama-server's ``/metrics`` (on with ``--metrics``, which lemfleet always passes) needs a key
whenever the server has one: in the pinned llama-server only ``/health`` skips auth. Prometheus
gets a key of its own, ``server_metrics_key``, which the deploy adds to the host's key file beside
the client keys; the scrape config reads it from ``bearer_token_file``, a file the operator places
on the Prometheus host.

A server that listens on loopback only cannot be scraped from another machine: it is left out of
the targets, with the reason (``lemfleet status`` reads such a host over SSH instead).

A server with TLS (``server_tls``) is scraped over https with its certificate pinned: Prometheus's
``tls_config`` is per scrape job, so each such host gets a job of its own (``scheme: https``, its
targets inline, ``job`` relabelled to ``lemfleet`` so that the alert rules cover it) whose ``ca_file``
is the host's certificate alone, written beside the config (lemfleet/prometheus_tls.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lemfleet.api.fleet import Fleet, fleet_targets
from lemfleet.paths import LOOPBACK, WILDCARD, reach_address, url_host
from lemfleet.prometheus_tls import TlsJob, read_certificate, tls_job, tls_scrape_config
from lemfleet.roles.record import instance_records
from lemfleet.sshtunnel import InventoryTarget, read_deploy_record
from lemfleet.tls_client import recorded_fingerprint

JOB = "lemfleet"

# llama-server exports no restart counter: a restart shows as a reset of its counters.
RULES: dict[str, Any] = {
    "groups": [
        {
            "name": "lemfleet",
            "rules": [
                {
                    "alert": "LemfleetInstanceDown",
                    "expr": f'up{{job="{JOB}"}} == 0',
                    "for": "2m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "llama-server on {{ $labels.host }} does not answer /metrics"},
                },
                {
                    "alert": "LemfleetServerRestarted",
                    "expr": f'resets(llamacpp:tokens_predicted_total{{job="{JOB}"}}[15m]) > 0',
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "llama-server on {{ $labels.host }} restarted (its counters reset)"},
                },
                {
                    "alert": "LemfleetRequestsDeferred",
                    "expr": f'llamacpp:requests_deferred{{job="{JOB}"}} > 0',
                    "for": "5m",
                    "labels": {"severity": "warning"},
                    "annotations": {"summary": "requests wait for a free slot on {{ $labels.host }}"},
                },
                {
                    "alert": "LemfleetNoTokensWhileRequestsWait",
                    "expr": (
                        f'increase(llamacpp:tokens_predicted_total{{job="{JOB}"}}[5m]) == 0 '
                        f'and on(instance) (llamacpp:requests_processing{{job="{JOB}"}} '
                        f'+ llamacpp:requests_deferred{{job="{JOB}"}}) > 0'
                    ),
                    "for": "5m",
                    "labels": {"severity": "critical"},
                    "annotations": {"summary": "{{ $labels.host }} serves no tokens while requests wait"},
                },
            ],
        }
    ]
}


@dataclass(frozen=True)
class PrometheusFiles:
    targets: list[dict[str, Any]]  # plain HTTP, in targets.json
    skipped: dict[str, str]  # host -> why it is not a target
    tls: list[TlsJob] = field(default_factory=list)  # https, one scrape job per host

    def write(self, out: Path, *, key_file: str) -> list[Path]:
        """``targets.json``, ``prometheus.yml``, ``lemfleet-rules.yml`` and each TLS host's certificate in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        targets, config, rules = out / "targets.json", out / "prometheus.yml", out / "lemfleet-rules.yml"
        targets.write_text(json.dumps(self.targets, indent=2) + "\n")
        written = []
        document = scrape_config(targets.resolve(), rules.resolve(), key_file)
        for job in self.tls:
            ca_file = job.write_ca(out)
            written.append(ca_file)
            document["scrape_configs"].append(tls_scrape_config(job, ca_file.resolve(), key_file, JOB))
        config.write_text(json.dumps(document, indent=2) + "\n")
        rules.write_text(json.dumps(RULES, indent=2) + "\n")
        return [targets, config, rules, *written]


def scrape_config(targets: Path, rules: Path, key_file: str) -> dict[str, Any]:
    """An example prometheus.yml (JSON is YAML): one job over the file_sd targets, with the scrape key."""
    return {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "bearer_token_file": key_file,
                "file_sd_configs": [{"files": [str(targets)]}],
            }
        ],
    }


def target_for(target: InventoryTarget, record: dict[str, Any] | None) -> tuple[dict[str, Any] | None, str | None]:
    """The file_sd entry of one host, or why it has none."""
    if not record or not record.get("service"):
        return None, "no deployed.json could be read (not deployed by lemfleet, or unreachable)"
    service = record["service"]
    listen = service.get("host")
    if listen in LOOPBACK:
        return None, (f"listens on {listen} only, so Prometheus on another machine cannot scrape it "
                      "(lemfleet status reads it over SSH)")  # fmt: skip
    # A wildcard server is scraped at the name the controller reaches the host by; @local on loopback.
    address = url_host(target.ssh.hostname if target.ssh and listen in WILDCARD else reach_address(listen))
    build, model = record.get("build") or {}, record.get("model") or {}
    gpus = [*build.get("gpu_targets", []), *build.get("cuda_architectures", [])]
    labels = {
        "host": target.name,
        "group": next((g for g in target.groups if g != target.name and not g.startswith("@")), ""),
        "backend": str(record.get("backend") or ""),
        "gpu": ",".join(gpus) or "none",
        "instance_name": service.get("unit", ""),
        "build_id": str(build.get("id") or ""),
        "model_sha256": str(model.get("sha256") or ""),
    }
    return {"targets": [f"{address}:{int(service['port'])}"], "labels": labels}, None


def prometheus_files(fleet: Fleet, *, limit: Iterable[str] | None = None) -> PrometheusFiles:
    """Read every host's deploy record (all at once) and make the Prometheus files' content."""
    targets = fleet_targets(fleet, limit)
    with ThreadPoolExecutor(max_workers=min(32, max(1, len(targets)))) as pool:
        read = list(pool.map(_read, targets))
    entries, skipped, jobs = [], {}, []
    for target, (record, certificate) in zip(targets, read, strict=True):
        # One target per instance (server_instances), each labelled with its unit as instance_name.
        ones = instance_records(record) if record and record.get("service") else [record]
        found = [target_for(target, one) for one in ones]
        ready = [entry for entry, _ in found if entry]
        whys = [why for _, why in found if why]
        if ready and recorded_fingerprint(record):  # server_tls: https, with the recorded certificate pinned
            job, why = tls_job(target.name, record or {}, certificate, ready)
            jobs += [job] if job else []
            whys += [why] if why else []
        else:
            entries += ready
        if whys:
            skipped[target.name] = whys[-1]
    return PrometheusFiles(entries, skipped, jobs)


def _read(target: InventoryTarget) -> tuple[dict[str, Any] | None, str | None]:
    """The host's deploy record and, for a TLS host, the certificate it serves with (its tls.crt)."""
    record = read_deploy_record(target)
    return record, read_certificate(target) if recorded_fingerprint(record) else None
