"""Rules that involve more than one setting, checked with the rest before any host is touched."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def cross_checks(settings: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    return problems
