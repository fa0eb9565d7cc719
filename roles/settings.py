"""Typed, documented settings shared by every role.

Each role declares its tunables as a tuple of :class:`Setting`, all named with
the role's prefix. ``DEFAULTS`` dictionaries for ``@deploy(data_defaults=...)``
are derived from them, and :func:`clean_group` turns a host's data into a clean
mapping or a list of errors that name the setting, the bad value and what is
accepted. The check of every role's settings together is
:mod:`lemfleet.roles.settings_check`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lemfleet.errors import SettingsError
from lemfleet.roles import value_rules
from lemfleet.roles.values import shown
from lemfleet.secret import Secret, reveal

__all__ = [
    "Setting",
    "SettingsError",
    "boolean",
    "clean_group",
    "defaults",
    "integer",
    "one_of",
    "sha256",
    "str_mapping",
    "string_list",
    "text",
]


Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    doc: str
    check: Check | None = None
    secret: bool = False

    def clean(self, value: Any) -> Any:
        if self.check is None:
            return value
        return self.check(self.name, value)


def _fail(name: str, value: Any, accepted: str) -> ValueError:
    return ValueError(f"{name}={shown(value)} is not valid; accepted: {accepted}")


# -- checks -----------------------------------------------------------------


def one_of(*choices: Any) -> Check:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise _fail(name, value, ", ".join(repr(c) for c in choices))
        return value

    return check


def integer(minimum: int | None = None, maximum: int | None = None, *, none_ok: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and none_ok:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"-?[0-9]+", value.strip(" ")):
                value = int(value)
            else:
                raise _fail(name, value, _range_text(minimum, maximum, none_ok))
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise _fail(name, value, _range_text(minimum, maximum, none_ok))
        return value

    return check


def _range_text(minimum: int | None, maximum: int | None, none_ok: bool) -> str:
    if minimum is not None and maximum is not None:
        text = f"an integer from {minimum} to {maximum}"
    elif minimum is not None:
        text = f"an integer of at least {minimum}"
    elif maximum is not None:
        text = f"an integer of at most {maximum}"
    else:
        text = "an integer"
    return text + (" or None (automatic)" if none_ok else "")


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "yes", "on", "1", "false", "no", "off", "0"}:
        return value.lower() in {"true", "yes", "on", "1"}
    raise _fail(name, value, "true or false")


def text(pattern: str | None = None, accepted: str = "a non-empty string", *, none_ok: bool = False) -> Check:
    def check(name: str, value: Any) -> Any:
        if value is None and none_ok:
            return None
        if not isinstance(value, str) or not value or (pattern and not re.fullmatch(pattern, value)):
            raise _fail(name, value, accepted + (" or None" if none_ok else ""))
        return value

    return check


def sha256(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower()
    raise _fail(name, value, "64 hexadecimal characters (a sha256) or None")


def string_list(name: str, value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in re.split(r"[,\s]+", value) if v]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(name, value, "a list of strings or a comma-separated string")
    return list(value)


def str_mapping(name: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(name, value, "a mapping of strings to strings")
    return {str(k): str(v) for k, v in value.items()}


# -- collection --------------------------------------------------------------


def clean_group(settings: Iterable[Setting], data: Any, host: str | None = None) -> dict[str, Any]:
    """One group of settings from ``data``, defaulted and checked; every problem reported at once.

    Besides its own check, every setting passes :func:`lemfleet.roles.value_rules.harden` (no control
    characters, bounded length, its own name rule), and the values derived from the group are checked.

    A value decrypted from Ansible Vault (:class:`lemfleet.secret.Secret`) is accepted only by a
    secret setting; it is checked unwrapped and kept wrapped, and no message shows it.
    """
    settings = tuple(settings)
    problems: list[str] = []
    clean: dict[str, Any] = {}
    for setting in settings:
        raw = _get(data, setting.name, setting.default)
        try:
            if isinstance(raw, Secret) and not setting.secret:
                secret_names = ", ".join(s.name for s in settings if s.secret) or "secret settings only"
                raise ValueError(
                    f"{setting.name} comes from Ansible Vault (value hidden) but is not a secret setting; "
                    f"accepted: a plain value (vault-encrypted values are for {secret_names})"
                )
            value = value_rules.harden(setting.name, setting.clean(reveal(raw)), secret=setting.secret)
            clean[setting.name] = Secret(value) if isinstance(raw, Secret) else value
        except ValueError as err:
            problems.append(_scrub(str(err), reveal(raw), setting.name) if setting.secret else str(err))
    if not problems:
        problems = value_rules.derived_problems(clean)
    if problems:
        raise SettingsError(problems, host)
    return clean


def _scrub(message: str, value: Any, name: str) -> str:
    """``message`` with every string of a secret ``value`` cut out (the setting's own name kept): no echo."""
    if isinstance(value, Mapping):
        texts = [str(v) for v in value.values()]
    elif isinstance(value, list | tuple):
        texts = [str(item) for item in value]
    else:
        texts = [str(value)]
    guard = "\x00setting\x00"
    message = message.replace(name, guard)
    for text in sorted((t for t in texts if len(t) >= 3), key=len, reverse=True):
        message = message.replace(repr(text), "(secret value, not shown)").replace(text, "(secret value, not shown)")
    return message.replace(guard, name)


def defaults(settings: Iterable[Setting]) -> dict[str, Any]:
    return {s.name: s.default for s in settings}


def _get(data: Any, key: str, default: Any) -> Any:
    if isinstance(data, Mapping):
        return data.get(key, default)
    return data.get(key, default) if hasattr(data, "get") else getattr(data, key, default)
