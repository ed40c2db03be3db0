"""What ``mxfleet queue`` reads and changes in the spool: the destinations with work, one
message in full, and the operator's actions (pause, resume, flush, retry, bounce, delete,
purge). Redis only; printing is :mod:`workers.queue_cli`'s.

A *destination* argument is a domain (``example.com``), a policy (``google`` or
``policy:google``) or a site (``mx1.example.com,mx2.example.com``); its domains are those
with work that the dispatcher last mapped to it (``mxf:dest``).
"""

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from shared.message import queue_id_ms
from shared.policies import DESTINATION_PREFIX, Policies
from shared.priority import BULK, from_field
from workers import shaping
from workers.store import Store, text

OLDEST_SCAN = 10_000  # jobs per domain looked at for the oldest message


class UnknownTarget(LookupError):
    """No such message or destination (the CLI exits with 2)."""


@dataclass(frozen=True, slots=True)
class DomainRow:
    domain: str
    destination: str  # "" when the dispatcher has not mapped it yet
    policy: str
    scheduled: int
    due: int  # scheduled and due now
    inflight: int
    oldest_s: float  # age of its oldest message
    next_due_s: float  # seconds until its next job is due (negative: overdue)
    paused: bool
    factor: float  # adaptive backoff factor of its destination (1: none)
    rate: float  # messages per second its policy allows now (0: no rate)
    connections: int  # open connection slots of its destination
    transactional: int = 0  # of the scheduled jobs, those of the transactional class


def destinations_map(store: Store) -> dict[str, tuple[str, str]]:
    """domain → (destination, policy), as the dispatcher last resolved them."""
    found = {}
    for domain, value in store.client.hgetall(store.keys.dest).items():
        destination, _, policy = text(value).partition(" ")
        found[text(domain)] = (destination, policy)
    return found


def list_domains(store: Store, policies: Policies) -> list[DomainRow]:
    """Every domain with work (scheduled or in flight), with its destination's state."""
    keys, client = store.keys, store.client
    now_ms = store.now_ms()
    domains = [text(d) for d in client.zrange(keys.due, 0, -1)]
    inflight = Counter(text(m).split(":", 1)[1] for m in client.zrange(keys.inflight, 0, -1))
    mapped = destinations_map(store)
    paused = set(shaping.paused(store))
    factors = {b.destination: b.factor for b in shaping.backoffs(store, policies)}
    pipe = client.pipeline(transaction=False)
    for domain in domains:
        destination = mapped.get(domain, ("", ""))[0]
        for sched in keys.schedules(domain):  # transactional, bulk
            pipe.zcard(sched)
            pipe.zcount(sched, "-inf", now_ms)
            pipe.zrange(sched, 0, 0, withscores=True)
            pipe.zrange(sched, 0, OLDEST_SCAN - 1)
        pipe.zcount(keys.conn(destination or domain), now_ms, "+inf")
    replies = pipe.execute()
    rows = []
    for index, domain in enumerate(domains):
        urgent, urgent_due, urgent_first, urgent_ids = replies[9 * index : 9 * index + 4]
        count, due, first, ids, conns = replies[9 * index + 4 : 9 * index + 9]
        count, due, ids = count + urgent, due + urgent_due, [*urgent_ids, *ids]
        first = min([*first, *urgent_first], key=lambda entry: entry[1], default=None)
        if not count and not inflight.get(domain):
            continue  # served, waiting for the dispatcher to notice it is empty
        destination, policy_name = mapped.get(domain, ("", ""))
        if not policy_name:
            by_domain = policies.by_domain(domain)
            policy_name = by_domain[0].name if by_domain else policies.default.name
        policy = policies.get(policy_name)
        factor = factors.get(destination, 1.0)
        born = [ms for ms in (queue_id_ms(text(i)) for i in ids) if ms is not None]
        rows.append(
            DomainRow(
                domain=domain, destination=destination, policy=policy.name,
                scheduled=int(count), due=int(due), inflight=inflight.get(domain, 0),
                oldest_s=(now_ms - min(born)) / 1000 if born else 0.0,
                next_due_s=(first[1] - now_ms) / 1000 if first else 0.0,
                paused=domain in paused or destination in paused, factor=factor,
                rate=policy.rate.per_second * factor if policy.rate else 0.0,
                connections=int(conns), transactional=int(urgent),
            )
        )  # fmt: skip
    return rows


@dataclass(frozen=True, slots=True)
class JobView:
    domain: str
    state: str  # scheduled | in flight | finished
    attempts: int
    not_before_ms: int
    last_reply: str
    pending: list[str]
    priority: str = BULK  # the schedule it waits in (its class)


