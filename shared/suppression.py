"""The suppression list's vocabulary (pure): addresses as the list compares them, scopes,
entries, and the KEYS/ARGV of ``shared/lua/suppress.lua``.

An entry says "do not relay to this recipient" for one *scope*: a sender domain (mail whose
envelope sender is in that domain) or :data:`GLOBAL` (every sender). Entries come from hard
bounces (source ``bounce``, see :mod:`workers.hard_bounce`) or from an operator (source
``operator``). Each is one Redis string with its own expiry (``{p}supp:{scope}:{address}``),
so the ingress asks about a recipient with one ``EXISTS`` of two keys; an index sorted by
expiry (``{p}suppressed``) lets ``mxfleet suppress ls`` list them without scanning the
keyspace (see :mod:`shared.keys`). A string rather than a hash: ~450 bytes of Redis memory
per entry with its index member, against ~910 (measured, 50,000 bounce entries).

Addresses are compared as most MTAs compare them for suppression: the domain as its
lower-case IDNA A-label (as jobs are grouped, :func:`shared.message.normalise_domain`), the
local part case-insensitively (RFC 5321 §2.4 lets a receiver treat it case-sensitively, but
hardly any does, and a list that missed ``Bob@`` after ``bob@`` bounced would not protect
the sender's reputation). A quoted local part that needs no quotes (``"bob"``) is the same
mailbox as the unquoted one (RFC 5321 §4.1.2). Sub-addresses (``bob+tag``) are not folded:
whether ``+`` means anything is the destination's business. An entry keeps the address as
it was first given (local part case included), for people.
"""

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.keys import Keys
from shared.message import AddressError, Mailbox, normalise_domain, parse_mailbox

GLOBAL = "*"  # the scope of entries that hold for every sender
SOURCES = ("bounce", "operator")
MAX_REASON = 256  # characters of a bounce reply kept as the entry's reason
OPERATOR_REASON = "operator"

_UNQUOTED = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010FFFF]+"
                       r"(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\x80-\U0010FFFF]+)*$")  # fmt: skip


def _plain_local(local: str) -> str:
    """``"bob"`` → ``bob`` when the quotes add nothing (RFC 5321 §4.1.2 Dot-string)."""
    if len(local) > 2 and local[0] == local[-1] == '"' and _UNQUOTED.match(local[1:-1]):
        return local[1:-1]
    return local


def lookup_form(mailbox: Mailbox) -> str:
    """The address as the list compares it: local part lower-cased, domain A-label."""
    return f"{_plain_local(mailbox.local).lower()}@{normalise_domain(mailbox.domain)}"


def display_form(mailbox: Mailbox) -> str:
    """The address as an entry shows it: local part as given, domain A-label."""
    return f"{_plain_local(mailbox.local)}@{normalise_domain(mailbox.domain)}"


def parse_address(text: str) -> Mailbox:
    """An address an operator or a file gave (``<...>`` allowed); AddressError if bad."""
    text = text.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    return parse_mailbox(text, utf8=True)


def parse_scope(domain: str | None) -> str:
    """The scope of a sender domain (``None`` or ``*``: global); AddressError if bad."""
    if domain is None or domain.strip() == GLOBAL:
        return GLOBAL
    return normalise_domain(parse_mailbox(f"postmaster@{domain.strip()}", utf8=True).domain)


def sender_scope(sender: str) -> str | None:
    """The scope of mail from envelope sender ``sender``; None for ``<>`` or a sender whose
    domain cannot be read (such mail is checked against the global entries only)."""
    _, at, domain = sender.rpartition("@")
    if not at or not domain:
        return None
    try:
        return normalise_domain(domain)
    except AddressError:
        return None


def lookup_keys(keys: Keys, sender: str, rcpt: Mailbox) -> list[str]:
    """The entries that would suppress ``rcpt`` for mail from ``sender``: global, and the
    sender domain's (when the sender has one)."""
    address = lookup_form(rcpt)
    scopes = [GLOBAL]
    if (scope := sender_scope(sender)) is not None:
        scopes.append(scope)
    return [keys.supp(scope, address) for scope in scopes]


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry as ``mxfleet suppress ls`` shows it."""

    address: str  # as first given
    scope: str  # a sender domain, or GLOBAL
    reason: str  # the bounce reply, or "operator"
    source: str  # bounce | operator
    added_ms: int
    expires_ms: int  # 0: never

    @classmethod
    def parse(cls, member: str, value: str, expires: float) -> "Entry":
        """An entry from its index member (``{scope}:{address}``) and score (its expiry,
        ``inf``: never) and its value (``source TAB added_ms TAB address TAB reason``, the
        address empty when it is the lookup form; ``suppress.lua`` writes it)."""
        scope, _, address = member.partition(":")
        source, added, given, reason = [*value.split("\t", 3), "", "", "", ""][:4]
        return cls(
            address=given or address,
            scope=scope,
            reason=reason,
            source=source,
            added_ms=int(added) if added.isdigit() else 0,
            expires_ms=0 if math.isinf(expires) else int(expires),
        )


def member(scope: str, address: str) -> str:
    """An entry's member in the index: ``{scope}:{address}`` (a scope holds no colon)."""
    return f"{scope}:{address}"


Call = tuple[list[str], list[str | int | float | bytes]]


def add_call(
    keys: Keys, scope: str, entries: Sequence[tuple[Mailbox, str]], *, ttl_ms: int,
    source: str, replace: bool,
) -> Call:  # fmt: skip
    """KEYS and ARGV of ``suppress.lua`` for ``entries`` (mailbox, reason), a mailbox given
    twice kept once.

    ``ttl_ms`` 0: the entries never expire. ``replace``: an operator's add replaces what is
    there; a bounce only renews (it never shortens an entry, nor replaces one that never
    expires)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    if ttl_ms < 0:
        raise ValueError("ttl_ms must be 0 (never) or positive")
    names = [keys.suppressed, keys.stats]
    args: list[str | int | float | bytes] = [ttl_ms, source, int(replace)]
    seen: set[str] = set()
    for mailbox, reason in entries:
        address = lookup_form(mailbox)
        if address in seen:
            continue
        seen.add(address)
        names.append(keys.supp(scope, address))
        display = display_form(mailbox)
        given = "" if display == address else display  # most are: keep the bytes
        args += [member(scope, address), given, " ".join(reason[:MAX_REASON].split())]
    return names, args
