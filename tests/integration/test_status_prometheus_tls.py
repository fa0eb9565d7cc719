"""``lemfleet status`` and Debian's real Prometheus reach a TLS server only through its recorded certificate.

The server is a stand-in for a llama-server built with OpenSSL: a loopback https server made with Python's
``ssl``, serving ``/health`` and a keyed ``/metrics`` in llama-server's exposition, with a certificate
lemfleet generated (roles/server_tls.py). The build cache's CPU llama-server is built without OpenSSL;
the real TLS server runs on the test bed (tests/testbed/test_tls_keys.py, ``slow``). What is real here:
curl and openssl as the status command runs them on a host, and Debian's prometheus and promtool with the
config ``lemfleet prometheus`` writes.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from lemfleet.api.prometheus import JOB, PrometheusFiles, target_for
from lemfleet.api.status import KEY_FILE, host_status, status_command
from lemfleet.prometheus_tls import tls_job
from lemfleet.roles.server_tls import TlsFiles, generate
from lemfleet.sshtunnel import InventoryTarget, free_local_port
from tests.integration.tls_standin import serve_https

SCRAPE = "prometheus-tls-scrape-key-0123"
METRICS = (
    "# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 42\n"
    "# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n"
    "# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 0\n"
)


@dataclass
class TlsServer:
    port: int
    files: TlsFiles
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    """https on 127.0.0.1 with a certificate that names the host only (so a scrape of 127.0.0.1 needs server_name)."""
    files = generate(["tls-host"])
    (tmp_path / "c.pem").write_text(files.cert_pem)
    (tmp_path / "k.pem").write_text(files.key_pem)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    seen: list[str] = []

    def answer(path: str, authorization: str | None) -> tuple[int, bytes]:
        if path == "/health":
            return 200, b'{"status":"ok"}'
        if authorization == f"Bearer {SCRAPE}":
            return 200, METRICS.encode()
        return 401, b'{"error":"Invalid API Key"}'

    with serve_https(context, answer, seen) as port:
        yield TlsServer(port, files, seen)


def record(port: int, pinned: TlsFiles, host: str = "127.0.0.1") -> dict[str, Any]:
    """A deployed.json of a TLS host (roles/record.py), pinning ``pinned``."""
    tls = {"scheme": "https", "sha256_fingerprint": pinned.fingerprint, "spki_sha256": pinned.spki_sha256}
    return {
        "backend": "cpu",
        "service": {"unit": "lemfleet-test-none.service", "host": host, "port": port, "tls": tls},
        "build": {"id": "b1d"},
        "model": {"path": "/nonexistent/model.gguf", "sha256": "ab" * 32},
    }


def run_status(rec: dict[str, Any], key_file: Path) -> str:
    command = status_command(rec).replace(KEY_FILE, str(key_file))
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False).stdout


def test_status_probes_https_with_the_pinned_key_and_reads_the_served_certificate(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    keys = tmp_path / "api-key"
    keys.write_text(f"{SCRAPE}\n")
    rec = record(tls_server.port, tls_server.files)
    row = host_status("tls-host", rec, run_status(rec, keys), None)
    assert (row.scheme, row.health, row.tls_sha256) == ("https", 200, tls_server.files.fingerprint)
    assert (row.processing, row.deferred, row.tokens_predicted) == (1, 0, 42)
    assert not [d for d in row.drift if "certificate" in d or "pin" in d], row.drift
    assert sorted(tls_server.requests) == ["/health None", f"/metrics Bearer {SCRAPE}"]
    # A record pinning another certificate: curl sends nothing (no key, no request), and status says why.
    tls_server.requests.clear()
    other = generate(["tls-host"])
    wrong = record(tls_server.port, other)
    row = host_status("tls-host", wrong, run_status(wrong, keys), None)
    assert row.health == 0 and row.processing is None and tls_server.requests == []
    served, pinned = tls_server.files.fingerprint, other.fingerprint
    assert f"serves the certificate sha256 {served}, deployed.json pins {pinned}" in row.drift


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is not installed (Debian package prometheus; scripts/system-packages.sh)"
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60, check=False)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def test_real_prometheus_scrapes_https_pinned_to_the_recorded_certificate(
    tls_server: TlsServer, tmp_path: Path
) -> None:
    here = InventoryTarget("tls-host", None)  # @local: scraped at 127.0.0.1, which the certificate does not name
    rec = record(tls_server.port, tls_server.files, host="0.0.0.0")
    entry, why = target_for(here, rec)
    assert entry is not None, why
    job, why = tls_job("tls-host", rec, tls_server.files.cert_pem, [entry])
    assert job is not None and job.server_name == "tls-host", why
    # The same server, recorded with another certificate: its job must fail the handshake, never scrape.
    impostor = generate(["tls-host"])
    elsewhere = {**entry, "labels": {**entry["labels"], "host": "pinned-elsewhere"}}
    wrong, _ = tls_job("pinned-elsewhere", record(tls_server.port, impostor), impostor.cert_pem, [elsewhere])
    assert wrong is not None
    out, key = tmp_path / "prometheus", tmp_path / "scrape-key"
    key.write_text(SCRAPE + "\n")
    paths = PrometheusFiles([], {}, [job, wrong]).write(out, key_file=str(key))
    checked = promtool("check", "config", str(paths[1]))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = json.loads(paths[1].read_text())
    config["global"]["scrape_interval"] = "1s"  # the test's only change: scrape at once
    paths[1].write_text(json.dumps(config))

    port = free_local_port()
    log = tmp_path / "prometheus.log"
    server = subprocess.Popen(
        [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={paths[1]}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, up, samples = time.monotonic() + 90, [], []
        while time.monotonic() < deadline:
            try:
                up = query(base, f'up{{job="{JOB}"}}')
                samples = query(base, "llamacpp:tokens_predicted_total")
            except httpx.HTTPError:
                pass
            if len(up) == 2 and samples:
                break
            time.sleep(1)
        by_host = {series["metric"]["host"]: series["value"][1] for series in up}
        assert by_host == {"tls-host": "1", "pinned-elsewhere": "0"}, (up, log.read_text()[-2000:])
        assert samples and samples[0]["metric"]["host"] == "tls-host" and samples[0]["value"][1] == "42"
        targets = httpx.get(f"{base}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        refused = next(t for t in targets if t["labels"]["host"] == "pinned-elsewhere")
        assert refused["scrapeUrl"].startswith("https://") and "certificate" in refused["lastError"], refused
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert {r for r in tls_server.requests} == {f"/metrics Bearer {SCRAPE}"}  # the scrape key, over https only
