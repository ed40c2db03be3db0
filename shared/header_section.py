"""Where a message's header section ends (RFC 5322 §2.1): pure, for the ingress and the
workers alike."""

import re

_HEADER_LINE = re.compile(rb"^[\x21-\x39\x3b-\x7e]+:")


def split_header(message: bytes) -> tuple[bytes, bytes]:
    """(header section including its last CRLF, the rest from the blank line on).

    A message whose first line is not a header field has no header section.
    """
    if not _HEADER_LINE.match(message):
        return b"", message
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return message, b""
    return message[: end + 2], message[end + 2 :]
