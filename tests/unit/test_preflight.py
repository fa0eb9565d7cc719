"""config.py's settings check: a pyinfra deploy run with a bad setting stops before any host is contacted.

The hosts are in TEST-NET-1 (192.0.2.0/24, RFC 5737), which no one answers: a run
that tried to connect would print pyinfra's "Connecting to hosts" first.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pyinfra(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pyinfra", "-y", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_every_bad_setting_of_every_host_is_listed_before_connecting(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        'hosts = [("h1", {"ssh_hostname": "192.0.2.1", "server_port": "x"}), ("h2", {"ssh_hostname": "192.0.2.2"})]\n'
    )
    run = pyinfra(str(inventory), "deploy.py", "--data", "model_keep=-3")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "invalid lemfleet settings for host h1:" in out and "invalid lemfleet settings for host h2:" in out
    assert "server_port='x' is not valid" in out and "model_keep=-3 is not valid" in out
    assert "No host was contacted." in out
    assert "Connecting to hosts" not in out


def test_only_the_hosts_in_the_run_are_checked(tmp_path: Path) -> None:
    inventory = tmp_path / "fleet.py"
    inventory.write_text(
        'hosts = [("h1", {"ssh_hostname": "192.0.2.1", "server_port": "x"}), ("h2", {"ssh_hostname": "192.0.2.2"})]\n'
    )
    run = pyinfra(str(inventory), "deploy.py", "--limit", "h2", "--data", "model_keep=0")
    out = run.stdout + run.stderr
    assert "invalid lemfleet settings for host h2:" in out and "host h1" not in out
    assert "Connecting to hosts" not in out
