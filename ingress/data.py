"""The DATA phase: find the end of data, enforce the size limit, undo dot-stuffing.

Only ``<CRLF>.<CRLF>`` ends the data (RFC 5321 §4.1.1.4), so no variant of ``<LF>.<LF>`` or
``<CR>.<CR>`` can end one message early and smuggle a second (CVE-2023-51764 family). A
bare LF or bare CR inside the data (RFC 5321 §2.3.8 forbids both) is, by the setting
``bare_newlines``:

- ``normalize`` (the default, as Postfix's ``smtpd_forbid_bare_newline = normalize``):
  each one becomes CRLF, so a legacy client that ends its lines with LF is served and a
  smuggling attempt is one message whose text holds the would-be commands. Dot-stuffing is
  undone on the normalised lines; a line that is a lone "." only after normalisation did not
  end the data and stays a "." line of the message (the relay dot-stuffs it again);
- ``reject``: the whole message is refused (``550 5.5.2``).

Either way a message without bare CR or LF costs three counts and one replace; the regular
expressions run only when the counts disagree.

The size limit counts the message as RFC 1870 §3 does: without the terminating dot and
without the doubled quoting dots. Dot-stuffing makes the wire form at most 4/3 of the
message (a line "." travels as ".."), so once the wire bytes pass that bound the message
is surely too big and nothing more is buffered: only the last bytes are kept to find the
end of data.
"""

import re
from dataclasses import dataclass

from shared import replies
from shared.replies import Reply
from shared.settings import BareNewlines

_END = b"\r\n.\r\n"
_TAIL = 4  # bytes kept past the limit: enough to hold a partial "\r\n.\r\n"
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")  # a CR or LF that is not part of a CRLF
# The quoting dot of a normalised line (RFC 5321 §4.5.2), but not a lone ".": that line
# came with a bare CR or LF (a real <CRLF>.<CRLF> ends the data), so it is text.
_QUOTING_DOT = re.compile(rb"\r\n\.(?!\r\n)")


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
        "_normalize",
        "_scanned",
        "_virtual",
        "leftover",
    )

    def __init__(
        self, max_size: int, max_line: int, bare_newlines: BareNewlines = "normalize"
    ) -> None:
        # A virtual CRLF in front lets one search find ".\r\n" on the very first line.
        self._buf = bytearray(b"\r\n")
        self._virtual = 2  # bytes of that virtual CRLF still at the front of _buf
        self._dropped = 0  # message bytes no longer buffered (past the size limit)
        self._scanned = 0
        self._max_size = max_size
        self._max_wire = max_size * 4 // 3 + _TAIL  # past this, surely too big
        self._max_line = max_line
        self._normalize = bare_newlines == "normalize"
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
        body = _unstuff(bytes(buf[: end + 2]), normalize=self._normalize)
        if body is None:
            return Received(b"", replies.BARE_NEWLINE, wire_size)
        return _check(body, self._max_size, self._max_line, wire_size)

    def _truncate(self) -> None:
        # Over the limit: the message will be refused; keep only what may hold the end.
        # (A normalised message is still at least 3/4 of its wire form: the bound holds.)
        buf = self._buf
        tail = buf[-_TAIL:]
        virtual = max(0, self._virtual - (len(buf) - len(tail)))
        self._dropped += (len(buf) - self._virtual) - (len(tail) - virtual)
        self._buf, self._virtual, self._scanned = tail, virtual, 0


def _unstuff(wire: bytes, *, normalize: bool) -> bytes | None:
    """The message of ``wire`` (the virtual CRLF, the data, the CRLF before the final dot);
    None when it holds a bare CR or LF and those are refused."""
    crlf = wire.count(b"\r\n")
    if wire.count(b"\n") == crlf and wire.count(b"\r") == crlf:
        # RFC 5321 §4.5.2: a line that starts with a period loses that period.
        return wire.replace(b"\r\n.", b"\r\n")[2:]
    if not normalize:
        return None
    return _QUOTING_DOT.sub(b"\r\n", _BARE.sub(b"\r\n", wire))[2:]


def _check(body: bytes, max_size: int, max_line: int, wire_size: int) -> Received:
    if len(body) > max_size:
        return Received(b"", replies.MESSAGE_TOO_BIG, wire_size)
    if len(body) > max_line and max(map(len, body.split(b"\r\n"))) + 2 > max_line:
        return Received(b"", replies.LINE_TOO_LONG_DATA, wire_size)
    return Received(body, None, wire_size)
