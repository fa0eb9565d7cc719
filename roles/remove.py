"""remove: take everything lemfleet created off a host, and nothing else (``lemfleet remove``).

The plan of what goes and what stays is :mod:`lemfleet.roles.remove_plan`; here each object to
remove becomes one operation named after it, so that a dry run lists, per host, what would go,
and a run reports what went. A host with nothing of lemfleet's left gets no operation: a second
remove is a no-op. Operators run it with ``lemfleet remove INVENTORY`` (or the API's
``remove()``); ``pyinfra INVENTORY roles/remove_deploy.py`` runs the same deploy.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation

from lemfleet.roles.controller import settings_for
from lemfleet.roles.remove_plan import Footprint, Record, candidates, plan_removal
from lemfleet.roles.settings_check import DEFAULTS


@operation()
def remove_object(commands: tuple[str, ...]):
    """Run the shell that removes one object (each command comes from the plan, values quoted there)."""
    yield from commands


@operation()
def keep_object(why: str):
    """Change nothing: the operation's name says what stays on the host, so the results list it."""
    host.noop(why)
    yield from ()


@deploy("Remove lemfleet", data_defaults=DEFAULTS)
def remove_lemfleet() -> None:
    """Stop and remove lemfleet's units, files, models and service user on this host; keep the rest."""
    settings = settings_for(host)
    found = host.get_fact(Record)
    look = candidates(settings, found)
    units = (look.recorded_unit,) if look.recorded_unit else ()
    observed = host.get_fact(Footprint, users=look.users, model_dirs=look.model_dirs, units=units)
    plan = plan_removal(observed, look.users, look.recorded_user)
    if not plan.removals:
        host.noop("nothing of lemfleet's is left on this host")
    for removal in plan.removals:
        remove_object(name=removal.what, commands=removal.commands)
    for kept in plan.kept:
        keep_object(name=f"Keep {kept}", why=kept)
