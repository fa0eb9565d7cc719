"""The results of smoke checks: named steps with pass/fail, per endpoint, JSON-ready.

Kept apart from the HTTP client so that JUnit, the report and ``lemfleet report`` read and write
results without talking to any server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

CHECKS = ("health", "auth", "models", "chat", "stream")
"""The checks every endpoint gets, in order; JUnit and the report rely on these names.

``auth`` runs when a key is given: a server that has a key must refuse a request without one.
Without a key it is skipped, saying so."""

Status = Literal["passed", "failed", "skipped"]


@dataclass
class Step:
    """One named check on one endpoint."""

    name: str
    status: Status
    message: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class SmokeResult:
    """Everything one smoke run learned about one endpoint (JSON-ready via :meth:`to_json`)."""

    host: str
    url: str
    steps: list[Step] = field(default_factory=list)
    model: str | None = None
    model_path: str | None = None
    build_info: str | None = None
    backend: str | None = None
    total_slots: int | None = None
    time_to_first_token_s: float | None = None
    decode_tokens_per_s: float | None = None
    completion_tokens: int | None = None
    reply: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(step.ok for step in self.steps)

    def failures(self) -> list[Step]:
        return [step for step in self.steps if step.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SmokeResult:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["steps"] = [Step(**step) for step in data.get("steps", [])]
        return cls(**fields)
