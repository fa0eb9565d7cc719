"""Which test-bed hosts are up: the state file, and the SSH files that reach them.

State lives in ``STATE_FILE`` so that the CLI, pytest fixtures and
``inventories/testbed.py`` all see the same hosts.
"""

from __future__ import annotations

import json
from pathlib import Path

from lemfleet.testbed import hosts
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.paths import KNOWN_HOSTS, PROXY_URL, SSH_CONFIG, SSH_KEY, STATE_DIR, STATE_FILE


def load() -> list[HostRecord]:
    try:
        data = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        return []
    return [HostRecord(**h) for h in data.get("hosts", [])]


def save(records: list[HostRecord]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps({"proxy": PROXY_URL, "hosts": [r.to_json() for r in records]}, indent=2))
    tmp.replace(STATE_FILE)
    _write_ssh_files(records)


def _write_ssh_files(records: list[HostRecord]) -> None:
    lines = []
    config = []
    for rec in records:
        key_file = Path(rec.root) / "etc/ssh/ssh_host_ed25519_key.pub"
        if key_file.exists():
            lines.append(f"{rec.address} {hosts.host_public_key(rec)}")
        config.append(
            f"Host {rec.name} {rec.address}\n  HostName {rec.address}\n  User root\n"
            f"  IdentityFile {SSH_KEY}\n  IdentitiesOnly yes\n  UserKnownHostsFile {KNOWN_HOSTS}\n"
            "  StrictHostKeyChecking yes\n  BatchMode yes\n  ConnectTimeout 5\n"
        )
    KNOWN_HOSTS.write_text("".join(f"{line}\n" for line in lines))
    SSH_CONFIG.write_text("\n".join(config))


def find(name: str) -> HostRecord:
    for rec in load():
        if rec.name == name:
            return rec
    raise KeyError(f"no test-bed host named {name!r}; up: {', '.join(r.name for r in load()) or 'none'}")
