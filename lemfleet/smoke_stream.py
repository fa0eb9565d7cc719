"""Read a streamed chat completion: server-sent events from ``/v1/chat/completions``.

llama-server frames every chunk as ``data: {json}`` followed by a blank line, sends ``:`` comment
lines as keep-alive pings, reports a mid-stream failure as ``data: {"error": {...}}`` and ends a
good stream with ``data: [DONE]`` (tools/server/server-common.cpp ``format_oai_sse`` and
server-context.cpp). The parser follows the SSE rules of the HTML standard, so it also reads
other OpenAI-compatible servers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


class StreamError(ValueError):
    """The stream was malformed, reported an error, or stopped before ``data: [DONE]``."""


@dataclass
class StreamSummary:
    chunks: int
    text: str
    first_token_s: float | None
    usage: dict[str, Any] | None
    timings: dict[str, Any] | None


def iter_sse_data(lines: Iterable[str]) -> Iterator[str]:
    """Yield the data of each complete event; comments and other fields are skipped.

    An event ends at a blank line; its ``data`` lines are joined with newlines. A trailing event
    with no blank line after it is incomplete and is dropped, as the standard says.
    """
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
            data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value.removeprefix(" "))


def read_chat_stream(lines: Iterable[str], *, started: float, clock: Callable[[], float]) -> StreamSummary:
    """Consume a chat completion stream, timing the first chunk that carries text.

    ``started`` is the ``clock()`` reading taken just before the request was sent, so
    ``first_token_s`` is the time to first token a user would see.
    """
    chunks = 0
    parts: list[str] = []
    first_token_s: float | None = None
    usage: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    for data in iter_sse_data(lines):
        if data == "[DONE]":
            return StreamSummary(chunks, "".join(parts), first_token_s, usage, timings)
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError as err:
            raise StreamError(f"chunk {chunks + 1} is not JSON: {data[:120]!r}") from err
        if not isinstance(chunk, dict):
            raise StreamError(f"chunk {chunks + 1} is not a JSON object: {data[:120]!r}")
        if "error" in chunk:
            raise StreamError(f"server reported an error mid-stream: {_error_text(chunk['error'])}")
        chunks += 1
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                if first_token_s is None:
                    first_token_s = round(clock() - started, 4)
                parts.append(piece)
        usage = chunk.get("usage") or usage
        timings = chunk.get("timings") or timings
    raise StreamError(f"stream ended after {chunks} chunks without 'data: [DONE]'")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return f"{error.get('code', '?')} {error.get('message', '')}".strip()
    return str(error)
