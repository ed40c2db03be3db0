"""Loopback ports for test servers: several consecutive ones (``metrics port + i``), or one
free on several 127.0.0.N addresses (MX hosts share the delivery port).

Both come from :func:`shared.embedded.pick_ports`: below the kernel's ephemeral range, and
never a port this process handed out lately (its server may not have bound it yet).
"""

from collections.abc import Sequence

from shared.embedded import bindable, pick_ports


def free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports on ``host``."""
    return pick_ports(lambda port: bindable(host, port), count)


def free_port_on(hosts: Sequence[str]) -> int:
    """A TCP port free on every one of ``hosts`` (127.0.0.N addresses: one port, many MXs)."""
    return pick_ports(lambda port: all(bindable(host, port) for host in hosts))