@dataclass(frozen=True, slots=True)
class MessageView:
    msg_id: str
    envelope: dict[str, str]
    jobs: list[JobView]
    events: list[dict[str, str]] = field(default_factory=list)


def show(store: Store, msg_id: str, events_scan: int = 10_000) -> MessageView:
    """One message: its envelope, each domain's job, and its recent events."""
    keys, client = store.keys, store.client
    raw = client.hgetall(keys.msg(msg_id))
    if not raw:
        raise UnknownTarget(f"no message {msg_id} in the queue")
    envelope = {text(k): text(v) for k, v in raw.items()}
    inflight = {text(m) for m in client.zrange(keys.inflight, 0, -1)}
    jobs = []
    for domain in envelope.get("domains", "").split(","):
        job = {text(k): text(v) for k, v in client.hgetall(keys.job(msg_id, domain)).items()}
        pending = sorted(text(r) for r in client.smembers(keys.rcpt(msg_id, domain)))
        state = "finished"
        if job:
            state = "in flight" if f"{msg_id}:{domain}" in inflight else "scheduled"
        jobs.append(
            JobView(
                domain, state, int(job.get("attempts", 0)), int(job.get("not_before_ms", 0)),
                job.get("last_reply", ""), pending, from_field(job.get("prio", "")),
            )
        )  # fmt: skip
    entries: list[tuple[Any, dict[Any, Any]]] = list(
        client.xrevrange(keys.events, count=events_scan) or []  # type: ignore[arg-type]  # redis-py's union
    )
    events = [
        {text(k): text(v) for k, v in entry.items()} | {"event_id": text(event_id)}
        for event_id, entry in entries
        if entry.get(b"id") == msg_id.encode()
    ]
    return MessageView(msg_id, envelope, jobs, list(reversed(events)))


def resolve_destination(store: Store, policies: Policies, name: str) -> tuple[str, list[str]]:
    """(the destination as stored, its domains with work) for what an operator typed."""
    mapped = destinations_map(store)
    with_work = {text(d) for d in store.client.zrange(store.keys.due, 0, -1)}
    name = name.lower().rstrip(".")
    if name in policies.named or name.removeprefix(DESTINATION_PREFIX) in policies.named:
        destination = DESTINATION_PREFIX + name.removeprefix(DESTINATION_PREFIX)
    else:
        destination = name
    domains = sorted(d for d, (dest, _) in mapped.items() if dest == destination)
    if destination in with_work and destination not in domains:
        domains.append(destination)  # a domain named directly
    known = domains or destination in with_work or destination.startswith(DESTINATION_PREFIX)
    if not known and not store.client.sismember(store.keys.paused, destination):
        raise UnknownTarget(f"no destination or domain {name!r} with mail in the queue")
    return destination, domains


def flush(store: Store, domains: list[str]) -> int:
    """Make every job of these domains due now; returns how many moved."""
    return sum(store.reschedule(domain) for domain in domains)


def retry(store: Store, msg_id: str) -> int:
    """Make every job of one message due now; returns how many moved."""
    view = show(store, msg_id)
    return sum(
        store.reschedule(job.domain, [msg_id]) for job in view.jobs if job.state == "scheduled"
    )


def drop(store: Store, msg_id: str, domain: str, why: str, events_maxlen: int) -> list[str]:
    """Remove one job; returns the recipients it still had."""
    return store.drop(msg_id, domain, why, events_maxlen)


def purge(store: Store, domains: list[str], events_maxlen: int) -> int:
    """Remove every job of these domains (scheduled or in flight); returns how many."""
    keys, client = store.keys, store.client
    dropped = 0
    for domain in domains:
        ids = {text(i) for sched in keys.schedules(domain) for i in client.zrange(sched, 0, -1)}
        ids |= {
            text(m).rsplit(":", 1)[0]
            for m in client.zrange(keys.inflight, 0, -1)
            if text(m).endswith(":" + domain)
        }
        for msg_id in sorted(ids):
            if drop(store, msg_id, domain, "purged", events_maxlen):
                dropped += 1
    return dropped


def age(seconds: float) -> str:
    """``3d4h``, ``12m5s``, ``40s``: a duration for tables."""
    seconds = int(abs(seconds))
    for unit, size, sub, sub_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60),
                                      ("m", 60, "s", 1)):  # fmt: skip
        if seconds >= size:
            rest = (seconds % size) // sub_size
            return f"{seconds // size}{unit}{rest}{sub}" if rest else f"{seconds // size}{unit}"
    return f"{seconds}s"


def now_iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
