"""A value that must never be printed: what lemfleet decrypted from Ansible Vault.

pyinfra prints host data in several places (``pyinfra INV debug-inventory`` with or without
``--json``, ``--debug`` state dumps, error messages that ``repr`` a bad value), and every one of
them goes through ``repr``, ``str``, ``format`` or pyinfra's JSON fallback encoder
(``pyinfra_cli/util.py`` ``json_encode``, which calls ``to_json``). :class:`Secret` answers all of
them with a placeholder. It is deliberately not a ``str`` subclass: ``json.dumps`` writes a str
subclass's real characters without asking it, so a subclass would leak through
``debug-inventory --json``.

Only code that writes the value where it belongs calls :func:`reveal` (the API key file, the apt
proxy file, the smoke test's request header).
"""

from __future__ import annotations

from typing import Any

HIDDEN = "(hidden: decrypted from Ansible Vault)"


class Secret:
    """Holds a decrypted value; every way of printing it gives :data:`HIDDEN`."""

    __slots__ = ("_value",)
    _value: Any

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> Any:
        """The decrypted value, for the one place it is written to."""
        return self._value

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("a Secret is read-only")

    def __repr__(self) -> str:
        return HIDDEN

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return HIDDEN

    def to_json(self) -> str:
        """What pyinfra's JSON encoder writes for host data (``debug-inventory --json``)."""
        return HIDDEN

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, repr(type(self._value))))

    def __reduce__(self) -> Any:
        # Pickling would carry the plaintext out of the process (a cache, a worker); refuse.
        raise TypeError("a Secret cannot be pickled")

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        return self


def reveal(value: Any) -> Any:
    """``value`` itself, or the plaintext when it is a :class:`Secret`."""
    return value.reveal() if isinstance(value, Secret) else value
