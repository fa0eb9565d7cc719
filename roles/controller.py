"""The controller's share of a deploy: check every host's settings before connecting, and
fetch each distinct source and model once.

``config.py`` registers :class:`PreflightCheck`, so that ``pyinfra`` validates
the settings of every host in the run before it opens a single connection;
one bad value anywhere stops the whole run with every problem listed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import BaseStateCallback

from roles.settings import SettingsError, validate
from roles.sources import Source, prepare_source

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


class PreflightCheck(BaseStateCallback):
    """Validate all hosts' settings once, before the first connection of the run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._error: FleetSettingsError | None = None
        self._done = False

    def host_before_connect(self, state, host) -> None:  # type: ignore[override]
        with self._lock:
            if not self._done:
                self._done = True
                hosts = [h for h in state.inventory if state.is_host_in_limit(h)]
                try:
                    validate_hosts(hosts)
                except FleetSettingsError as err:
                    self._error = err
        if self._error is not None:
            raise self._error


_memo: dict[str, Any] = {}


def once(kind: str, key: Any, make: Callable[[], T]) -> T:
    """``make()`` once per distinct ``key`` in this run (sources and models are shared by hosts)."""
    token = kind + ":" + json.dumps(key, sort_keys=True, default=str)
    if token not in _memo:
        _memo[token] = make()
    return _memo[token]


def source_for(settings: dict[str, Any]) -> Source:
    key = {k: v for k, v in settings.items() if k.startswith("llama_cpp_") and "build" not in k}
    return once("source", key, lambda: prepare_source(settings))
