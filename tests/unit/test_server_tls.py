"""server_tls: settings refused before any host, generated certificates, their fingerprint and kept state."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lemfleet.errors import SettingsError
from lemfleet.roles import server_tls
from lemfleet.roles.server_tls import generate, host_certificate, host_names, load_files, tls_problems

EXPOSED = {"server_host": "10.0.0.5"}


def _write(tmp_path: Path, made: server_tls.TlsFiles) -> tuple[str, str]:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text(made.cert_pem)
    key.write_text(made.key_pem)
    return str(cert), str(key)


def test_generated_certificate_names_the_host_and_its_fingerprint_is_the_der_sha256() -> None:
    made = generate(host_names("gpu1.lan", "10.0.0.5", "0.0.0.0"))
    cert = x509.load_pem_x509_certificate(made.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gpu1.lan"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert made.fingerprint == ":".join(f"{b:02x}" for b in cert.fingerprint(hashes.SHA256()))
    assert len(made.fingerprint) == 95
    key = serialization.load_pem_private_key(made.key_pem.encode(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def test_off_is_the_default_and_needs_nothing() -> None:
    assert tls_problems({"server_host": "127.0.0.1"}) == []
    assert tls_problems({"server_host": "127.0.0.1", "server_tls": "off"}) == []


@pytest.mark.parametrize("mode", ["generate", "files"])
def test_tls_on_a_loopback_server_is_refused_naming_setting_and_value(mode: str) -> None:
    (problem,) = tls_problems({"server_host": "127.0.0.1", "server_tls": mode})
    assert f"server_tls={mode!r}" in problem and "server_host='127.0.0.1'" in problem and "accepted:" in problem


def test_settings_check_refuses_an_unknown_mode_and_runs_the_tls_rules() -> None:
    from lemfleet.roles.settings_check import validate

    assert validate({})["server_tls"] == "off"
    with pytest.raises(SettingsError, match="a loopback server"):
        validate({"server_tls": "generate"})
    with pytest.raises(SettingsError) as err:
        validate({"server_tls": "yes"})
    assert "server_tls='yes'" in str(err.value) and "'generate'" in str(err.value)


def test_files_needs_both_paths_and_cert_files_need_files_mode(tmp_path: Path) -> None:
    assert "needs server_tls_cert and server_tls_key" in tls_problems({**EXPOSED, "server_tls": "files"})[0]
    (problem,) = tls_problems({**EXPOSED, "server_tls": "generate", "server_tls_cert": "/x"})
    assert "server_tls='generate'" in problem


def test_files_mode_accepts_a_matching_pair(tmp_path: Path) -> None:
    made = generate(["gpu1"])
    cert, key = _write(tmp_path, made)
    assert tls_problems({**EXPOSED, "server_tls": "files", "server_tls_cert": cert, "server_tls_key": key}) == []
    assert load_files(cert, key).fingerprint == made.fingerprint


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = _write(tmp_path, generate(["gpu1"]))
    other = tmp_path / "other.pem"
    other.write_text(generate(["gpu2"]).key_pem)
    (problem,) = tls_problems({**EXPOSED, "server_tls": "files", "server_tls_cert": cert, "server_tls_key": str(other)})
    assert "does not belong to server_tls_cert" in problem and str(other) in problem


def test_an_encrypted_key_garbage_and_a_missing_file_are_refused_without_showing_content(tmp_path: Path) -> None:
    made = generate(["gpu1"])
    cert, _ = _write(tmp_path, made)
    key = serialization.load_pem_private_key(made.key_pem.encode(), None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("SECRET-LOOKING-TEXT\n")
    s = {**EXPOSED, "server_tls": "files", "server_tls_cert": cert}
    assert "is encrypted" in tls_problems({**s, "server_tls_key": str(locked)})[0]
    (problem,) = tls_problems({**s, "server_tls_key": str(garbage)})
    assert "holds no PEM private key" in problem and "SECRET-LOOKING-TEXT" not in problem
    assert "cannot be read" in tls_problems({**s, "server_tls_key": str(tmp_path / "none")})[0]
    (problem,) = tls_problems({**s, "server_tls_cert": str(garbage), "server_tls_key": str(locked)})
    assert "holds no PEM certificate" in problem


def test_an_expired_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = _write(tmp_path, generate(["gpu1"], now=datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)))
    with pytest.raises(ValueError, match="expired on 2022-04-05"):
        load_files(cert, key)


def test_the_generated_certificate_is_kept_until_names_change_or_it_nears_expiry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEMFLEET_TLS_DIR", str(tmp_path / "tls"))
    first = host_certificate("gpu1", ["gpu1", "10.0.0.5"])
    folder = tmp_path / "tls" / "gpu1"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "key.pem").st_mode) == 0o600
    assert host_certificate("gpu1", ["gpu1", "10.0.0.5"]) == first
    renamed = host_certificate("gpu1", ["gpu1", "10.0.0.6"])
    assert renamed.fingerprint != first.fingerprint
    late = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=server_tls.VALID_DAYS - 10)
    assert host_certificate("gpu1", ["gpu1", "10.0.0.6"], now=late).fingerprint != renamed.fingerprint


def test_openssl_is_turned_on_only_for_tls_hosts() -> None:
    flags = ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_OPENSSL=OFF", "-DGGML_NATIVE=ON"]
    assert server_tls.cmake_flags(flags, {"server_tls": "off"}) is flags
    assert server_tls.cmake_flags(flags, {}) is flags
    on = server_tls.cmake_flags(flags, {"server_tls": "generate"})
    assert on == ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_OPENSSL=ON", "-DGGML_NATIVE=ON"]


def test_only_a_tls_plan_builds_with_openssl_so_the_default_build_id_stays() -> None:
    from lemfleet.roles.llama_cpp import _packages, build_id, build_script
    from lemfleet.roles.plan import BASE_CMAKE_FLAGS, ModelInfo, plan_host
    from lemfleet.roles.settings_check import validate
    from tests.unit.test_llama_cpp_build import FACTS, SOURCE

    plain = plan_host(FACTS, validate({}), ModelInfo("tiny", 1))
    tls = plan_host(
        FACTS, validate({**EXPOSED, "server_api_key": "k" * 20, "server_tls": "generate"}), ModelInfo("tiny", 1)
    )
    assert list(plain.cmake_flags[: len(BASE_CMAKE_FLAGS)]) == list(BASE_CMAKE_FLAGS)
    assert "-DLLAMA_OPENSSL=OFF" in plain.cmake_flags and "-DLLAMA_OPENSSL=ON" not in plain.cmake_flags
    assert [f for f in tls.cmake_flags if "OPENSSL" in f] == ["-DLLAMA_OPENSSL=ON"]
    assert build_id(SOURCE, tls) != build_id(SOURCE, plain)
    assert "libssl.so" not in build_script("b", "/src", plain, SOURCE, 2)
    assert "ldd /opt/lemfleet/llama.cpp/b.new/bin/llama-server | grep -q libssl.so" in build_script(
        "b", "/src", tls, SOURCE, 2
    )
    assert _packages(plain, ["cmake"], ["libssl-dev"]) == ["cmake"]
    assert _packages(tls, ["cmake"], ["libssl-dev"]) == ["cmake", "libssl-dev"]
