"""Delivery status notifications, pure: the bounce a relay owes the sender (RFC 3464).

A DSN is ``multipart/report; report-type=delivery-status`` (RFC 6522 §3): a text/plain part
for people, ``message/delivery-status`` for programs (RFC 3464 §2), and the original
(RFC 3461 §4.3 RET): its header section as ``text/rfc822-headers`` (RFC 6522 §4), or all of
it as ``message/rfc822`` with ``include_body`` when it is small and clean 8bit data.

Bytes are assembled here, not by ``email``: the layout is fixed, and this keeps CRLF only and
lines within 998 octets (RFC 5322 §2.1.1). The delivery-status part is ASCII: a non-ASCII
recipient is ``utf-8; <utf-8-addr-xtext>`` (RFC 6533 §3), non-ASCII in a reply is escaped
alike. A non-ASCII original header section goes as ``message/global-headers`` (RFC 6533 §6.3)
or ``message/global`` (RFC 6532 §3.7), 8bit. Top-level fields are ASCII but ``To:`` for a
non-ASCII sender (RFC 6532 §3.2); ``dsn.isascii()`` says if delivery needs 8BITMIME/SMTPUTF8.
Never a DSN to ``<>`` nor about a DSN or an auto-reply: callers check ``should_bounce``.
"""

import contextlib
import hashlib
import re
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import collapse_rfc2231_value, format_datetime
from typing import Literal

from shared.replies import Reply

Action = Literal["failed", "delayed"]

MAX_LINE = 998  # RFC 5322 §2.1.1, octets without CRLF
_MAX_VALUE = 900  # one unbreakable word plus its field name always fits in MAX_LINE
_FOLD_AT = 78  # RFC 5322 §2.1.1 SHOULD
_CLASS = {"failed": "5", "delayed": "4"}  # RFC 3463 §3.1 class for a reply without one
_ENHANCED = re.compile(r"[45]\.\d{1,3}\.\d{1,3}")  # RFC 3463 §2, failure classes only
_HOST = re.compile(r"[A-Za-z0-9_.:\[\]-]{1,255}")
_QUEUE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# RFC 2046 §5.1.1: 1 to 70 bchars, not ending with a space
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_CONTROLS = re.compile(r"[\x00-\x1f\x7f]")
_FIELD_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")  # RFC 5322 §2.2 field name
_LINE_END = re.compile(rb"\r\n|\r|\n")
_BARE = re.compile(rb"\x00|\r(?!\n)|(?<!\r)\n")  # not in 8bit data, RFC 2045 §2.8
_DSN_TYPES = {"delivery-status", "global-delivery-status"}  # RFC 3464 §2, RFC 6533 §6.1

_INTRO = {
    "failed": "Delivery to these recipients failed; the mail system has given up:",
    "delayed": "Delivery to these recipients is delayed; the mail system keeps trying:",
}
SUBJECT_FAILED = "Undelivered Mail Returned to Sender"
SUBJECT_DELAYED = "Delayed Mail (still being retried)"


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    """One recipient the DSN reports on, with the reply that decided its fate.

    ``remote_mta`` is the MX host that gave ``reply``; None when the failure was local
    (DNS, policy, expiry before any answer). ``action`` is RFC 3464 §2.3.3's.
    """

    address: str
    reply: Reply
    remote_mta: str | None
    last_attempt: float
    action: Action = "failed"

    def __post_init__(self) -> None:
        if self.action not in ("failed", "delayed"):
            raise ValueError(f"action must be 'failed' or 'delayed', not {self.action!r}")


