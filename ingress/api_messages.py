"""The HTTP API's requests as messages (pure): JSON in, a :class:`Submission` or an error out.

A message comes in one of two forms (``ingress/openapi.py`` describes both):

- *fields*: ``{"from", "to": [...], "subject", "text", "html", "headers": {...}}``, built
  here into an RFC 5322 message (``email.message.EmailMessage``, policy SMTP: CRLF lines,
  folded and RFC 2047-encoded headers; ``multipart/alternative`` with both text and html).
  ``Date:`` and ``Message-ID:`` are added at the accept, as for SMTP, unless the headers
  give them;
- *raw*: ``{"envelope": {"from", "to": [...]}, "raw": "<base64>"}``, the message as the
  client made it, held to the checks of the DATA phase (``ingress/data.py``): bare CR or LF
  per ``bare_newlines``, the line length, the size.

Either may carry ``"priority": "transactional" | "bulk"``. Addresses are parsed by the
SMTP path's parser (:func:`shared.message.parse_mailbox`, UTF-8 allowed: such a message
is an SMTPUTF8 one). Every refusal is an :class:`~ingress.api_errors.ApiError` naming the
field at fault.
"""

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from ingress.api_errors import ApiError, from_reply, invalid
from ingress.api_mime import HeaderError, build_message
from shared import replies
from shared.message import AddressError, Mailbox, parse_mailbox
from shared.priority import CLASSES, Priority
from shared.settings import BareNewlines, Settings

MAX_BATCH = 1000  # messages in one batch request
MAX_HEADERS = 100  # extra header fields of one message
_FIELDS_KEYS = ("from", "to", "subject", "text", "html", "headers", "priority")
_RAW_KEYS = ("envelope", "raw", "priority")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")  # a CR or LF that is not part of a CRLF


class Rejected(Exception):
    """A request or a message the API will not take; carries the answer."""

    def __init__(self, error: ApiError) -> None:
        super().__init__(error.message)
        self.error = error


@dataclass(frozen=True, slots=True)
class Limits:
    """The ingress settings a message is held to."""

    max_message_size: int
    max_recipients: int
    max_line_length: int
    bare_newlines: BareNewlines

    @classmethod
    def of(cls, settings: Settings) -> "Limits":
        s = settings
        return cls(s.max_message_size, s.max_recipients, s.max_line_length, s.bare_newlines)


@dataclass(frozen=True, slots=True)
class Submission:
    """One message ready for the accept: the envelope and the message's bytes."""

    sender: Mailbox | None
    recipients: list[Mailbox]
    body: bytes
    smtputf8: bool
    priority: Priority | None
    recipients_field: str = "to"  # where the recipients were given, for errors about one


