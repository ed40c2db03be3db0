"""Relay decisions (pure): who may relay, and whether a message may be accepted.

mxfleet serves no local domains: every recipient is relayed, so a client that may not
relay gets ``550 5.7.1`` for every recipient, whatever tricks its address holds
(``%`` hacks, ``!`` paths, quoted local parts, source routes) — invariant 6.
"""

import ipaddress
from collections.abc import Iterable

from shared import replies
from shared.replies import Reply
from shared.settings import Network


def in_networks(ip: str, networks: Iterable[Network]) -> bool:
    """True when ``ip`` (IPv4-mapped IPv6 counts as IPv4) lies in one of ``networks``."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def client_address(ip: str) -> str:
    """The address as logged and matched: IPv4-mapped IPv6 shown as IPv4."""
    try:
        address = ipaddress.ip_address(ip.partition("%")[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def size_refusal(declared: int | None, limit: int) -> Reply | None:
    """RFC 1870 §6.1: a SIZE= larger than the limit is refused at MAIL."""
    if declared is not None and declared > limit:
        return replies.MESSAGE_TOO_BIG
    return None


def valid_helo(name: str) -> bool:
    """A HELO/EHLO argument we can put in a Received field: one printable ASCII token."""
    return 0 < len(name) <= 255 and name.isascii() and name.isprintable() and " " not in name
