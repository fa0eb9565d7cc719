"""server_network: who may connect to llama-server, as the unit's ``IPAddressAllow=`` line.

The unit denies every address (``IPAddressDeny=any``) and allows back:

- loopback (``localhost``: 127.0.0.0/8 and ::1) always, since the health gate,
  the SSH tunnel of the smoke step and the verify suite reach the server from
  the host itself;
- for a server that listens beyond loopback, the address it listens on when
  that is an IP address (the SSH tunnel then connects from that address), and
  the CIDRs of ``server_allow_from``, or any address when that is unset.

systemd matches the remote address of each packet in both directions, so a
client outside the list cannot connect, and the server cannot open
connections to anything outside it either. ``server_allow_from`` is checked
with Python's :mod:`ipaddress` before any host is contacted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from lemfleet.roles.settings import string_list
from lemfleet.roles.values import Escaped, shown

ACCEPTED = (
    "a list of IPv4 or IPv6 networks in CIDR form (10.0.0.0/8, 192.168.1.7, fd00::/64; no host bits set "
    "below the prefix), or None for any address"
)
_LOOPBACK_NAMES = ("localhost",)


def allow_from(name: str, value: Any) -> list[str] | None:
    """The settings check of ``server_allow_from``: each item a network, normalised (``10.1.2.3`` -> ``/32``)."""
    if value is None:
        return None
    try:
        items = string_list(name, value)
    except ValueError:
        raise ValueError(f"{name}={shown(value)} is not valid; accepted: {ACCEPTED}") from None
    if not items:
        return None
    networks = []
    for item in items:
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=True)))
        except ValueError as err:
            raise ValueError(f"{name} item {shown(item)} is not valid ({err}); accepted: {ACCEPTED}") from None
    return networks


def is_loopback(listen_host: str) -> bool:
    """Whether a server listening on ``listen_host`` can be reached from its own host only."""
    if listen_host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(listen_host).is_loopback
    except ValueError:
        return False


def ip_address_allow(listen_host: str, allow: Sequence[str] | str | None) -> Escaped:
    """The value of ``IPAddressAllow=``; every entry is an address, a network or a systemd keyword.

    ``allow`` is ``server_allow_from`` as host data holds it (a list, or a string from ``--data``), so
    it is parsed again here: nothing unparsed is written.
    """
    if is_loopback(listen_host):
        return Escaped("localhost")
    networks = allow_from("server_allow_from", allow)
    if not networks:
        return Escaped("any")
    entries = ["localhost"]
    try:
        address = ipaddress.ip_address(listen_host)
    except ValueError:
        address = None  # a host name, or 0.0.0.0 / :: below
    if address is not None and not address.is_unspecified:
        entries.append(str(address))
    entries += networks
    return Escaped(" ".join(dict.fromkeys(entries)))
