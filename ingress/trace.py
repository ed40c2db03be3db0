"""Trace and identity headers of an accepted message (pure).

- ``Received:`` prepended (RFC 5321 §4.4), with the protocol keyword of RFC 3848 / 6531;
- ``Message-ID:`` and ``Date:`` added when missing (RFC 5322 §3.6, as a relay for its own
  clients may, RFC 6409 §8);
- loops detected by counting ``Received:`` fields (RFC 5321 §6.3).
"""

import re
import time
from datetime import UTC, datetime
from email.utils import format_datetime

from shared.header_section import split_header

_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)
_MESSAGE_ID = re.compile(rb"^message-id:", re.IGNORECASE | re.MULTILINE)
_DATE = re.compile(rb"^date:", re.IGNORECASE | re.MULTILINE)

_date_cache: tuple[int, str] = (-1, "")


def rfc5322_date(now: float | None = None) -> str:
    """The current time as an RFC 5322 date (cached for the second)."""
    global _date_cache
    second = int(time.time() if now is None else now)
    if _date_cache[0] != second:
        _date_cache = (second, format_datetime(datetime.fromtimestamp(second, UTC)))
    return _date_cache[1]


def protocol(*, esmtp: bool, tls: bool, auth: bool, utf8: bool) -> str:
    """``with`` keyword: SMTP, ESMTP[S][A] (RFC 3848), UTF8SMTP[S][A] (RFC 6531 §3.7.3)."""
    if not esmtp:
        return "SMTP"
    return ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls else "") + ("A" if auth else "")


def received_count(header: bytes) -> int:
    return len(_RECEIVED.findall(header))


def received_field(
    *, helo: str, client_ip: str, by: str, proto: str, queue_id: str, rcpt: str | None
) -> bytes:
    """One ``Received:`` field, folded, CRLF-terminated."""
    literal = f"IPv6:{client_ip}" if ":" in client_ip else client_ip  # RFC 5321 §4.1.3
    parts = [f"Received: from {helo or 'unknown'} ([{literal}])", f"\tby {by} with {proto}"]
    parts[-1] += f" id {queue_id}"
    if rcpt is not None:
        parts.append(f"\tfor <{rcpt}>")
    parts[-1] += f"; {rfc5322_date()}"
    return ("\r\n".join(parts) + "\r\n").encode("utf-8", "surrogateescape")


def stamp(message: bytes, received: bytes, *, queue_id: str, hostname: str) -> bytes:
    """The message with ``received`` prepended and Message-ID/Date added when missing."""
    header, rest = split_header(message)
    extra = b""
    if not _MESSAGE_ID.search(header):
        extra += f"Message-ID: <{queue_id}@{hostname}>\r\n".encode()
    if not _DATE.search(header):
        extra += f"Date: {rfc5322_date()}\r\n".encode()
    if not header and not rest.startswith(b"\r\n"):
        # No header section at all: the added fields need a blank line after them.
        return received + extra + b"\r\n" + rest
    return received + header + extra + rest
