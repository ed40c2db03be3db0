"""One ticket: claim a domain's due jobs, deliver them over one connection, record each.

claim a batch (lease; as many as the destination's rate admits) → route (MX hosts or the
policy's smarthost) → SMTP (one reused connection; the batch's transactions pipelined back
to back, RFC 2920 §3.1) → verdicts per job → DSN for bounces → complete (refused if the
lease was lost) → next batch, until the time budget is spent, the domain has nothing due,
or the destination's limits say stop → release the connection slot.

A ticket that has had ``FAIR_SHARE`` seconds hands its slot over when another domain of
its destination waits for one (round robin among the domains of a site or policy).
Shaping never parks a ticket: when the rate admits nothing, the ticket waits only if the
wait is short (``MAX_PAUSE``) and it is the destination's first ticket; otherwise it ends
and its domain is due again when the rate will admit a message. A 421 or a 4.7.x "too
fast" from the remote cuts the destination's limits (:mod:`workers.shaping`).
"""

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from shared import log, metrics, retry
from shared.errors import PermanentFailure, TemporaryFailure
from shared.policies import Policy
from shared.replies import Reply
from shared.spool import Shaping
from workers import shaping, suppress_ops
from workers.bounce_queue import enqueue_dsn
from workers.connector import Connector
from workers.context import Context
from workers.lease import LeaseKeeper
from workers.outcome import decide, verdict_name
from workers.smtp_transaction import Outgoing
from workers.store import Claim, Job

logger = logging.getLogger("mxfleet.worker")

MAX_PAUSE_MS = 1000  # the longest a ticket waits on its destination's rate
THROTTLE_MARK_MS = 2000  # "a ticket waits on this rate" stays visible to the dispatcher
FAIR_SHARE = 5.0  # seconds a ticket keeps its slot while another domain of its destination waits


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a ticket works for: a domain, under a lease, within a destination's limits."""

    domain: str
    token: str
    destination: str
    policy: Policy
    shaping: Shaping


def run_ticket(
    ctx: Context, domain: str, token: str, destination: str = "", policy_name: str = ""
) -> str:
    """Deliver for ``domain`` under lease ``token``; 'stale' when the lease is not ours."""
    destination = destination or domain
    policy = ctx.settings.policies.get(policy_name or "default")
    ticket = Ticket(domain, token, destination, policy, shaping.shaping_of(destination, policy))
    lease_ms = int(ctx.settings.lease_time * 1000)
    claim = _claim(ctx, ticket, lease_ms)
    if claim is None:
        metrics.DELIVERY_TICKETS.labels("stale").inc()
        log.event(logger, "stale_ticket", domain=domain, token=token)
        return "stale"
    started = time.monotonic()
    deadline = started + ctx.settings.ticket_budget
    keeper = LeaseKeeper(ctx.store, destination, token, lease_ms)
    route: Connector | Reply | None = None
    not_before_ms = 0
    try:
        while claim is not None and not ctx.stopping.is_set():
            if claim.status in ("rate", "yield"):
                if claim.status == "rate" and claim.wait_ms <= MAX_PAUSE_MS:
                    time.sleep(claim.wait_ms / 1000)
                    claim = _claim(ctx, ticket, lease_ms, time.monotonic() - started > FAIR_SHARE)
                    continue
                not_before_ms = claim.now_ms + claim.wait_ms
                metrics.SHAPING_DEFERRALS.labels(policy.name, "rate").inc()
                break
            if claim.status != "ok" or not claim.jobs:
                break
            keeper.hold(claim.jobs)
            route = route or _route(ctx, ticket)
            _deliver_batch(ctx, ticket, route, claim.jobs, keeper)
            if ctx.stopping.is_set():
                _give_back(ctx, ticket, keeper)
                break
            if keeper.expired() or time.monotonic() > deadline:
                break
            claim = _claim(ctx, ticket, lease_ms, time.monotonic() - started > FAIR_SHARE)
    except Exception:
        metrics.DELIVERY_TICKETS.labels("failed").inc()
        raise
    finally:
        keeper.stop()
        if isinstance(route, Connector):
            route.close()
        ctx.store.release(domain, destination, token, not_before_ms)
    metrics.DELIVERY_TICKETS.labels("done").inc()
    return "done"


def _give_back(ctx: Context, ticket: Ticket, keeper: LeaseKeeper) -> None:
    """Shutting down: the jobs claimed but not attempted go back, due now."""
    ids = [member.rsplit(":", 1)[0] for member in keeper.held()]
    if ids:
        back = ctx.store.unclaim(ticket.domain, ticket.token, ids)
        log.event(logger, "gave_back", domain=ticket.domain, jobs=back, reason="shutdown")


def _claim(ctx: Context, ticket: Ticket, lease_ms: int, hand_off: bool = False) -> Claim | None:
    return ctx.store.claim(
        ticket.domain, ticket.token, ticket.shaping, count=ctx.settings.batch_size,
        lease_ms=lease_ms, mark_ms=THROTTLE_MARK_MS, hand_off=hand_off,
        max_bytes=ctx.settings.batch_bytes,
    )  # fmt: skip


