"""The ownership step alone, for tests/testbed/test_hostile_values.py: ``lemfleet.roles.ownership.claim``.

``--data user=... unit=... model_dir=...`` name what the deploy would take.
"""

from pyinfra import host

from lemfleet.roles.ownership import claim

claim(
    name="Take over only what lemfleet created",
    user=host.data.get("user"),
    unit_name=host.data.get("unit"),
    model_dir=host.data.get("model_dir"),
)
