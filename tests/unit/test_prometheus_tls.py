"""Prometheus's https job for a server_tls host: the pinned certificate as ca_file, server_name when needed.

Pure: real certificates (roles/server_tls.py), no host. Debian's promtool and a real Prometheus scraping
a TLS server are in tests/integration/test_status_prometheus_tls.py.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from lemfleet.api.prometheus import JOB, PrometheusFiles, target_for
from lemfleet.prometheus_tls import tls_job
from lemfleet.roles.server_tls import CERT_FILE, generate
from lemfleet.sshtunnel import InventoryTarget, SshOptions
from tests.unit.test_prometheus import GPU_1, RECORD

SERVED = generate(["gpu-1", "10.0.0.7"])


def tls_record(fingerprint: str = SERVED.fingerprint) -> dict[str, Any]:
    tls = {"scheme": "https", "sha256_fingerprint": fingerprint, "spki_sha256": SERVED.spki_sha256}
    return {**RECORD, "service": {**RECORD["service"], "tls": tls}}


def entries(target: InventoryTarget = GPU_1) -> list[dict[str, Any]]:
    entry, why = target_for(target, tls_record())
    assert entry is not None and why is None
    return [entry]


def test_the_job_pins_the_recorded_certificate_and_checks_the_scrape_address() -> None:
    job, why = tls_job("gpu-1", tls_record(), SERVED.cert_pem, entries())
    assert why is None and job is not None
    assert (job.fingerprint, job.cert_pem, job.server_name) == (SERVED.fingerprint, SERVED.cert_pem, None)
    # Scraped at an address the certificate does not name: Go checks one of its names instead.
    other = InventoryTarget("gpu-1", SshOptions("gpu-1.example.org"))
    renamed, _ = tls_job("gpu-1", tls_record(), SERVED.cert_pem, entries(other))
    assert renamed is not None and renamed.server_name == "gpu-1"


def test_a_certificate_that_is_not_the_recorded_one_or_unreadable_is_no_target() -> None:
    impostor = generate(["gpu-1", "10.0.0.7"])
    job, why = tls_job("gpu-1", tls_record(), impostor.cert_pem, entries())
    assert job is None and why == (
        f"{CERT_FILE} (sha256 {impostor.fingerprint}) is not the certificate deployed.json pins "
        f"(sha256 {SERVED.fingerprint}); deploy the host again"
    )
    assert tls_job("gpu-1", tls_record(), None, entries())[1] == (
        f"serves https, but its certificate {CERT_FILE} could not be read"
    )
    assert tls_job("gpu-1", tls_record(), "not pem", entries())[1] == (
        f"serves https, but {CERT_FILE} holds no PEM certificate"
    )


def test_the_config_has_an_https_job_per_tls_host_with_its_ca_file_beside_it(tmp_path: Path) -> None:
    plain, _ = target_for(InventoryTarget("cpu-1", SshOptions("10.0.0.8")), RECORD)
    job, _ = tls_job("gpu-1", tls_record(), SERVED.cert_pem + generate(["intermediate"]).cert_pem, entries())
    assert plain is not None and job is not None and job.cert_pem == SERVED.cert_pem  # the leaf alone
    paths = PrometheusFiles([plain], {}, [job]).write(tmp_path, key_file="/etc/prometheus/key")
    assert [p.name for p in paths] == ["targets.json", "prometheus.yml", "lemfleet-rules.yml", "gpu-1.crt"]
    assert json.loads(paths[0].read_text()) == [plain]  # the https target is not in the plain job's file
    assert paths[3] == tmp_path / "tls" / "gpu-1.crt" and paths[3].read_text() == SERVED.cert_pem
    plain_job, https_job = json.loads(paths[1].read_text())["scrape_configs"]
    assert plain_job["job_name"] == JOB and "scheme" not in plain_job
    assert https_job == {
        "job_name": "lemfleet-tls-gpu-1",
        "scheme": "https",
        "metrics_path": "/metrics",
        "bearer_token_file": "/etc/prometheus/key",
        "tls_config": {"ca_file": str(paths[3].resolve())},
        "static_configs": entries(),
        "relabel_configs": [{"target_label": "job", "replacement": JOB}],
    }
    renamed = PrometheusFiles([], {}, [replace(job, server_name="gpu-1", host="a/b")])
    [_, config, _, ca] = renamed.write(tmp_path / "two", key_file="/k")
    assert ca.name == "a_b.crt"
    assert json.loads(config.read_text())["scrape_configs"][1]["tls_config"]["server_name"] == "gpu-1"
