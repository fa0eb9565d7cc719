"""``api.remove``'s results: per host, what was (or would be) removed and what stays, from the run's operations."""

from __future__ import annotations

import json

from lemfleet.api.remove import FleetRemoval, HostRemoval, remove_deploy_file
from lemfleet.api.results import HostDeploy, OperationResult


def host(name: str, *ops: tuple[str, bool, bool | None], ok: bool = True, errors: tuple[str, ...] = ()) -> HostDeploy:
    operations = tuple(OperationResult(f"Remove lemfleet | {n}", changed, success) for n, changed, success in ops)
    return HostDeploy(name, ok, operations, errors, (), None)


def test_removed_and_kept_come_from_the_operation_names() -> None:
    done = host(
        "tb1",
        ("Remove unit lemfleet-llama.service", True, True),
        ("Remove /opt/lemfleet (builds)", True, True),
        ("Keep user lemfleet (lemfleet did not create it)", False, True),
    )
    row = HostRemoval.from_deploy(done, dry=False)
    assert row.removed == ("Remove unit lemfleet-llama.service", "Remove /opt/lemfleet (builds)")
    assert row.kept == ("user lemfleet (lemfleet did not create it)",) and row.outcome == "removed"
    assert "  removed: unit lemfleet-llama.service" in str(row).splitlines()
    assert "  kept: user lemfleet (lemfleet did not create it)" in str(row).splitlines()
    assert "would remove: /opt/lemfleet (builds)" in str(HostRemoval.from_deploy(done, dry=True))


def test_an_empty_host_a_failed_removal_and_an_unreachable_host() -> None:
    empty = HostRemoval.from_deploy(host("tb2"), dry=False)
    failed = HostRemoval.from_deploy(host("tb3", ("Remove user lemfleet and its group", False, False), ok=False), False)
    gone = HostRemoval.from_deploy(host("tb4", ok=False, errors=("Could not connect",)), dry=False)
    assert empty.outcome == "nothing to remove" and empty.ok
    assert failed.outcome == "failed" and failed.failed == ("Remove user lemfleet and its group",)
    assert gone.outcome == "failed" and gone.cells()[-1] == "Could not connect"
    fleet = FleetRemoval((empty, failed, gone), dry=False, seconds=1.0)
    assert not fleet.ok and fleet.removed == 0
    assert json.loads(json.dumps(fleet.to_json()))["hosts"][2]["outcome"] == "failed"
    assert "<table>" in fleet._repr_html_()


def test_the_remove_deploy_file_ships_with_the_package() -> None:
    path = remove_deploy_file()
    assert path.name == "remove_deploy.py" and "remove_lemfleet()" in path.read_text()
