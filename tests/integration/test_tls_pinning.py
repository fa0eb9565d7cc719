"""Clients pin a server's certificate: a real TLS server on loopback (Python's ssl), real httpx requests.

The server serves a certificate lemfleet generated (roles/server_tls.py), as llama-server would. A
client pinned to its fingerprint gets answers; a client pinned to another fingerprint sends no
request at all (the server sees no HTTP bytes); a certificate swapped after the pin was taken fails
the handshake of the request itself; the operator's CA path checks the host name.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lemfleet.roles.server_tls import TlsFiles, generate
from lemfleet.tls_client import PinMismatch, ca_context, client_verify, pinned_context
from tests.integration.tls_standin import serve_https


@dataclass
class TlsServer:
    url: str
    files: TlsFiles
    context: ssl.SSLContext
    requests: list[str] = field(default_factory=list)

    def serve_instead(self, other: TlsFiles, folder: Path) -> None:
        """Swap the certificate the server presents (what an impostor on the same port would do)."""
        _load(self.context, other, folder)


def _load(context: ssl.SSLContext, files: TlsFiles, folder: Path) -> None:
    cert, key = folder / f"{files.fingerprint[:8]}.crt", folder / f"{files.fingerprint[:8]}.key"
    cert.write_text(files.cert_pem)
    key.write_text(files.key_pem)
    context.load_cert_chain(cert, key)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[TlsServer]:
    files = generate(["localhost", "127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _load(context, files, tmp_path)
    seen: list[str] = []

    def answer(path: str, authorization: str | None) -> tuple[int, bytes]:
        return 200, b'{"status":"ok"}'

    with serve_https(context, answer, seen) as port:
        yield TlsServer(f"https://127.0.0.1:{port}", files, context, seen)


def test_a_client_pinned_to_the_recorded_fingerprint_is_answered(tls_server: TlsServer) -> None:
    verify = pinned_context(tls_server.url, tls_server.files.fingerprint.upper())
    with httpx.Client(verify=verify, timeout=10) as client:
        response = client.get(f"{tls_server.url}/health", headers={"Authorization": "Bearer k"})
    assert response.json() == {"status": "ok"}
    assert tls_server.requests == ["/health Bearer k"]


def test_another_fingerprint_sends_nothing(tls_server: TlsServer) -> None:
    other = generate(["localhost"]).fingerprint
    with pytest.raises(PinMismatch, match="not the recorded"):
        client_verify(tls_server.url, fingerprint=other)
    assert tls_server.requests == []


def test_a_certificate_swapped_after_the_pin_fails_the_request_handshake(tls_server: TlsServer, tmp_path: Path) -> None:
    verify = pinned_context(tls_server.url, tls_server.files.fingerprint)
    tls_server.serve_instead(generate(["localhost", "127.0.0.1"]), tmp_path)
    with httpx.Client(verify=verify, timeout=10) as client, pytest.raises(httpx.ConnectError, match="CERTIFICATE"):
        client.get(f"{tls_server.url}/v1/models", headers={"Authorization": "Bearer secret-key"})
    assert tls_server.requests == []


def test_the_ca_path_trusts_the_operators_certificate_and_checks_names(tls_server: TlsServer, tmp_path: Path) -> None:
    cafile = tmp_path / "ca.pem"
    cafile.write_text(tls_server.files.cert_pem)
    with httpx.Client(verify=ca_context(str(cafile)), timeout=10) as client:
        assert client.get(f"{tls_server.url}/health").status_code == 200
    # The certificate names 127.0.0.1 and localhost, not 127.0.0.2 (also loopback, also this server).
    other_name = tls_server.url.replace("127.0.0.1", "127.0.0.2")
    with httpx.Client(verify=ca_context(str(cafile)), timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{other_name}/health")
    # Without a pin or a CA, a self-signed certificate is refused (the system's CAs do not know it).
    with httpx.Client(verify=client_verify(tls_server.url), timeout=10) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{tls_server.url}/health")


def test_lemfleet_smoke_pins_a_url_and_sends_nothing_to_another_certificate(tls_server: TlsServer) -> None:
    from lemfleet.smoke_cli import _smoke_one

    options = {"api_key": "k" * 20, "timeout": 10.0, "health_timeout": 5.0}
    wrong = _smoke_one(tls_server.url, options, {"fingerprint": generate(["x"]).fingerprint, "cafile": None})
    assert [(s.name, s.status) for s in wrong.steps][:2] == [("tls", "failed"), ("health", "skipped")]
    assert tls_server.requests == []
    right = _smoke_one(tls_server.url, options, {"fingerprint": tls_server.files.fingerprint, "cafile": None})
    assert right.steps[0].name == "health" and right.steps[0].status == "passed", right.steps[0]
    assert tls_server.requests[0] == "/health None"  # health first, without the key
