"""One check per test, per host; each failure message says what is wrong on which host."""

from __future__ import annotations

import json
from typing import Any

from lemfleet.paths import API_KEY_FILE, LOOPBACK, TLS_KEY_FILE

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


def answer(seen: dict[str, Any], key: str) -> tuple[int, str]:
    text, _, code = seen.get(key, "").rpartition("\n")
    return (int(code) if code.isdigit() else 0), text


def instances(seen: dict[str, Any]) -> list[dict[str, Any]]:
    """Each llama-server of the host (server_instances): its record view and what was observed of it."""
    return list(seen.get("instances") or [seen])


def test_service_active_enabled_and_not_looping(host, seen, max_restarts):
    for one in instances(seen):
        unit, props = one["record"]["service"]["unit"], one["unit"]
        assert props.get("ActiveState") == "active", f"{name(host)}: {unit} is {props.get('ActiveState')}"
        assert props.get("UnitFileState") == "enabled", f"{name(host)}: {unit} is {props.get('UnitFileState')}"
        restarts = int(props.get("NRestarts", "0"))
        assert restarts <= max_restarts, f"{name(host)}: {unit} restarted {restarts} times (a crash loop?)"


def test_runs_as_the_service_user(host, seen):
    for one in instances(seen):
        user, unit = one["user"], one["record"]["service"]["unit"]
        assert user == one["record"]["service"]["user"], f"{name(host)}: {unit} runs llama-server as {user!r}"


def test_binary_is_the_recorded_build(host, seen):
    build = seen["record"]["build"]
    assert seen["current"] == build["path"], (
        f"{name(host)}: current build is {seen['current']}, the deploy recorded {build['path']}"
    )
    installed = json.loads(seen["build"])
    assert installed["build_id"] == build["id"], f"{name(host)}: build id {installed['build_id']} != {build['id']}"
    assert installed["backend"] == build["backend"], f"{name(host)}: backend {installed['backend']}"


def test_model_file_matches_its_sha256(host, seen):
    model = seen["record"]["model"]
    assert seen["model"] == model["sha256"], (
        f"{name(host)}: {model['path']} is not the deployed model (sha256 differs or file missing: "
        f"{seen['model'][:80]})"
    )


def test_unit_sandbox_is_in_place(host, seen):
    for one in instances(seen):
        props, unit = one["unit"], one["record"]["service"]["unit"]
        wrong = {k: props.get(k) for k, v in HARDENING.items() if props.get(k, "") != v}
        assert not wrong, f"{name(host)}: {unit}: sandbox settings changed: {wrong}"
        families = props.get("RestrictAddressFamilies", "")
        assert "AF_INET" in families and "AF_NETLINK" not in families, (
            f"{name(host)}: {unit}: RestrictAddressFamilies={families}"
        )
        assert props.get("SystemCallFilter"), f"{name(host)}: {unit}: no SystemCallFilter"


def test_listens_only_on_the_configured_address(host, seen):
    for one in instances(seen):
        service = one["record"]["service"]
        lines = [line for line in one["listen"].splitlines() if line.strip()]
        addresses = sorted({line.split()[3].rsplit(":", 1)[0].strip("[]") for line in lines})
        assert addresses == [service["host"]], (
            f"{name(host)}: port {service['port']} ({service['unit']}) listens on {addresses}, "
            f"configured {service['host']}"
        )


def test_api_key_file(host, seen):
    service = seen["record"]["service"]
    if seen["key"] == "missing":
        assert not service["api_key_required"], f"{name(host)}: listens beyond loopback but has no API key file"
        assert service["host"] in LOOPBACK
        return
    mode, owner = seen["key"].split()
    assert mode == "640", f"{name(host)}: {API_KEY_FILE} has mode 0o{mode}, expected 0o640"
    assert owner == "root", f"{name(host)}: {API_KEY_FILE} is owned by {owner}"


def test_tls_key_file(host, seen):
    """server_tls: the key is 0640 root:<service user>; the endpoint checks below pin the recorded public key."""
    service = seen["record"]["service"]
    if not service.get("tls"):
        assert seen.get("tls_key", "missing") == "missing", f"{name(host)}: a TLS key file but no TLS in the record"
        return
    assert seen.get("tls_key") == f"640 root {service['user']}", (
        f"{name(host)}: {TLS_KEY_FILE} is {seen.get('tls_key')}, expected 640 root {service['user']}"
    )


def test_endpoint_refuses_requests_without_a_key(host, seen):
    if seen["key"] == "missing":
        assert seen["record"]["service"]["host"] in LOOPBACK, f"{name(host)}: listens beyond loopback with no key file"
        return
    for one in instances(seen):
        code, text = answer(one, "no_key")
        assert code == 401, (
            f"{name(host)}: /v1/models on port {one['record']['service']['port']} answered {code} to a request "
            f"without a key, expected 401 (an empty key list turns authentication off): {text[:200]}"
        )


def test_endpoint_health(host, seen):
    for one in instances(seen):
        code, text = answer(one, "health")
        assert code == 200, (
            f"{name(host)}: /health on port {one['record']['service']['port']} answered {code}: " + (text[:200])
        )


def test_endpoint_models(host, seen):
    for one in instances(seen):
        port = one["record"]["service"]["port"]
        code, text = answer(one, "models")
        assert code == 200, f"{name(host)}: /v1/models on port {port} answered {code}: {text[:200]}"
        ids = [m["id"] for m in json.loads(text)["data"]]
        assert seen["record"]["model"]["alias"] in ids, f"{name(host)}: /v1/models on port {port} lists {ids}"


def test_endpoint_chat(host, seen):
    for one in instances(seen):
        port = one["record"]["service"]["port"]
        code, text = answer(one, "chat")
        assert code == 200, f"{name(host)}: chat completion on port {port} answered {code}: {text[:200]}"
        reply = json.loads(text)
        assert reply["choices"][0]["message"]["content"] is not None, f"{name(host)}: empty completion on {port}"
        assert reply["usage"]["completion_tokens"] > 0, f"{name(host)}: no tokens generated on port {port}"
