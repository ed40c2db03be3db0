"""Ports handed out for servers that bind them later (shared.embedded.pick_ports)."""

from shared.embedded import PORT_RANGE, pick_ports


def test_a_port_handed_out_lately_is_not_handed_out_again() -> None:
    # Every port probes free, as it does before its server binds it.
    firsts = [pick_ports(lambda port: True, count=2) for _ in range(300)]
    ports = [port for first in firsts for port in (first, first + 1)]
    assert len(set(ports)) == len(ports)
    assert all(PORT_RANGE[0] <= port < PORT_RANGE[1] for port in ports)


def test_ports_that_probe_taken_are_skipped() -> None:
    taken = set(range(PORT_RANGE[0], PORT_RANGE[1], 2))  # every other port
    first = pick_ports(lambda port: port not in taken, count=1)
    assert first not in taken
