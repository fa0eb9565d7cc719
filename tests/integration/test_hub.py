"""Controller-side model resolution and download, against the local hub with the real client."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lemfleet.hub import (
    DEFAULT_FILE,
    DEFAULT_REPO,
    HubError,
    IntegrityError,
    ResolvedModel,
    download,
    resolve_model,
)
from lemfleet.quants import pick_auto_quant
from lemfleet.roles.settings import SettingsError

if TYPE_CHECKING:
    from tests.integration.conftest import LocalHub

BIG_REPO, BIG_FILE = "acme/big-GGUF", "big-Q4_K_M.gguf"
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_ambient_token(no_hf_token: None) -> None:
    """Every test here sees only the tokens it passes or sets."""


def test_resolve_defaults_to_lem_q4_k_m(local_hub: LocalHub) -> None:
    resolved = resolve_model(endpoint=local_hub.url)
    commit = local_hub.server.commit(DEFAULT_REPO)
    assert resolved == ResolvedModel(
        repo=DEFAULT_REPO,
        revision=commit,
        filename=DEFAULT_FILE,
        url=f"{local_hub.url}/{DEFAULT_REPO}/resolve/{commit}/{DEFAULT_FILE}",
        sha256=local_hub.sha256(DEFAULT_REPO, DEFAULT_FILE),
        size=1_000_003,
        files=(
            ("LEM-Gemma3-1B-Q4_K_M.gguf", 1_000_003),
            ("LEM-Gemma3-1B-Q8_0.gguf", 1_500_007),
            ("LEM-Gemma3-1B-BF16.gguf", 2_500_011),
        ),
        ref="main",
        reason="model_quant=Q4_K_M",
    )


def test_resolve_by_quant_name_in_any_case(local_hub: LocalHub) -> None:
    resolved = resolve_model(quant="q8_0", endpoint=local_hub.url)
    assert resolved.filename == "LEM-Gemma3-1B-Q8_0.gguf"
    assert resolved.sha256 == local_hub.sha256(DEFAULT_REPO, "LEM-Gemma3-1B-Q8_0.gguf")


def test_unknown_quant_names_the_setting_and_what_the_repo_has(local_hub: LocalHub) -> None:
    with pytest.raises(SettingsError) as caught:
        resolve_model(quant="Q2_K", endpoint=local_hub.url)
    assert "model_quant='Q2_K' is not in lthn/LEM-Gemma3-1B-GGUF" in str(caught.value)
    assert "accepted: Q4_K_M, Q8_0, BF16" in str(caught.value)


def test_unknown_file_lists_the_repo_files(local_hub: LocalHub) -> None:
    with pytest.raises(SettingsError) as caught:
        resolve_model(filename="LEM-Gemma3-1B-Q2_K.gguf", endpoint=local_hub.url)
    message = str(caught.value)
    assert "model_file='LEM-Gemma3-1B-Q2_K.gguf' is not in" in message
    assert "LEM-Gemma3-1B-BF16.gguf, LEM-Gemma3-1B-Q4_K_M.gguf" in message


def test_unknown_revision_names_the_setting(local_hub: LocalHub) -> None:
    with pytest.raises(SettingsError, match=r"model_revision='v9.9' does not exist"):
        resolve_model(revision="v9.9", endpoint=local_hub.url)


def test_auto_quant_takes_the_largest_that_fits(local_hub: LocalHub) -> None:
    resolved = resolve_model(
        quant="auto",
        endpoint=local_hub.url,
        memory_budget_bytes=2_000_000,
        context_bytes_estimate=400_000,
    )
    assert resolved.filename == "LEM-Gemma3-1B-Q8_0.gguf"
    assert resolved.reason == (
        "model_quant=auto chose Q8_0: 1.5 MB + 400 kB context fits the 2 MB budget; BF16 would need 2.9 MB"
    )


def test_auto_quant_on_the_published_lem_sizes() -> None:
    published = {  # REFERENCE.md: the model card's sizes
        "LEM-Gemma3-1B-Q4_K_M.gguf": 967_000_000,
        "LEM-Gemma3-1B-Q8_0.gguf": 1_300_000_000,
        "LEM-Gemma3-1B-BF16.gguf": 2_400_000_000,
    }
    kv_4096 = 109_051_904  # 26 layers x 4096 tokens x 1 KV head x 256 x 2 (K, V) x f16
    assert pick_auto_quant(published, 8 * 10**9, kv_4096)[0] == "LEM-Gemma3-1B-BF16.gguf"
    assert pick_auto_quant(published, 2 * 10**9, kv_4096)[0] == "LEM-Gemma3-1B-Q8_0.gguf"
    assert pick_auto_quant(published, 1_100_000_000, kv_4096)[0] == "LEM-Gemma3-1B-Q4_K_M.gguf"
    with pytest.raises(SettingsError, match="no quant fits the memory budget of 1 GB"):
        pick_auto_quant(published, 10**9, kv_4096)


def test_download_then_serve_from_the_cache(local_hub: LocalHub, tmp_path: Path) -> None:
    resolved = resolve_model(endpoint=local_hub.url)
    path = download(resolved, tmp_path)
    assert path.read_bytes() == local_hub.path(DEFAULT_REPO, DEFAULT_FILE).read_bytes()
    assert path.parent.name == resolved.revision  # the hub cache's snapshot layout
    sent = local_hub.server.bytes_sent
    assert sent == resolved.size
    assert download(resolved, tmp_path) == path
    assert local_hub.server.bytes_sent == sent
    assert list(tmp_path.rglob("*.lemfleet-partial")) == []


def test_gated_repo_without_token_says_set_hf_token_and_accept(local_hub: LocalHub) -> None:
    with pytest.raises(HubError) as caught:
        resolve_model("acme/gated", quant="Q4_K_M", endpoint=local_hub.url)
    message = str(caught.value)
    assert "gated repo and no token was sent (401)" in message
    assert "set HF_TOKEN" in message and f"accept the terms at {local_hub.url}/acme/gated" in message


def test_gated_repo_with_an_ungranted_token_says_accept_the_terms(local_hub: LocalHub) -> None:
    with pytest.raises(HubError) as caught:
        resolve_model("acme/gated", endpoint=local_hub.url, token=local_hub.other_token)
    assert "has not been granted access (403): accept the terms" in str(caught.value)


def test_private_repo_without_token_and_missing_repo(local_hub: LocalHub) -> None:
    with pytest.raises(HubError, match=r"model_repo='acme/private' was not found .*\(401\).*HF_TOKEN"):
        resolve_model("acme/private", endpoint=local_hub.url)
    with pytest.raises(HubError, match=r"model_repo='acme/absent' was not found .*\(404\)"):
        resolve_model("acme/absent", endpoint=local_hub.url)


def test_a_rejected_token_says_make_a_new_one(local_hub: LocalHub) -> None:
    with pytest.raises(HubError, match=r"rejected the token \(401\).*create a new read token"):
        resolve_model("acme/private", endpoint=local_hub.url, token="hf_revokedToken")


def test_hf_token_from_the_environment_is_used(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", local_hub.good_token)
    resolved = resolve_model("acme/gated", endpoint=local_hub.url)
    assert download(resolved, tmp_path).stat().st_size == 400_009
    assert {r.authorized for r in local_hub.server.requests if r.server == "hub"} == {True}
    assert {r.authorized for r in local_hub.server.requests if r.server == "cdn"} == {False}


def test_a_rewritten_repo_says_resolve_again(local_hub: LocalHub, tmp_path: Path) -> None:
    repo = local_hub.root / "acme" / "rewritten"
    repo.mkdir(parents=True)
    (repo / "model-Q8_0.gguf").write_bytes(b"GGUF" * 1000)
    resolved = resolve_model("acme/rewritten", endpoint=local_hub.url)
    (repo / "model-Q8_0.gguf").write_bytes(b"GGUF" * 999)  # a new commit replaces the old one
    with pytest.raises(HubError, match=rf"no longer has commit {resolved.revision} .*run again"):
        download(resolved, tmp_path)


def test_a_cut_transfer_is_resumed_within_the_run(local_hub: LocalHub, tmp_path: Path) -> None:
    resolved = resolve_model(BIG_REPO, endpoint=local_hub.url)
    local_hub.server.cut_next_body(15 * MIB)
    path = download(resolved, tmp_path)
    assert path.stat().st_size == resolved.size
    assert local_hub.cdn_gets() == [None, f"bytes={10 * MIB}-"]


def test_a_failed_run_leaves_a_partial_that_the_next_run_resumes(local_hub: LocalHub, tmp_path: Path) -> None:
    resolved = resolve_model(BIG_REPO, endpoint=local_hub.url)
    local_hub.server.cut_next_body(15 * MIB)
    local_hub.server.refuse_next(1, status=503)  # the client's own retry fails: the run ends
    with pytest.raises(HubError, match=r"stopped at byte 10485760 .*HTTP 503.*next run resumes"):
        download(resolved, tmp_path)
    (partial,) = tmp_path.rglob("*.lemfleet-partial")
    assert partial.stat().st_size == 10 * MIB
    sent_first_run = local_hub.server.bytes_sent
    path = download(resolved, tmp_path)
    assert path.read_bytes() == local_hub.path(BIG_REPO, BIG_FILE).read_bytes()
    assert local_hub.cdn_gets()[-1] == f"bytes={10 * MIB}-"
    assert local_hub.server.bytes_sent - sent_first_run == resolved.size - 10 * MIB
    assert not partial.exists()


def test_a_corrupted_transfer_is_rejected_and_leaves_nothing(local_hub: LocalHub, tmp_path: Path) -> None:
    resolved = resolve_model(endpoint=local_hub.url)
    local_hub.server.corrupt_next_body()
    with pytest.raises(IntegrityError, match=r"arrived with sha256 [0-9a-f]{64}, not "):
        download(resolved, tmp_path)
    assert [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")] == []
    assert download(resolved, tmp_path).stat().st_size == resolved.size


def test_a_pinned_sha256_must_match_the_hub(local_hub: LocalHub) -> None:
    with pytest.raises(IntegrityError, match=r"model_sha256='0000.*does not match"):
        resolve_model(endpoint=local_hub.url, sha256="0" * 64)
    pinned = local_hub.sha256(DEFAULT_REPO, DEFAULT_FILE)
    assert resolve_model(endpoint=local_hub.url, sha256=pinned.upper()).sha256 == pinned


def test_a_wrong_sha256_never_reaches_the_cache(local_hub: LocalHub, tmp_path: Path) -> None:
    resolved = dataclasses.replace(resolve_model(endpoint=local_hub.url), sha256="1" * 64)
    with pytest.raises(IntegrityError):
        download(resolved, tmp_path)
    assert list(tmp_path.rglob("*.gguf")) == []


def test_a_damaged_cached_copy_is_fetched_again(local_hub: LocalHub, tmp_path: Path) -> None:
    resolved = resolve_model(endpoint=local_hub.url)
    path = download(resolved, tmp_path)
    blob = path.resolve()
    blob.write_bytes(b"damaged")
    assert download(resolved, tmp_path).read_bytes() == local_hub.path(DEFAULT_REPO, DEFAULT_FILE).read_bytes()


def test_offline_with_a_warm_cache_uses_it(local_hub: LocalHub, tmp_path: Path) -> None:
    path = download(resolve_model(quant="Q8_0", endpoint=local_hub.url), tmp_path)
    endpoint = local_hub.url
    local_hub.server.stop()
    script = (
        "import json, sys\n"
        "from lemfleet.hub import download, resolve_model\n"
        "r = resolve_model(quant='Q8_0', cache_dir=sys.argv[1])\n"
        "print(json.dumps([str(download(r, sys.argv[1])), r.reason, r.sha256]))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": endpoint}
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    served, reason, sha256 = json.loads(done.stdout)
    assert served == str(path) and sha256 == local_hub.sha256(DEFAULT_REPO, "LEM-Gemma3-1B-Q8_0.gguf")
    assert reason == "model_quant=Q8_0 (from the cache: offline)"


def test_unreachable_hub_falls_back_to_the_cache_or_says_warm_it(
    local_hub: LocalHub, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    download(resolve_model(endpoint=local_hub.url), tmp_path / "warm")
    local_hub.server.stop()
    resolved = resolve_model(endpoint=local_hub.url, cache_dir=tmp_path / "warm")
    assert download(resolved, tmp_path / "warm").stat().st_size == 1_000_003
    assert "cannot be reached (ConnectError): using" in caplog.text
    with pytest.raises(HubError, match=r"not in the cache at .*cold; warm the cache"):
        resolve_model(endpoint=local_hub.url, cache_dir=tmp_path / "cold")


def test_offline_with_a_cold_cache_says_warm_it(
    local_hub: LocalHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resolved = resolve_model(endpoint=local_hub.url)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE is set .* warm the cache"):
        download(resolved, tmp_path)
    with pytest.raises(HubError, match=r"HF_HUB_OFFLINE is set .* warm the cache"):
        resolve_model(endpoint=local_hub.url, cache_dir=tmp_path)
    assert local_hub.server.bytes_sent == 0


def test_the_token_is_in_no_log_output_or_error(
    local_hub: LocalHub,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    good, wrong = local_hub.good_token, "hf_wrongTokenThatMustNotLeak"
    resolved = resolve_model("acme/gated", endpoint=local_hub.url, token=good)
    local_hub.server.cut_next_body(100_000)
    download(resolved, tmp_path, token=good)
    errors = []
    for token in (wrong, local_hub.other_token):
        with pytest.raises(HubError) as caught:
            resolve_model("acme/gated", endpoint=local_hub.url, token=token)
        errors.append(caught.value)
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err, repr(resolved), *map(str, errors)]
    texts += [str(e.__cause__) for e in errors]
    assert "huggingface_hub" in caplog.text  # the client's debug logging was captured
    for token in (good, wrong, local_hub.other_token):
        assert not [t for t in texts if token in t]
