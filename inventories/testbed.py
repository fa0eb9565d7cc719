"""Whatever the test bed has up, as a pyinfra inventory.

``python -m lemfleet.testbed up 3`` then ``pyinfra inventories/testbed.py deploy.py``.
Hosts are reached over real SSH with the test bed's key, and their host keys
are checked against the known_hosts file the test bed wrote when it made them.
Each host is also in a group named after its Debian suite.
"""

from lemfleet.testbed import load
from lemfleet.testbed.paths import KNOWN_HOSTS, PROXY_URL, SSH_KEY


def _host(rec):
    return (
        rec.name,
        {
            "ssh_hostname": rec.address,
            "ssh_user": "root",
            "ssh_key": str(SSH_KEY),
            "ssh_known_hosts_file": str(KNOWN_HOSTS),
            "ssh_strict_host_key_checking": "yes",
            "ssh_connect_retries": 1,
            # The test bed's hosts reach the package archive only through its proxy.
            "apt_proxy": PROXY_URL,
        },
    )


_records = load()
testbed = [_host(r) for r in _records]
bookworm = [_host(r) for r in _records if r.suite == "bookworm"]
trixie = [_host(r) for r in _records if r.suite == "trixie"]
sid = [_host(r) for r in _records if r.suite == "sid"]
