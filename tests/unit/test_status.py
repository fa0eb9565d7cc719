"""``lemfleet status`` rows from a host's record and the status command's output (no host needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from lemfleet.api.status import (
    KEY_FILE,
    MARK,
    METRICS_AUTH,
    FleetStatus,
    HostStatus,
    host_status,
    parse_metrics,
    status_command,
)

SHA = "ab" * 32
RECORD: dict[str, Any] = {
    "backend": "cpu",
    "service": {"unit": "lemfleet-llama.service", "host": "0.0.0.0", "port": 8080},
    "build": {"id": "26ed23f8dacf352f", "path": "/opt/lemfleet/llama.cpp/26ed23f8dacf352f"},
    "model": {"file": "tiny.gguf", "path": "/var/lib/lemfleet/models/abab-tiny.gguf", "sha256": SHA},
}


def output(active: str = "active", current: str = RECORD["build"]["path"], model: str = f"{SHA} 100 5\n100 5") -> str:
    sections = {
        "unit": f"ActiveState={active}\nNRestarts=2\nActiveEnterTimestamp=Mon 2026-11-30 12:00:00 UTC",
        "now": "1000",
        "since": "400",
        "current": current,
        "model": model,
        "health": "200" if active == "active" else "000",
    }
    return "\n".join(f"{MARK}{name}\n{text}" for name, text in sections.items())


def test_a_healthy_host_matches_its_record() -> None:
    row = host_status("tb1", RECORD, output(), {"decode_tokens_per_s": 251.5})
    assert row.ok and row.drift == ()
    assert (row.uptime_s, row.restarts, row.health, row.tokens_per_s) == (600, 2, 200, 251.5)
    assert row.cells()[:3] == ["tb1", "ok", "cpu"]


def test_drift_names_what_no_longer_matches() -> None:
    row = host_status("tb2", RECORD, output(active="inactive", current="/opt/lemfleet/llama.cpp/other"), None)
    assert not row.ok and row.health == 0 and row.uptime_s is None
    assert row.drift == (
        "build link points at /opt/lemfleet/llama.cpp/other, the record says /opt/lemfleet/llama.cpp/26ed23f8dacf352f",
        "service is inactive",
    )
    changed = host_status("tb3", RECORD, output(model=f"{SHA} 100 5\n120 9"), None)
    assert changed.drift == ("model file changed since lemfleet placed it",)
    missing = host_status("tb3", RECORD, output(model="missing"), None)
    assert missing.drift == ("model /var/lib/lemfleet/models/abab-tiny.gguf is missing",)


def test_the_command_only_reads_and_quotes_what_it_takes_from_the_record() -> None:
    record = {**RECORD, "model": {**RECORD["model"], "path": "/m/it's here.gguf"}}
    command = status_command(record)
    assert "'/m/it'\"'\"'s here.gguf'" in command
    assert "http://127.0.0.1:8080/health" in command
    for word in ("rm ", "mv ", "systemctl restart", "systemctl stop", ">"):
        assert word not in command.replace("2>/dev/null", "")


def test_rows_say_unreachable_and_not_deployed() -> None:
    fleet = FleetStatus((HostStatus("tb3", reachable=False, error="Connection timed out"), HostStatus("tb4", True)))
    assert not fleet.ok
    lines = str(fleet).splitlines()
    assert lines[1].split()[:2] == ["tb3", "unreachable"] and lines[1].endswith("Connection timed out")
    assert lines[2].split()[:3] == ["tb4", "not", "deployed"]
    assert fleet.markdown().splitlines()[2].startswith("| tb3 | unreachable |")
    assert "unreachable" in fleet._repr_html_()


METRICS = """# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 4096
llamacpp:requests_processing 2
llamacpp:requests_deferred 1
@@code 200"""


def test_requests_and_tokens_come_from_metrics_read_on_the_host() -> None:
    row = host_status("tb1", RECORD, output() + f"\n{MARK}metrics\n{METRICS}", None)
    assert (row.processing, row.deferred, row.tokens_predicted) == (2, 1, 4096)
    assert row.cells()[9:11] == ["2 run, 1 wait", 4096]
    refused = host_status("tb1", RECORD, output() + f"\n{MARK}metrics\nUnauthorized\n@@code 401", None)
    assert (refused.processing, refused.tokens_predicted) == (None, None) and refused.ok  # health is what gates ok
    assert parse_metrics(["llamacpp:x 1", "@@code 000"]) == {}


def test_the_metrics_key_reaches_curl_on_stdin_only(tmp_path: Path) -> None:
    """The key file is read on the host; the key is escaped for curl's config and never on a command line."""
    key = 'k"ey\\with-quote-and-backslash'
    keys = tmp_path / "api-key"
    keys.write_text(f"# a comment\n{key}\nsecond-key-0123456789\n")
    command = status_command(RECORD)
    assert key not in command and "Bearer" in command and "-K -" in command
    done = subprocess.run(["sh", "-c", METRICS_AUTH.replace(KEY_FILE, str(keys))], capture_output=True, text=True,
                          check=True, timeout=30)  # fmt: skip
    assert done.stdout == 'header = "Authorization: Bearer k\\"ey\\\\with-quote-and-backslash"\n'
    empty = subprocess.run(["sh", "-c", METRICS_AUTH.replace(KEY_FILE, str(tmp_path / "none"))], capture_output=True,
                           text=True, check=True, timeout=30)  # fmt: skip
    assert empty.stdout == ""  # no key file: no header (a loopback server without a key)
