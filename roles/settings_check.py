"""The settings check: every role's settings together, and the rules across them.

``ROLE_SETTINGS`` lists every role's settings in deploy order, so that they
can be validated together before any host is touched, given to
``@deploy(data_defaults=...)`` as :data:`DEFAULTS`, and checked against the
README's settings table. :func:`validate` turns one host's data into a clean
mapping, or raises :class:`SettingsError` naming each setting, its bad value
and the accepted values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lemfleet.roles import apt_proxy, drivers, gpu_plan, llama_cpp, model_delivery, server, smoke
from lemfleet.roles.rules import cross_checks
from lemfleet.roles.settings import Setting, SettingsError, clean_group

ROLE_SETTINGS: tuple[tuple[Setting, ...], ...] = (
    apt_proxy.SETTINGS,
    gpu_plan.SETTINGS,
    drivers.SETTINGS,
    llama_cpp.SETTINGS,
    model_delivery.SETTINGS,
    server.SETTINGS,
    smoke.SETTINGS,
)


def all_settings() -> tuple[Setting, ...]:
    """Every setting of every role, in deploy order."""
    return tuple(s for group in ROLE_SETTINGS for s in group)


DEFAULTS: dict[str, Any] = {s.name: s.default for s in all_settings()}


def validate(data: Mapping[str, Any] | Any, host: str | None = None) -> dict[str, Any]:
    """Return the cleaned settings for one host, or raise :class:`SettingsError`.

    ``data`` is a mapping or pyinfra's ``host.data``; missing keys take their
    defaults. The cross-setting rules run here too, so that every rule runs
    before any host is touched.
    """
    clean = clean_group(all_settings(), data, host)
    problems = cross_checks(clean)
    if problems:
        raise SettingsError(problems, host)
    return clean
