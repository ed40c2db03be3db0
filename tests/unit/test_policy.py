"""ingress/policy.py: who may relay (invariant 6), SIZE at MAIL, HELO names."""

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.policy import client_address, in_networks, size_refusal, valid_helo
from shared import replies
from shared.settings import Network
from tests.unit.fuzz import FUZZ


def nets(*texts: str) -> list[Network]:
    return [ipaddress.ip_network(text) for text in texts]


DEFAULT_RELAY = nets("127.0.0.0/8", "::1/128")  # the settings' default relay_networks


@pytest.mark.parametrize(
    ("ip", "networks", "inside"),
    [
        ("127.0.0.1", DEFAULT_RELAY, True),
        ("127.255.255.254", DEFAULT_RELAY, True),
        ("::1", DEFAULT_RELAY, True),
        ("::ffff:127.0.0.1", DEFAULT_RELAY, True),  # IPv4-mapped counts as IPv4
        ("128.0.0.1", DEFAULT_RELAY, False),
        ("192.0.2.1", DEFAULT_RELAY, False),
        ("::2", DEFAULT_RELAY, False),
        ("::ffff:192.0.2.1", DEFAULT_RELAY, False),
        ("10.1.2.3", nets("10.0.0.0/8"), True),
        ("10.1.2.3", nets("10.1.2.4/32"), False),
        ("2001:db8::5", nets("2001:db8::/32"), True),
        ("fe80::1%eth0", nets("fe80::/10"), True),
        ("192.0.2.1", nets("::/0"), False),  # an IPv6 network never holds an IPv4 client
        ("2001:db8::1", nets("0.0.0.0/0"), False),
        ("192.0.2.1", [], False),
        ("", DEFAULT_RELAY, False),
        ("localhost", DEFAULT_RELAY, False),
        ("127.0.0.1.evil.example", DEFAULT_RELAY, False),
        ("0177.0.0.1", DEFAULT_RELAY, False),  # no octal forms
    ],
)
def test_in_networks(ip: str, networks: list[Network], inside: bool) -> None:
    assert in_networks(ip, networks) is inside


@pytest.mark.parametrize(
    ("ip", "shown"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("not an address", "not an address"),
        ("", ""),
    ],
)
def test_client_address(ip: str, shown: str) -> None:
    assert client_address(ip) == shown


@FUZZ
@given(st.ip_addresses())
def test_client_address_agrees_with_in_networks(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    ip = str(address)
    shown = client_address(ip)
    host = ipaddress.ip_network(shown)  # a /32 or /128 around the shown address
    assert in_networks(ip, [host]) is True
    assert client_address(shown) == shown


@FUZZ
@given(st.text(max_size=50))
def test_in_networks_never_raises(ip: str) -> None:
    assert in_networks(ip, DEFAULT_RELAY) in (True, False)
    assert isinstance(client_address(ip), str)


@pytest.mark.parametrize(
    ("declared", "limit", "reply"),
    [(None, 10, None), (0, 10, None), (10, 10, None), (11, 10, replies.MESSAGE_TOO_BIG)],
)
def test_size_refusal(declared: int | None, limit: int, reply: object) -> None:
    assert size_refusal(declared, limit) == reply


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("client.example", True),
        ("[192.0.2.1]", True),
        ("[IPv6:2001:db8::1]", True),
        ("x", True),
        ("a" * 255, True),
        ("a" * 256, False),
        ("", False),
        ("two words", False),
        ("tab\there", False),
        ("bad\r\nReceived: forged", False),
        ("nul\x00", False),
        ("bücher.de", False),
        ("del\x7f", False),
    ],
)
def test_valid_helo(name: str, valid: bool) -> None:
    assert valid_helo(name) is valid
