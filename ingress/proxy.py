"""PROXY protocol v1 and v2 headers (HAProxy's proxy-protocol.txt), parsed (pure).

Only connections from ``proxy_protocol_networks`` are expected to start with a header;
the address it carries replaces the peer's for every relay and limit decision.
"""

import ipaddress
import struct
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the longest v1 line, CRLF included
V2_MAX = 16 + 536  # header plus the largest address block we accept


class ProxyError(ValueError):
    """Not a valid PROXY header: the connection is closed without a greeting."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    length: int  # bytes the header took
    client: tuple[str, int] | None  # None: LOCAL / UNKNOWN (use the real peer)


def parse(buf: bytes) -> ProxyHeader | None:
    """The header at the start of ``buf``, None while incomplete; ProxyError if invalid."""
    if buf[:12] == V2_SIGNATURE[: min(12, len(buf))] and len(buf) < 12:
        return None
    if buf.startswith(V2_SIGNATURE):
        return _parse_v2(buf)
    if b"PROXY "[: len(buf)] == buf[:6]:
        return _parse_v1(buf)
    raise ProxyError("no PROXY protocol header")


def _parse_v1(buf: bytes) -> ProxyHeader | None:
    end = buf.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buf) >= V1_MAX:
            raise ProxyError("PROXY v1 line too long")
        return None
    fields = buf[:end].decode("ascii", "replace").split(" ")
    if len(fields) >= 2 and fields[1] == "UNKNOWN":
        return ProxyHeader(end + 2, None)
    if len(fields) != 6 or fields[1] not in ("TCP4", "TCP6"):
        raise ProxyError("malformed PROXY v1 line")
    try:
        address = ipaddress.ip_address(fields[2])
        port = int(fields[4])
    except ValueError:
        raise ProxyError("malformed PROXY v1 address") from None
    if (address.version == 4) != (fields[1] == "TCP4") or not 0 <= port < 65536:
        raise ProxyError("malformed PROXY v1 address")
    return ProxyHeader(end + 2, (str(address), port))


def _parse_v2(buf: bytes) -> ProxyHeader | None:
    if len(buf) < 16:
        return None
    ver_cmd, family, length = struct.unpack("!BBH", buf[12:16])
    if ver_cmd >> 4 != 2 or length > V2_MAX - 16:
        raise ProxyError("unsupported PROXY v2 header")
    if len(buf) < 16 + length:
        return None
    total = 16 + length
    command = ver_cmd & 0x0F
    if command == 0:  # LOCAL: the proxy's own connection (health check)
        return ProxyHeader(total, None)
    if command != 1:
        raise ProxyError("unknown PROXY v2 command")
    block = buf[16:total]
    if family == 0x11 and length >= 12:  # TCP over IPv4
        return ProxyHeader(total, (str(ipaddress.IPv4Address(block[:4])), _port(block, 8)))
    if family == 0x21 and length >= 36:  # TCP over IPv6
        return ProxyHeader(total, (str(ipaddress.IPv6Address(block[:16])), _port(block, 32)))
    if family == 0x00:  # UNSPEC
        return ProxyHeader(total, None)
    raise ProxyError("unsupported PROXY v2 address family")


def _port(block: bytes, offset: int) -> int:
    port: int = struct.unpack("!H", block[offset : offset + 2])[0]
    return port
