"""pyinfra reads this before it loads the inventory: lemfleet hooks its settings check in here.

The check runs right after pyinfra initialises its state with the inventory
and the ``--limit``, and before it connects: every host's settings are
validated, and one bad value stops the run with nothing contacted.
"""

from pyinfra import state

from lemfleet.roles.controller import preflight

_init = state.init


def _init_then_check(*args, **kwargs):
    _init(*args, **kwargs)
    preflight(state)


setattr(state, "init", _init_then_check)  # noqa: B010 (pyinfra's context proxy)
