"""server_tls: HTTPS for a llama-server that listens beyond loopback.

``server_tls`` is ``off`` (default: plain HTTP, as before), ``generate`` (lemfleet makes a
self-signed certificate per host) or ``files`` (the operator's ``server_tls_cert`` and
``server_tls_key``, controller paths). Either way llama-server gets ``--ssl-cert-file`` and
``--ssl-key-file`` (from a build with ``-DLLAMA_OPENSSL=ON``, which only TLS hosts get, so the
default build id stays as it was), and clients check the certificate: by its recorded sha256
fingerprint (pinned, lemfleet.tls_client) or against the operator's CA.

TLS is refused on a loopback server: only local processes and SSH port forwards reach it, and
the SSH channel already encrypts the forward, so a certificate would protect nothing.

``generate`` makes the certificate on the controller with ``cryptography`` and keeps it there
(:func:`tls_dir`, 0700; the key 0600), because the controller must know the fingerprint before
the deploy to print it in the plan, and must keep the same certificate from one deploy to the next
(a new one every deploy would restart the service and break every pinned client). The key then
travels to the host as the API keys do: over the SSH channel, into a file created 0600 and made
0640 root:<service group>, never shown in a diff or a log. It is remade only when the host's
names change or it has fewer than :data:`RENEW_DAYS` days left.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lemfleet.paths import LOOPBACK, TLS_CERT_FILE, TLS_KEY_FILE, WILDCARD
from lemfleet.roles.settings import Setting, one_of, text

MODES = ("off", "generate", "files")
VALID_DAYS = 825
RENEW_DAYS = 30
CERT_FILE = TLS_CERT_FILE
KEY_FILE = TLS_KEY_FILE
OPENSSL_ON = "-DLLAMA_OPENSSL=ON"
OPENSSL_OFF = "-DLLAMA_OPENSSL=OFF"
BUILD_PACKAGES = ["libssl-dev"]
# libssl3 on bookworm and jammy, libssl3t64 on trixie and noble: the openssl tool depends on the right one.
RUNTIME_PACKAGES = ["openssl"]

SETTINGS = (
    Setting(
        "server_tls",
        "off",
        "HTTPS for a server listening beyond loopback: 'off' (plain HTTP), 'generate' (a self-signed certificate "
        "per host, made and kept on the controller, its sha256 fingerprint recorded for clients) or 'files' "
        "(server_tls_cert and server_tls_key). Needs a build with OpenSSL (only TLS hosts get one).",
        one_of(*MODES),
    ),
    Setting(
        "server_tls_cert",
        None,
        "Controller path of the PEM certificate (chain) for server_tls='files'.",
        text(accepted="a path", none_ok=True),
    ),
    Setting(
        "server_tls_key",
        None,
        "Controller path of the unencrypted PEM private key of server_tls_cert, for server_tls='files'.",
        text(accepted="a path", none_ok=True),
    ),
)


@dataclass(frozen=True)
class TlsFiles:
    """What a TLS host gets: the certificate and key as PEM text, the certificate's sha256, and the
    base64 sha256 of its public key (curl's ``--pinnedpubkey sha256//...``, which the verify suite uses)."""

    cert_pem: str
    key_pem: str
    fingerprint: str
    spki_sha256: str


def enabled(settings: Any) -> bool:
    return (settings.get("server_tls") or "off") != "off"


def fingerprint(cert: x509.Certificate) -> str:
    """The sha256 of the certificate's DER, as lowercase hex pairs joined by ':' (openssl's form)."""
    return ":".join(f"{b:02x}" for b in cert.fingerprint(hashes.SHA256()))


def spki_sha256(cert: x509.Certificate) -> str:
    """The base64 sha256 of the certificate's SubjectPublicKeyInfo: what curl's --pinnedpubkey takes."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def tls_problems(s: Any) -> list[str]:
    """Why the TLS settings cannot work; empty when they can. Run with every other check, before any host."""
    mode = s.get("server_tls") or "off"
    cert, key = s.get("server_tls_cert"), s.get("server_tls_key")
    if mode != "files" and (cert or key):
        return [f"server_tls_cert/server_tls_key are set but server_tls={mode!r}; accepted: server_tls='files'"]
    if mode == "off":
        return []
    if s.get("server_host") in LOOPBACK:
        return [
            f"server_tls={mode!r} with server_host={s.get('server_host')!r}: a loopback server is reached only "
            "locally or through an SSH forward, which is encrypted already; accepted: server_tls='off', or a "
            "server_host beyond loopback"
        ]
    if mode == "files":
        if not (cert and key):
            return ["server_tls='files' needs server_tls_cert and server_tls_key (controller paths of PEM files)"]
        try:
            load_files(cert, key)
        except ValueError as err:
            return [str(err)]
    return []


def _read(setting: str, path: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except (OSError, RuntimeError) as err:
        raise ValueError(f"{setting}={path!r} cannot be read ({err}); accepted: a readable PEM file") from err


def load_files(cert_path: str, key_path: str, now: datetime.datetime | None = None) -> TlsFiles:
    """The operator's certificate and key, checked: both parse, the key is not encrypted and matches."""
    cert_bytes, key_bytes = _read("server_tls_cert", cert_path), _read("server_tls_key", key_path)
    try:
        chain = x509.load_pem_x509_certificates(cert_bytes)
    except ValueError as err:
        raise ValueError(
            f"server_tls_cert={cert_path!r} holds no PEM certificate; accepted: a PEM certificate (chain)"
        ) from err
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError as err:
        raise ValueError(
            f"server_tls_key={key_path!r} is encrypted, and llama-server cannot ask for its passphrase; "
            "accepted: an unencrypted PEM private key"
        ) from err
    except ValueError as err:
        raise ValueError(
            f"server_tls_key={key_path!r} holds no PEM private key (content not shown); accepted: an unencrypted "
            "PEM private key"
        ) from err
    leaf = chain[0]
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != leaf.public_key().public_bytes(
        serialization.Encoding.PEM, public
    ):
        raise ValueError(
            f"server_tls_key={key_path!r} does not belong to server_tls_cert={cert_path!r} (their public keys "
            "differ); accepted: the private key of the certificate's first (leaf) certificate"
        )
    now = now or datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc <= now:
        raise ValueError(
            f"server_tls_cert={cert_path!r} expired on {leaf.not_valid_after_utc:%Y-%m-%d}; accepted: a valid "
            "certificate"
        )
    return TlsFiles(cert_bytes.decode("ascii"), key_bytes.decode("ascii"), fingerprint(leaf), spki_sha256(leaf))


def host_names(name: str, *addresses: str | None) -> list[str]:
    """The names the certificate is for: the inventory name and every address clients may use, no wildcards."""
    names: list[str] = []
    for item in (name, *addresses):
        if item and item not in names and item not in (*WILDCARD, "@local"):
            names.append(item)
    return names


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    general: list[x509.GeneralName] = []
    for item in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(item)))
        except ValueError:
            general.append(x509.DNSName(item))
    return x509.SubjectAlternativeName(general)


