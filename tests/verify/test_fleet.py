"""One check per test, per host; each failure message says what is wrong on which host."""

from __future__ import annotations

import json
import shlex
from typing import Any

LOOPBACK = ("127.0.0.1", "::1", "localhost")
HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "Restart": "on-failure",
}


def name(host: Any) -> str:
    return str(host.backend.hostname)


def test_service_active_enabled_and_not_looping(host, record, unit_props, max_restarts):
    unit = record["service"]["unit"]
    assert unit_props["ActiveState"] == "active", f"{name(host)}: {unit} is {unit_props['ActiveState']}"
    assert host.service(unit).is_enabled, f"{name(host)}: {unit} is not enabled"
    restarts = int(unit_props.get("NRestarts", "0"))
    assert restarts <= max_restarts, f"{name(host)}: {unit} restarted {restarts} times (a crash loop?)"


def test_runs_as_the_service_user(host, record, unit_props):
    pid = unit_props["MainPID"]
    user = host.check_output(f"ps -o user= -p {pid}")
    assert user == record["service"]["user"], f"{name(host)}: llama-server runs as {user!r}"


def test_binary_is_the_recorded_build(host, record):
    build = record["build"]
    current = host.check_output("readlink -f /opt/lemfleet/llama.cpp/current")
    assert current == build["path"], f"{name(host)}: current build is {current}, the deploy recorded {build['path']}"
    installed = json.loads(host.file(f"{build['path']}/build.json").content_string)
    assert installed["build_id"] == build["id"], f"{name(host)}: build id {installed['build_id']} != {build['id']}"
    assert installed["backend"] == build["backend"], f"{name(host)}: backend {installed['backend']}"


def test_model_file_matches_its_sha256(host, record):
    model = record["model"]
    f = host.file(model["path"])
    assert f.exists, f"{name(host)}: model {model['path']} is missing"
    assert f.sha256sum == model["sha256"], f"{name(host)}: {model['path']} is not the deployed model (sha256 differs)"


def test_unit_sandbox_is_in_place(host, unit_props):
    wrong = {k: unit_props.get(k) for k, v in HARDENING.items() if unit_props.get(k, "") != v}
    assert not wrong, f"{name(host)}: sandbox settings changed: {wrong}"
    families = unit_props.get("RestrictAddressFamilies", "")
    assert "AF_INET" in families and "AF_NETLINK" not in families, f"{name(host)}: RestrictAddressFamilies={families}"
    assert unit_props.get("SystemCallFilter"), f"{name(host)}: no SystemCallFilter"


def test_listens_only_on_the_configured_address(host, record):
    service = record["service"]
    lines = host.check_output(f"ss -Htln 'sport = :{service['port']}'").splitlines()
    addresses = sorted({line.split()[3].rsplit(":", 1)[0].strip("[]") for line in lines})
    assert addresses == [service["host"]], (
        f"{name(host)}: port {service['port']} listens on {addresses}, configured {service['host']}"
    )


def test_api_key_file(host, record):
    key = host.file("/etc/lemfleet/api-key")
    if record["service"]["api_key_required"] or key.exists:
        assert key.exists, f"{name(host)}: the server listens beyond loopback but has no API key file"
        assert key.mode == 0o640, f"{name(host)}: /etc/lemfleet/api-key has mode {oct(key.mode)}, expected 0o640"
        assert key.user == "root", f"{name(host)}: /etc/lemfleet/api-key is owned by {key.user}"
    else:
        assert record["service"]["host"] in LOOPBACK


def _curl(host: Any, record: dict[str, Any], path: str, body: dict[str, Any] | None = None) -> Any:
    service = record["service"]
    address = service["host"] if service["host"] not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{address}:{service['port']}{path}"
    # The key is read on the host, inside the command: it never crosses to the controller.
    auth = '-H "Authorization: Bearer $(grep -v "^#" /etc/lemfleet/api-key | head -1)"'
    data = f"-H 'Content-Type: application/json' -d {shlex.quote(json.dumps(body))}" if body else ""
    cmd = f"curl -sS --max-time 120 -w '\\n%{{http_code}}' {auth if service['api_key_required'] else ''} {data} {url}"
    out = host.check_output(cmd)
    text, _, code = out.rpartition("\n")
    return int(code), text


def test_endpoint_health(host, record):
    code, text = _curl(host, record, "/health")
    assert code == 200, f"{name(host)}: /health answered {code}: {text[:200]}"


def test_endpoint_models(host, record):
    code, text = _curl(host, record, "/v1/models")
    assert code == 200, f"{name(host)}: /v1/models answered {code}: {text[:200]}"
    ids = [m["id"] for m in json.loads(text)["data"]]
    assert record["model"]["alias"] in ids, f"{name(host)}: /v1/models lists {ids}"


def test_endpoint_chat(host, record):
    body = {"model": record["model"]["alias"], "max_tokens": 8,
            "messages": [{"role": "user", "content": "Say hello."}]}  # fmt: skip
    code, text = _curl(host, record, "/v1/chat/completions", body)
    assert code == 200, f"{name(host)}: chat completion answered {code}: {text[:200]}"
    reply = json.loads(text)
    assert reply["choices"][0]["message"]["content"] is not None, f"{name(host)}: empty completion"
    assert reply["usage"]["completion_tokens"] > 0, f"{name(host)}: no tokens generated"
