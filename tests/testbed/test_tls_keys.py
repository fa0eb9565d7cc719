"""API key rotation and server_tls on a real test-bed host.

Rotation (README "Security"): add the new key, deploy, move the clients, remove the old key, deploy.
llama-server reads its key file only at start, so each step that changes the file restarts the
service exactly once, through the gate; a rerun restarts nothing.

server_tls needs a llama-server built with OpenSSL, a build id of its own: the first run compiles it
(~13-25 min on the test bed; 50 min when another compile shares the two cores), so that test is ``slow``.
Besides the deploy, the gate and the verify suite, it checks ``lemfleet status`` (https, pinned) and
Debian's Prometheus scraping the host with the config ``lemfleet prometheus`` writes (certificate pinned).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from lemfleet import api, testbed
from lemfleet.api.prometheus import prometheus_files
from lemfleet.sshtunnel import free_local_port
from tests.testbed.conftest import PROJECT, deploy

UNIT = "lemfleet-llama.service"
OLD, NEW = "rotation-old-key-0123456789", "rotation-new-key-9876543210"


def restarts(run) -> list[str]:
    """The restart steps that ran; pyinfra names them ``<deploy> | <step> | Restart <unit>``."""
    names = [o["name"].rsplit(" | ", 1)[-1] for o in run.json["results"]["operations"] if o["success"]]
    return [name for name in names if name.startswith("Restart ")]


def unit_state(rec: testbed.HostRecord) -> dict[str, str]:
    out = testbed.ssh(rec, f"systemctl show {UNIT} -p NRestarts -p InvocationID")
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def status(rec: testbed.HostRecord, key: str, scheme: str = "http", extra: str = "") -> str:
    return testbed.ssh(
        rec,
        f"curl -s {extra} -o /dev/null -w '%{{http_code}}' -H 'Authorization: Bearer {key}' "
        f"{scheme}://127.0.0.1:8080/v1/models",
        check=False,
    ).strip()


@pytest.fixture(scope="module")
def host(fleet, tiny_model):
    """tb2; put back to the default deploy afterwards."""
    yield fleet[1]
    run = deploy(fleet[1].name, "model_source=local", f"model_path={tiny_model}")
    assert run.returncode == 0, run.output[-3000:]


def test_key_rotation_restarts_once_per_changed_key_file(host, tiny_model, tmp_path: Path):
    keys = tmp_path / "keys"
    exposed = ["model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0", f"server_api_key_file={keys}"]
    keys.write_text(f"{OLD}\n")
    assert (run := deploy(host.name, *exposed)).returncode == 0, run.output[-3000:]
    assert status(host, OLD) == "200" and status(host, NEW) == "401"
    for content, accepted, refused in ((f"{OLD}\n{NEW}\n", [OLD, NEW], []), (f"{NEW}\n", [NEW], [OLD])):
        before = unit_state(host)
        keys.write_text(content)
        run = deploy(host.name, *exposed)
        assert run.returncode == 0, run.output[-3000:]
        assert OLD not in run.output and NEW not in run.output
        after = unit_state(host)
        assert restarts(run) == ["Restart lemfleet-llama"], restarts(run)
        assert after["InvocationID"] != before["InvocationID"] and after["NRestarts"] == before["NRestarts"]
        assert [status(host, k) for k in accepted] == ["200"] * len(accepted)
        assert [status(host, k) for k in refused] == ["401"] * len(refused)
    again = deploy(host.name, *exposed)
    assert again.returncode == 0 and restarts(again) == [], restarts(again)


@pytest.mark.slow
def test_generated_tls_serves_https_pinned_by_every_client(host, tiny_model, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("LEMFLEET_TLS_DIR", str(tmp_path / "tls"))
    settings = ["model_source=local", f"model_path={tiny_model}", "server_host=0.0.0.0",
                f"server_api_key={NEW}", "server_tls=generate"]  # fmt: skip
    run = deploy(host.name, *settings)
    assert run.returncode == 0, run.output[-4000:]
    record = json.loads(testbed.ssh(host, "cat /etc/lemfleet/deployed.json"))
    tls = record["service"]["tls"]
    assert f"TLS certificate sha256 fingerprint: {tls['sha256_fingerprint']}" in run.output
    served = testbed.ssh(host, "openssl s_client -connect 127.0.0.1:8080 </dev/null 2>/dev/null "
                               "| openssl x509 -noout -fingerprint -sha256")  # fmt: skip
    assert served.strip().split("=", 1)[1].lower() == tls["sha256_fingerprint"]
    assert testbed.ssh(host, "stat -c '%a %U %G' /etc/lemfleet/tls.key").strip() == "640 root lemfleet"
    pin = f"-k --pinnedpubkey sha256//{tls['spki_sha256']}"
    assert status(host, NEW, "https", pin) == "200" and status(host, "x" * 20, "https", pin) == "401"
    assert status(host, NEW) == "000"  # plain http gets no answer from a TLS server
    smoke = json.loads((PROJECT / "out" / "smoke" / f"{host.name}.json").read_text())
    assert smoke["ok"] and smoke["url"] == "https://0.0.0.0:8080", smoke
    from tests.testbed.test_verify_suite import verify

    assert (checked := verify(host)).returncode == 0, checked.stdout[-3000:]
    status_and_prometheus_pin(host, tls, tmp_path)
    # A rerun keeps the certificate: nothing changes, nothing restarts.
    again = deploy(host.name, *settings)
    assert again.returncode == 0 and restarts(again) == [], restarts(again)
    print(f"TLS build {record['build']['id']}", file=sys.stderr)


def status_and_prometheus_pin(host: testbed.HostRecord, tls: dict[str, Any], tmp_path: Path) -> None:
    """``lemfleet status`` probes the TLS server over https, pinned; Debian's Prometheus scrapes it, pinned."""
    from tests.testbed.test_prometheus import promtool, query

    fleet = api.Fleet.from_inventory(PROJECT / "inventories" / "testbed.py")
    [row] = api.status(fleet, limit=[host.name]).hosts
    assert row.ok and (row.scheme, row.health, row.tls_sha256) == ("https", 200, tls["sha256_fingerprint"]), row
    assert row.processing is not None  # /metrics, over https with the key
    files = prometheus_files(fleet, limit=[host.name])
    [job] = files.tls
    assert files.targets == [] and job.fingerprint == tls["sha256_fingerprint"] and job.server_name is None
    key = tmp_path / "scrape-key"
    key.write_text(NEW + "\n")
    paths = files.write(tmp_path / "prometheus", key_file=str(key))
    checked = subprocess.run([promtool(), "check", "config", str(paths[1])], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = json.loads(paths[1].read_text())
    config["global"]["scrape_interval"] = "2s"
    paths[1].write_text(json.dumps(config))
    port, log = free_local_port(), tmp_path / "prometheus.log"
    server = subprocess.Popen(
        [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={paths[1]}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log.open("w"),
    )  # fmt: skip
    try:
        deadline, up = time.monotonic() + 90, list[dict[str, Any]]()
        while time.monotonic() < deadline and not (up and up[0]["value"][1] == "1"):
            time.sleep(2)
            try:
                up = query(f"http://127.0.0.1:{port}", 'up{job="lemfleet"}')
            except httpx.HTTPError:  # not listening yet
                up = []
        assert up and up[0]["value"][1] == "1" and up[0]["metric"]["host"] == host.name, (up, log.read_text()[-2000:])
        print(f"prometheus scraped {up[0]['metric']['instance']} over https, pinned", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)
