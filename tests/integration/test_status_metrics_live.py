"""``lemfleet status`` reads ``/metrics`` on the host, with the host's key, against the pinned llama-server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from lemfleet.api.status import KEY_FILE, MARK, host_status, status_command
from tests.integration.test_smoke_live import start_llama_server, stop, wait_until_healthy


def test_status_reads_metrics_with_the_key_from_the_host_key_file(
    llama_server_bin: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    server = start_llama_server(llama_server_bin, tiny_gguf, tmp_path, extra=["--metrics"])
    try:
        wait_until_healthy(server)
        port = urlsplit(server.url).port
        record = {
            "service": {"unit": "lemfleet-test-none.service", "host": "127.0.0.1", "port": port},
            "model": {"path": str(tiny_gguf)},
        }
        # The host's key file is this server's; everything else in the command runs as it would on a host.
        command = status_command(record).replace(KEY_FILE, str(server.key_file))
        done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60, check=False)
        row = host_status("here", record, done.stdout, None)
        assert row.health == 200 and (row.processing, row.deferred) == (0, 0), done.stdout[-2000:]
        assert row.tokens_predicted is not None
        # Without the key file the server refuses /metrics: the key really is what let status in.
        keyless = status_command(record).replace(KEY_FILE, str(tmp_path / "no-key-file"))
        refused = subprocess.run(["sh", "-c", keyless], capture_output=True, text=True, timeout=60, check=False)
        assert f"{MARK}metrics" in refused.stdout and "@@code 401" in refused.stdout, refused.stdout[-2000:]
        assert host_status("here", record, refused.stdout, None).processing is None
    finally:
        stop(server)
