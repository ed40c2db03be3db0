"""Loopback ports for test servers: several consecutive ones (``metrics port + i``), or one
free on several 127.0.0.N addresses (MX hosts share the delivery port).

:func:`shared.embedded.free_port` asks the kernel for one free port, which comes from the
ephemeral range; the port after it may be any client socket's at any moment. These ports
are taken below that range, where the kernel never assigns client ports by itself.
"""

import random
import socket
from collections.abc import Sequence

from shared.embedded import PORT_RANGE

_LOW, _HIGH = PORT_RANGE  # below Linux's default ip_local_port_range (32768-60999)


def bindable(host: str, port: int) -> bool:
    """True when ``port`` on ``host`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports on ``host``."""
    for _ in range(200):
        first = random.randrange(_LOW, _HIGH - count)
        if all(bindable(host, first + offset) for offset in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports in {_LOW}-{_HIGH}")


def free_port_on(hosts: Sequence[str]) -> int:
    """A TCP port free on every one of ``hosts`` (127.0.0.N addresses: one port, many MXs)."""
    for _ in range(200):
        port = random.randrange(_LOW, _HIGH)
        if all(bindable(host, port) for host in hosts):
            return port
    raise RuntimeError(f"no port free on all of {hosts}")
