"""The one gate for every value lemfleet writes into a unit file or an environment file.

A value reaches the host's systemd files from a setting, or from something
derived from one (an alias made from a file name, a file name from the hub
or a URL, a model path, an extra-argument item). Each goes through
:func:`clean` first, which refuses what no escaping makes safe: control
characters (a newline would start a new line, so a new directive), unpaired
surrogates, unicode line separators, byte-order marks and noncharacters
(systemd.exec(5) rejects those in environment files), and values longer than
systemd reads (a 2 MB alias made a unit systemd could not load). What passes
is then quoted for the one place it goes:

- :func:`env_value`: a double-quoted value of an ``EnvironmentFile=``, where
  a backslash keeps any of ``"\\`$`` (systemd.exec(5), "EnvironmentFile=").
- :func:`env_words`: the items of ``$LEMFLEET_EXTRA_ARGS``, which systemd
  splits at whitespace and unquotes (systemd.service(5), "Command lines"),
  so an item may hold neither whitespace nor quotes nor backslashes.
- :func:`exec_word`: one word of ``ExecStart=``, double-quoted with C
  escapes (systemd.syntax(7), "Quoting"), ``$$`` and ``%%`` for a literal
  dollar and percent.
- :func:`unit_text`: free text (``Description=``), with ``%%`` for percent.
- :func:`unit_path` and :func:`unit_token`: paths and names in directives
  that take them unquoted.

Each returns an :class:`Escaped`; the templates are rendered with a
``finalize`` hook that refuses anything else, so a value that skips this
module cannot reach a file.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

# systemd reads unit and environment lines of up to LONG_LINE_MAX (1 MiB); lemfleet's values are
# far shorter, so one generous cap, counted in UTF-8 bytes, keeps every line loadable.
MAX_BYTES = 4096
MAX_ALIAS = 256
MAX_NAME = 255  # a file name (NAME_MAX)


class Escaped(str):
    """A string already made safe for the file it is rendered into."""


class UnsafeValue(ValueError):
    """A value that cannot be written safely. ``str(err)`` names the setting; secrets are never echoed."""


def shown(value: Any, secret: bool = False) -> str:
    """``value`` as an error message may show it: its repr, cut short, or nothing at all for a secret."""
    if secret:
        return "(secret value, not shown)"
    text = repr(value)
    return text if len(text) <= 80 else text[:60] + f"... ({len(str(value))} characters)"


def _bad_char(char: str) -> str | None:
    category = unicodedata.category(char)
    code = ord(char)
    if category == "Cc":
        return f"control character U+{code:04X}"
    if category == "Cs":
        return f"unpaired surrogate U+{code:04X}"
    if category in ("Zl", "Zp", "Cf"):
        return f"invisible or line-breaking character U+{code:04X}"
    if 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE:
        return f"noncharacter U+{code:04X}"
    return None


def clean(setting: str, value: Any, *, max_bytes: int = MAX_BYTES, secret: bool = False) -> str:
    """``value`` as a string that can be written into a systemd file, or :class:`UnsafeValue`.

    ``setting`` names where the value came from (a setting, or what it was derived from).
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UnsafeValue(f"{setting}={shown(value, secret)} is not valid; accepted: a string")
    text = str(value)
    for char in text:
        problem = _bad_char(char)
        if problem:
            raise UnsafeValue(
                f"{setting}={shown(value, secret)} holds a {problem}; accepted: printable characters only"
            )
    size = len(text.encode())
    if size > max_bytes:
        raise UnsafeValue(f"{setting}={shown(value, secret)} is {size} bytes long; accepted: at most {max_bytes} bytes")
    return text


def env_value(setting: str, value: Any) -> Escaped:
    """A double-quoted ``EnvironmentFile=`` value that systemd reads back as exactly ``value``."""
    text = clean(setting, value)
    return Escaped('"' + re.sub(r'(["\\`$])', r"\\\1", text) + '"')


# What systemd's whitespace split of "$VAR" treats specially: whitespace, quotes and the escape character.
_WORD_BREAKERS = re.compile(r"[\s'\"\\]")


