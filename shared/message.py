"""Messages, envelopes and jobs: queue ids, address syntax, grouping recipients by domain.

A *message* is accepted once; it becomes one *job* per destination domain (recipients are
grouped by their lower-cased, IDNA-normalised domain), and each job is delivered on its own.
Everything here is pure.
"""

import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

# RFC 5321 §4.1.2 (Mailbox, Dot-string, Quoted-string) and RFC 6531 §3.3 (UTF-8 allowed
# in both parts when SMTPUTF8 is in effect). atext is RFC 5322 §3.2.3.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010FFFF]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\x80-\U0010FFFF]|\\[\x20-\x7e])*"'
_LABEL = (
    r"[A-Za-z0-9\x80-\U0010FFFF](?:[A-Za-z0-9\-\x80-\U0010FFFF]{0,61}[A-Za-z0-9\x80-\U0010FFFF])?"
)
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_MAILBOX = re.compile(rf"^(?P<local>{_DOT_STRING}|{_QUOTED})@(?P<domain>{_DOMAIN})$")

MAX_LOCAL_PART = 64  # RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255  # RFC 5321 §4.5.3.1.2
MAX_PATH = 256  # RFC 5321 §4.5.3.1.3


class AddressError(ValueError):
    """An address that is not a RFC 5321 Mailbox we can relay to."""


def new_queue_id(now: float | None = None) -> str:
    """A 26-character, time-ordered id: 48 bits of milliseconds then 80 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def queue_id_ms(msg_id: str) -> int | None:
    """When a queue id was made (ms since the epoch), or None if it is not one of ours."""
    if len(msg_id) != 26:
        return None
    value = 0
    for char in msg_id.upper():
        digit = _CROCKFORD.find(char)
        if digit < 0:
            return None
        value = value << 5 | digit
    return value >> 80


def normalise_domain(domain: str) -> str:
    """Lower-case A-label form of a domain (IDNA), used as the job's destination key."""
    domain = domain.rstrip(".")
    if domain.isascii():
        return domain.lower()
    try:
        return domain.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise AddressError(f"domain {domain!r} is not a valid IDN") from exc


@dataclass(frozen=True, slots=True)
class Mailbox:
    """A parsed forward-path or reverse-path mailbox: ``local@domain``."""

    local: str
    domain: str

    @property
    def address(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def destination(self) -> str:
        return normalise_domain(self.domain)

    @property
    def needs_smtputf8(self) -> bool:
        return not self.address.isascii()


def parse_mailbox(text: str, *, utf8: bool) -> Mailbox:
    """Parse ``local@domain`` (no angle brackets); AddressError explains a refusal.

    Source routes, address literals and bare local parts are refused: a relay has no use
    for them and each one has served to confuse relay checks.
    """
    if len(text.encode()) > MAX_PATH:
        raise AddressError("address too long")
    if not utf8 and not text.isascii():
        raise AddressError("non-ASCII address without SMTPUTF8")
    match = _MAILBOX.match(text)
    if match is None:
        raise AddressError("not a valid mailbox")
    local, domain = match.group("local"), match.group("domain")
    if len(local.encode()) > MAX_LOCAL_PART:
        raise AddressError("local part too long")
    if len(domain.encode()) > MAX_DOMAIN or "." not in domain:
        raise AddressError("domain not fully qualified")
    normalise_domain(domain)  # refuse IDNs that cannot be encoded
    return Mailbox(local, domain)


def split_by_domain(recipients: Iterable[Mailbox]) -> dict[str, list[str]]:
    """Recipients grouped by destination domain, in first-seen order, duplicates dropped."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for rcpt in recipients:
        address = rcpt.address
        key = f"{rcpt.local}@{rcpt.destination}"
        if key in seen:
            continue
        seen.add(key)
        groups.setdefault(rcpt.destination, []).append(address)
    return groups
