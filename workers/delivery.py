"""One ticket: claim a domain's due jobs, deliver them over one connection, record each.

claim a batch (lease) → MX route → SMTP (one reused connection; the batch's transactions
pipelined back to back, RFC 2920 §3.1) → verdicts per job → DSN for bounces → complete
(refused if the lease was lost) → next batch, until the time budget is spent or the domain
has nothing due → release the connection slot.
"""

import logging
import time
from collections.abc import Iterator

from shared import log, metrics, retry
from shared.errors import PermanentFailure, TemporaryFailure
from shared.replies import Reply
from workers.bounce_queue import enqueue_dsn
from workers.connector import Connector
from workers.context import Context
from workers.lease import LeaseKeeper
from workers.outcome import decide, verdict_name
from workers.smtp_transaction import Outgoing
from workers.store import Job

logger = logging.getLogger("mxfleet.worker")


def run_ticket(ctx: Context, domain: str, token: str) -> str:
    """Deliver for ``domain`` under lease ``token``; 'stale' when the lease is not ours."""
    s = ctx.settings
    lease_ms = int(s.lease_time * 1000)
    jobs = ctx.store.claim(domain, token, s.batch_size, lease_ms)
    if jobs is None:
        metrics.DELIVERY_TICKETS.labels("stale").inc()
        log.event(logger, "stale_ticket", domain=domain, token=token)
        return "stale"
    deadline = time.monotonic() + s.ticket_budget
    keeper = LeaseKeeper(ctx.store, domain, token, lease_ms)
    route: Connector | Reply | None = None
    try:
        while jobs:
            keeper.hold(jobs)
            route = route or _route(ctx, domain)
            _deliver_batch(ctx, route, jobs, token, keeper)
            if keeper.lost or time.monotonic() > deadline:
                break
            jobs = ctx.store.claim(domain, token, s.batch_size, lease_ms)
    except Exception:
        metrics.DELIVERY_TICKETS.labels("failed").inc()
        raise
    finally:
        keeper.stop()
        if isinstance(route, Connector):
            route.close()
        ctx.store.release(domain, token)
    metrics.DELIVERY_TICKETS.labels("done").inc()
    return "done"


def _route(ctx: Context, domain: str) -> Connector | Reply:
    """A connector to the domain's MX hosts, or the reply that stops every job (DNS)."""
    try:
        return Connector(ctx.resolver.route(domain), ctx.settings)
    except (PermanentFailure, TemporaryFailure) as exc:
        log.event(logger, "route_failed", domain=domain, reply=exc.reply)
        return exc.reply


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _deliver_batch(
    ctx: Context, route: Connector | Reply, jobs: list[Job], token: str, keeper: LeaseKeeper
) -> None:
    """Send a batch over the connection, recording each job the moment its last
    transaction is answered (the duplicate window stays one message wide)."""
    started = time.monotonic()
    if isinstance(route, Reply):
        for job in jobs:
            record(ctx, job, token, dict.fromkeys(job.recipients, route), None, 0.0)
            keeper.drop(job)
        return
    size = ctx.settings.max_recipients_per_transaction
    items: list[Outgoing] = []
    owners: list[int] = []
    for index, job in enumerate(jobs):
        for chunk in _chunks(job.recipients, size):
            items.append(Outgoing(job.sender, chunk, job.body, smtputf8=job.smtputf8))
            owners.append(index)
    replies: list[dict[str, Reply]] = [{} for _ in jobs]
    left = [owners.count(index) for index in range(len(jobs))]

    def done(item: int, result: dict[str, Reply]) -> None:
        nonlocal started
        owner = owners[item]
        replies[owner].update(result)
        left[owner] -= 1
        if left[owner] == 0:
            now = time.monotonic()
            record(ctx, jobs[owner], token, replies[owner], route.host, now - started)
            keeper.drop(jobs[owner])
            started = now

    route.send_many(items, done)


def record(
    ctx: Context, job: Job, token: str, replies: dict[str, Reply], mx: str | None,
    elapsed: float,
) -> None:  # fmt: skip
    """Decide one job's attempt from its replies, bounce what failed, record it all."""
    s = ctx.settings
    now_ms = int(time.time() * 1000)
    outcome = decide(replies, expired=retry.expired(job.received_ms, now_ms, s.max_age))
    if outcome.bounced:
        enqueue_dsn(ctx, job, {rcpt: replies[rcpt] for rcpt in outcome.bounced}, mx)
    delay = retry.backoff(job.attempts + 1, s.retry_base, s.retry_cap)
    event: dict[str, str | int] = {
        "id": job.msg_id,
        "domain": job.domain,
        "rcpts": ",".join(job.recipients),
        "verdict": verdict_name(outcome),
        "reply": outcome.last_reply,
        "mx": mx or "",
        "duration_ms": int(elapsed * 1000),
    }
    recorded = ctx.store.complete(
        job, token, outcome, next_ms=now_ms + int(delay * 1000),
        events_maxlen=s.events_maxlen, event=event,
    )  # fmt: skip
    _observe(job, outcome.delivered, outcome.deferred, outcome.bounced, elapsed, now_ms)
    if not recorded:
        metrics.DELIVERY_LEASE_LOST.inc()
    log.record(logger, "attempt", {**event, "attempt": job.attempts + 1, "recorded": recorded})


def _observe(
    job: Job, delivered: list[str], deferred: list[str], bounced: list[str], elapsed: float,
    now_ms: int,
) -> None:  # fmt: skip
    for verdict, rcpts in (("delivered", delivered), ("deferred", deferred), ("bounced", bounced)):
        if rcpts:
            metrics.DELIVERY_RECIPIENTS.labels(verdict).inc(len(rcpts))
    metrics.DELIVERY_TRANSACTION_SECONDS.observe(elapsed)
    if delivered:
        latency = max(0.0, (now_ms - job.received_ms) / 1000)
        for _ in delivered:
            metrics.DELIVERY_LATENCY_SECONDS.observe(latency)
