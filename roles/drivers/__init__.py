"""The drivers step: install the GPU driver and runtime that the GPU plan's backend needs.

- :func:`plan_drivers` decides, from the host's release and the settings,
  which keys, sources, pins and packages serve the backend, or says why it
  cannot be served there;
- :func:`install_drivers` is the ``@deploy`` that applies such a plan.

A working driver is never replaced unless ``drivers_manage_existing`` is set,
kernel modules are skipped inside containers, and a host reboots only when its
kernel driver changed (never on ``@local``).
"""

from lemfleet.roles.drivers.apply import install_drivers, plan_for_host
from lemfleet.roles.drivers.defaults import DEFAULTS, SETTINGS
from lemfleet.roles.drivers.plan import plan_drivers, target_from_facts
from lemfleet.roles.drivers.plan_data import DriverPlan, DriverPlanError, DriverTarget

__all__ = [
    "DEFAULTS",
    "SETTINGS",
    "DriverPlan",
    "DriverPlanError",
    "DriverTarget",
    "install_drivers",
    "plan_drivers",
    "plan_for_host",
    "target_from_facts",
]
