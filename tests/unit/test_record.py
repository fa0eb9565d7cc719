"""deployed.json schema versions: a record of an earlier lemfleet reads as the current schema."""

from __future__ import annotations

import pytest

from lemfleet.roles.record import SCHEMA_VERSION, RecordError, schema_version, upgrade_record

V1 = {
    "record_version": 1,
    "backend": "cpu",
    "service": {"unit": "lemfleet-llama.service", "port": 8080, "api_key_required": False},
    "model": {"sha256": "ab" * 32, "path": "/var/lib/lemfleet/models/x.gguf"},
}


def test_a_version_1_record_is_upgraded_without_losing_anything() -> None:
    upgraded = upgrade_record(V1)
    assert upgraded["schema_version"] == SCHEMA_VERSION == 2
    assert "record_version" not in upgraded
    assert upgraded["gate"] == {"checks": [], "adopted": True}
    assert {k: v for k, v in upgraded.items() if k not in ("schema_version", "gate")} == {
        k: v for k, v in V1.items() if k != "record_version"
    }
    assert V1["record_version"] == 1  # the input is left as it was


def test_a_record_without_any_version_is_version_1() -> None:
    assert schema_version({"backend": "cpu"}) == 1


def test_a_current_record_is_read_as_it_is() -> None:
    current = {"schema_version": 2, "gate": {"checks": ["health"]}, "backend": "cpu"}
    assert upgrade_record(current) == current


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"schema_version": 3}, "schema_version=3 is newer than this lemfleet reads; accepted: 1 to 2"),
        ({"schema_version": "2"}, "schema_version='2' is not valid; accepted: an integer"),
        ({"record_version": 7}, "record_version=7 is not valid; accepted: 1"),
    ],
)
def test_records_it_cannot_read_are_refused_by_name(record: dict, message: str) -> None:
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        upgrade_record(record)
