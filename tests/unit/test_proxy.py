"""ingress/proxy.py: PROXY protocol v1 and v2 headers (HAProxy's proxy-protocol.txt)."""

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.proxy import V1_MAX, V2_MAX, V2_SIGNATURE, ProxyError, ProxyHeader, parse
from tests.unit.fuzz import FUZZ


def v2(
    command: int = 1, family: int = 0x11, block: bytes = b"", version: int = 2, length: int = -1
) -> bytes:
    size = len(block) if length < 0 else length
    return V2_SIGNATURE + bytes([version << 4 | command, family]) + struct.pack("!H", size) + block


def inet4(src: str, dst: str, sport: int, dport: int) -> bytes:
    packed = ipaddress.IPv4Address(src).packed + ipaddress.IPv4Address(dst).packed
    return packed + struct.pack("!HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    packed = ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed
    return packed + struct.pack("!HH", sport, dport)


BAD_FAMILY = "unsupported PROXY v2 address family"
V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 25\r\n"
V1_TCP6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 25\r\n"
V1_LONGEST = (
    b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    b" 65535 65535\r\n"
)
V2_TCP4 = v2(block=inet4("192.0.2.1", "198.51.100.1", 56324, 25))
V2_TCP6 = v2(family=0x21, block=inet6("2001:db8::1", "2001:db8::2", 4000, 25))
VALID = [
    (V1_TCP4, ProxyHeader(len(V1_TCP4), ("192.0.2.1", 56324))),
    (V1_TCP6, ProxyHeader(len(V1_TCP6), ("2001:db8::1", 4000))),
    (V1_LONGEST, ProxyHeader(len(V1_LONGEST), ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535))),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(15, None)),
    (b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", ProxyHeader(35, None)),
    (V2_TCP4, ProxyHeader(28, ("192.0.2.1", 56324))),
    (V2_TCP6, ProxyHeader(52, ("2001:db8::1", 4000))),
    (v2(command=0, family=0x00), ProxyHeader(16, None)),  # LOCAL (health check)
    (v2(command=0, family=0x11, block=inet4("10.0.0.1", "10.0.0.2", 1, 2)), ProxyHeader(28, None)),
    (v2(family=0x00), ProxyHeader(16, None)),  # UNSPEC
    # TLVs after the addresses are skipped (PP2_TYPE_AUTHORITY, 7 bytes).
    (
        v2(block=inet4("192.0.2.9", "198.51.100.1", 1, 25) + b"\x02\x00\x04mx.x"),
        ProxyHeader(35, ("192.0.2.9", 1)),
    ),
    (v2(block=b"\x00" * (V2_MAX - 16)), ProxyHeader(V2_MAX, ("0.0.0.0", 0))),
]


def test_limits() -> None:
    assert len(V2_SIGNATURE) == 12
    assert len(V1_LONGEST) <= V1_MAX == 107


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_valid_headers(header: bytes, expected: ProxyHeader) -> None:
    assert parse(header) == expected


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_bytes_after_the_header_are_not_consumed(header: bytes, expected: ProxyHeader) -> None:
    assert parse(header + b"EHLO client.example\r\n") == expected


@pytest.mark.parametrize(("header", "expected"), VALID)
def test_every_proper_prefix_is_incomplete(header: bytes, expected: ProxyHeader) -> None:
    for end in range(len(header)):
        assert parse(header[:end]) is None, header[:end]


