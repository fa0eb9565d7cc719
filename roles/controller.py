"""The controller's share of a deploy: check hosts' settings, and fetch each distinct source and model once.

:func:`validate_hosts` is the one settings check: ``config.py`` runs it over
every host of a pyinfra run before any connection (``lemfleet/preflight.py``),
``lemfleet plan`` before it connects; the packaged deploy checks its host with
:func:`settings_for` before anything changes. One bad value stops the run with every problem listed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pyinfra.api.exceptions import PyinfraError

from lemfleet.roles.llama_sources import Source, prepare_source
from lemfleet.roles.settings import SettingsError
from lemfleet.roles.settings_check import validate

T = TypeVar("T")


class FleetSettingsError(PyinfraError):
    """Settings of one or more hosts are invalid; nothing was touched."""


def validate_hosts(hosts: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """Cleaned settings per host name, or :class:`FleetSettingsError` listing every problem."""
    cleaned: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for host in hosts:
        try:
            cleaned[host.name] = validate(host.data, host.name)
        except SettingsError as err:
            problems.append(str(err))
    if problems:
        raise FleetSettingsError("\n".join(problems) + "\nNo host was contacted.")
    return cleaned


def settings_for(host: Any) -> dict[str, Any]:
    """This host's cleaned settings, checked as the packaged deploy starts, before anything changes on it."""
    try:
        return validate(host.data, host.name)
    except SettingsError as err:
        raise FleetSettingsError(f"{err}\nNothing was changed on {host.name}.") from err


_memo: dict[str, Any] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def once(kind: str, key: Any, make: Callable[[], T]) -> T:
    """``make()`` once per distinct ``key`` in this run (sources and models are shared by hosts).

    pyinfra prepares hosts concurrently (greenlets; ``threading`` is gevent's
    under pyinfra), so a host that asks while another is fetching the same
    thing waits for it instead of fetching it again.
    """
    token = kind + ":" + json.dumps(key, sort_keys=True, default=str)
    with _locks_guard:
        lock = _locks.setdefault(token, threading.Lock())
    with lock:
        if token not in _memo:
            _memo[token] = make()
    return _memo[token]


def source_for(settings: dict[str, Any]) -> Source:
    key = {k: v for k, v in settings.items() if k.startswith("llama_cpp_") and "build" not in k}
    return once("source", key, lambda: prepare_source(settings))
