"""One file operation for tests/testbed/test_sudo_secret.py: ``lemfleet.roles.ops.put_text`` of ``--data content``.

``--data secret=yes`` writes it as a secret (the API key file's way), anything else as a plain file.
"""

from pyinfra import host

from lemfleet.roles.hoststate import declare
from lemfleet.roles.ops import put_text

DEST = "/etc/lemfleet-secret-test"

declare([DEST])
put_text(
    name="Secret file",
    dest=DEST,
    content=host.data.get("content"),
    mode="640",
    secret=host.data.get("secret") == "yes",
)
