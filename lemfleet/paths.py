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

TLS_CERT_FILE = f"{CONFIG_DIR}/tls.crt"
"""The server's TLS certificate under ``server_tls`` (roles/server_tls.py)."""

TLS_KEY_FILE = f"{CONFIG_DIR}/tls.key"
"""The server's TLS private key under ``server_tls`` (mode 0640, root and the service's group)."""

STATE_DIR = "/var/lib/lemfleet"
"""The host's lemfleet state: models, and the kept serving states (root only where they hold a key file)."""

LAST_GOOD_DIR = f"{STATE_DIR}/last-good"
"""The serving state that last passed the health gate, kept for a failed deploy to go back to."""

PREVIOUS_DIR = f"{STATE_DIR}/previous"
"""The serving state before the last good one, which ``lemfleet rollback`` puts back."""

LOOPBACK = ("127.0.0.1", "::1", "localhost")
"""Listen addresses that only the host itself can reach."""

SERVER_HOST = LOOPBACK[0]
"""The address llama-server listens on unless ``server_host`` says otherwise: the host itself only."""

SERVER_PORT = 8080
"""The port llama-server listens on unless ``server_port`` says otherwise."""

WILDCARD = ("0.0.0.0", "::", "")
"""Listen addresses that mean every address of the host."""


def reach_address(listen_host: str) -> str:
    """The address that reaches, on the host itself, a server listening on ``listen_host``.

    A wildcard is reached on 127.0.0.1, ``::`` included: llama-server's HTTP library (cpp-httplib)
    turns IPV6_V6ONLY off, so a server on ``::`` answers IPv4 too, whereas ``::1`` is missing
    where the host's loopback has IPv6 disabled (common in containers). Any other address is
    reached as it is. The health gate, ``lemfleet smoke``/``status`` and the verify suite use
    this one rule.
    """
    return LOOPBACK[0] if listen_host in WILDCARD else listen_host


def url_host(address: str) -> str:
    """``address`` as the host part of a URL: an IPv6 address in brackets (``[::1]``)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address
