"""The remove deploy as a file pyinfra runs: ``pyinfra INVENTORY roles/remove_deploy.py [--dry]``.

``lemfleet remove`` and :func:`lemfleet.api.remove` run this file in their pyinfra child process.
"""

from lemfleet.roles.remove import remove_lemfleet

remove_lemfleet()
