"""pyinfra reads this before it loads the inventory: lemfleet hooks its settings check in here.

The check must run after pyinfra initialises its state (which resets the
callback handlers) and before it connects, so it is registered right after
``state.init``. It then validates every host's settings before the first
connection, and one bad value stops the run with nothing contacted.
"""

from pyinfra import state

from roles.controller import PreflightCheck

_init = state.init


def _init_then_register(*args, **kwargs):
    _init(*args, **kwargs)
    state.add_callback_handler(PreflightCheck())


setattr(state, "init", _init_then_register)  # noqa: B010 (pyinfra's context proxy)
