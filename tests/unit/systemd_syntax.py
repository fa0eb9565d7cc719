"""How systemd reads back what lemfleet writes: an environment file, and an ``ExecStart=`` line.

A strict reading of systemd.exec(5) ("EnvironmentFile="), systemd.service(5)
("Command lines") and systemd.syntax(7) ("Quoting"), written for the tests:
it raises on anything that systemd would read differently from a plain
value (an unknown escape, a ``%`` specifier, a ``$`` that would expand, a
quote that does not close), so a rendering that relies on a corner of the
syntax fails the test instead of passing by luck. The test bed checks the
same files against a real systemd (tests/testbed/test_hostile_values.py).
"""

from __future__ import annotations

import re

ENV_ESCAPABLE = '"\\`$'


class Ambiguous(ValueError):
    """The text would not be read back as a plain value."""


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=value`` pairs of an environment file; each value double-quoted or bare, as lemfleet writes them."""
    pairs: dict[str, str] = {}
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith(("#", ";")):
            continue
        key, sep, raw = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise Ambiguous(f"line {number} is not KEY=value: {line!r}")
        pairs[key] = _env_value(raw, number)
    return pairs


def _env_value(raw: str, number: int) -> str:
    if not raw.startswith('"'):
        if re.search(r"[\s\\'\"]", raw):
            raise Ambiguous(f"line {number}: an unquoted value with whitespace, quotes or backslashes: {raw!r}")
        return raw
    out, i = [], 1
    while i < len(raw):
        char = raw[i]
        if char == "\\":
            if i + 1 >= len(raw):
                raise Ambiguous(f"line {number}: a backslash ends the line (a continuation)")
            if raw[i + 1] not in ENV_ESCAPABLE:
                raise Ambiguous(f"line {number}: backslash before {raw[i + 1]!r} is kept verbatim")
            out.append(raw[i + 1])
            i += 2
        elif char in "`$":
            raise Ambiguous(f"line {number}: unescaped {char!r}")
        elif char == '"':
            if raw[i + 1 :]:
                raise Ambiguous(f"line {number}: text after the closing quote: {raw[i + 1 :]!r}")
            return "".join(out)
        else:
            out.append(char)
            i += 1
    raise Ambiguous(f"line {number}: the double quote does not close")


def exec_words(line: str) -> list[str]:
    """The words of an ``ExecStart=`` value, unquoted, with ``%%`` and ``$$`` undone and ``${VAR}`` kept."""
    words, i = [], 0
    while i < len(line):
        if line[i] in " \t":
            i += 1
            continue
        if line[i] == '"':
            word, i = _quoted(line, i + 1)
        else:
            end = i
            while end < len(line) and line[end] not in " \t":
                if line[end] in "\"'\\":
                    raise Ambiguous(f"quote or backslash inside a bare word: {line[i:]!r}")
                end += 1
            word, i = line[i:end], end
        words.append(_specifiers(word))
    return words


def _quoted(line: str, i: int) -> tuple[str, int]:
    out = []
    while i < len(line):
        char = line[i]
        if char == "\\":
            nxt = line[i + 1 : i + 2]
            if nxt not in ('"', "\\"):
                raise Ambiguous(f"C escape \\{nxt} in a quoted word")
            out.append(nxt)
            i += 2
        elif char == '"':
            if line[i + 1 : i + 2] not in ("", " ", "\t"):
                raise Ambiguous("a closing quote not followed by whitespace")
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise Ambiguous("a quoted word does not close")


def _specifiers(word: str) -> str:
    """Undo ``%%``; any other ``%`` would be a specifier. ``$$`` stays for :func:`substitute`."""
    if re.search(r"%(?!%)", word.replace("%%", "")):
        raise Ambiguous(f"a % specifier in {word!r}")
    return word.replace("%%", "%")


def substitute(words: list[str], env: dict[str, str]) -> list[str]:
    """systemd's variable substitution: ``$VAR`` alone splits at whitespace, ``${VAR}`` is one word, ``$$`` is $."""
    argv: list[str] = []
    for word in words:
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
            continue
        out, i = [], 0
        while i < len(word):
            if word.startswith("$$", i):
                out.append("$")
                i += 2
            elif word.startswith("${", i):
                end = word.index("}", i)
                out.append(env.get(word[i + 2 : end], ""))
                i = end + 1
            elif word[i] == "$":
                raise Ambiguous(f"a bare $ inside {word!r}")
            else:
                out.append(word[i])
                i += 1
        argv.append("".join(out))
    return argv


def unit_directives(text: str) -> list[tuple[str, str]]:
    """(key, value) of each directive of a unit file, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    directives = []
    for line in joined.split("\n"):
        if not line.strip() or line.startswith(("#", ";", "[")):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise Ambiguous(f"not a directive: {line!r}")
        directives.append((key.strip(), value.strip()))
    return directives
