"""Smoke-test a llama-server endpoint the way a client would use it.

One :func:`smoke_check` waits for ``GET /health`` (a 503 "Loading model" is expected while the
GGUF loads), then, when it was given a key, that requests without a key or with a wrong one are
refused (a key list llama-server loaded empty turns auth off), then checks ``GET /v1/models``, a
chat completion and a streamed chat completion, recording time to first token and decode
tokens/s. Each check is a named :class:`Step`, so a pipeline can say exactly which one failed on
which host. :func:`run_bounded` runs many endpoints in parallel with a concurrency bound, because
verifying a fleet should take about as long as verifying its slowest host.

The API key is sent as a bearer token and never stored in a result or a message.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import httpx

from lemfleet.smoke_result import CHECKS, SmokeResult, Status, Step
from lemfleet.smoke_stream import StreamError, read_chat_stream

__all__ = [
    "CHECKS",
    "DEFAULT_PROMPT",
    "CheckFailed",
    "SmokeResult",
    "Step",
    "run_bounded",
    "smoke_check",
    "wait_for_health",
]

DEFAULT_PROMPT = "Reply with one short sentence: what does a GPU do?"


class CheckFailed(RuntimeError):
    """A check ran and the endpoint's answer was wrong; the message is for people."""


def _describe(response: httpx.Response) -> str:
    """Short, human description of an unexpected answer (llama-server errors are JSON)."""
    try:
        error = response.json().get("error", {})
        detail = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        detail = response.text[:200]
    return f"HTTP {response.status_code}: {detail or response.reason_phrase}"


def wait_for_health(
    base_url: str,
    *,
    timeout: float = 300.0,
    client: httpx.Client | None = None,
    poll_interval: float = 0.5,
) -> str:
    """Poll ``/health`` until 200; raise :class:`CheckFailed` on a wrong answer or at the deadline.

    A 503 "Loading model" and a refused connection are expected while the server starts.
    """
    deadline = time.monotonic() + timeout
    if client is not None:
        return _check_health(client, base_url.rstrip("/"), deadline, poll_interval)
    with httpx.Client(timeout=min(timeout, 30.0)) as own:
        return _check_health(own, base_url.rstrip("/"), deadline, poll_interval)


def _check_health(client: httpx.Client, base: str, deadline: float, poll_s: float) -> str:
    started = time.monotonic()
    waited_for, loading = "no answer yet", 0
    while True:
        try:
            response = client.get(f"{base}/health")
        except httpx.TransportError as err:
            waited_for = f"{type(err).__name__}: {err}"
        else:
            if response.status_code == 200:
                body = response.json()
                if body.get("status") != "ok":
                    raise CheckFailed(f"HTTP 200 but status is {body.get('status')!r}, not 'ok'")
                waited = time.monotonic() - started
                if waited < poll_s:
                    return "ok"
                return f"ok after {waited:.1f} s ({loading} answers 'Loading model')"
            if response.status_code != 503:
                raise CheckFailed(_describe(response))
            # tools/server/server-http.cpp: every route answers 503 "Loading model" until ready.
            waited_for, loading = _describe(response), loading + 1
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise CheckFailed(f"not healthy before the deadline; last answer: {waited_for}")
        time.sleep(min(poll_s, remaining))


def _check_models(
    client: httpx.Client, base: str, headers: dict[str, str], alias: str | None, result: SmokeResult
) -> str:
    response = client.get(f"{base}/v1/models", headers=headers)
    if response.status_code != 200:
        raise CheckFailed(_describe(response))
    ids = [str(entry.get("id")) for entry in response.json().get("data", [])]
    if not ids:
        raise CheckFailed("/v1/models lists no model")
    if alias is not None and alias not in ids:
        raise CheckFailed(f"model {alias!r} not served; /v1/models lists {ids}")
    result.model = alias if alias is not None else ids[0]
    return f"serves {result.model}"


WRONG_KEY = "lemfleet-smoke-not-a-key"


def _check_auth(client: httpx.Client, base: str) -> str:
    """A server given a key must answer 401 without one and with a wrong one; /v1/models needs a key."""
    for headers, what in (({}, "without a key"), ({"Authorization": f"Bearer {WRONG_KEY}"}, "with a wrong key")):
        response = client.get(f"{base}/v1/models", headers=headers)
        if response.status_code == 200:
            raise CheckFailed(f"answered HTTP 200 to a request {what}: authentication is off")
        if response.status_code != 401:
            raise CheckFailed(f"a request {what} got {_describe(response)}, expected HTTP 401")
    return "refuses requests without a key or with a wrong one (HTTP 401)"


def _chat_body(model: str | None, prompt: str, max_tokens: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 1,
        "stream": stream,
    }
    if model is not None:
        body["model"] = model
    return body