def generate(names: list[str], now: datetime.datetime | None = None) -> TlsFiles:
    """A new self-signed ECDSA P-256 certificate for ``names`` (the first is its common name)."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return TlsFiles(cert_pem, key_pem, fingerprint(cert), spki_sha256(cert))


def tls_dir() -> Path:
    """Where generated certificates are kept on the controller (``LEMFLEET_TLS_DIR`` overrides)."""
    return Path(os.environ.get("LEMFLEET_TLS_DIR") or "~/.local/share/lemfleet/tls").expanduser()


def _still_good(cert_pem: bytes, names: list[str], now: datetime.datetime) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem)
    wanted = _san(names)
    try:
        have = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(have) == set(wanted) and cert.not_valid_after_utc - now > datetime.timedelta(days=RENEW_DAYS)


def _kept_paths(host_name: str) -> tuple[Path, Path]:
    folder = tls_dir() / host_name.replace("/", "_")
    return folder / "cert.pem", folder / "key.pem"


def kept_certificate(host_name: str, names: list[str], now: datetime.datetime | None = None) -> TlsFiles | None:
    """The host's kept certificate while it still fits its names and dates, else None; changes nothing.

    ``lemfleet plan`` asks this to say whether the deploy keeps the pinned certificate or makes a new one.
    """
    now = now or datetime.datetime.now(datetime.UTC)
    cert_path, key_path = _kept_paths(host_name)
    if cert_path.is_file() and key_path.is_file() and _still_good(cert_path.read_bytes(), names, now):
        return load_files(str(cert_path), str(key_path), now)
    return None


def host_certificate(host_name: str, names: list[str], now: datetime.datetime | None = None) -> TlsFiles:
    """The host's generated certificate: the kept one while it still fits, else a new one, kept."""
    now = now or datetime.datetime.now(datetime.UTC)
    kept = kept_certificate(host_name, names, now)
    if kept is not None:
        return kept
    cert_path, key_path = _kept_paths(host_name)
    folder = cert_path.parent
    made = generate(names, now)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    fd = os.open(key_path.with_suffix(".new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(made.key_pem)
    cert_path.with_suffix(".new").write_text(made.cert_pem)
    os.replace(key_path.with_suffix(".new"), key_path)
    os.replace(cert_path.with_suffix(".new"), cert_path)
    return made


def tls_for_host(settings: Any, host_name: str, *addresses: str | None) -> TlsFiles | None:
    """The certificate and key a host serves with, or None when ``server_tls`` is off."""
    mode = settings.get("server_tls") or "off"
    if mode == "files":
        return load_files(settings.get("server_tls_cert"), settings.get("server_tls_key"))
    if mode == "generate":
        return host_certificate(host_name, host_names(host_name, *addresses))
    return None


def cmake_flags(flags: list[str], settings: Any) -> list[str]:
    """The planned cmake flags with OpenSSL on for a TLS host; unchanged (so the same build id) otherwise."""
    if not enabled(settings):
        return flags
    result = [OPENSSL_ON if f == OPENSSL_OFF else f for f in flags]
    return result if OPENSSL_ON in result else [*result, OPENSSL_ON]
