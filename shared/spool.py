"""The spool's Lua scripts and the exact KEYS/ARGV each one takes (pure: no I/O here).

Every change that touches several keys is one script (see ``shared/lua/*.lua``, each with
its key schema at the top); the callers in ``ingress`` and ``workers`` only run them.
"""

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from shared.keys import Keys


@cache
def script(name: str) -> str:
    """The text of ``shared/lua/<name>.lua``."""
    return resources.files("shared").joinpath("lua", f"{name}.lua").read_text("utf-8")


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
        ]  # fmt: skip
        for name, value in self.extra.items():
            pairs += [name, value]
        return pairs


Call = tuple[list[str], list[str | int | bytes]]


def accept_call(keys: Keys, msg_id: str, envelope: Envelope, body: bytes) -> Call:
    """KEYS and ARGV of ``accept.lua`` for one message."""
    names = [keys.msg(msg_id), keys.body(msg_id), keys.due, keys.stats, keys.queue]
    fields = envelope.fields(len(body))
    args: list[str | int | bytes] = [msg_id, body, len(fields) // 2, *fields]
    for domain, rcpts in envelope.recipients.items():
        names += [keys.rcpt(msg_id, domain), keys.job(msg_id, domain), keys.sched(domain)]
        args += [domain, len(rcpts), *rcpts]
    return names, args


def discard_call(keys: Keys, msg_id: str, domains: list[str]) -> Call:
    """KEYS and ARGV of ``discard.lua`` for one message."""
    names = [keys.msg(msg_id), keys.body(msg_id), keys.stats, keys.queue]
    for domain in domains:
        names += [keys.rcpt(msg_id, domain), keys.job(msg_id, domain), keys.sched(domain)]
    return names, [msg_id]


def dispatch_call(
    keys: Keys, domain: str, token: str, *, max_conn: int, lease_ms: int, hold_ms: int,
    batch: int, max_tickets: int,
) -> Call:  # fmt: skip
    """KEYS and ARGV of ``dispatch.lua``."""
    names = [keys.due, keys.conn(domain), keys.sched(domain), keys.tickets]
    return names, [domain, token, max_conn, lease_ms, hold_ms, batch, max_tickets]


def claim_call(keys: Keys, domain: str, token: str, count: int, lease_ms: int) -> Call:
    """KEYS and ARGV of ``claim.lua``."""
    names = [keys.sched(domain), keys.inflight, keys.conn(domain), keys.tickets]
    return names, [token, count, lease_ms, domain, keys.prefix]


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
        keys.stats, keys.queue,
    ]  # fmt: skip
    done = [*outcome.delivered, *outcome.bounced]
    args: list[str | int | bytes] = [
        token, msg_id, domain, next_ms if outcome.deferred else 0, outcome.last_reply,
        events_maxlen, len(outcome.delivered), len(outcome.deferred), len(outcome.bounced),
        len(done), *done,
    ]  # fmt: skip
    for name, value in event.items():
        args += [name, value]
    return names, args


def release_call(keys: Keys, domain: str, token: str) -> Call:
    """KEYS and ARGV of ``release.lua``."""
    return [keys.conn(domain), keys.tickets, keys.sched(domain), keys.due], [token, domain]


def renew_call(keys: Keys, domain: str, token: str, lease_ms: int, members: list[str]) -> Call:
    """KEYS and ARGV of ``renew.lua``; ``members`` are the ``{id}:{dom}`` jobs held."""
    return [keys.conn(domain), keys.tickets, keys.inflight], [token, lease_ms, *members]


def reap_call(keys: Keys, limit: int = 1000) -> Call:
    """KEYS and ARGV of ``reap.lua``."""
    return [keys.inflight, keys.due, keys.stats], [keys.prefix, limit]