def _route(ctx: Context, ticket: Ticket) -> Connector | Reply:
    """A connector to the policy's smarthost or the domain's MX hosts, or the reply that
    stops every job (DNS)."""
    policy = ticket.policy
    try:
        if policy.route is not None:
            targets = ctx.resolver.host(policy.route[0])
        else:
            targets = ctx.resolver.route(ticket.domain)
        return Connector(targets, ctx.settings, policy, ctx.credentials(policy))
    except (PermanentFailure, TemporaryFailure) as exc:
        log.event(logger, "route_failed", domain=ticket.domain, reply=exc.reply)
        if policy.route is not None and exc.reply.is_permanent:
            # The operator's smarthost name does not resolve: their mistake, not the mail's.
            return Reply(451, "4.4.4", f"Smarthost {policy.route[0]} has no address")
        return exc.reply


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _deliver_batch(
    ctx: Context, ticket: Ticket, route: Connector | Reply, jobs: list[Job], keeper: LeaseKeeper
) -> None:
    """Send a batch over the connection, recording each job the moment its last
    transaction is answered (the duplicate window stays one message wide)."""
    started = time.monotonic()
    if isinstance(route, Reply):
        for job in jobs:
            record(ctx, ticket, job, dict.fromkeys(job.recipients, route), None, 0.0)
            keeper.drop(job)
        return
    size = ticket.policy.max_recipients_per_transaction
    items: list[Outgoing] = []
    owners: list[int] = []
    for index, job in enumerate(jobs):
        for chunk in _chunks(job.recipients, size):
            items.append(Outgoing(job.sender, chunk, job.body, smtputf8=job.smtputf8))
            owners.append(index)
    replies: list[dict[str, Reply]] = [{} for _ in jobs]
    left = [owners.count(index) for index in range(len(jobs))]
    signals: list[Reply] = []

    def done(item: int, result: dict[str, Reply]) -> None:
        nonlocal started
        owner = owners[item]
        replies[owner].update(result)
        left[owner] -= 1
        if left[owner] == 0:
            now = time.monotonic()
            record(ctx, ticket, jobs[owner], replies[owner], route.host, now - started)
            keeper.drop(jobs[owner])
            started = now
            signals.extend(r for r in replies[owner].values() if shaping.is_backoff_signal(r))

    # Stop between messages when shutting down (the message in progress is finished) or
    # when the lease may have passed to another worker, frozen or cut off from Redis (then
    # not even a message whose content is still to go out: another worker may send it).
    route.send_many(items, done, lambda: ctx.stopping.is_set() or keeper.expired(), keeper.expired)
    signals.extend(r for r in route.drops if shaping.is_backoff_signal(r))
    route.drops.clear()
    if signals:
        _back_off(ctx, ticket, signals[0], route.host)


def _back_off(ctx: Context, ticket: Ticket, reply: Reply, mx: str | None) -> None:
    """The remote asked us to slow down: cut the destination's limits (adaptive policies)."""
    policy = ticket.policy
    if not policy.adaptive:
        return
    cut, factor = ctx.store.backoff(ticket.destination, ticket.shaping.recovery_ms)
    if cut:
        metrics.SHAPING_BACKOFFS.labels(policy.name).inc()
        log.event(
            logger, "backoff", logging.WARNING, destination=ticket.destination,
            policy=policy.name, factor=f"{factor:.2f}", mx=mx or "", reply=reply,
        )  # fmt: skip


def record(
    ctx: Context, ticket: Ticket, job: Job, replies: dict[str, Reply], mx: str | None,
    elapsed: float,
) -> None:  # fmt: skip
    """Decide one job's attempt from its replies, bounce what failed, record it all."""
    policy = ticket.policy
    now_ms = int(time.time() * 1000)
    outcome = decide(replies, expired=retry.expired(job.received_ms, now_ms, policy.max_age))
    if outcome.bounced:
        enqueue_dsn(ctx, job, {rcpt: replies[rcpt] for rcpt in outcome.bounced}, mx)
    delay = retry.backoff(job.attempts + 1, policy.retry_base, policy.retry_cap)
    event: dict[str, str | int] = {
        "id": job.msg_id,
        "domain": job.domain,
        "rcpts": ",".join(job.recipients),
        "verdict": verdict_name(outcome),
        "reply": outcome.last_reply,
        "mx": mx or "",
        "duration_ms": int(elapsed * 1000),
    }
    # Hard bounces go on the suppression list right after the completion, which stays the
    # one round trip after the remote's replies (invariant 3).
    hard = suppress_ops.to_learn(ctx.settings, job.sender, replies, outcome.bounced)
    if hard:
        event["suppressed"] = ",".join(hard)
    recorded = ctx.store.complete(
        job, ticket.token, outcome, next_ms=now_ms + int(delay * 1000),
        events_maxlen=ctx.settings.events_maxlen, event=event,
        retry_for=ctx.settings.lease_time / 2,
    )  # fmt: skip
    if hard:
        suppress_ops.learn(ctx.store.client, ctx.settings, job.sender, hard)
    _observe(policy.name, job, outcome.delivered, outcome.deferred, outcome.bounced, elapsed,
             now_ms)  # fmt: skip
    if not recorded:
        metrics.DELIVERY_LEASE_LOST.inc()
    log.record(logger, "attempt", {**event, "attempt": job.attempts + 1, "recorded": recorded})


def _observe(
    policy: str, job: Job, delivered: list[str], deferred: list[str], bounced: list[str],
    elapsed: float, now_ms: int,
) -> None:  # fmt: skip
    for verdict, rcpts in (("delivered", delivered), ("deferred", deferred), ("bounced", bounced)):
        if rcpts:
            metrics.DELIVERY_RECIPIENTS.labels(policy, verdict).inc(len(rcpts))
            metrics.DELIVERY_CLASS_RECIPIENTS.labels(job.priority, verdict).inc(len(rcpts))
    if deferred:
        metrics.SHAPING_DEFERRALS.labels(policy, "remote").inc()
    metrics.DELIVERY_TRANSACTION_SECONDS.observe(elapsed)
    if delivered:
        latency = max(0.0, (now_ms - job.received_ms) / 1000)
        by_class = metrics.DELIVERY_CLASS_LATENCY_SECONDS.labels(job.priority)
        for _ in delivered:
            metrics.DELIVERY_LATENCY_SECONDS.observe(latency)
            by_class.observe(latency)