def test_ipv4_mapped_address_is_kept_as_sent() -> None:
    # Normalising ::ffff:a.b.c.d to a.b.c.d is policy.client_address's job.
    header = parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 25\r\n")
    assert header is not None
    assert header.length == 38
    assert header.client is not None
    assert ipaddress.ip_address(header.client[0]) == ipaddress.ip_address("::ffff:192.0.2.1")
    assert header.client[1] == 1


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"EHLO client.example\r\n", "no PROXY protocol header"),
        (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"),
        (b"\r\n\r\n\x00\r\nQUIX\n", "no PROXY protocol header"),
        (b"PROXYTCP4", "no PROXY protocol header"),
        (b"PROXY " + b"1" * 200, "PROXY v1 line too long"),
        (b"PROXY " + b"1" * (V1_MAX - 6), "PROXY v1 line too long"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n", "malformed PROXY v1 line"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.1 56324 25 x\r\n", "malformed PROXY v1 line"),
        (b"PROXY UDP4 192.0.2.1 198.51.100.1 1 2\r\n", "malformed PROXY v1 line"),
        (b"PROXY TCP4  192.0.2.1 198.51.100.1 1 2\r\n", "malformed PROXY v1 line"),
        (b"PROXY\r\n", "no PROXY protocol header"),
        (b"PROXY \r\n", "malformed PROXY v1 line"),
        (b"PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 192.0.2.256 198.51.100.1 1 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.1 65536 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.1 x 2\r\n", "malformed PROXY v1 address"),
        (b"PROXY TCP4 192.0.2.1 198.51.100.1 -1 2\r\n", "malformed PROXY v1 address"),
        (v2(version=1, block=inet4("1.2.3.4", "5.6.7.8", 1, 2)), "unsupported PROXY v2 header"),
        (v2(version=3, family=0x00), "unsupported PROXY v2 header"),
        (v2(length=V2_MAX - 15), "unsupported PROXY v2 header"),
        (v2(length=0xFFFF), "unsupported PROXY v2 header"),
        (v2(command=2, family=0x00), "unknown PROXY v2 command"),
        (v2(command=15, family=0x00), "unknown PROXY v2 command"),
        (v2(family=0x12, block=inet4("1.2.3.4", "5.6.7.8", 1, 2)), BAD_FAMILY),  # UDP
        (v2(family=0x31, block=b"\x00" * 216), BAD_FAMILY),
        (v2(family=0x11, block=b"\x00" * 11), BAD_FAMILY),
        (v2(family=0x21, block=b"\x00" * 35), BAD_FAMILY),
    ],
)  # fmt: skip
def test_invalid_headers(data: bytes, reason: str) -> None:
    with pytest.raises(ProxyError, match=f"^{reason}$"):
        parse(data)


# --- arbitrary input ----------------------------------------------------------------------


def check(buf: bytes) -> None:
    """parse() answers a header, None or ProxyError, and never claims bytes it was not given."""
    try:
        header = parse(buf)
    except ProxyError:
        return
    if header is not None:
        assert 0 < header.length <= len(buf)
        if header.client is not None:
            ipaddress.ip_address(header.client[0])
            assert 0 <= header.client[1] < 65536


@FUZZ
@given(st.binary(max_size=200))
def test_arbitrary_bytes(buf: bytes) -> None:
    check(buf)


@FUZZ
@given(st.binary(max_size=120))
def test_arbitrary_bytes_after_the_v1_keyword(tail: bytes) -> None:
    check(b"PROXY " + tail)


@FUZZ
@given(
    st.sampled_from([b"TCP4 ", b"TCP6 ", b"UNKNOWN "]),
    st.lists(st.sampled_from([b"1.2.3.4", b"::1", b"80", b"", b" ", b"\xff", b"+1", b"1_0"])),
)
def test_arbitrary_v1_fields(proto: bytes, fields: list[bytes]) -> None:
    check(b"PROXY " + proto + b" ".join(fields) + b"\r\n")


@FUZZ
@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=80), st.integers(0, 0xFFFF))
def test_arbitrary_v2_headers(ver_cmd: int, family: int, block: bytes, length: int) -> None:
    check(V2_SIGNATURE + bytes([ver_cmd, family]) + struct.pack("!H", length) + block)
    check(V2_SIGNATURE + bytes([ver_cmd, family]) + struct.pack("!H", len(block)) + block)


@FUZZ
@given(st.sampled_from([header for header, _ in VALID]), st.binary(max_size=40))
def test_valid_header_then_anything(header: bytes, tail: bytes) -> None:
    result = parse(header + tail)
    assert result is not None
    assert result.length == len(header)
