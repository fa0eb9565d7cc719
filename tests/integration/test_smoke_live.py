"""The smoke client, the load test and ``lemfleet smoke`` against a real llama-server.

The server is the pinned llama.cpp's CPU ``llama-server`` serving a tiny random-weight gemma3
GGUF from ``python -m lemfleet.testbed.tinygguf``. Set ``LEMFLEET_LLAMA_SERVER`` and
``LEMFLEET_LLAMA_CPP_SRC`` to use another build and source tree.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from lemfleet.cli import main
from lemfleet.smoke import CHECKS, SmokeResult, smoke_check
from lemfleet.smoke_load import load_test
from lemfleet.sshtunnel import free_local_port
from tests.integration import llama_bin

ALIAS = "tiny-test"
KEY = "smoke-test-key-5d1f"


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    key_file: Path
    log: Path


def make_tiny_gguf(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "lemfleet.testbed.tinygguf", str(out), "--vocab-gguf", str(llama_bin.vocab())],
        check=True,
    )
    return out


def start_llama_server(
    binary: Path,
    model: Path,
    workdir: Path,
    *,
    port: int | None = None,
    extra: Sequence[str] = (),
    key_content: str = f"# lemfleet test key\n{KEY}\n",
) -> LiveServer:
    """Start llama-server with an API key file; do not wait for it (callers test the wait)."""
    port = port or free_local_port()
    key_file = workdir / "api-key"
    key_file.write_text(key_content)
    log = workdir / f"llama-server-{port}.log"
    command = [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port)]
    command += ["-a", ALIAS, "-np", "2", "-c", "1024", "-t", "1", "--api-key-file", str(key_file)]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, *extra], stdout=out, stderr=subprocess.STDOUT)
    return LiveServer(f"http://127.0.0.1:{port}", process, key_file, log)


def wait_until_healthy(server: LiveServer, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.process.poll() is None, server.log.read_text()[-2000:]
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"llama-server not healthy in {timeout} s: {server.log.read_text()[-2000:]}")


def stop(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def smoke_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama(tmp_path_factory: pytest.TempPathFactory, llama_server_bin: Path, smoke_gguf: Path) -> Iterator[LiveServer]:
    server = start_llama_server(llama_server_bin, smoke_gguf, tmp_path_factory.mktemp("llama"))
    try:
        wait_until_healthy(server)
        yield server
    finally:
        stop(server)


def _statuses(result: SmokeResult) -> dict[str, str]:
    return {step.name: step.status for step in result.steps}


def test_every_check_passes_and_records_figures(llama: LiveServer) -> None:
    result = smoke_check(llama.url, api_key=KEY, model_alias=ALIAS)
    assert _statuses(result) == dict.fromkeys(CHECKS, "passed"), result.steps
    assert result.ok
    assert result.model == ALIAS
    assert result.model_path is not None and result.model_path.endswith("tiny.gguf")
    assert result.build_info and result.build_info.startswith("b")
    assert result.total_slots == 2
    assert result.reply
    assert result.completion_tokens == 16
    assert result.decode_tokens_per_s and result.decode_tokens_per_s > 0
    assert result.time_to_first_token_s and 0 < result.time_to_first_token_s < result.seconds
    assert SmokeResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_the_key_never_appears_in_results(llama: LiveServer) -> None:
    result = smoke_check(llama.url, api_key=KEY)
    assert result.ok
    assert KEY not in json.dumps(result.to_json())


def test_a_wrong_key_fails_every_authenticated_check(llama: LiveServer) -> None:
    result = smoke_check(llama.url, api_key="not-the-key")
    assert _statuses(result) == {
        "health": "passed",  # /health is public in llama-server
        "auth": "passed",  # the server refuses requests without a key: auth is on, the key is wrong
        "models": "failed",
        "chat": "failed",
        "stream": "failed",
    }
    assert result.failures()[0].message == "HTTP 401: Invalid API Key"
    assert "not-the-key" not in json.dumps(result.to_json())


def test_a_model_that_is_not_served_fails_models(llama: LiveServer) -> None:
    result = smoke_check(llama.url, api_key=KEY, model_alias="LEM-Gemma3-1B")
    models = next(step for step in result.steps if step.name == "models")
    assert models.status == "failed"
    assert models.message == "model 'LEM-Gemma3-1B' not served; /v1/models lists ['tiny-test']"


def test_health_waits_through_loading_then_fails_at_the_deadline(llama_server_bin: Path, tmp_path: Path) -> None:
    # A FIFO as the model keeps llama-server in its loading phase: the HTTP side is up and
    # answers 503 "Loading model" for as long as nobody writes to the FIFO.
    fifo = tmp_path / "never-written.gguf"
    os.mkfifo(fifo)
    server = start_llama_server(llama_server_bin, fifo, tmp_path)
    try:
        result = smoke_check(server.url, api_key=KEY, health_timeout=2.0, poll_interval=0.1)
    finally:
        stop(server)
    health = result.steps[0]
    assert health.status == "failed"
    assert health.seconds >= 1.8
    assert "last answer: HTTP 503: Loading model" in health.message
    assert _statuses(result) == {"health": "failed", **dict.fromkeys(CHECKS[1:], "skipped")}


def test_health_tolerates_a_server_that_is_still_starting(
    llama_server_bin: Path, smoke_gguf: Path, tmp_path: Path
) -> None:
    port = free_local_port()
    results: list[SmokeResult] = []
    waiting = threading.Thread(
        target=lambda: results.append(smoke_check(f"http://127.0.0.1:{port}", api_key=KEY, poll_interval=0.05))
    )
    waiting.start()
    time.sleep(1.0)  # the smoke test is now polling a port nobody listens on
    server = start_llama_server(llama_server_bin, smoke_gguf, tmp_path, port=port)
    try:
        waiting.join(timeout=120)
    finally:
        stop(server)
    assert results and results[0].ok, results
    assert results[0].steps[0].seconds >= 1.0


def test_an_endpoint_that_never_answers_fails_health_with_the_reason() -> None:
    result = smoke_check(f"http://127.0.0.1:{free_local_port()}", health_timeout=1.0)
    assert result.steps[0].status == "failed"
    assert "last answer: ConnectError" in result.steps[0].message
    assert not result.ok


def test_load_of_50_concurrent_chats_ends_cleanly(llama: LiveServer) -> None:
    load = load_test(llama.url, requests=50, api_key=KEY, model_alias=ALIAS, timeout=120)
    assert load.correct + load.unavailable == 50, load.problems
    assert load.failed == 0 and load.ok
    assert set(load.latency_s) == {"p50", "p90", "p99", "max"}
    assert load.latency_s["p50"] <= load.latency_s["max"]


def test_cli_smoke_writes_json_and_junit(llama: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, junit = tmp_path / "smoke.json", tmp_path / "smoke.xml"
    argv = ["smoke", llama.url, "--api-key-file", str(llama.key_file), "--model", ALIAS]
    assert main([*argv, "--json", str(out), "--junit", str(junit)]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split() == [
        *("HOST", "HEALTH", "AUTH", "MODELS", "CHAT", "STREAM", "TOKENS/S", "TTFT", "STATUS")
    ]
    assert table.splitlines()[1].endswith("pass")
    document = json.loads(out.read_text())
    assert document["ok"] is True and document["results"][0]["model"] == ALIAS
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert [(c.get("classname"), c.get("name")) for c in cases] == [(llama.url, check) for check in CHECKS]
    assert KEY not in out.read_text() + junit.read_text() + table


def test_cli_smoke_fails_with_a_wrong_key_from_the_environment(
    llama: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEET_KEY", "wrong")
    junit = tmp_path / "smoke.xml"
    assert main(["smoke", llama.url, "--api-key-env", "FLEET_KEY", "--junit", str(junit)]) == 1
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("5", "3")


def test_cli_load_reports_counts(llama: LiveServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "load.json"
    argv = ["smoke", "--load", "20", llama.url, "--api-key-file", str(llama.key_file)]
    assert main([*argv, "--json", str(out)]) == 0
    assert "20 requests in" in capsys.readouterr().out
    load = json.loads(out.read_text())["load"]
    assert load["correct"] + load["unavailable"] == 20 and load["failed"] == 0


def test_the_offload_check_reads_a_real_server_log(
    llama: LiveServer, llama_server_bin: Path, smoke_gguf: Path, tmp_path: Path
) -> None:
    """The CPU build's own load log: read as if a GPU had been planned, it shows the weights in host memory.

    At llama-server's default verbosity (3) the load lines are not logged at all, which is why a GPU plan runs
    the service at 4 (server_log_verbosity).
    """
    from lemfleet.roles.smoke import MODEL_BUFFER, offload_problem

    assert not MODEL_BUFFER.search(llama.log.read_text())
    server = start_llama_server(llama_server_bin, smoke_gguf, tmp_path, extra=["--log-verbosity", "4"])
    try:
        wait_until_healthy(server)
    finally:
        stop(server)
    log = server.log.read_text()
    assert MODEL_BUFFER.search(log), log[-3000:]
    problem = offload_problem(log, "cuda", 999)
    assert problem is not None and problem.startswith(
        "no GPU computed: the model's weights were loaded into host memory only"
    ), log
    assert offload_problem(log, "cpu", 0) is None
