"""What server_tls changes on a host: the unit's flags, the record, the kept files; nothing when it is off."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

from lemfleet.roles import server_tls
from lemfleet.roles.record import deploy_record
from lemfleet.roles.server import managed_paths, render_unit
from lemfleet.roles.server_flags import extra_args_problems
from lemfleet.roles.transaction import Layout, restore_script, snapshot_script
from tests.unit.test_server_templates import plan

KEY = {"server_host": "10.0.0.5", "server_api_key": "k" * 20}


def _exec_start(text: str) -> list[str]:
    line = text.split("ExecStart=", 1)[1].split("\nRestart=", 1)[0].replace("\\\n", " ")
    return shlex.split(line)


def test_a_tls_unit_passes_the_certificate_and_key_files() -> None:
    p = plan(**KEY, server_tls="generate")
    args = _exec_start(render_unit(p, unit_name="lemfleet-llama", user="lemfleet", binary="/b", api_key_file="/k",
                                   tls=True))  # fmt: skip
    assert args[args.index("--ssl-cert-file") + 1] == server_tls.CERT_FILE == "/etc/lemfleet/tls.crt"
    assert args[args.index("--ssl-key-file") + 1] == server_tls.KEY_FILE == "/etc/lemfleet/tls.key"
    assert args[-1] == "$LEMFLEET_EXTRA_ARGS"  # the extra arguments still come last


def test_without_tls_the_unit_is_as_before() -> None:
    text = render_unit(plan(**KEY), unit_name="lemfleet-llama", user="lemfleet", binary="/b", api_key_file="/k")
    assert "ssl" not in text
    assert '--metrics --api-key-file "/k" $LEMFLEET_EXTRA_ARGS\n' in text


def test_extra_args_may_not_set_the_tls_flags() -> None:
    problems = extra_args_problems(["--ssl-key-file=/tmp/k", "--ssl-cert-file", "/tmp/c"])
    assert len(problems) == 2 and "server_tls" in problems[0]


def test_the_record_names_the_fingerprint_only_for_a_tls_host() -> None:
    from lemfleet.roles.model_delivery import ModelArtifact
    from tests.unit.test_llama_cpp_build import SOURCE

    model = ModelArtifact(alias="tiny", filename="tiny.gguf", sha256="0" * 64, size=1)
    p = plan(**KEY, server_tls="generate")
    plain = deploy_record(p, SOURCE, model, "/m")
    assert "tls" not in plain["service"]
    tls = deploy_record(p, SOURCE, model, "/m", tls_fingerprint="ab:cd", tls_spki_sha256="x=")
    assert tls["service"]["tls"] == {"scheme": "https", "sha256_fingerprint": "ab:cd", "spki_sha256": "x="}


def test_the_certificate_and_key_are_probed_and_kept_with_the_last_good_state() -> None:
    assert {server_tls.CERT_FILE, server_tls.KEY_FILE} <= set(managed_paths("lemfleet-llama"))
    layout = Layout.for_unit("lemfleet-llama")
    snapshot = snapshot_script(layout, "/b", "/m", "d")
    assert "cp -p /etc/lemfleet/tls.key /var/lib/lemfleet/last-good.new/tls.key" in snapshot
    # A last good state without TLS takes the files away again.
    assert "else rm -f /etc/lemfleet/tls.crt; fi" in restore_script(layout)


def test_the_verify_suite_pins_the_recorded_public_key_over_https() -> None:
    from tests.verify.plugin import _curl

    record = {"service": {"host": "10.0.0.5", "port": 8080}}
    assert "http://10.0.0.5:8080/health" in _curl(record, "/health") and "pinnedpubkey" not in _curl(record, "/h")
    record["service"]["tls"] = {"sha256_fingerprint": "ab", "spki_sha256": "AbC+/="}
    command = _curl(record, "/health")
    assert "-k --pinnedpubkey sha256//AbC+/= " in command and command.endswith("https://10.0.0.5:8080/health")


def test_the_public_key_pin_is_what_openssl_computes(tmp_path: Path) -> None:
    made = server_tls.generate(["gpu1"])
    (tmp_path / "c.pem").write_text(made.cert_pem)
    pipeline = (
        f"openssl x509 -in {tmp_path / 'c.pem'} -pubkey -noout | openssl pkey -pubin -outform der "
        "| openssl dgst -sha256 -binary | base64"
    )
    assert subprocess.run(pipeline, shell=True, check=True, capture_output=True, text=True).stdout.strip() == (
        made.spki_sha256
    )
    fingerprint = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / "c.pem"), "-noout", "-fingerprint", "-sha256"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert fingerprint.strip().split("=", 1)[1].lower() == made.fingerprint