def decode_json(body: bytes) -> object:
    """The request's JSON document; Rejected (400) when it is not one."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Rejected(invalid(None, f"the body is not valid JSON: {exc}")) from None


def batch_items(document: object) -> list[object]:
    """The messages of a batch request ``{"messages": [...]}``."""
    if not isinstance(document, dict):
        raise Rejected(invalid(None, 'a batch is a JSON object {"messages": [...]}'))
    _only(document, ("messages",), "", "a batch")
    items = document.get("messages")
    if not isinstance(items, list) or not items:
        raise Rejected(invalid("messages", "a non-empty list of messages"))
    if len(items) > MAX_BATCH:
        message = f"{len(items)} messages: a batch holds at most {MAX_BATCH}"
        raise Rejected(ApiError(413, message, "messages"))
    return items


def parse_submission(item: object, limits: Limits) -> Submission:
    """Check one message of a request and make its bytes; Rejected says what is wrong."""
    if not isinstance(item, dict):
        raise Rejected(invalid(None, "a message is a JSON object"))
    priority = _priority(item.get("priority"))
    if "raw" in item or "envelope" in item:
        return _raw(item, limits, priority)
    return _fields(item, limits, priority)


def _fields(item: dict[str, Any], limits: Limits, priority: Priority | None) -> Submission:
    _only(item, _FIELDS_KEYS, "", "a message")
    sender = _mailbox(item.get("from"), "from")
    recipients = _recipients(item.get("to"), "to", limits)
    subject = _text(item, "subject")
    text, html = _text(item, "text"), _text(item, "html")
    if text is None and html is None:
        raise Rejected(invalid("text", "give text, html or both"))
    if len(text or "") + len(html or "") > limits.max_message_size:
        raise Rejected(from_reply(replies.MESSAGE_TOO_BIG))
    headers = _headers(item.get("headers", {}))
    utf8 = any(box.needs_smtputf8 for box in (sender, *recipients))
    try:
        body = build_message(sender, recipients, subject, text, html, headers, utf8=utf8)
    except HeaderError as exc:
        raise Rejected(invalid(exc.field, str(exc))) from None
    if len(body) > limits.max_message_size:
        raise Rejected(from_reply(replies.MESSAGE_TOO_BIG))
    return Submission(sender, recipients, body, utf8, priority)


def _raw(item: dict[str, Any], limits: Limits, priority: Priority | None) -> Submission:
    _only(item, _RAW_KEYS, "", "a raw message")
    envelope = item.get("envelope")
    if not isinstance(envelope, dict):
        raise Rejected(invalid("envelope", 'an object {"from": ..., "to": [...]}'))
    _only(envelope, ("from", "to"), "envelope.", "an envelope")
    address = envelope.get("from")
    sender = None if address == "" else _mailbox(address, "envelope.from")  # "": <>
    recipients = _recipients(envelope.get("to"), "envelope.to", limits)
    raw = item.get("raw")
    if not isinstance(raw, str) or not raw:
        raise Rejected(invalid("raw", "the message in base64, a non-empty string"))
    if len(raw) // 4 * 3 > limits.max_message_size * 5 // 4:  # surely too big: not decoded
        raise Rejected(from_reply(replies.MESSAGE_TOO_BIG, "raw"))
    body = data_checks(_base64(raw), limits)
    utf8 = any(box.needs_smtputf8 for box in (*([sender] if sender else []), *recipients))
    return Submission(sender, recipients, body, utf8, priority, "envelope.to")


def data_checks(message: bytes, limits: Limits) -> bytes:
    """A raw message as the DATA phase would have stored it, or Rejected (the SMTP reply).

    Lines end with CRLF: bare CR or LF become CRLF or refuse the message (RFC 5321 §2.3.8,
    ``bare_newlines``); the message ends with a CRLF, as one sent in DATA does; then the
    size and line length limits (RFC 5321 §4.5.3.1.6).
    """
    crlf = message.count(b"\r\n")
    if message.count(b"\n") != crlf or message.count(b"\r") != crlf:
        if limits.bare_newlines != "normalize":
            raise Rejected(from_reply(replies.BARE_NEWLINE, "raw"))
        message = _BARE.sub(b"\r\n", message)
    if not message.endswith(b"\r\n"):
        message += b"\r\n"
    if len(message) > limits.max_message_size:
        raise Rejected(from_reply(replies.MESSAGE_TOO_BIG, "raw"))
    longest = max(map(len, message.split(b"\r\n"))) + 2
    if longest > limits.max_line_length:
        raise Rejected(from_reply(replies.LINE_TOO_LONG_DATA, "raw"))
    return message


def _base64(raw: str) -> bytes:
    if not raw.isascii():
        raise Rejected(invalid("raw", "not base64: non-ASCII characters"))
    if any(blank in raw for blank in " \t\r\n"):
        raw = "".join(raw.split())  # MIME-style line breaks (base64 tools wrap at 76)
    try:
        return binascii.a2b_base64(raw, strict_mode=True)
    except binascii.Error as exc:
        raise Rejected(invalid("raw", f"not base64: {exc}")) from None


def _only(item: dict[str, Any], allowed: tuple[str, ...], prefix: str, what: str) -> None:
    for key in item:
        if key not in allowed:
            message = f"unknown field: {what} has {', '.join(allowed)}"
            raise Rejected(invalid(f"{prefix}{key}", message))


def _priority(value: object) -> Priority | None:
    if value is None:
        return None
    for cls in CLASSES:
        if value == cls:
            return cls
    raise Rejected(invalid("priority", f"one of {', '.join(CLASSES)}"))


def _mailbox(value: object, field: str) -> Mailbox:
    if not isinstance(value, str):
        raise Rejected(invalid(field, "an address (a string local@domain)"))
    try:
        return parse_mailbox(value, utf8=True)
    except AddressError as exc:
        raise Rejected(invalid(field, f"not a valid address: {exc}")) from None


def _recipients(value: object, field: str, limits: Limits) -> list[Mailbox]:
    if not isinstance(value, list) or not value:
        raise Rejected(invalid(field, "a non-empty list of addresses"))
    if len(value) > limits.max_recipients:
        message = f"{len(value)} recipients: a message has at most {limits.max_recipients}"
        raise Rejected(invalid(field, message))
    return [_mailbox(address, f"{field}[{n}]") for n, address in enumerate(value)]


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise Rejected(invalid(key, "a string"))
    return value


def _headers(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Rejected(invalid("headers", 'an object {"Name": "value", ...}'))
    if len(value) > MAX_HEADERS:
        raise Rejected(invalid("headers", f"at most {MAX_HEADERS} header fields"))
    for name, text in value.items():
        if not isinstance(text, str):
            raise Rejected(invalid(f"headers.{name}", "a string"))
    return value
