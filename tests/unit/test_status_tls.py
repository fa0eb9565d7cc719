"""``lemfleet status`` on a server_tls host: https, only to the pinned key, and the served certificate checked.

The record's ``service.tls`` (roles/record.py) holds the certificate's sha256 and its public key's; the
status command probes over https with curl pinned to that key, and reads the certificate the server
presents with openssl. Real certificates (roles/server_tls.py); the live probe is in
tests/integration/test_status_prometheus_tls.py.
"""

from __future__ import annotations

from typing import Any

from lemfleet.api.status import MARK, host_status, status_command
from lemfleet.roles.server_tls import generate
from tests.unit.test_status import RECORD, output

SERVED = generate(["tb2", "10.0.0.5"])
OTHER = generate(["tb2", "10.0.0.5"])


def tls_record(spki: str = SERVED.spki_sha256) -> dict[str, Any]:
    tls = {"scheme": "https", "sha256_fingerprint": SERVED.fingerprint, "spki_sha256": spki}
    return {**RECORD, "service": {**RECORD["service"], "tls": tls}}


def tls_output(line: str) -> str:
    return output() + f"\n{MARK}tls\n{line}"


def test_a_tls_host_is_probed_over_https_only_to_its_recorded_key() -> None:
    command = status_command(tls_record())
    pin = f"-k --pinnedpubkey sha256//{SERVED.spki_sha256}"
    assert f"curl -s -o /dev/null -m 10 {pin} -w '%{{http_code}}\\n' https://127.0.0.1:8080/health" in command
    assert f"curl -s -m 10 {pin} -K - " in command and "https://127.0.0.1:8080/metrics" in command
    assert "http://" not in command and f"{MARK}tls; openssl s_client -connect 127.0.0.1:8080 " in command
    plain = status_command(RECORD)
    assert "https://" not in plain and "pinnedpubkey" not in plain and f"{MARK}tls" not in plain


def test_a_record_without_a_valid_key_pin_sends_nothing_and_says_why() -> None:
    for spki in ("", "$(touch /tmp/owned)", "c2hvcnQ="):
        command = status_command(tls_record(spki))
        assert "--pinnedpubkey sha256//none" in command and "-k" not in command.split() and "owned" not in command
        row = host_status("tb2", tls_record(spki), tls_output(f"sha256 Fingerprint={SERVED.fingerprint.upper()}"), None)
        assert row.drift == (
            "deployed.json records no valid public-key pin (service.tls.spki_sha256): nothing was sent",
        )  # fmt: skip


def test_the_recorded_certificate_served_is_no_drift_and_the_row_says_https() -> None:
    row = host_status("tb2", tls_record(), tls_output(f"sha256 Fingerprint={SERVED.fingerprint.upper()}"), None)
    assert row.ok and row.drift == () and row.scheme == "https" and row.tls_sha256 == SERVED.fingerprint
    assert row.cells()[8] == "200 https"
    plain = host_status("tb1", RECORD, output(), None)
    assert (plain.scheme, plain.tls_sha256, plain.cells()[8]) == ("http", None, 200)


def test_another_certificate_or_none_is_drift() -> None:
    swapped = host_status("tb2", tls_record(), tls_output(f"SHA256 Fingerprint={OTHER.fingerprint}"), None)
    assert not swapped.ok and swapped.tls_sha256 == OTHER.fingerprint
    assert swapped.drift == (
        f"serves the certificate sha256 {OTHER.fingerprint}, deployed.json pins {SERVED.fingerprint}",
    )
    for line in ("-", "Fingerprint=zz", ""):
        unread = host_status("tb2", tls_record(), tls_output(line), None)
        assert unread.drift == ("the served certificate could not be read (openssl s_client)",) and not unread.ok
