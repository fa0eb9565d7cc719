"""A real Prometheus (Debian's) scrapes a deployed test-bed host with the config ``lemfleet prometheus`` writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lemfleet import testbed
from lemfleet.cli import main
from lemfleet.sshtunnel import free_local_port
from tests.testbed.conftest import PROJECT, deploy

CLIENT, SCRAPE = "prometheus-test-client-key", "prometheus-test-scrape-key"


def promtool() -> str:
    """Debian's promtool (package prometheus, which scripts/system-packages.sh installs for the test command)."""
    path = shutil.which("promtool")
    assert path, "promtool is not installed (Debian package prometheus)"
    return path


@pytest.fixture
def exposed(fleet, tiny_model):
    rec = fleet[0]
    data = ["model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0"]
    run = deploy(rec.name, *data, f"server_api_key={CLIENT}", f"server_metrics_key={SCRAPE}")
    assert run.returncode == 0, run.output[-3000:]
    assert SCRAPE not in run.output
    yield rec
    assert deploy(rec.name, "model_source=local", f"model_path={tiny_model}").returncode == 0


def query(base: str, expr: str) -> list[dict]:
    answer = httpx.get(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=10).json()
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def test_prometheus_scrapes_the_fleet_with_its_own_key(exposed, tmp_path):
    tool = promtool()
    out, key = tmp_path / "prometheus", tmp_path / "scrape-key"
    key.write_text(SCRAPE + "\n")
    argv = ["prometheus", str(PROJECT / "inventories" / "testbed.py"), "--limit", exposed.name, "--out", str(out)]
    assert main([*argv, "--key-file", str(key)]) == 0
    [target] = json.loads((out / "targets.json").read_text())
    assert target["targets"] == [f"{exposed.address}:8080"] and target["labels"]["host"] == exposed.name
    assert target["labels"]["backend"] == "cpu" and len(target["labels"]["model_sha256"]) == 64
    for check in (
        ["check", "config", str(out / "prometheus.yml")],
        ["check", "rules", str(out / "lemfleet-rules.yml")],
    ):
        done = subprocess.run([tool, *check], capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr

    # /metrics needs the scrape key; llama-server's own exposition parses with prometheus_client.
    curl = f"curl -s -H 'Authorization: Bearer {SCRAPE}' http://127.0.0.1:8080/metrics"
    families = {f.name: f for f in text_string_to_metric_families(testbed.ssh(exposed, curl))}
    assert "llamacpp:tokens_predicted" in families or "llamacpp:tokens_predicted_total" in families, sorted(families)
    refused = testbed.ssh(exposed, "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/metrics")
    assert refused.strip() == "401"

    port = free_local_port()
    server = subprocess.Popen(
        [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={out / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, up, samples = time.monotonic() + 120, [], []
        while time.monotonic() < deadline:
            try:
                up = query(base, 'up{job="lemfleet"}')
                samples = query(base, "llamacpp:tokens_predicted_total")
            except httpx.HTTPError:
                pass
            if up and up[0]["value"][1] == "1" and samples:
                break
            time.sleep(2)
        log = (tmp_path / "prometheus.log").read_text()[-2000:]
        assert up and up[0]["value"][1] == "1", (up, log)
        assert samples and float(samples[0]["value"][1]) > 0, samples  # the deploy's smoke chats were counted
        assert samples[0]["metric"]["host"] == exposed.name and samples[0]["metric"]["build_id"]
        rules = httpx.get(f"{base}/api/v1/rules", timeout=10).json()["data"]["groups"][0]["rules"]
        assert {r["name"] for r in rules} >= {"LemfleetInstanceDown", "LemfleetServerRestarted"}
        print(json.dumps({"up": up, "llamacpp:tokens_predicted_total": samples}, indent=2))  # for the closing note
    finally:
        server.terminate()
        server.wait(timeout=30)
