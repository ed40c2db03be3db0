"""An RFC 5322 message from the HTTP API's fields (pure): ``email.message.EmailMessage``
with policy SMTP (CRLF line ends, headers folded at 78 and RFC 2047-encoded when not
ASCII; RFC 5322 §2.1.1, §2.2.3), or policy SMTPUTF8 when an address needs it (RFC 6532).

Most API mail is plain: ASCII header values that fit a 78-character line and ASCII bodies
whose lines fit 998 octets. Such a message is written directly (:func:`_write_plain`), in
the layout ``EmailMessage`` gives it (same fields, 7bit parts, ``multipart/alternative``
with a random boundary): the ``email`` package's parsing and folding would cost more than
the rest of the accept. Anything else goes through ``EmailMessage``.

The client's extra header fields are checked first: a name is RFC 5322 §3.6.8 ``ftext``; a
value holds no CR, LF or NUL (no header injection) and fits a line (998 octets, §2.1.1);
the fields the API sets itself cannot be given (From, To, Subject, the MIME fields), nor
the trace fields a relay adds (Received, Return-Path), nor recipients the envelope would
not hold (Cc, Bcc). ``Date:`` and ``Message-ID:`` may be given and must parse.
"""

import email.errors
import email.utils
import re
import secrets
from email import policy
from email.message import EmailMessage

from shared.message import Mailbox

MAX_VALUE = 998  # RFC 5322 §2.1.1: a line is at most 998 characters without its CRLF
_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,76}")  # ftext; 76 + ": " fits a 78-wide line
_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")  # RFC 5322 §3.6.4 msg-id, simplified
_RESERVED = {
    "from": "the field from",
    "to": "the field to",
    "subject": "the field subject",
    "cc": "every recipient in to",
    "bcc": "every recipient in to",
    "content-type": "text and html",
    "content-transfer-encoding": "text and html",
    "mime-version": "text and html",
    "received": "nothing: the relay adds it",
    "return-path": "nothing: the envelope's sender is the return path",
}


class HeaderError(ValueError):
    """A header field the client gave that cannot go in the message."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_header(name: str, value: str) -> str:
    """The value as it goes in the message (outer blanks dropped), or HeaderError."""
    field = f"headers.{name}"
    if not _NAME.fullmatch(name):
        raise HeaderError(field, "a field name is printable ASCII without ':' (RFC 5322 §3.6.8)")
    use = _RESERVED.get(name.lower())
    if use is not None:
        raise HeaderError(field, f"set by the API: use {use}")
    if "\r" in value or "\n" in value or "\x00" in value:
        raise HeaderError(field, "a value holds no CR, LF or NUL")
    value = value.strip()
    if len(value) > MAX_VALUE:
        raise HeaderError(field, f"longer than {MAX_VALUE} characters")
    lower = name.lower()
    if lower == "date" and not _is_date(value):
        raise HeaderError(field, "not an RFC 5322 date")
    if lower == "message-id" and not _MESSAGE_ID.fullmatch(value):
        raise HeaderError(field, "not a message id <left@right>")
    return value


def _is_date(value: str) -> bool:
    try:
        email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return False
    return True


def build_message(
    sender: Mailbox,
    recipients: list[Mailbox],
    subject: str | None,
    text: str | None,
    html: str | None,
    headers: dict[str, str],
    *,
    utf8: bool,
) -> bytes:
    """The message's bytes, CRLF lines; HeaderError when a field cannot be written."""
    checked = {name: check_header(name, value) for name, value in headers.items()}
    if subject is not None and ("\r" in subject or "\n" in subject or "\x00" in subject):
        raise HeaderError("subject", "a subject holds no CR, LF or NUL")
    fields = [("From", sender.address), ("To", ", ".join(box.address for box in recipients))]
    if subject is not None and subject.strip():
        fields.append(("Subject", subject.strip()))
    fields += checked.items()
    if not utf8 and _plain_fields(fields) and _plain_body(text) and _plain_body(html):
        return _write_plain(fields, text, html)
    message = EmailMessage(policy=policy.SMTPUTF8 if utf8 else policy.SMTP)
    _set(message, "From", sender.address, "from")
    _set(message, "To", ", ".join(box.address for box in recipients), "to")
    if subject is not None and subject.strip():
        _set(message, "Subject", subject.strip(), "subject")
    for name, value in checked.items():
        _set(message, name, value, f"headers.{name}")
    if text is not None and html is not None:
        message.set_content(text)
        message.add_alternative(html, subtype="html")  # RFC 2046 §5.1.4: the best last
        for part in message.iter_parts():
            del part["MIME-Version"]  # RFC 2045 §4: the top level's only
    elif html is not None:
        message.set_content(html, subtype="html")
    else:
        message.set_content(text or "")
    return message.as_bytes()


def _set(message: EmailMessage, name: str, value: str, field: str) -> None:
    try:
        message[name] = value
    except (ValueError, TypeError, email.errors.MessageError) as exc:
        raise HeaderError(field, f"cannot be written as a header field: {exc}") from None


_FOLD_AT = 78  # RFC 5322 §2.1.1: a line SHOULD be at most 78 characters
_TEXT_LINE = 998  # ... and MUST be at most 998: longer body lines need an encoding
_NEWLINES = re.compile(r"\r\n|\r|\n")


def _plain_fields(fields: list[tuple[str, str]]) -> bool:
    """Every field ASCII, printable, and one line without folding."""
    return all(
        value.isascii() and value.isprintable() and len(name) + 2 + len(value) <= _FOLD_AT
        for name, value in fields
    )


def _plain_body(body: str | None) -> bool:
    """ASCII, no NUL, every line within 998 octets: it goes as 7bit (RFC 2045 §2.7)."""
    if body is None:
        return True
    if not body.isascii() or "\x00" in body:
        return False
    return all(len(line) <= _TEXT_LINE for line in _NEWLINES.split(body))


def _part(subtype: str, body: str) -> str:
    lines = _NEWLINES.sub("\r\n", body)
    if not lines.endswith("\r\n"):
        lines += "\r\n"  # as set_content does: a text ends with a line break
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: 7bit\r\n\r\n{lines}"
    )


def _write_plain(fields: list[tuple[str, str]], text: str | None, html: str | None) -> bytes:
    head = "".join(f"{name}: {value}\r\n" for name, value in fields) + "MIME-Version: 1.0\r\n"
    if text is None or html is None:
        subtype, body = ("html", html) if html is not None else ("plain", text or "")
        return (head + _part(subtype, body)).encode("ascii")
    boundary = "=" * 15 + secrets.token_hex(16) + "=="
    while boundary in text or boundary in html:  # RFC 2046 §5.1.1: not in the parts
        boundary = "=" * 15 + secrets.token_hex(16) + "=="
    return (
        f'{head}Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n{_part('plain', text)}"  # the CRLF before a delimiter is
        f"\r\n--{boundary}\r\n{_part('html', html)}"  # the delimiter's (RFC 2046 §5.1.1)
        f"\r\n--{boundary}--\r\n"
    ).encode("ascii")
