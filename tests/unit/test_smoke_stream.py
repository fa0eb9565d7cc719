"""SSE parsing of chat completion streams, on a stream recorded from a real llama-server.

``fixtures/llama-server/chat-stream.sse`` is the raw body of a streamed ``/v1/chat/completions``
from the pinned llama-server serving the tiny test GGUF (alias ``tiny-test``, 16 tokens).
The malformed cases are edits of that recording: the failures a smoke test must catch.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lemfleet.smoke_stream import StreamError, iter_sse_data, read_chat_stream

FIXTURES = Path(__file__).parent / "fixtures" / "llama-server"
RECORDED = (FIXTURES / "chat-stream.sse").read_text(encoding="utf-8")


def _lines(text: str) -> list[str]:
    return text.splitlines()


def _clock(step: float = 0.25) -> Callable[[], float]:
    """A clock that advances ``step`` seconds per reading, so timings are exact."""
    counter = itertools.count()
    return lambda: next(counter) * step


def test_recorded_stream_is_read_whole() -> None:
    summary = read_chat_stream(_lines(RECORDED), started=0.0, clock=_clock())
    data = [json.loads(d) for d in iter_sse_data(_lines(RECORDED)) if d != "[DONE]"]
    expected_text = "".join(c["choices"][0]["delta"].get("content") or "" for c in data)
    assert summary.chunks == len(data) == 18  # role chunk, 16 tokens, finish chunk
    assert summary.text == expected_text
    assert summary.text.startswith("kende rewrite")
    assert summary.timings is not None and summary.timings["predicted_n"] == 16
    assert summary.usage is None  # llama-server sends usage in a stream only when asked


def test_first_token_skips_the_role_chunk() -> None:
    # The first chunk carries only {"role": "assistant", "content": null}: no token yet.
    # The clock reads "lines received so far", so the timing says which line it was taken at.
    received = 0

    def lines() -> Iterator[str]:
        nonlocal received
        for line in _lines(RECORDED):
            received += 1
            yield line

    summary = read_chat_stream(lines(), started=0.0, clock=lambda: float(received))
    assert summary.first_token_s == 4.0  # role chunk, blank, token chunk, blank (event end)


def test_crlf_line_ends_and_keepalive_comments_are_ignored() -> None:
    with_pings = RECORDED.replace("\n\ndata:", "\n\n:\n\ndata:", 3).replace("\n", "\r\n")
    summary = read_chat_stream(with_pings.split("\n"), started=0.0, clock=_clock())
    assert summary.chunks == 18


def test_multiline_data_is_joined() -> None:
    events = list(iter_sse_data(["data: {", 'data: "a": 1}', "", "event: x", "data: [DONE]", ""]))
    assert events == ['{\n"a": 1}', "[DONE]"]


def test_a_trailing_event_without_blank_line_is_dropped() -> None:
    assert list(iter_sse_data(["data: one", "", "data: two"])) == ["one"]


def test_stream_cut_before_done_fails() -> None:
    cut = RECORDED[: RECORDED.index("data: [DONE]")]
    with pytest.raises(StreamError, match=r"ended after 18 chunks without 'data: \[DONE\]'"):
        read_chat_stream(_lines(cut), started=0.0, clock=_clock())


def test_error_chunk_fails_with_the_servers_message() -> None:
    # tools/server/server-context.cpp sends mid-stream failures as data: {"error": {...}}.
    error = {"code": 500, "message": "slot died", "type": "server_error"}
    broken = RECORDED.replace("data: [DONE]", f"data: {json.dumps({'error': error})}")
    with pytest.raises(StreamError, match="error mid-stream: 500 slot died"):
        read_chat_stream(_lines(broken), started=0.0, clock=_clock())


def test_non_json_chunk_fails_and_shows_it() -> None:
    broken = RECORDED.replace('data: {"choices"', "data: <html>oops", 1)
    with pytest.raises(StreamError, match="chunk 1 is not JSON: '<html>oops"):
        read_chat_stream(_lines(broken), started=0.0, clock=_clock())
