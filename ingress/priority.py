"""How an accepted message gets its priority class (pure; see :mod:`shared.priority`).

Strongest first:

1. **explicit**: the class a submission names outside the message (the HTTP API sets
   :attr:`ingress.handler.Transaction.priority`);
2. **header**: an ``X-Mxfleet-Priority: transactional`` (or ``bulk``) field in the message,
   counted only from a relay client (an address in ``relay_networks`` or an authenticated
   user) and while ``priority_header`` is on;
3. **AUTH user**: ``transactional_users`` / ``bulk_users``;
4. ``default_priority``.

The header field is removed from every message the ingress accepts, whoever sent it and
whether it counted or not: it is an instruction to this relay, not part of the mail
(RFC 5321 §3.7.1 lets a relay add trace fields only, so it is taken out before the
``Received:`` field is added and the message stored, and it never reaches a destination).
A class that a client names must exist: an unknown or contradictory one is refused rather
than sent as some other class.
"""

import re
from dataclasses import dataclass

from shared import priority, replies
from shared.header_section import split_header
from shared.priority import Priority
from shared.replies import Reply

HEADER = "X-Mxfleet-Priority"
# The field's name at the start of a header line; RFC 5322 §4.5.3 (obsolete syntax) allows
# blanks before the colon, and field names are case-insensitive (§1.2.2).
_FIELD = re.compile(rb"^x-mxfleet-priority[ \t]*:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings that classify a message."""

    default: Priority
    transactional_users: frozenset[str] = frozenset()
    bulk_users: frozenset[str] = frozenset()
    header: bool = True  # honour the header field from relay clients


@dataclass(frozen=True, slots=True)
class Choice:
    """A message's class and what gave it (``explicit``, ``header``, ``user``, ``default``)."""

    priority: Priority
    source: str


def take_header(message: bytes) -> tuple[bytes, list[str]]:
    """``message`` without its X-Mxfleet-Priority fields (folded lines included), and their
    values, unfolded and stripped. A message without the field comes back as it was."""
    header, rest = split_header(message)
    if not _FIELD.search(header):
        return message, []
    kept: list[bytes] = []
    values: list[bytes] = []
    taking = False
    lines = header.split(b"\r\n")
    if not lines[-1]:
        lines.pop()  # the CRLF that ends the last field
    for line in lines:
        if line[:1] in (b" ", b"\t"):  # RFC 5322 §2.2.3: a folded line (never the first)
            if taking:
                values[-1] += line
            else:
                kept.append(line)
            continue
        taking = bool(_FIELD.match(line))
        if taking:
            values.append(line.split(b":", 1)[1])
        else:
            kept.append(line)
    # A header section of that field alone leaves the blank line before the body, so the
    # body's first line is never read as a header field.
    stripped = b"".join(line + b"\r\n" for line in kept)
    text = [" ".join(v.decode("utf-8", "replace").split()) for v in values]
    return stripped + rest, text


def resolve(
    rules: Rules, *, explicit: str | None, header: list[str], trusted: bool, auth_user: str
) -> Choice | Reply:
    """The class of a message, or the reply that refuses it (an unknown class named)."""
    if explicit is not None:
        named = priority.parse(explicit)
        if named is None:
            return replies.PRIORITY_INVALID
        return Choice(named, "explicit")
    if header and trusted and rules.header:
        found = {priority.parse(value) for value in header}
        if None in found or len(found) > 1:
            return replies.PRIORITY_HEADER_INVALID
        (named,) = found
        assert named is not None
        return Choice(named, "header")
    if auth_user and auth_user in rules.transactional_users:
        return Choice(priority.TRANSACTIONAL, "user")
    if auth_user and auth_user in rules.bulk_users:
        return Choice(priority.BULK, "user")
    return Choice(rules.default, "default")
