"""The spool's Lua scripts and the exact KEYS/ARGV each one takes (pure: no I/O here).

Every change that touches several keys is one script (see ``shared/lua/*.lua``, each with
its key schema at the top); the callers in ``ingress`` and ``workers`` only run them.
"""

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from shared.keys import Keys
from shared.priority import BULK, TRANSACTIONAL, Priority

_INCLUDE = "-- include: "


@cache
def script(name: str) -> str:
    """The text of ``shared/lua/<name>.lua``, with the libraries it names in a line
    ``-- include: LIB`` (``shared/lua/lib/LIB.lua``) put in front."""
    lua = resources.files("shared").joinpath("lua")
    text = lua.joinpath(f"{name}.lua").read_text("utf-8")
    libs = [
        lua.joinpath("lib", f"{line.removeprefix(_INCLUDE).strip()}.lua").read_text("utf-8")
        for line in text.splitlines()
        if line.startswith(_INCLUDE)
    ]
    return "\n".join([*libs, text])


@dataclass(frozen=True, slots=True)
class Shaping:
    """A destination's limits as the scripts take them (see :mod:`shared.policies`)."""

    destination: str
    max_connections: int
    rate_limit: float = 0.0  # messages per period; 0: no rate
    rate_period_ms: int = 0
    burst: int = 1
    recovery_ms: int = 0  # adaptive recovery period; 0: not adaptive

    def args(self) -> list[str | int | float]:
        return [
            self.destination, self.max_connections, self.rate_limit, self.rate_period_ms,
            self.burst, self.recovery_ms,
        ]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the ingress learnt in the SMTP dialogue, stored beside the message."""

    sender: str  # "" is the null reverse-path <>
    recipients: dict[str, list[str]]  # destination domain → addresses (see split_by_domain)
    client: str = ""
    helo: str = ""
    auth: str = ""
    proto: str = "ESMTP"
    smtputf8: bool = False
    priority: Priority = BULK  # see shared.priority; picks the jobs' schedule
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def recipient_count(self) -> int:
        return sum(len(rcpts) for rcpts in self.recipients.values())

    def fields(self, size: int) -> list[str | int]:
        pairs: list[str | int] = [
            "from", self.sender,
            "rcpts", self.recipient_count,
            "domains", ",".join(self.recipients),
            "size", size,
            "client", self.client,
            "helo", self.helo,
            "auth", self.auth,
            "proto", self.proto,
            "smtputf8", int(self.smtputf8),
            "priority", self.priority,
        ]  # fmt: skip
        for name, value in self.extra.items():
            pairs += [name, value]
        return pairs


Call = tuple[list[str], list[str | int | float | bytes]]


def accept_call(keys: Keys, msg_id: str, envelope: Envelope, body: bytes) -> Call:
    """KEYS and ARGV of ``accept.lua`` for one message (its jobs go to the schedules of the
    envelope's class; the script reads the class from the ``priority`` field)."""
    names = [keys.msg(msg_id), keys.body(msg_id), keys.due, keys.stats, keys.queue]
    fields = envelope.fields(len(body))
    args: list[str | int | float | bytes] = [msg_id, body, len(fields) // 2, *fields]
    for domain, rcpts in envelope.recipients.items():
        sched = keys.sched(domain, envelope.priority)
        names += [keys.rcpt(msg_id, domain), keys.job(msg_id, domain), sched]
        args += [domain, len(rcpts), *rcpts]
    return names, args


def discard_call(keys: Keys, msg_id: str, domains: list[str], priority: Priority = BULK) -> Call:
    """KEYS and ARGV of ``discard.lua`` for one message of class ``priority``."""
    names = [keys.msg(msg_id), keys.body(msg_id), keys.stats, keys.queue]
    for domain in domains:
        sched = keys.sched(domain, priority)
        names += [keys.rcpt(msg_id, domain), keys.job(msg_id, domain), sched]
    return names, [msg_id]


def dispatch_call(
    keys: Keys, domain: str, token: str, shaping: Shaping, *, lease_ms: int, hold_ms: int,
    batch: int, max_tickets: int,
) -> Call:  # fmt: skip
    """KEYS and ARGV of ``dispatch.lua``."""
    s = shaping
    names = [
        keys.due, keys.conn(s.destination), keys.sched(domain), keys.tickets, keys.paused,
        keys.waiting(s.destination), keys.sched(domain, TRANSACTIONAL),
    ]  # fmt: skip
    return names, [
        domain, token, s.destination, s.max_connections, lease_ms, hold_ms, batch, max_tickets,
        s.rate_limit, s.rate_period_ms, s.burst, s.recovery_ms, keys.prefix,
    ]  # fmt: skip


def claim_call(
    keys: Keys, domain: str, token: str, shaping: Shaping, *, count: int, lease_ms: int,
    mark_ms: int, hand_off: bool = False, max_bytes: int = 0,
) -> Call:  # fmt: skip
    """KEYS and ARGV of ``claim.lua``; ``max_bytes`` caps the bodies claimed (0: no cap)."""
    s = shaping
    names = [
        keys.sched(domain), keys.inflight, keys.conn(s.destination), keys.tickets, keys.paused,
        keys.waiting(s.destination), keys.sched(domain, TRANSACTIONAL),
    ]  # fmt: skip
    return names, [
        token, count, lease_ms, domain, keys.prefix, s.destination, s.max_connections,
        s.rate_limit, s.rate_period_ms, s.burst, s.recovery_ms, mark_ms, int(hand_off),
        max_bytes,
    ]  # fmt: skip


def backoff_call(keys: Keys, destination: str, recovery_ms: int) -> Call:
    """KEYS and ARGV of ``backoff.lua``."""
    return [keys.adapt(destination), keys.adapted], [destination, recovery_ms]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt of one job decided, per recipient."""

    delivered: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)
    bounced: list[str] = field(default_factory=list)
    last_reply: str = ""


def complete_call(
    keys: Keys, msg_id: str, domain: str, token: str, outcome: Outcome, *,
    next_ms: int, events_maxlen: int, event: dict[str, str | int],
) -> Call:  # fmt: skip
    """KEYS and ARGV of ``complete.lua``."""
    names = [
        keys.job(msg_id, domain), keys.rcpt(msg_id, domain), keys.msg(msg_id),
        keys.body(msg_id), keys.sched(domain), keys.inflight, keys.due, keys.events,
        keys.stats, keys.queue, keys.sched(domain, TRANSACTIONAL),
    ]  # fmt: skip
    done = [*outcome.delivered, *outcome.bounced]
    args: list[str | int | float | bytes] = [
        token, msg_id, domain, next_ms if outcome.deferred else 0, outcome.last_reply,
        events_maxlen, len(outcome.delivered), len(outcome.deferred), len(outcome.bounced),
        len(done), *done,
    ]  # fmt: skip
    for name, value in event.items():
        args += [name, value]
    return names, args


def release_call(
    keys: Keys, domain: str, destination: str, token: str, not_before_ms: int = 0,
    hold_ms: int = 5000,
) -> Call:  # fmt: skip
    """KEYS and ARGV of ``release.lua``."""
    names = [
        keys.conn(destination), keys.tickets, keys.sched(domain), keys.due, keys.stats,
        keys.waiting(destination), keys.sched(domain, TRANSACTIONAL),
    ]  # fmt: skip
    return names, [token, domain, not_before_ms, hold_ms, keys.prefix]


def renew_call(keys: Keys, destination: str, token: str, lease_ms: int, members: list[str]) -> Call:
    """KEYS and ARGV of ``renew.lua``; ``members`` are the ``{id}:{dom}`` jobs held."""
    return [keys.conn(destination), keys.tickets, keys.inflight], [token, lease_ms, *members]


def reap_call(keys: Keys, limit: int = 1000) -> Call:
    """KEYS and ARGV of ``reap.lua``."""
    return [keys.inflight, keys.due, keys.stats, keys.tickets], [keys.prefix, limit]


HEARTBEAT_TTL_MS = 15_000  # a process unseen this long is gone (heartbeats every 1-2 s)


def heartbeat_call(keys: Keys, member: str, fields: dict[str, str | int]) -> Call:
    """KEYS and ARGV of ``heartbeat.lua``; ``member`` is ``{role}:{host}:{pid}``."""
    args: list[str | int | float | bytes] = [member, HEARTBEAT_TTL_MS]
    for name, value in fields.items():
        args += [name, value]
    return [keys.nodes, keys.node(member)], args


def drop_call(keys: Keys, msg_id: str, domain: str, why: str, events_maxlen: int) -> Call:
    """KEYS and ARGV of ``drop.lua`` (``why``: deleted, bounced, purged)."""
    names = [
        keys.job(msg_id, domain), keys.rcpt(msg_id, domain), keys.msg(msg_id),
        keys.body(msg_id), keys.sched(domain), keys.inflight, keys.stats, keys.queue,
        keys.events, keys.sched(domain, TRANSACTIONAL),
    ]  # fmt: skip
    return names, [msg_id, domain, why, events_maxlen]


def reschedule_call(keys: Keys, domain: str, msg_ids: list[str] | None = None) -> Call:
    """KEYS and ARGV of ``reschedule.lua`` (no ids: every job of the domain)."""
    names = [keys.sched(domain), keys.due, keys.sched(domain, TRANSACTIONAL)]
    return names, [domain, *(msg_ids or [])]


def unclaim_call(keys: Keys, domain: str, token: str, msg_ids: list[str]) -> Call:
    """KEYS and ARGV of ``unclaim.lua``."""
    names = [keys.sched(domain), keys.inflight, keys.due, keys.sched(domain, TRANSACTIONAL)]
    return names, [token, domain, keys.prefix, *msg_ids]
