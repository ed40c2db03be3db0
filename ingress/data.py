"""The DATA phase: find the end of data, enforce the size limit, undo dot-stuffing.

Only ``<CRLF>.<CRLF>`` ends the data (RFC 5321 §4.1.1.4). A bare LF or bare CR anywhere in
the data (RFC 5321 §2.3.8 forbids both) makes the whole message refused, so no variant of
``<LF>.<LF>`` or ``<CR>.<CR>`` can end one message early and smuggle a second
(CVE-2023-51764 family).

The size limit counts the message as RFC 1870 §3 does: without the terminating dot and
without the doubled quoting dots. Dot-stuffing makes the wire form at most 4/3 of the
message (a line "." travels as ".."), so once the wire bytes pass that bound the message
is surely too big and nothing more is buffered: only the last bytes are kept to find the
end of data.
"""

from dataclasses import dataclass

from shared import replies
from shared.replies import Reply

_END = b"\r\n.\r\n"
_TAIL = 4  # bytes kept past the limit: enough to hold a partial "\r\n.\r\n"


@dataclass(frozen=True, slots=True)
class Received:
    """The outcome of one DATA phase: the message (dot-stuffing undone) or a refusal."""

    body: bytes
    error: Reply | None
    wire_size: int


class DataReader:
    """Feed it the bytes after ``354``; it says when the data is complete."""

    __slots__ = (
        "_buf",
        "_dropped",
        "_max_line",
        "_max_size",
        "_max_wire",
        "_scanned",
        "_virtual",
        "leftover",
    )

    def __init__(self, max_size: int, max_line: int) -> None:
        # A virtual CRLF in front lets one search find ".\r\n" on the very first line.
        self._buf = bytearray(b"\r\n")
        self._virtual = 2  # bytes of that virtual CRLF still at the front of _buf
        self._dropped = 0  # message bytes no longer buffered (past the size limit)
        self._scanned = 0
        self._max_size = max_size
        self._max_wire = max_size * 4 // 3 + _TAIL  # past this, surely too big
        self._max_line = max_line
        self.leftover = b""

    def feed(self, chunk: bytes) -> Received | None:
        """Take more bytes; None while the end of data is not seen yet."""
        buf = self._buf
        buf += chunk
        end = buf.find(_END, self._scanned)
        if end < 0:
            self._scanned = max(0, len(buf) - 4)
            if self._dropped + len(buf) - self._virtual > self._max_wire:
                self._truncate()
            return None
        self.leftover = bytes(buf[end + 5 :])
        wire_size = self._dropped + end + 2 - self._virtual
        if self._dropped:
            return Received(b"", replies.MESSAGE_TOO_BIG, wire_size)
        return _finish(bytes(buf[: end + 2]), self._max_size, self._max_line, wire_size)

    def _truncate(self) -> None:
        # Over the limit: the message will be refused; keep only what may hold the end.
        buf = self._buf
        tail = buf[-_TAIL:]
        virtual = max(0, self._virtual - (len(buf) - len(tail)))
        self._dropped += (len(buf) - self._virtual) - (len(tail) - virtual)
        self._buf, self._virtual, self._scanned = tail, virtual, 0


def _finish(wire: bytes, max_size: int, max_line: int, wire_size: int) -> Received:
    """``wire`` starts with the virtual CRLF and ends with the CRLF before the final dot."""
    crlf = wire.count(b"\r\n")
    if wire.count(b"\n") != crlf or wire.count(b"\r") != crlf:
        return Received(b"", replies.BARE_NEWLINE, wire_size)
    # RFC 5321 §4.5.2: a line that starts with a period loses that period.
    body = wire.replace(b"\r\n.", b"\r\n")[2:]
    if len(body) > max_size:
        return Received(b"", replies.MESSAGE_TOO_BIG, wire_size)
    if len(body) > max_line and max(map(len, body.split(b"\r\n"))) + 2 > max_line:
        return Received(b"", replies.LINE_TOO_LONG_DATA, wire_size)
    return Received(body, None, wire_size)
