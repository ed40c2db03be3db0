"""The suppression list in Redis, for the workers and ``mxfleet suppress`` (blocking): add
entries (``suppress.lua``), remove them, list them from the index, and learn from a hard
bounce. The ingress only reads the list (:mod:`ingress.suppression`).

Layout and address forms: :mod:`shared.suppression`; which bounces count:
:mod:`workers.hard_bounce`.
"""

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import redis

from shared import log, metrics
from shared.keys import Keys
from shared.message import AddressError, Mailbox
from shared.replies import Reply
from shared.settings import Settings
from shared.spool import script
from shared.suppression import (
    GLOBAL,
    Entry,
    add_call,
    lookup_form,
    member,
    parse_address,
    sender_scope,
)
from workers.hard_bounce import hard_bounces
from workers.store import text

logger = logging.getLogger("mxfleet.worker")

_PAGE = 1000  # index members read or entries written per round trip


def _glob_escape(value: str) -> str:
    """``value`` as a literal in a Redis MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in value)


def _split(member: str) -> tuple[str, str]:
    scope, _, address = member.partition(":")
    return scope, address


class SuppressionList:
    """The list's entries in one Redis (``client``), under ``keys``' prefix."""

    def __init__(self, client: "redis.Redis", keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._add = client.register_script(script("suppress"))

    def now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def add(
        self, scope: str, entries: Sequence[tuple[Mailbox, str]], *, ttl_ms: int, source: str,
        replace: bool,
    ) -> tuple[int, int]:  # fmt: skip
        """Add ``entries`` (mailbox, reason; an address given twice counts once) in
        ``scope``, :data:`_PAGE` per script call; (entries written, entries new)."""
        unique: dict[str, tuple[Mailbox, str]] = {}
        for mailbox, reason in entries:
            unique.setdefault(lookup_form(mailbox), (mailbox, reason))
        pending = list(unique.values())
        written = fresh = 0
        for start in range(0, len(pending), _PAGE):
            page = pending[start : start + _PAGE]
            keys, args = add_call(
                self.keys, scope, page, ttl_ms=ttl_ms, source=source, replace=replace
            )
            reply: Any = self._add(keys=keys, args=args)
            written, fresh = written + int(reply[0]), fresh + int(reply[1])
        if written:
            metrics.SUPPRESSION_ADDED.labels(source).inc(written)
        return written, fresh

    def remove(self, scope: str, mailbox: Mailbox) -> bool:
        """Remove one entry and its index member; False when there was none."""
        address = lookup_form(mailbox)
        with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.keys.supp(scope, address))
            pipe.zrem(self.keys.suppressed, member(scope, address))
            deleted, _ = pipe.execute()
        return bool(deleted)

    def is_listed(self, scope: str, mailbox: Mailbox) -> bool:
        return bool(self.client.exists(self.keys.supp(scope, lookup_form(mailbox))))

    def entries(self, scope: str | None = None, limit: int = 0) -> tuple[list[Entry], int]:
        """Entries soonest to expire first (those that never expire last), at most
        ``limit`` (0: all), of one scope or all; and how many the index holds for it.

        Expired index members are trimmed first (as every add does)."""
        index = self.keys.suppressed
        self.client.zremrangebyscore(index, "-inf", self.now_ms())
        members: list[tuple[str, float]]
        if scope is None:
            total = int(self.client.zcard(index))
            found: Any = self.client.zrange(
                index, 0, limit - 1 if limit > 0 else -1, withscores=True
            )
            members = [(text(name), float(score)) for name, score in found]
        else:
            pattern = _glob_escape(scope) + ":*"
            scanned: Any = self.client.zscan_iter(index, match=pattern, count=_PAGE)
            members = sorted(((text(name), float(score)) for name, score in scanned),
                             key=lambda pair: (pair[1], pair[0]))  # fmt: skip
            total = len(members)
            members = members[:limit] if limit > 0 else members
        return self._load(members), total

    def _load(self, members: list[tuple[str, float]]) -> list[Entry]:
        """The entries of index members (name, expiry), in order; MGET in pages. One whose
        key expired since is skipped."""
        found: list[Entry] = []
        for start in range(0, len(members), _PAGE):
            page = members[start : start + _PAGE]
            names = [self.keys.supp(*_split(name)) for name, _ in page]
            values: list[Any] = self.client.mget(names)
            for (name, expires), value in zip(page, values, strict=True):
                if value is not None:
                    found.append(Entry.parse(name, text(value), expires))
        return found

    def added_counts(self) -> dict[str, int]:
        """Entries written since the spool began, by source (cluster-wide, ``{p}stats``)."""
        raw: Any = self.client.hmget(self.keys.stats, "suppressed_bounce", "suppressed_operator")
        return {"bounce": int(raw[0] or 0), "operator": int(raw[1] or 0)}


def bounce_scope(settings: Settings, sender: str) -> str | None:
    """Where a hard bounce of mail from ``sender`` suppresses the recipient: the sender's
    domain, or global (``suppression_scope``). None: nowhere (the null sender has no
    domain to scope to, so a bounced DSN suppresses nothing unless the scope is global)."""
    if settings.suppression_scope == "global":
        return GLOBAL
    return sender_scope(sender)


def learn(
    client: "redis.Redis", settings: Settings, sender: str, hard: Mapping[str, Reply]
) -> list[str]:
    """Suppress the recipients of ``hard`` (recipient → its hard bounce) for mail from
    ``sender``; the addresses written. A Redis failure is logged and suppresses nothing:
    the attempt is recorded already, and the next hard bounce tries again."""
    scope = bounce_scope(settings, sender)
    if settings.suppression == "off" or scope is None or not hard:
        return []
    entries: list[tuple[Mailbox, str]] = []
    for rcpt, reply in hard.items():
        try:
            entries.append((parse_address(rcpt), str(reply)))
        except AddressError:
            continue  # the ingress took only valid addresses; this is a guard
    ttl_ms = int(settings.suppression_ttl * 1000)
    suppressions = SuppressionList(client, Keys(settings.redis_key_prefix))
    try:
        suppressions.add(scope, entries, ttl_ms=ttl_ms, source="bounce", replace=False)
    except redis.RedisError as exc:
        log.event(logger, "suppress_failed", logging.WARNING, scope=scope, error=exc)
        return []
    added = [mailbox.address for mailbox, _ in entries]
    log.event(logger, "suppressed", scope=scope, rcpts=",".join(added), source="bounce")
    return added


def to_learn(
    settings: Settings, sender: str, replies: Mapping[str, Reply], bounced: list[str]
) -> dict[str, Reply]:
    """The ``bounced`` recipients that :func:`learn` will suppress: hard bounces, when the
    list is on and the mail has a scope (see :func:`bounce_scope`)."""
    if settings.suppression == "off" or bounce_scope(settings, sender) is None:
        return {}
    return hard_bounces(replies, bounced)
