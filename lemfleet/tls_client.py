"""How lemfleet's clients (the smoke gate, ``lemfleet smoke``, the verify suite) check a server's certificate.

Two ways, one :class:`ssl.SSLContext` each, handed to httpx as ``verify=``:

- pinned (``server_tls='generate'``): :func:`pinned_context` first fetches the server's
  certificate without sending anything, compares its sha256 with the recorded fingerprint, and
  returns a context that trusts exactly that certificate. The request itself then runs a full
  handshake against it, so a server that swaps certificates in between fails the handshake; the
  API key is never sent to a server whose certificate did not match. The host name is not
  checked: the pin names one certificate, which is stronger, and works through an SSH forward.
- CA (``server_tls='files'``, or any server): :func:`ca_context` trusts the operator's CA or
  certificate file and checks the host name as any HTTPS client does.
"""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
from typing import Any
from urllib.parse import urlsplit


class PinMismatch(ssl.SSLError):
    """The server's certificate is not the one recorded for it."""


def normalise(fingerprint: str) -> str:
    """``AB:cd:...`` or plain hex as lowercase hex pairs joined by ':'; ValueError for anything else."""
    digits = fingerprint.replace(":", "").strip().lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(
            f"{fingerprint!r} is not a sha256 fingerprint; accepted: 64 hex digits, ':' between pairs allowed"
        )
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def peer_certificate(url: str) -> bytes:
    """The DER certificate the server at ``url`` presents (nothing is sent but the TLS handshake)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection((host, port), timeout=10.0) as raw,
        probe.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise PinMismatch(f"{url} presented no certificate")
    return der


def pinned_context(url: str, fingerprint: str) -> ssl.SSLContext:
    """A context that trusts only the certificate of ``url`` whose sha256 is ``fingerprint``."""
    wanted = normalise(fingerprint)
    der = peer_certificate(url)
    got = der_fingerprint(der)
    if got != wanted:
        raise PinMismatch(f"{url} presents the certificate {got}, not the recorded {wanted}: refusing to send to it")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    # The pinned certificate is the trust anchor itself, also when it is a CA-issued leaf (server_tls='files').
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.load_verify_locations(cadata=der)
    return context


def ca_context(cafile: str) -> ssl.SSLContext:
    """A context that trusts the CA (or self-signed certificate) in ``cafile`` and checks host names."""
    return ssl.create_default_context(cafile=cafile)


def client_verify(url: str, *, fingerprint: str | None = None, cafile: str | None = None) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` gets for ``url``: the pinned or CA context, or True (the system's CAs)."""
    if not url.startswith("https://"):
        return True
    if fingerprint:
        return pinned_context(url, fingerprint)
    if cafile:
        return ca_context(cafile)
    return True


def recorded_fingerprint(record: dict[str, Any] | None) -> str | None:
    """The fingerprint a host's ``deployed.json`` records for its server (``service.tls``), or None."""
    tls = ((record or {}).get("service") or {}).get("tls") or {}
    value = tls.get("sha256_fingerprint")
    return str(value) if value else None


def https(url: str) -> str:
    """``url`` with the https scheme (a forward's base URL is http://127.0.0.1:<port>)."""
    return "https://" + url.removeprefix("http://") if url.startswith("http://") else url


def recorded_spki(record: dict[str, Any] | None) -> str | None:
    """The base64 sha256 of the public key a host's ``deployed.json`` records (``service.tls``), or None."""
    tls = ((record or {}).get("service") or {}).get("tls") or {}
    value = tls.get("spki_sha256")
    return str(value) if value else None


def curl_pin(spki: str) -> str:
    """curl options that send a request only to a server with the public key whose sha256 is ``spki``.

    What the verify suite and ``lemfleet status`` give curl on the host: ``--pinnedpubkey`` checks the key
    before anything is sent, so ``-k`` (no CA, no host name: the pin is the trust) leaks no key.
    """
    try:
        digest = base64.b64decode(spki, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(f"{spki!r} is not a public-key pin; accepted: the base64 sha256 of a SubjectPublicKeyInfo")
    return f"-k --pinnedpubkey sha256//{spki}"


def same_certificate(served: str | None, recorded: str) -> bool:
    """Whether the fingerprint a server presents (any case, ':' or not) is the recorded one."""
    try:
        return served is not None and normalise(served) == normalise(recorded)
    except ValueError:
        return False


def pem_certificates(pem: str) -> list[bytes]:
    """The DER of each certificate in a PEM text, in order (the leaf first in a chain)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    return [ssl.PEM_cert_to_DER_cert(f"{begin}{block.split(end)[0]}{end}\n") for block in pem.split(begin)[1:]]


def der_fingerprint(der: bytes) -> str:
    """The sha256 of a DER certificate, as lowercase hex pairs joined by ':' (the recorded form)."""
    return ":".join(f"{b:02x}" for b in hashlib.sha256(der).digest())
