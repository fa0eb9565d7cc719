"""API keys as llama-server reads them, and the rules a key list must meet before any host gets it.

llama-server's ``--api-key-file`` (``common/arg.cpp`` in the pinned llama.cpp) reads the file
line by line and takes every line that is not empty and does not start with ``#`` as one key,
verbatim: surrounding spaces, a ``\\r`` from a CRLF file and a ``#`` after leading spaces all
stay part of the key. A list that ends up empty turns authentication off
(``tools/server/server-http.cpp``: "If API key is not set, skip validation"), so a blank key or a
key file of comments would leave an exposed server open.

lemfleet therefore reads a key file exactly as llama-server does, and refuses, before any host is
contacted, any content whose key list is empty or holds a key a client cannot send: whitespace
or control characters, non-ASCII, or fewer than :data:`MIN_KEY_LENGTH` characters. Comment lines
must start with ``#`` in their first column (as llama-server requires); a line that only looks
like a comment is refused rather than silently becoming a key. Messages name the setting and the
line, never a key.
"""

from __future__ import annotations

import re
from typing import Any

MIN_KEY_LENGTH = 16
"""Shortest key accepted: 16 characters of printable ASCII is about 100 bits even from a small alphabet."""

KEY = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without space: what survives an ``Authorization: Bearer`` header unchanged."""

ACCEPTED = (
    f"one key a line, each at least {MIN_KEY_LENGTH} printable ASCII characters without spaces, "
    "comment lines starting with '#' in the first column"
)


def parse_key_file(content: str) -> list[str]:
    """The keys llama-server loads from a key file holding ``content`` (its own rules, verbatim)."""
    return [line for line in content.split("\n") if line and not line.startswith("#")]


def key_problems(content: str, source: str) -> list[str]:
    """Why ``content`` (a key file's text) would not give a working key list; empty when it would.

    ``source`` names where the content came from (a setting, a path) for the messages.
    """
    problems: list[str] = []
    for number, line in enumerate(content.split("\n"), start=1):
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        if not line.strip():
            problems.append(f"{where} holds only whitespace, which llama-server would load as a key no client can send")
        elif line.lstrip().startswith("#"):
            problems.append(f"{where} looks like a comment, but llama-server only skips lines starting with '#'")
        elif not KEY.fullmatch(line):
            problems.append(f"{where} holds {_what_is_wrong(line)}; a key must be printable ASCII without spaces")
        elif len(line) < MIN_KEY_LENGTH:
            problems.append(f"{where} holds a key of {len(line)} characters; accepted: at least {MIN_KEY_LENGTH}")
    if not problems and not parse_key_file(content):
        problems.append(
            f"{source} holds no key (only comments or blank lines), and llama-server with an empty key list "
            "turns authentication off"
        )
    return [f"{p}; accepted: {ACCEPTED}" if "accepted:" not in p else p for p in problems]


def _what_is_wrong(line: str) -> str:
    if "\r" in line:
        return "a carriage return (a CRLF file?)"
    if any(c.isspace() for c in line):
        return "whitespace"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in line):
        return "a control character"
    return "a non-ASCII character"


def check_key_setting(name: str, value: Any) -> str | None:
    """The settings check for a single key (``server_api_key``); never echoes the value."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not valid (of type {type(value).__name__}, value hidden); accepted: a string key")
    if "\n" in value:
        raise ValueError(f"{name} holds a line break (value hidden); accepted: one key (several: server_api_key_file)")
    if value.startswith("#"):
        raise ValueError(
            f"{name} starts with '#' (value hidden), so llama-server would read it as a comment "
            "and turn authentication off; accepted: a key that does not start with '#'"
        )
    problems = key_problems(value + "\n", name)
    if problems:
        raise ValueError(problems[0].replace(f"{name} line 1", name))
    return value


def first_key(content: str | None) -> str | None:
    """The key a client sends: the first llama-server loads from ``content``, or None."""
    keys = parse_key_file(content or "")
    return keys[0] if keys else None
