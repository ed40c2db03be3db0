"""``mxfleet dispatcher``: turns due destinations into tickets, and reaps dead leases.

Several may run; a leader lock in Redis (renewed every loop, expiring after
``LEADER_TTL``) lets exactly one act. The leader, in a loop:
1. returns jobs whose lease expired (their worker died) to their schedule (reap);
2. for each due domain, earliest first (round robin: a served domain goes to the back),
   finds its destination (:mod:`workers.destinations`: a named policy or an MX site), asks
   ``dispatch.lua`` for a connection slot within the destination's limits (paused,
   connections, rate, adaptive backoff) and sends a ticket (domain, token, destination,
   policy) to the workers when it gets one; a throttled domain is due again when its rate
   admits a message, with no ticket spent on it;
3. exports the queue and shaping gauges.
A ticket that is lost or runs twice is harmless: the worker checks its lease.
"""

import logging
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType

from celery import Celery

from shared import log, metrics
from shared.httpd import HealthServer
from shared.priority import BULK, TRANSACTIONAL
from shared.redis_conn import sync_client
from shared.settings import Settings, parse_nameserver
from workers import shaping
from workers.app import QUEUE, TICKET_TASK, make_app
from workers.destinations import DestinationMap
from workers.heartbeat import Heartbeat, live_counts
from workers.mx import MxResolver
from workers.store import Store, policy_backlog, queue_figures

logger = logging.getLogger("mxfleet.dispatcher")

LEADER_TTL_MS = 10_000
HOLD_MS = 5_000  # a served domain leaves the due set this long (a ticket's end brings it back)
BACKLOG_EVERY = 5.0  # seconds between two samples of the per-policy backlog


class Dispatcher:
    def __init__(
        self, settings: Settings, store: Store, app: Celery, destinations: DestinationMap
    ) -> None:
        self.settings = settings
        self.store = store
        self.app = app
        self.destinations = destinations
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leading = False
        self.stop = threading.Event()
        self._gauges_at = 0.0
        self._backlog_at = 0.0
        self._beat_at = 0.0
        self._mapped: dict[str, str] = {}  # domain → destination written to mxf:dest
        self.heartbeat = Heartbeat(store, "dispatcher")

    def step(self) -> int:
        """One round; returns the number of tickets issued."""
        leading = self.store.lead(self.me, LEADER_TTL_MS)
        if time.monotonic() - self._beat_at > 1.0:
            self._beat_at = time.monotonic()
            self.heartbeat.fields["leader"] = int(leading)
            self.heartbeat.beat()
        if leading != self.leading:
            self.leading = leading
            metrics.DISPATCHER_LEADER.set(int(leading))
            if not leading:
                _clear_leader_gauges()
            log.event(logger, "leader" if leading else "follower", id=self.me)
        if not leading:
            return 0
        reaped = self.store.reap()
        if reaped:
            metrics.DISPATCHER_REAPED.inc(reaped)
            log.event(logger, "reaped", logging.WARNING, jobs=reaped)
        issued = sum(self._serve(domain) for domain in self.store.due_domains(500))
        if time.monotonic() - self._gauges_at > 1.0:
            self._export_gauges()
        return issued

    def _serve(self, domain: str) -> int:
        destination = self.destinations.lookup(domain)
        if destination is None:  # its MX lookup runs: next pass
            return 0
        s = self.settings
        token = uuid.uuid4().hex
        policy = destination.policy
        verdict, _ = self.store.dispatch(
            domain,
            token,
            shaping.shaping_of(destination.name, policy),
            lease_ms=int(s.lease_time * 1000),
            hold_ms=HOLD_MS,
            batch=s.batch_size,
            max_tickets=s.max_tickets,
        )
        metrics.DISPATCHER_TICKETS.labels(verdict).inc()
        self._remember(domain, destination.name, policy.name, verdict)
        if verdict in ("rate", "full"):
            reason = "rate" if verdict == "rate" else "connections"
            metrics.SHAPING_DEFERRALS.labels(policy.name, reason).inc()
        if verdict != "issued":
            return 0
        args = [domain, token, destination.name, policy.name]
        try:
            self.app.send_task(TICKET_TASK, args=args, queue=QUEUE)
        except Exception:
            self.store.release(domain, destination.name, token)
            raise
        return 1

    def _remember(self, domain: str, destination: str, policy: str, verdict: str) -> None:
        """Keep ``mxf:dest`` (domain → destination and policy, for ``mxfleet queue``)."""
        if verdict == "empty":
            if self._mapped.pop(domain, None) is not None:
                self.store.client.hdel(self.store.keys.dest, domain)
        elif self._mapped.get(domain) != destination:
            self.store.client.hset(self.store.keys.dest, domain, f"{destination} {policy}")
            self._mapped[domain] = destination

    def _export_gauges(self) -> None:
        self._gauges_at = time.monotonic()
        figures = queue_figures(self.store)
        metrics.QUEUE_JOBS.set(figures.jobs)
        metrics.QUEUE_INFLIGHT.set(figures.inflight)
        metrics.QUEUE_SCHEDULED.set(max(0, figures.jobs - figures.inflight))
        metrics.QUEUE_DUE_DOMAINS.set(figures.due_domains)
        metrics.QUEUE_OLDEST_AGE.set(figures.oldest_age_s)
        metrics.REDIS_USED_MEMORY.set(figures.used_memory)
        metrics.REDIS_MAXMEMORY.set(figures.maxmemory)
        for role, count in live_counts(self.store).items():
            metrics.CLUSTER_PROCESSES.labels(role).set(count)
        self._export_shaping()
        if time.monotonic() - self._backlog_at > BACKLOG_EVERY:
            self._backlog_at = time.monotonic()
            self._export_backlog()

    def _export_backlog(self) -> None:
        """Scheduled jobs and overdue time per policy, from the domains with work."""
        policies = self.settings.policies
        jobs = dict.fromkeys([policies.default.name, *policies.named], 0)
        overdue = dict.fromkeys(jobs, 0.0)
        urgent = total = 0
        for row in policy_backlog(self.store):
            found = self.destinations.lookup(row.domain)
            name = found.policy.name if found else policies.default.name
            jobs[name] = jobs.get(name, 0) + row.scheduled
            overdue[name] = max(overdue.get(name, 0.0), row.overdue_s)
            urgent, total = urgent + row.transactional, total + row.scheduled
        for name, count in jobs.items():
            metrics.QUEUE_POLICY_JOBS.labels(name).set(count)
            metrics.QUEUE_POLICY_OVERDUE.labels(name).set(overdue[name])
        metrics.QUEUE_CLASS_JOBS.labels(TRANSACTIONAL).set(urgent)
        metrics.QUEUE_CLASS_JOBS.labels(BULK).set(total - urgent)

    def _export_shaping(self) -> None:
        """Per policy: the lowest adaptive factor among its destinations now, and what it
        leaves of the policy's rate and connections."""
        policies = self.settings.policies
        lowest = {name: 1.0 for name in [policies.default.name, *policies.named]}
        for backoff in shaping.backoffs(self.store, policies):
            name = backoff.policy.name
            lowest[name] = min(lowest.get(name, 1.0), backoff.factor)
        for name, factor in lowest.items():
            policy = policies.get(name)
            metrics.SHAPING_FACTOR.labels(name).set(factor)
            metrics.SHAPING_EFFECTIVE_RATE.labels(name).set(
                policy.rate.per_second * factor if policy.rate else 0
            )
            metrics.SHAPING_EFFECTIVE_CONNECTIONS.labels(name).set(
                max(1, int(policy.max_connections * factor + 1e-9))
            )

    def run(self) -> None:
        """Loop until :attr:`stop` is set; Redis outages are waited out, never fatal."""
        while not self.stop.is_set():
            try:
                issued = self.step()
            except Exception as exc:  # noqa: BLE001 -- the loop must survive Redis outages
                log.event(logger, "error", logging.ERROR, error=repr(exc))
                self.leading = False
                metrics.DISPATCHER_LEADER.set(0)
                _clear_leader_gauges()
                self.stop.wait(1.0)
                continue
            self.stop.wait(0.01 if issued else (0.1 if self.leading else 1.0))
        if self.leading:
            self.store.resign(self.me)
        self.heartbeat.stop()


