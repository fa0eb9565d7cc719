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


def test_a_limit_that_matches_no_host_stops_the_run_instead_of_deploying_to_none(tmp_path: Path) -> None:
    """pyinfra takes one pattern per --limit: --limit h1,h2 matched nothing, and pyinfra deployed to no host
    and exited 0 (a no-op deploy that was none: how bench/rollout_noop.py once timed a deploy of no host)."""
    inventory = tmp_path / "fleet.py"
    inventory.write_text('hosts = [("h1", {"ssh_hostname": "192.0.2.1"}), ("h2", {"ssh_hostname": "192.0.2.2"})]\n')
    run = pyinfra(str(inventory), "deploy.py", "--limit", "h1,h2")
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "--limit 'h1,h2' matches no host or group of the inventory" in out
    assert "pyinfra takes one pattern per --limit: --limit h1 --limit h2" in out
    assert "Connecting to hosts" not in out
    nothing = pyinfra(str(inventory), "deploy.py", "--limit", "h3", "--limit", "h1", "--data", "server_port=x")
    assert "--limit 'h3' matches no host or group of the inventory\nNo host was contacted." in nothing.stderr
    assert "server_port" not in nothing.stdout + nothing.stderr  # the limit first: no settings to check yet


def test_the_hint_lists_each_pattern_of_a_comma_list() -> None:
    from lemfleet.preflight import unmatched_limits

    assert unmatched_limits(["a,b,", "c"]) == (
        "--limit 'a,b,' matches no host or group of the inventory; pyinfra takes one pattern per --limit: "
        "--limit a --limit b\n--limit 'c' matches no host or group of the inventory\nNo host was contacted."
    )
