"""pyinfra runs this first, before it loads the inventory: lemfleet checks every host's settings here.

Every host in the run is validated before pyinfra connects to any; one bad value
stops the run with every problem listed. Why this happens here, and how, is
explained in ``lemfleet/preflight.py``, the one place lemfleet hooks into a
pyinfra run.
"""

from lemfleet.preflight import check_cli_run

check_cli_run()