def env_words(setting: str, items: list[str] | tuple[str, ...]) -> Escaped:
    """Items that ``$VAR`` in ``ExecStart=`` splits back into exactly these arguments."""
    words = []
    for item in items:
        text = clean(setting, item)
        if not text or _WORD_BREAKERS.search(text):
            raise UnsafeValue(
                f"{setting} item {shown(item, False)} cannot be passed as one argument; accepted: a non-empty "
                "item without whitespace, quotes or backslashes (give '--flag' and its value as two items)"
            )
        words.append(text)
    return env_value(setting, " ".join(words))


def exec_word(setting: str, value: Any) -> Escaped:
    """One ``ExecStart=`` argument: quoted, C-escaped, with ``$$`` and ``%%`` so nothing is expanded."""
    text = clean(setting, value)
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")
    return Escaped(f'"{text}"')


def unit_text(setting: str, value: Any) -> Escaped:
    """Free text for a directive such as ``Description=``: no line continuation, ``%%`` for percent."""
    text = clean(setting, value).strip()
    if text.endswith("\\"):
        raise UnsafeValue(f"{setting}={shown(value, False)} ends with a backslash; accepted: text that does not")
    return Escaped(text.replace("%", "%%"))


def unit_path(setting: str, value: Any) -> Escaped:
    """An absolute path for a directive that takes it unquoted (``EnvironmentFile=``, ``DeviceAllow=``)."""
    text = clean(setting, value)
    if not text.startswith("/") or re.search(r"\s", text) or text.endswith("\\"):
        raise UnsafeValue(
            f"{setting}={shown(value, False)} is not valid here; accepted: an absolute path without whitespace"
        )
    return Escaped(text.replace("%", "%%"))


_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")


def unit_token(setting: str, value: Any) -> Escaped:
    """A user, group or unit name: ASCII letters, digits and ``_.:@-`` only (nothing for systemd to expand)."""
    text = clean(setting, value, max_bytes=MAX_NAME)
    if not _TOKEN.fullmatch(text):
        raise UnsafeValue(
            f"{setting}={shown(value, False)} is not valid; accepted: ASCII letters, digits, '_', '.', ':', "
            "'@' and '-', not starting with a punctuation character"
        )
    return Escaped(text)


def number(setting: str, value: Any) -> Escaped:
    """An integer or a decimal, rendered as it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsafeValue(f"{setting}={value!r} is not valid; accepted: a number")
    return Escaped(str(value))


_DEVICE_CLASS = re.compile(r"(char|block)-[A-Za-z0-9_.:-]+")


def device(setting: str, value: Any) -> Escaped:
    """A ``DeviceAllow=`` node: an absolute device path or a ``char-``/``block-`` device group."""
    text = clean(setting, value, max_bytes=MAX_NAME)
    if _DEVICE_CLASS.fullmatch(text):
        return Escaped(text)
    return unit_path(setting, text)


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def env_name(setting: str, value: Any) -> Escaped:
    """The name of an environment variable (``KEY`` of ``KEY=value``)."""
    text = clean(setting, value, max_bytes=MAX_NAME)
    if not _ENV_NAME.fullmatch(text):
        raise UnsafeValue(
            f"{setting}={shown(value, False)} is not valid; "
            "accepted: letters, digits and '_', not starting with a digit"
        )
    return Escaped(text)


def require_escaped(value: Any) -> Any:
    """Jinja ``finalize`` hook: every ``{{ }}`` in a lemfleet template must come out of this module."""
    if isinstance(value, Escaped):
        return value
    raise TypeError(
        f"template value {value!r} did not pass through lemfleet.roles.values; "
        "wrap it with one of its filters (env, words, exec, text, path, token, number)"
    )


def _filter(escape: Any) -> Any:
    """Jinja passes the value first: ``{{ alias | text("model_alias") }}``."""

    def apply(value: Any, setting: str) -> Escaped:
        return escape(setting, value)

    return apply


FILTERS = {
    name: _filter(escape)
    for name, escape in {
        "env": env_value,
        "env_name": env_name,
        "words": env_words,
        "exec": exec_word,
        "text": unit_text,
        "path": unit_path,
        "token": unit_token,
        "device": device,
        "number": number,
    }.items()
}