def should_bounce(sender: str, original: bytes) -> bool:
    """False for the null sender and for a message that is itself a DSN or an auto-reply.

    A DSN never causes another DSN (RFC 3461 §6.2; RFC 3464 §1: DSNs go out with ``<>``),
    nor does an ``Auto-Submitted`` message other than ``no`` (RFC 3834 §2, §5).
    """
    if _is_null(sender):
        return False
    fields = BytesHeaderParser(policy=compat32).parsebytes(b"\r\n".join(_header_lines(original)))
    report_type = collapse_rfc2231_value(fields.get_param("report-type") or "").strip().lower()
    if fields.get_content_type() == "multipart/report" and report_type in _DSN_TYPES:
        return False
    for value in fields.get_all("Auto-Submitted") or []:
        keyword = re.sub(r"\([^)]*\)", "", str(value)).split(";")[0].strip().lower()
        if keyword != "no":
            return False
    return True


def build_dsn(
    *,
    reporting_mta: str,
    queue_id: str,
    sender: str,
    original: bytes,
    recipients: list[FailedRecipient],
    arrival: float,
    now: float | None = None,
    boundary: str | None = None,
    include_body: bool = False,
    max_original: int = 64 * 1024,
) -> bytes:
    """A complete RFC 5322 message reporting on ``recipients``, ready to spool as is.

    Deterministic (``now`` defaults to the clock). ValueError: null sender, no recipients,
    malformed ``reporting_mta``/``queue_id``/``boundary``, or a boundary found in the content.
    """
    _check(sender, recipients, reporting_mta, queue_id)
    now = time.time() if now is None else now
    parts = [
        _human_part(reporting_mta, queue_id, recipients),
        _status_part(reporting_mta, queue_id, arrival, recipients),
        _original_part(original, include_body=include_body, max_original=max_original),
    ]
    chosen = _boundary(parts, boundary)
    failed = any(r.action == "failed" for r in recipients)
    body = b"This is a MIME-encapsulated delivery status notification (RFC 3464)."
    delimiter = b"\r\n--" + chosen.encode()  # RFC 2046 §5.1.1: the CRLF belongs to it
    body += b"".join(delimiter + b"\r\n" + part for part in parts) + delimiter + b"--\r\n"
    fields = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{_clip(_clean(sender).encode(), _MAX_VALUE).decode()}>",
        f"Subject: {SUBJECT_FAILED if failed else SUBJECT_DELAYED}",
        f"Date: {_date(now)}",
        f"Message-ID: <{_message_id(queue_id, now, recipients)}@{reporting_mta}>",
        "MIME-Version: 1.0",
        "Auto-Submitted: auto-replied",  # RFC 3834 §5: never answered automatically
        f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{chosen}"',
        f"Content-Transfer-Encoding: {'7bit' if body.isascii() else '8bit'}",  # RFC 2045 §6.4
    ]
    return ("\r\n".join(fields) + "\r\n\r\n").encode("utf-8", "replace") + body


def _check(sender: str, recipients: list[FailedRecipient], host: str, queue_id: str) -> None:
    if _is_null(sender):
        raise ValueError("never a DSN to the null sender (RFC 3461 §6.2, RFC 5321 §4.5.5)")
    if not recipients:
        raise ValueError("a DSN reports on at least one recipient (RFC 3464 §2.1)")
    if not _HOST.fullmatch(host) or not _QUEUE_ID.fullmatch(queue_id):
        raise ValueError("reporting_mta must be a host name and queue_id [A-Za-z0-9_-]")


def _human_part(reporting_mta: str, queue_id: str, recipients: list[FailedRecipient]) -> bytes:
    """RFC 6522 §3: the first part explains the report to a person.

    Each part is its MIME header, a blank line, its content without a final CRLF."""
    lines = [f"This is the mail system at {reporting_mta}.", ""]
    for action, intro in _INTRO.items():
        chosen = [r for r in recipients if r.action == action]
        if chosen:
            lines += [intro, ""]
            for r in chosen:
                host = _remote_host(r.remote_mta)
                said = f"host {host} said: " if host else ""
                lines += _wrap(
                    f"<{_clean(r.address)}>: {said}{_clean(str(r.reply))}", indent="    "
                )
            lines.append("")
    lines.append(f"Queue id: {queue_id}. The message or its header section is attached.")
    text = b"\r\n".join(_clip(line.encode("utf-8", "replace")) for line in lines)
    encoding = "7bit" if text.isascii() else "8bit"
    head = f"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}"
    return head.encode() + b"\r\n\r\n" + text


