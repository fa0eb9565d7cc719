"""Checks every setting gets on top of its own, and checks of the values derived from settings.

:func:`harden` runs for every setting of every role (``clean_group`` calls
it), so a role that declares a plain ``text()`` setting still cannot pass a
newline, a NUL or a 2 MB string to a host: each string inside the value goes
through :func:`lemfleet.roles.values.clean`. Some settings then get a rule of
their own (:data:`RULES`): URLs must be http(s) and cannot pass for an
option, names must not be the system's own (``roles/reserved.py``), extra
arguments must survive systemd's word split.

:func:`derived_problems` checks what lemfleet makes from the settings
before any host is contacted: the file name a model gets on the host and the
alias made from it. A file name that comes from the hub's listing is known
only when the model is resolved; ``roles/model_source.py`` checks it there
with :func:`check_model_file_name`, before anything is changed on any host.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from lemfleet.errors import SettingsError
from lemfleet.quants import parse_gguf_name
from lemfleet.roles import reserved
from lemfleet.roles.values import MAX_ALIAS, MAX_NAME, UnsafeValue, clean, env_words, unit_text


def _strings(value: Any) -> list[Any]:
    """Every string a setting's value holds: itself, the items of a list, the keys and values of a mapping."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    if isinstance(value, Mapping):
        return [s for pair in value.items() for item in pair for s in _strings(item)]
    return []


def http_url(name: str, value: Any) -> Any:
    """An http(s) URL with a host; never something a command could take for an option."""
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or value.startswith("-"):
        raise UnsafeValue(f"{name}={value!r} is not valid; accepted: an http:// or https:// URL")
    return value


def url_or_path(name: str, value: Any) -> Any:
    """A controller path, or (anything with ``://``) an http(s) URL."""
    if value is not None and "://" in value:
        return http_url(name, value)
    return value


def not_an_option(name: str, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("-"):
        raise UnsafeValue(f"{name}={value!r} is not valid; accepted: a value that does not start with '-'")
    return value


def extra_arg_items(name: str, value: Any) -> Any:
    env_words(name, list(value or []))
    return value


def alias(name: str, value: Any) -> Any:
    if value is not None:
        clean(name, value, max_bytes=MAX_ALIAS)
    return value


RULES: dict[str, Callable[[str, Any], Any]] = {
    "server_user": reserved.service_user,
    "server_unit_name": reserved.unit_name,
    "model_dir": reserved.model_dir,
    "model_url": http_url,
    "model_alias": alias,
    "model_revision": not_an_option,
    "llama_cpp_git_url": http_url,
    "llama_cpp_git_ref": not_an_option,
    "llama_cpp_tarball": url_or_path,
    "apt_proxy": http_url,
    "drivers_debian_mirror": http_url,
    "server_extra_args": extra_arg_items,
}


def harden(name: str, value: Any, *, secret: bool = False) -> Any:
    """``value`` (already cleaned by its setting's own check) if every string in it is safe to write."""
    for text in _strings(value):
        clean(name, text, secret=secret)
    rule = RULES.get(name)
    return rule(name, value) if rule else value


# -- values derived from the settings -----------------------------------------


def check_model_file_name(setting: str, name: str) -> str:
    """The name a model file gets on the host (``<sha256[:12]>-<name>``): one safe path component."""
    clean(setting, name, max_bytes=MAX_NAME - 13)
    if not name or name in (".", "..") or "/" in name:
        raise UnsafeValue(f"{setting} gives the file name {name!r}; accepted: a file name without '/'")
    return name


def check_alias(setting: str, value: str) -> str:
    """An alias made from a file name: as safe as a ``model_alias`` the user could have set."""
    clean(setting, value, max_bytes=MAX_ALIAS)
    unit_text(setting, value)  # also shown in the unit's Description=
    if not value.strip():
        raise UnsafeValue(f"{setting} gives an empty alias; accepted: set model_alias")
    return value


def model_file_name(s: Mapping[str, Any]) -> tuple[str, str] | None:
    """(setting it comes from, file name) when the settings alone name the model file; None for a hub pick."""
    source = s["model_source"]
    if source in ("local", "host") and s["model_path"]:
        return "model_path", posixpath.basename(s["model_path"].rstrip("/"))
    if source == "url" and s["model_url"]:
        return "model_url", urlsplit(s["model_url"]).path.rstrip("/").rsplit("/", 1)[-1]
    if source == "hub" and s["model_file"]:
        return "model_file", s["model_file"]
    return None


def check_derived(setting: str, file_name: str, model_alias: str | None) -> None:
    """Check a model's file name and (unless model_alias is set) the alias made from it."""
    check_model_file_name(setting, posixpath.basename(file_name))
    if model_alias is None:
        parsed = parse_gguf_name(posixpath.basename(file_name))
        made = parsed[0] if parsed else posixpath.basename(file_name).removesuffix(".gguf")
        check_alias(f"{setting} (the alias made from its file name; set model_alias to choose another)", made)


def derived_problems(s: Mapping[str, Any]) -> list[str]:
    """Problems with what lemfleet derives from a whole group of settings; skipped for a partial group."""
    needed = ("model_source", "model_path", "model_url", "model_file", "model_alias")
    if not all(k in s for k in needed):
        return []
    named = model_file_name(s)
    if named is None:
        return []
    try:
        check_derived(named[0], named[1], s["model_alias"])
    except UnsafeValue as err:
        return [str(err)]
    return []


def raise_derived(setting: str, file_name: str, model_alias: str | None) -> None:
    """:func:`check_derived` as a :class:`SettingsError`, for values known only once the model is resolved."""
    try:
        check_derived(setting, file_name, model_alias)
    except UnsafeValue as err:
        raise SettingsError([str(err)]) from err
