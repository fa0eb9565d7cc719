"""The rollback deploy: put each host back on its previous build and model, through the health gate.

    lemfleet rollback inventories/<fleet>.py [--limit H] [--dry]

``lemfleet rollback`` (lemfleet/api/rollback.py) runs this file as pyinfra's
deploy; roles/rollback.py says what it does on a host. It changes only what
roles/transaction.py kept: a host without a previous state fails with a
clear message and is not touched.
"""

from pyinfra import host
from pyinfra.api import deploy

from lemfleet.roles import rollback
from lemfleet.roles.controller import settings_for
from lemfleet.roles.gate import gate, passed_on
from lemfleet.roles.rollback import targets_of
from lemfleet.roles.server_units import InstanceUnits
from lemfleet.roles.settings_check import DEFAULTS


@deploy("lemfleet rollback", data_defaults=DEFAULTS)
def rollback_lemfleet() -> None:
    """Serve the previous state again if it passes the gate; else keep serving what served before."""
    settings = settings_for(host)
    unit_name = settings["server_unit_name"]
    present = host.get_fact(InstanceUnits, unit_name=unit_name)
    serving = targets_of(present.record, unit_name, settings)
    kept = rollback.kept_states()
    previous = kept.targets(unit_name, settings)
    layout = rollback.rollback_layout(unit_name, present, kept)
    rollback.put_back_previous(name="Put the previous state back", layout=layout, kept=kept,
                               serving=[t.unit for t in serving], previous=[t.unit for t in previous])  # fmt: skip
    gate(previous, fallback="restore", layout=layout, restored=serving)
    rollback.keep_rolled_back(layout, passed_on(host.name))


# pyinfra runs this file as the deploy (without a module name); importing it runs nothing.
if __name__ != "lemfleet.rollback_deploy":
    rollback_lemfleet()