def _status_part(
    reporting_mta: str, queue_id: str, arrival: float, recipients: list[FailedRecipient]
) -> bytes:
    """RFC 3464 §2.2 per-message fields, then one §2.3 block per recipient."""
    per_message = [
        f"Reporting-MTA: dns; {reporting_mta}",  # §2.2.2
        f"X-Queue-ID: {queue_id}",  # §2.4 extension field; no ENVID, so no §2.2.1 field
        f"Arrival-Date: {_date(arrival)}",  # §2.2.5
    ]
    blocks = [per_message, *(_recipient_block(r) for r in recipients)]
    text = "\r\n\r\n".join("\r\n".join(block) for block in blocks)
    return b"Content-Type: message/delivery-status\r\n\r\n" + text.encode("ascii")


def _recipient_block(recipient: FailedRecipient) -> list[str]:
    fields = [
        _fold(f"Final-Recipient: {_typed_address(recipient.address)}"),  # §2.3.2
        f"Action: {recipient.action}",  # §2.3.3
        f"Status: {_status_code(recipient.reply, recipient.action)}",  # §2.3.4
    ]
    host = _remote_host(recipient.remote_mta)
    if host:
        fields.append(f"Remote-MTA: dns; {host}")  # §2.3.5
        diagnostic = _escape(_clean(str(recipient.reply)), keep=" \\+=")
        fields.append(_fold(f"Diagnostic-Code: smtp; {diagnostic}"))  # §2.3.6
    fields.append(f"Last-Attempt-Date: {_date(recipient.last_attempt)}")  # §2.3.7
    return fields


def _original_part(original: bytes, *, include_body: bool, max_original: int) -> bytes:
    """RFC 3461 §4.3 (RET) and RFC 6522 §4: the whole original only when it fits and is clean
    8bit data (RFC 2045 §2.8); otherwise its header section, cut at a field boundary."""
    header = b"\r\n".join(_header_lines(original, limit=max_original))
    eight_bit = not header.isascii()
    if include_body and len(original) <= max_original and _is_8bit_data(original):
        kind = "message/global" if eight_bit else "message/rfc822"  # RFC 6532 §3.7
        content = original
    else:
        kind = "message/global-headers" if eight_bit else "text/rfc822-headers"
        content = header
    encoding = "7bit" if content.isascii() else "8bit"
    head = f"Content-Type: {kind}\r\nContent-Transfer-Encoding: {encoding}"
    return head.encode() + b"\r\n\r\n" + content


def _is_null(sender: str) -> bool:
    return sender.strip() in ("", "<>")  # RFC 5321 §4.5.5: the null reverse-path


def _header_lines(message: bytes, *, limit: int | None = None) -> list[bytes]:
    """The header section's lines (RFC 5322 §2.2), each clipped, whole fields within limit."""
    lines: list[bytes] = []
    size = field_start = 0
    for line in _LINE_END.split(message):
        folded = line[:1] in (b" ", b"\t")
        if not line or not ((folded and lines) or _FIELD_START.match(line)):
            break  # the blank line, or text that is not a header field: the body starts
        if not folded:
            field_start = len(lines)
        line = _clip(line.replace(b"\x00", b""))
        size += len(line) + 2
        if limit is not None and size > limit:
            return lines[:field_start]
        lines.append(line)
    return lines


def _is_8bit_data(data: bytes) -> bool:
    """RFC 2045 §2.8: no NUL, CR and LF only as CRLF, lines of at most 998 octets."""
    return not _BARE.search(data) and max(map(len, data.split(b"\r\n"))) <= MAX_LINE


