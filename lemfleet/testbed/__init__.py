"""A fleet of real systemd hosts on one machine, for testing lemfleet for real.

Each host is a debootstrapped Debian booted with ``systemd-nspawn --boot`` in
its own network namespace, reached over SSH exactly as a real fleet host is.
A host can present a recorded GPU (its tools on PATH, its KFD topology):
``add_gpu_host`` in ``recorded_gpu.py``. Use it from the CLI (``python -m lemfleet.testbed up 3``), from pytest
fixtures (``tests/testbed/conftest.py``) or from ``inventories/testbed.py``.
"""

from lemfleet.testbed.bed import (
    add,
    cut_link,
    freeze,
    kill,
    restore_link,
    ssh,
    status,
    thaw,
    up,
)
from lemfleet.testbed.hosts import HostRecord
from lemfleet.testbed.recorded_gpu import add_gpu_host
from lemfleet.testbed.registry import find, load
from lemfleet.testbed.teardown import down, leftovers, remove

__all__ = [
    "HostRecord",
    "add",
    "add_gpu_host",
    "cut_link",
    "down",
    "find",
    "freeze",
    "kill",
    "leftovers",
    "load",
    "remove",
    "restore_link",
    "ssh",
    "status",
    "thaw",
    "up",
]
