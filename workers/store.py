"""The workers' side of the spool: every Redis call of the dispatcher and the tickets.

The only module of ``workers`` that talks to Redis; it runs the Lua scripts of
``shared/lua`` and turns their replies into typed values. Blocking (Celery threads).
"""

import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.keys import Keys
from shared.priority import BULK, TRANSACTIONAL, Priority, from_field
from shared.spool import (
    Envelope,
    Outcome,
    Shaping,
    accept_call,
    backoff_call,
    claim_call,
    complete_call,
    dispatch_call,
    drop_call,
    heartbeat_call,
    reap_call,
    release_call,
    renew_call,
    reschedule_call,
    script,
    unclaim_call,
)

_RELEASE_LEADER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_RENEW_LEADER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""


_SCRIPTS = (
    "accept", "dispatch", "claim", "complete", "release", "renew", "reap", "backoff", "heartbeat",
    "unclaim", "drop", "reschedule",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Job:
    """A job a ticket holds: one message for the ticket's domain."""

    msg_id: str
    domain: str
    sender: str
    smtputf8: bool
    attempts: int
    received_ms: int
    body: bytes
    recipients: list[str]
    priority: Priority = BULK

    @property
    def member(self) -> str:
        return f"{self.msg_id}:{self.domain}"


@dataclass(frozen=True, slots=True)
class Claim:
    """What ``claim.lua`` gave a ticket: jobs (``ok``) or why none (see the script)."""

    now_ms: int
    status: str  # ok | paused | handoff | shrink | rate | yield
    wait_ms: int  # rate, yield: until the destination's rate admits a message
    factor: float  # the destination's adaptive factor (1.0: no backoff)
    jobs: list[Job]


def text(value: object) -> str:
    """A value redis-py returned, as text ("" for nothing)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


class Store:
    def __init__(self, client: "redis.Redis", prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._scripts = {name: client.register_script(script(name)) for name in _SCRIPTS}
        self._leader_renew = client.register_script(_RENEW_LEADER)
        self._leader_release = client.register_script(_RELEASE_LEADER)

    def _run(self, name: str, call: tuple[list[str], list[Any]]) -> Any:
        keys, args = call
        return self._scripts[name](keys=keys, args=args)

    # --- dispatcher ------------------------------------------------------------------------
    def lead(self, me: str, ttl_ms: int) -> bool:
        """Take or keep the leader lock; True while this process leads."""
        return bool(self._leader_renew(keys=[self.keys.leader], args=[me, ttl_ms]))

    def resign(self, me: str) -> None:
        self._leader_release(keys=[self.keys.leader], args=[me])

    def due_domains(self, limit: int) -> list[str]:
        """Domains due now, earliest first (so a served domain goes to the back)."""
        now_s, now_us = self.client.time()
        now_ms = now_s * 1000 + now_us // 1000
        found = self.client.zrangebyscore(self.keys.due, "-inf", now_ms, start=0, num=limit)
        return [text(domain) for domain in found]

    def dispatch(self, domain: str, token: str, shaping: Shaping, **limits: int) -> tuple[str, int]:
        """Whether ``domain`` gets a ticket now (``issued``) and if not, why and until when."""
        call = dispatch_call(self.keys, domain, token, shaping, **limits)
        verdict, when = self._run("dispatch", call)
        return text(verdict), int(when)

    def reap(self, limit: int = 1000) -> int:
        return int(self._run("reap", reap_call(self.keys, limit)))

    # --- tickets ---------------------------------------------------------------------------
    def claim(
        self, domain: str, token: str, shaping: Shaping, *, count: int, lease_ms: int,
        mark_ms: int = 2000, hand_off: bool = False, max_bytes: int = 0,
    ) -> Claim | None:  # fmt: skip
        """Up to ``count`` due jobs under the ticket's lease, as many as the destination's
        rate admits; None when the lease is gone. ``hand_off``: the ticket has had its
        share and ends (status ``handoff``) if another domain waits for the destination."""
        call = claim_call(
            self.keys, domain, token, shaping, count=count, lease_ms=lease_ms,
            mark_ms=mark_ms, hand_off=hand_off, max_bytes=max_bytes,
        )  # fmt: skip
        reply = self._run("claim", call)
        if reply[0] == -1:
            return None
        now_ms, status, wait_ms, permille = reply[:4]
        jobs = [
            Job(
                msg_id=text(msg_id),
                domain=domain,
                sender=text(sender),
                smtputf8=text(smtputf8) == "1",
                attempts=int(attempts),
                received_ms=int(received),
                body=bytes(body),
                recipients=sorted(text(rcpt) for rcpt in rcpts),
                priority=from_field(text(prio)),
            )
            for msg_id, sender, smtputf8, attempts, received, body, rcpts, prio in reply[4:]
        ]
        return Claim(int(now_ms), text(status), int(wait_ms), int(permille) / 1000, jobs)

    def complete(
        self, job: Job, token: str, outcome: Outcome, *, next_ms: int, events_maxlen: int,
        event: dict[str, str | int], retry_for: float = 0.0,
    ) -> bool:  # fmt: skip
        """Record an attempt; False when the lease was lost (the attempt may be repeated).

        The mail has left already: while Redis is away (restarting, failing over) the record
        is tried again for up to ``retry_for`` seconds, since giving up means a duplicate
        once the lease runs out. Trying again is safe: a completion that did run cleared
        the lease, so a second one changes nothing and says False."""
        call = complete_call(
            self.keys, job.msg_id, job.domain, token, outcome,
            next_ms=next_ms, events_maxlen=events_maxlen, event=event,
        )  # fmt: skip
        deadline = time.monotonic() + retry_for
        pause = 0.05
        while True:
            try:
                return bool(self._run("complete", call))
            except (redis.ConnectionError, redis.TimeoutError):
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def renew(self, destination: str, token: str, lease_ms: int, members: list[str]) -> bool:
        call = renew_call(self.keys, destination, token, lease_ms, members)
        return bool(self._run("renew", call))

    def release(self, domain: str, destination: str, token: str, not_before_ms: int = 0) -> None:
        self._run("release", release_call(self.keys, domain, destination, token, not_before_ms))

    def backoff(self, destination: str, recovery_ms: int) -> tuple[bool, float]:
        """Cut the destination's adaptive factor; (whether it was cut now, the factor)."""
        cut, permille = self._run("backoff", backoff_call(self.keys, destination, recovery_ms))
        return bool(cut), int(permille) / 1000

    def accept(self, msg_id: str, envelope: Envelope, body: bytes) -> None:
        """Enqueue a message of our own (a DSN) through the same accept script."""
        self._run("accept", accept_call(self.keys, msg_id, envelope, body))

    def unclaim(self, domain: str, token: str, msg_ids: list[str]) -> int:
        """Give back jobs held but not attempted (due now for another ticket)."""
        return int(self._run("unclaim", unclaim_call(self.keys, domain, token, msg_ids)))

    def drop(self, msg_id: str, domain: str, why: str, events_maxlen: int) -> list[str]:
        """An operator removes one job; the recipients it still had."""
        call = drop_call(self.keys, msg_id, domain, why, events_maxlen)
        return [text(rcpt) for rcpt in self._run("drop", call)]

    def reschedule(self, domain: str, msg_ids: list[str] | None = None) -> int:
        """Jobs of a domain due now (all when no ids); how many moved."""
        return int(self._run("reschedule", reschedule_call(self.keys, domain, msg_ids)))

    def heartbeat(self, member: str, fields: dict[str, str | int]) -> None:
        """Say this process (``{role}:{host}:{pid}``) is alive, for ``mxfleet status``."""
        self._run("heartbeat", heartbeat_call(self.keys, member, fields))

    def now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000


@dataclass(frozen=True, slots=True)
class QueueFigures:
    jobs: int
    inflight: int
    due_domains: int
    oldest_age_s: float
    used_memory: int = 0
    maxmemory: int = 0


def queue_figures(store: Store) -> QueueFigures:
    """The queue gauges (and the spool's memory), read in one round trip."""
    keys = store.keys
    now_ms = store.now_ms()
    pipe = store.client.pipeline(transaction=False)
    pipe.hget(keys.stats, "jobs")
    pipe.zcard(keys.inflight)
    pipe.zcount(keys.due, "-inf", now_ms)
    pipe.zrange(keys.queue, 0, 0, withscores=True)
    pipe.info("memory")
    jobs, inflight, due, oldest, memory = pipe.execute()
    age = (now_ms - oldest[0][1]) / 1000 if oldest else 0.0
    return QueueFigures(
        int(jobs or 0), int(inflight), int(due), max(0.0, age),
        int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0)),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DomainBacklog:
    domain: str
    scheduled: int  # jobs in the domain's schedules (both classes)
    overdue_s: float  # how long its earliest job has been due (0: none due yet)
    transactional: int = 0  # of those, jobs in its transactional schedule


def policy_backlog(store: Store, limit: int = 10_000) -> list[DomainBacklog]:
    """Per domain with work (the due set, at most ``limit``): scheduled jobs and how
    overdue its earliest one is; four commands per domain (two per class), pipelined."""
    keys = store.keys
    now_ms = store.now_ms()
    domains = [text(d) for d in store.client.zrange(keys.due, 0, limit - 1)]
    pipe = store.client.pipeline(transaction=False)
    for domain in domains:
        for cls in (TRANSACTIONAL, BULK):
            pipe.zcard(keys.sched(domain, cls))
            pipe.zrange(keys.sched(domain, cls), 0, 0, withscores=True)
    replies = pipe.execute()
    rows = []
    for index, domain in enumerate(domains):
        urgent, urgent_first, bulk, bulk_first = replies[4 * index : 4 * index + 4]
        firsts = [first[0][1] for first in (urgent_first, bulk_first) if first]
        overdue = max(0.0, (now_ms - min(firsts)) / 1000) if firsts else 0.0
        rows.append(DomainBacklog(domain, int(urgent) + int(bulk), overdue, int(urgent)))
    return rows