def _status_code(reply: Reply, action: Action) -> str:
    """The reply's RFC 3463 code; derived from the basic code when it has none, or one whose
    class disagrees with the basic code (RFC 3463 §2; RFC 2034 §4)."""
    klass = str(reply.code)[0] if 400 <= reply.code < 600 else _CLASS[action]
    usable = _ENHANCED.fullmatch(reply.status) and reply.status[0] == klass
    return reply.status if usable else f"{klass}.0.0"


def _typed_address(address: str) -> str:
    """RFC 3464 §2.3.2 address type: rfc822 when ASCII, else utf-8 (RFC 6533 §3, xtext)."""
    clean = _clean(address)
    if clean.isascii():
        return f"rfc822; {clean[:_MAX_VALUE]}"
    return f"utf-8; {_escape(clean, keep='')}"


def _escape(text: str, *, keep: str) -> str:
    """RFC 6533 §3 EmbeddedUnicodeChar: ``\\x{HEX}`` for non-ASCII and for SP, ``\\ + =``
    (QCHAR excludes them) unless listed in ``keep``; whole escapes, at most _MAX_VALUE."""
    out = ""
    for c in text:
        plain = c.isascii() and ((c.isprintable() and c not in " \\+=") or c in keep)
        piece = c if plain else f"\\x{{{ord(c):02X}}}"
        if len(out) + len(piece) > _MAX_VALUE:
            break
        out += piece
    return out


def _clean(text: str) -> str:
    """One line of text: no controls (so no injected field), single spaces, valid UTF-8."""
    text = text.encode("utf-8", "replace").decode("utf-8")
    return " ".join(_CONTROLS.sub(" ", text).split())


def _remote_host(host: str | None) -> str:
    """The MX host name in ASCII (RFC 3464 §2.3.5 "dns" type: A-labels, RFC 5890)."""
    host = host or ""
    with contextlib.suppress(UnicodeError):  # not a valid IDN: keep what is printable ASCII
        host = host if host.isascii() else host.encode("idna").decode("ascii")
    return "".join(c for c in host if "!" <= c <= "~")[:255]


def _clip(line: bytes, limit: int = MAX_LINE) -> bytes:
    """At most ``limit`` octets, never cutting a UTF-8 sequence in two."""
    return line if len(line) <= limit else line[:limit].decode("utf-8", "ignore").encode()


def _fold(field: str) -> str:
    """Fold at spaces (RFC 5322 §3.2.2) so lines stay near 78; unfolding restores it."""
    return "\r\n".join(_wrap(field, indent=" "))


def _wrap(text: str, *, indent: str) -> list[str]:
    """Lines near 78 characters broken at spaces only: every character kept but those spaces."""
    return textwrap.wrap(
        text, _FOLD_AT, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False
    )


def _date(epoch: float) -> str:
    """RFC 5322 §3.3 date-time in UTC, as RFC 3464 §2.2.5 / §2.3.7 ask."""
    return format_datetime(datetime.fromtimestamp(int(epoch), UTC))


def _message_id(queue_id: str, now: float, recipients: list[FailedRecipient]) -> str:
    """RFC 5322 §3.6.4 id-left: unique per DSN (one message may bounce per domain, later)."""
    seed = repr((queue_id, now, [(r.address, r.action, r.reply) for r in recipients]))
    return f"dsn.{int(now * 1000)}.{hashlib.sha256(seed.encode()).hexdigest()[:16]}.{queue_id}"


def _boundary(parts: list[bytes], wanted: str | None) -> str:
    """RFC 2046 §5.1.1: a boundary that occurs in no part; derived from the content by default."""
    content = b"\r\n".join(parts)
    if wanted is not None:
        if not _BOUNDARY.fullmatch(wanted) or f"--{wanted}".encode() in content:
            raise ValueError(f"unusable MIME boundary {wanted!r}")
        return wanted
    for n in range(1000):  # a hash of the content occurs in it in theory only
        candidate = "=_" + hashlib.sha256(content + str(n).encode()).hexdigest()[:32]
        if f"--{candidate}".encode() not in content:
            return candidate
    raise ValueError("no usable MIME boundary")  # pragma: no cover
