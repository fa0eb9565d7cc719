"""Prometheus for a fleet: file_sd targets from each host's deploy record, a scrape config and alert rules.

llama-server's ``/metrics`` (on with ``--metrics``, which lemfleet always passes) needs a key
whenever the server has one: in the pinned llama-server only ``/health`` skips auth. Prometheus
gets a key of its own, ``server_metrics_key``, which the deploy adds to the host's key file beside
the client keys; the scrape config reads it from ``bearer_token_file``, a file the operator places
on the Prometheus host.

A server that listens on loopback only cannot be scraped from another machine: it is left out of
the targets, with the reason (``lemfleet status`` reads such a host over SSH instead).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lemfleet.api.fleet import Fleet, fleet_targets
from lemfleet.paths import LOOPBACK
from lemfleet.roles.record import instance_records
from lemfleet.sshtunnel import InventoryTarget, read_deploy_record

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
    targets: list[dict[str, Any]]
    skipped: dict[str, str]  # host -> why it is not a target

    def write(self, out: Path, *, key_file: str) -> list[Path]:
        """``targets.json``, ``prometheus.yml`` and ``lemfleet-rules.yml`` in ``out``."""
        out.mkdir(parents=True, exist_ok=True)
        targets, config, rules = out / "targets.json", out / "prometheus.yml", out / "lemfleet-rules.yml"
        targets.write_text(json.dumps(self.targets, indent=2) + "\n")
        config.write_text(json.dumps(scrape_config(targets.resolve(), rules.resolve(), key_file), indent=2) + "\n")
        rules.write_text(json.dumps(RULES, indent=2) + "\n")
        return [targets, config, rules]


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
    address = (target.ssh.hostname if target.ssh else "127.0.0.1") if listen in ("0.0.0.0", "::") else listen
    address = f"[{address}]" if ":" in address else address
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
        records = list(pool.map(read_deploy_record, targets))
    entries, skipped = [], {}
    for target, record in zip(targets, records, strict=True):
        # One target per instance (server_instances), each labelled with its unit as instance_name.
        for one in instance_records(record) if record and record.get("service") else [record]:
            entry, why = target_for(target, one)
            if entry:
                entries.append(entry)
            else:
                skipped[target.name] = why or ""
    return PrometheusFiles(entries, skipped)