def _clear_leader_gauges() -> None:
    """A dispatcher that stops leading stops speaking for the cluster (no stale gauges)."""
    for gauge in (
        metrics.QUEUE_JOBS, metrics.QUEUE_INFLIGHT, metrics.QUEUE_SCHEDULED,
        metrics.QUEUE_DUE_DOMAINS, metrics.QUEUE_OLDEST_AGE, metrics.REDIS_USED_MEMORY,
        metrics.REDIS_MAXMEMORY,
    ):  # fmt: skip
        gauge.set(0)
    for labelled in (
        metrics.QUEUE_POLICY_JOBS, metrics.QUEUE_POLICY_OVERDUE, metrics.QUEUE_CLASS_JOBS,
        metrics.CLUSTER_PROCESSES,
        metrics.SHAPING_FACTOR, metrics.SHAPING_EFFECTIVE_RATE,
        metrics.SHAPING_EFFECTIVE_CONNECTIONS,
    ):  # fmt: skip
        labelled.clear()


def main(settings: Settings) -> int:
    servers = [parse_nameserver(server) for server in settings.dns_servers] or None
    resolver = MxResolver(servers, allow_private=settings.allow_private_mx)
    dispatcher = Dispatcher(
        settings,
        Store(sync_client(settings), settings.redis_key_prefix),
        make_app(settings),
        DestinationMap(settings.policies, resolver),
    )

    def ready() -> tuple[bool, str]:
        try:
            dispatcher.store.client.ping()
        except Exception as exc:  # noqa: BLE001 -- readiness reports any failure
            return False, f"redis: {exc}"
        return True, "leader" if dispatcher.leading else "standby"

    host, port = settings.metrics_address
    health = HealthServer(host, port, ready)

    def stop(signum: int, frame: FrameType | None) -> None:
        dispatcher.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.event(logger, "started", id=dispatcher.me, metrics=f"{host}:{health.port}")
    dispatcher.run()
    dispatcher.destinations.close()
    health.close()
    return 0
