"""Prometheus scrapes a server_tls host over https, trusting exactly the certificate its deploy recorded.

Prometheus's ``tls_config`` belongs to a scrape job, not to a target, and each host has a certificate of
its own, so each TLS host gets a job: ``scheme: https``, its targets inline, ``job`` relabelled to the
fleet's job (the alert rules select on it), and a ``ca_file`` holding the host's certificate alone. Go's
TLS accepts a certificate that is itself in the trusted set, so that file pins it: a server that presents
any other certificate fails the scrape, and the bearer key is not sent to it.

The certificate comes from the host (``/etc/lemfleet/tls.crt``, world-readable; the key stays 0640) and
is used only when its sha256 is the fingerprint ``deployed.json`` records, the one every other client
pins. Host names are checked as well: ``server_name`` is set to one of the certificate's names when the
scrape address is not among them (an ``@local`` host scraped on 127.0.0.1, say).
"""

from __future__ import annotations

import ipaddress
import re
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509

from lemfleet.roles.server_tls import CERT_FILE
from lemfleet.sshtunnel import InventoryTarget, run_on
from lemfleet.tls_client import der_fingerprint, normalise, pem_certificates, recorded_fingerprint


@dataclass(frozen=True)
class TlsJob:
    """One TLS host's scrape: its targets (file_sd entries), pinned certificate and the name to check."""

    host: str
    fingerprint: str
    cert_pem: str
    server_name: str | None
    targets: list[dict[str, Any]]

    def write_ca(self, out: Path) -> Path:
        """The host's certificate as ``out/tls/<host>.crt``, Prometheus's ``ca_file`` for its job."""
        path = out / "tls" / (re.sub(r"[^A-Za-z0-9._-]", "_", self.host) + ".crt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.cert_pem)
        return path


def read_certificate(target: InventoryTarget) -> str | None:
    """The certificate a TLS host serves with (:data:`CERT_FILE`, PEM), or None when it cannot be read."""
    try:
        done = run_on(target, f"cat {CERT_FILE}", timeout=30.0)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 and done.stdout.strip() else None


def _names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The certificate's DNS names and IP addresses (subjectAltName; Go ignores the common name)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [name.lower() for name in san.get_values_for_type(x509.DNSName)]
    return dns, [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _covered(address: str, dns: list[str], ips: list[str]) -> bool:
    """Whether a ``host:port`` scrape address is among the certificate's names (Go's check, less wildcards)."""
    host = address.rsplit(":", 1)[0].strip("[]")
    try:
        return str(ipaddress.ip_address(host)) in ips
    except ValueError:
        return host.lower() in dns


def tls_job(
    host: str, record: dict[str, Any], certificate: str | None, entries: list[dict[str, Any]]
) -> tuple[TlsJob | None, str | None]:
    """The https job of a TLS host whose record pins a certificate, or why it cannot be scraped (pure)."""
    pinned = normalise(recorded_fingerprint(record) or "")
    if not certificate:
        return None, f"serves https, but its certificate {CERT_FILE} could not be read"
    try:
        leaf = pem_certificates(certificate)[0]
        cert = x509.load_der_x509_certificate(leaf)
    except (IndexError, ValueError):
        return None, f"serves https, but {CERT_FILE} holds no PEM certificate"
    if der_fingerprint(leaf) != pinned:
        return None, (f"{CERT_FILE} (sha256 {der_fingerprint(leaf)}) is not the certificate deployed.json pins "
                      f"(sha256 {pinned}); deploy the host again")  # fmt: skip
    dns, ips = _names(cert)
    if not dns and not ips:
        return None, "its certificate names no host (no subjectAltName), which Prometheus refuses"
    addresses = [address for entry in entries for address in entry["targets"]]
    server_name = None if all(_covered(a, dns, ips) for a in addresses) else [*dns, *ips][0]
    return TlsJob(host, pinned, ssl.DER_cert_to_PEM_cert(leaf), server_name, entries), None


def tls_scrape_config(job: TlsJob, ca_file: Path, key_file: str, job_label: str) -> dict[str, Any]:
    """The scrape job of one TLS host: https, its certificate as the only CA, its targets inline."""
    tls_config = {"ca_file": str(ca_file)}
    if job.server_name:
        tls_config["server_name"] = job.server_name
    return {
        "job_name": f"{job_label}-tls-{job.host}",
        "scheme": "https",
        "metrics_path": "/metrics",
        "bearer_token_file": key_file,
        "tls_config": tls_config,
        "static_configs": job.targets,
        # One job per certificate, one job label for the rules: up{job="lemfleet"} covers every host.
        "relabel_configs": [{"target_label": "job", "replacement": job_label}],
    }
