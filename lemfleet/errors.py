"""Errors meant for people, shared by every layer of lemfleet.

They live in the core so that the core (hub client, quants) can raise them
without importing the deploy steps that also raise them.
"""

from __future__ import annotations


class SettingsError(ValueError):
    """One or more settings are invalid. ``str(err)`` is meant for people."""

    def __init__(self, problems: list[str], host: str | None = None) -> None:
        self.problems = problems
        self.host = host
        where = f" for host {host}" if host else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid lemfleet settings{where}:\n{lines}")
