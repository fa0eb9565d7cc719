"""Where lemfleet keeps its files on a host, and which listen addresses are loopback: one place for each.

The deploy writes these paths (``lemfleet.roles``), the controller reads them over SSH (status,
rollout, rollback, smoke, Prometheus), and the shipped verify suite checks them on the hosts
(``lemfleet.verify``); all of them import the names from here, so they cannot drift apart.
"""

from __future__ import annotations

CONFIG_DIR = "/etc/lemfleet"
"""The host's lemfleet configuration: environment files, the API key file, the deploy record."""

DEPLOY_RECORD = f"{CONFIG_DIR}/deployed.json"
"""Written by the deploy on each host (no secrets): what it serves, from which build and model."""

API_KEY_FILE = f"{CONFIG_DIR}/api-key"
"""The server's API keys, one per line (mode 0640, owned by root)."""

LOOPBACK = ("127.0.0.1", "::1", "localhost")
"""Listen addresses that only the host itself can reach."""