def _check_chat(
    client: httpx.Client,
    base: str,
    headers: dict[str, str],
    body: dict[str, Any],
    result: SmokeResult,
) -> str:
    started = time.monotonic()
    response = client.post(f"{base}/v1/chat/completions", headers=headers, json=body)
    elapsed = time.monotonic() - started
    if response.status_code != 200:
        raise CheckFailed(_describe(response))
    data = response.json()
    choices = data.get("choices") or []
    text = (choices[0].get("message") or {}).get("content") if choices else None
    if not text:
        finish = choices[0].get("finish_reason") if choices else "no choices"
        raise CheckFailed(f"no text in the reply (finish_reason={finish})")
    usage, timings = data.get("usage"), data.get("timings")
    if not isinstance(usage, dict) or not isinstance(timings, dict):
        raise CheckFailed("reply lacks 'usage' or 'timings'")
    result.reply = text
    result.completion_tokens = int(usage.get("completion_tokens", 0))
    per_second = timings.get("predicted_per_second")
    if per_second is None and result.completion_tokens:
        # Whole-request time includes prompt processing, so this is a lower bound.
        per_second = result.completion_tokens / elapsed
    result.decode_tokens_per_s = float(per_second) if per_second is not None else None
    return f"{result.completion_tokens} tokens at {result.decode_tokens_per_s or 0:.1f} tokens/s"


def _check_stream(
    client: httpx.Client,
    base: str,
    headers: dict[str, str],
    body: dict[str, Any],
    result: SmokeResult,
) -> str:
    started = time.monotonic()
    with client.stream("POST", f"{base}/v1/chat/completions", headers=headers, json=body) as response:
        if response.status_code != 200:
            response.read()
            raise CheckFailed(_describe(response))
        try:
            stream = read_chat_stream(response.iter_lines(), started=started, clock=time.monotonic)
        except StreamError as err:
            raise CheckFailed(str(err)) from err
    if not stream.text:
        raise CheckFailed(f"stream of {stream.chunks} chunks carried no text")
    result.time_to_first_token_s = stream.first_token_s
    return f"{stream.chunks} chunks, first token after {stream.first_token_s or 0:.3f} s"


def _read_props(client: httpx.Client, base: str, headers: dict[str, str], result: SmokeResult) -> None:
    """Fill model path, build and slots from /props where the server offers it (best effort)."""
    try:
        response = client.get(f"{base}/props", headers=headers)
    except httpx.HTTPError:
        return
    if response.status_code != 200:
        return
    props = response.json()
    result.model_path = props.get("model_path")
    result.build_info = props.get("build_info")
    result.total_slots = props.get("total_slots")


def smoke_check(
    base_url: str,
    *,
    api_key: str | None = None,
    model_alias: str | None = None,
    timeout: float = 120.0,
    health_timeout: float = 300.0,
    client: httpx.Client | None = None,
    host: str | None = None,
    backend: str | None = None,
    prompt: str = DEFAULT_PROMPT,
    max_tokens: int = 16,
    poll_interval: float = 0.5,
    verify: ssl.SSLContext | bool = True,
) -> SmokeResult:
    """Run every check in :data:`CHECKS` against one llama-server and return what happened.

    ``verify`` checks an https server's certificate when no ``client`` is given: a context pinned to
    its recorded fingerprint or trusting the operator's CA (lemfleet.tls_client), or the system's CAs.

    ``timeout`` bounds each request; ``health_timeout`` bounds the wait for the model to load.
    ``host`` labels the result (default: the URL) and ``backend`` is recorded as given, since
    llama-server's API does not report which ggml backend it was built for.
    """
    base = base_url.rstrip("/")
    result = SmokeResult(host=host or base, url=base, backend=backend)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    own_client = client is None
    http = client if client is not None else httpx.Client(timeout=timeout, verify=verify)
    started = time.monotonic()
    try:
        deadline = started + health_timeout
        healthy = _run_step(result, "health", lambda: _check_health(http, base, deadline, poll_interval))
        if not healthy:
            for name in CHECKS[1:]:
                result.steps.append(Step(name, "skipped", "not run: the health check failed"))
            return result
        if api_key:
            _run_step(result, "auth", lambda: _check_auth(http, base))
        else:
            result.steps.append(Step("auth", "skipped", "no API key given, so nothing to refuse"))
        _read_props(http, base, headers, result)
        _run_step(result, "models", lambda: _check_models(http, base, headers, model_alias, result))
        chat = _chat_body(result.model or model_alias, prompt, max_tokens, stream=False)
        _run_step(result, "chat", lambda: _check_chat(http, base, headers, chat, result))
        stream = _chat_body(result.model or model_alias, prompt, max_tokens, stream=True)
        _run_step(result, "stream", lambda: _check_stream(http, base, headers, stream, result))
        return result
    finally:
        result.seconds = round(time.monotonic() - started, 3)
        if own_client:
            http.close()


def _run_step(result: SmokeResult, name: str, check: Callable[[], str]) -> bool:
    """Run one check, turning any failure into a failed :class:`Step` rather than an exception."""
    started = time.monotonic()
    try:
        message = check()
        status: Status = "passed"
    except CheckFailed as err:
        status, message = "failed", str(err)
    except httpx.TimeoutException as err:
        status, message = "failed", f"timed out ({type(err).__name__})"
    except httpx.HTTPError as err:
        status, message = "failed", f"{type(err).__name__}: {err}"
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        # A body that is not the JSON llama-server sends.
        status, message = "failed", f"unexpected answer: {type(err).__name__}: {err}"
    result.steps.append(Step(name, status, message, round(time.monotonic() - started, 3)))
    return status == "passed"


T = TypeVar("T")
R = TypeVar("R")


def run_bounded(func: Callable[[T], R], items: Iterable[T], concurrency: int) -> list[R]:
    """Apply ``func`` to every item with at most ``concurrency`` running at once, keeping order."""
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency!r} is not valid; accepted: an integer of 1 or more")
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="lemfleet-smoke") as pool:
        return list(pool.map(func, items))
