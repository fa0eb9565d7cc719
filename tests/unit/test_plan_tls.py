"""``lemfleet plan`` shows each host's TLS: https or not, whose certificate, the fingerprint clients pin.

The recorded fingerprint is the one a host's ``deployed.json`` holds (``service.tls``, roles/record.py),
which the plan reads with its facts; the planned one is the operator's file or the certificate kept on
the controller (roles/server_tls.py). Real certificates, made with ``cryptography``; no host.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from lemfleet.plan_cli import COLUMNS, render_details, render_table
from lemfleet.plan_fleet import empty_row, plan_row
from lemfleet.plan_tls import tls_cell, tls_entry
from lemfleet.roles.server_tls import generate, host_certificate, host_names
from lemfleet.roles.settings_check import validate
from tests.fixtures.gpu.hosts import UBUNTU_2404, scenario_host

KEY = "plan-tls-test-key-0123456789"
EXPOSED = {"server_host": "10.0.0.5", "server_api_key": KEY}


@pytest.fixture(autouse=True)
def tls_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "tls"
    monkeypatch.setenv("LEMFLEET_TLS_DIR", str(folder))
    return folder


def record(fingerprint: str | None) -> dict[str, Any]:
    """A deployed.json as roles/record.py writes it, with ``service.tls`` when the host serves https."""
    service: dict[str, Any] = {"unit": "lemfleet-llama.service", "host": "10.0.0.5", "port": 8080}
    if fingerprint:
        service["tls"] = {"scheme": "https", "sha256_fingerprint": fingerprint, "spki_sha256": "x"}
    return {"schema_version": 2, "service": service}


def cells(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The TLS column of the table, by host."""
    lines = render_table(rows).splitlines()
    at = lines[0].index("TLS")
    assert lines[0].split()[-1] == "TLS" and COLUMNS[-1] == "TLS"
    return {line.split()[0]: line[at:].strip() for line in lines[1:]}


def test_plain_http_host_shows_no_tls_and_no_pin() -> None:
    entry = tls_entry("gpu1", validate(EXPOSED), record(None))
    assert entry["mode"] == "off" and entry["scheme"] == "http" and entry["served_now"] == "http"
    assert entry["recorded_sha256"] is None and not entry["pin_changes"] and entry["certificate"] is None
    assert tls_entry("gpu1", validate({}), None)["served_now"] is None  # never deployed
    assert tls_cell({"tls": entry}) == "-" and tls_cell(empty_row("down", ["not connected"])) == "-"


def test_generated_certificate_the_plan_announces_then_keeps_with_the_recorded_pin(tls_dir: Path) -> None:
    settings = validate({**EXPOSED, "server_tls": "generate"})
    first = tls_entry("gpu1", settings, None, "gpu1.lan")
    assert first["certificate"] == "generated" and first["scheme"] == "https" and first["planned_sha256"] is None
    assert first["certificate_path"] == str(tls_dir / "gpu1" / "cert.pem")
    assert "a new one is made at deploy" in first["note"] and "gpu1, 10.0.0.5, gpu1.lan" in first["note"]
    assert not tls_dir.exists()  # the plan makes nothing
    # The deploy makes and keeps it and records its fingerprint; the next plan shows the pin it keeps.
    made = host_certificate("gpu1", host_names("gpu1", "10.0.0.5", "gpu1.lan"))
    kept = tls_entry("gpu1", settings, record(made.fingerprint), "gpu1.lan")
    assert kept["recorded_sha256"] == kept["planned_sha256"] == made.fingerprint and not kept["pin_changes"]
    assert kept["served_now"] == "https"
    assert f"clients pin sha256 {made.fingerprint} (recorded), which this deploy keeps" in kept["note"]
    assert tls_cell({"tls": kept}) == f"gen {made.fingerprint[:11]}"
    # A new SSH name means a new certificate: pinned clients must move, and the plan says so.
    renamed = tls_entry("gpu1", settings, record(made.fingerprint), "gpu1.example.org")
    assert renamed["planned_sha256"] is None and renamed["pin_changes"]
    assert f"clients pinning sha256 {made.fingerprint} must move" in renamed["note"]
    assert tls_cell({"tls": renamed}) == "gen new (changes)"


def test_operator_certificate_shows_its_fingerprint_and_a_changed_file_moves_the_pin(tmp_path: Path) -> None:
    old, new = generate(["gpu1.lan"]), generate(["gpu1.lan"])
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(new.cert_pem)
    key.write_text(new.key_pem)
    settings = validate({**EXPOSED, "server_tls": "files", "server_tls_cert": str(cert), "server_tls_key": str(key)})
    entry = tls_entry("gpu1", settings, record(old.fingerprint))
    assert entry["certificate"] == "operator" and entry["certificate_path"] == str(cert)
    assert (entry["recorded_sha256"], entry["planned_sha256"], entry["pin_changes"]) == (
        old.fingerprint, new.fingerprint, True,
    )  # fmt: skip
    assert f"server_tls_cert={cert}" in entry["note"] and f"recorded {old.fingerprint} must move" in entry["note"]
    assert tls_cell({"tls": entry}) == f"files {new.fingerprint[:11]} (changes)"
    same = tls_entry("gpu1", settings, record(new.fingerprint))
    assert not same["pin_changes"] and tls_cell({"tls": same}) == f"files {new.fingerprint[:11]}"


def test_turning_tls_off_on_a_host_that_serves_https_is_shown() -> None:
    pinned = generate(["gpu1"]).fingerprint
    entry = tls_entry("gpu1", validate(EXPOSED), record(pinned))
    assert entry["served_now"] == "https" and entry["scheme"] == "http" and entry["pin_changes"]
    assert "this deploy turns TLS off" in entry["note"] and tls_cell({"tls": entry}) == "off (was https)"


def test_plan_rows_carry_tls_in_the_json_the_table_and_the_details(tls_dir: Path) -> None:
    facts = scenario_host("cpu-only", UBUNTU_2404)
    made = host_certificate("tls-host", host_names("tls-host", "10.0.0.5", None))
    tls_row = plan_row("tls-host", facts, validate({**EXPOSED, "server_tls": "generate"}), record(made.fingerprint))
    plain = plan_row("plain", facts, validate({}))
    assert tls_row["ok"] and tls_row["tls"]["recorded_sha256"] == made.fingerprint
    assert plain["tls"]["mode"] == "off" and empty_row("down")["tls"] is None
    assert cells([tls_row, plain]) == {"tls-host": f"gen {made.fingerprint[:11]}", "plain": "-"}
    details = render_details([tls_row, plain])
    assert re.search(r"tls-host .*\n(  .*\n)*  tls: https with a certificate generated for this host", details)
    assert made.fingerprint in details and "plain" in details and details.count("  tls:") == 1
