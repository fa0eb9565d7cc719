"""lemfleet's Python API: plan, deploy, smoke and verify a fleet, and get objects back.

    from lemfleet import api

    fleet = api.Fleet.from_inventory("inventories/fleet.py")   # or api.Fleet.from_ansible("hosts.ini")
    plans = api.plan(fleet)                  # per-host plans or errors; nothing changes
    result = api.deploy(fleet, limit=["gpu-1"], data={"model_quant": "Q8_0"}, on_event=api.print_events)
    result["gpu-1"].changed                  # the operations that changed something
    api.rollout(fleet, batches="1,10%,50%,100%", max_fail="0")   # health-gated batches, canaries first
    api.rollback(fleet, limit=["gpu-1"])     # back to the previous build and model, through the gate
    api.status(fleet)                        # what each host runs now, and drift from its deploy
    api.remove(fleet, limit=["old-1"], dry=True)   # what decommissioning would take off each host
    api.smoke(fleet, api_key=key).ok
    api.verify(fleet).failures()

Every result has ``to_json()``, prints as a table and renders as HTML in a notebook. pyinfra runs
on gevent, so plans and deploys run in a child process this API manages; the caller gets typed
results and live :class:`Event` objects, never text to parse. Settings are checked for every host
before any is contacted, and a bad one raises :class:`FleetSetupError`.

The ``lemfleet`` command is a thin layer over these functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lemfleet.api.child import ChildFailed
from lemfleet.api.fleet import Fleet, FleetSetupError
from lemfleet.api.remove import FleetRemoval, HostRemoval, remove
from lemfleet.api.results import (
    CheckResult,
    Event,
    FleetDeploy,
    FleetPlan,
    FleetSmoke,
    FleetVerify,
    HostDeploy,
    HostPlan,
    OperationResult,
)
from lemfleet.api.rollback import rollback
from lemfleet.api.rollout import RolloutResult, rollout
from lemfleet.api.run import EventCallback, deploy, plan, print_events
from lemfleet.api.status import FleetStatus, HostStatus, status

if TYPE_CHECKING:
    from lemfleet.api.checks import smoke, verify


def __getattr__(name: str) -> Any:
    """``smoke`` and ``verify`` are imported on first use: they load httpx and rich, which the rollout
    and the deploy runner's child (both import this package) do not need."""
    if name in ("smoke", "verify"):
        from lemfleet.api import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CheckResult",
    "ChildFailed",
    "Event",
    "EventCallback",
    "Fleet",
    "FleetDeploy",
    "FleetPlan",
    "FleetRemoval",
    "FleetSetupError",
    "FleetSmoke",
    "FleetStatus",
    "FleetVerify",
    "HostDeploy",
    "HostPlan",
    "HostRemoval",
    "HostStatus",
    "OperationResult",
    "RolloutResult",
    "deploy",
    "plan",
    "print_events",
    "remove",
    "rollback",
    "rollout",
    "smoke",
    "status",
    "verify",
]
