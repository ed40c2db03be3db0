"""``mxfleet events --webhook URL``: post delivery events to an HTTP endpoint, at least once.

Owns the forwarder: one consumer (``host:pid``) of a consumer group (``--group``) on the
``{p}events`` stream, POSTing JSON arrays of :mod:`workers.events_cli`'s objects, ``--batch``
at a time or fewer once ``--max-wait`` has passed since the batch's first entry.

- XACK only after a 2xx: until then the entries stay pending in the group and a restarted
  forwarder sends them again (at least once; receivers dedupe on ``event_id``).
- Start: create the group at ``$`` (or ``--since``) unless it exists; take over the pending
  entries of dead consumers (this host, pid gone: at once; any, idle > 60 s: XAUTOCLAIM);
  send the pending entries, then new ones (``>``). One forwarder per group keeps order.
- No 2xx (redirects are not followed) or a network error: the same batch again after 0.5 s
  doubling to 60 s, with jitter, forever, one log line each; a 4xx other than 408 and 429
  is logged at error level. Redis unreachable: retried, one warning per outage.
- Events trimmed by ``MAXLEN ~ events_maxlen`` before the group read them are gone: watch
  the group's lag (XINFO GROUPS ``lag``, logged at start); keep it well below the maxlen.
- SIGTERM, SIGINT: exit 0 after the current POST (each socket operation ≤ ``--timeout``).

The receiver is :mod:`workers.webhook_endpoint`, the consumer group
:mod:`workers.webhook_group`.
"""

import argparse
import json
import logging
import math
import os
import random
import socket
import time
from dataclasses import dataclass

import redis

from shared import log, retry
from shared.keys import Keys
from shared.redis_conn import sync_client
from shared.settings import Settings
from shared.units import parse_duration
from workers import events_cli
from workers.events_cli import Entry, Patient, Stopped, Stopper
from workers.webhook_endpoint import Endpoint, parse_header, parse_url
from workers.webhook_group import CLAIM_IDLE_MS, Group

logger = logging.getLogger("mxfleet.webhook")


# --- pure decisions ---------------------------------------------------------------------
def batch_due(size: int, limit: int, first_at: float | None, now: float, max_wait: float) -> bool:
    """Send now: ``limit`` entries are there, or ``max_wait`` has passed since the first."""
    if size >= limit:
        return True
    return size > 0 and first_at is not None and now - first_at >= max_wait


def wait_ms(first_at: float | None, now: float, max_wait: float, cap_ms: int) -> int:
    """How long the next read may block: until the batch is due, at most ``cap_ms``."""
    if first_at is None:
        return cap_ms
    return max(1, min(cap_ms, math.ceil((max_wait - (now - first_at)) * 1000)))


def retry_delay(failures: int, rng: random.Random | None = None) -> float:
    """Seconds before sending a batch again after ``failures`` failed POSTs."""
    return retry.backoff(failures, 0.5, 60.0, rng)


def failure_level(status: int | None) -> int:
    """A 4xx other than 408 (timeout) and 429 (slow down) is the receiver refusing."""
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return logging.ERROR
    return logging.WARNING


# --- the forwarder ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Options:
    batch: int
    max_wait: float
    since: str | None
    block_cap_ms: int  # XREADGROUP BLOCK at most (a stop is noticed in between)


class Forwarder:
    def __init__(self, group: Group, endpoint: Endpoint, options: Options, stop: Stopper) -> None:
        self.group, self.endpoint, self.options, self.stopper = group, endpoint, options, stop
        self.patient = Patient(stop, self._outage, cap=60.0)
        self._replay = True  # read our pending entries before new ones
        self._adopt_at = 0.0  # monotonic time of the next look for dead consumers' entries

    def run(self) -> int:
        try:
            self.patient.call(self._start)
            while not self.stopper.requested:
                if time.monotonic() >= self._adopt_at and (n := self.patient.call(self._adopt)):
                    log.event(logger, "adopted", count=n)
                batch = self._gather()
                if batch and not self.stopper.requested:
                    self._deliver(batch)
        except Stopped:
            pass
        log.event(logger, "webhook_stopped", group=self.group.name, consumer=self.group.consumer)
        return 0

    def _start(self) -> None:
        created = self.group.create(self.options.since)
        if not created and self.options.since is not None:
            log.event(logger, "since_ignored", reason="the group exists: it resumes")
        adopted = self._adopt()
        figures = self.group.figures()
        started = {"url": self.endpoint.shown, "group": self.group.name, "created": created}
        started.update(consumer=self.group.consumer, adopted=adopted, **figures)
        log.record(logger, "webhook_started", started)
        if figures["trimmed_unread"] not in (0, "unknown"):
            lost = figures["trimmed_unread"]
            log.event(logger, "events_lost", logging.ERROR, reason="maxlen", count=lost)

    def _adopt(self) -> int:
        """Take over dead consumers' pending entries; again every minute, for a consumer
        that died elsewhere shortly before (they are sent out of order, then)."""
        self._adopt_at = time.monotonic() + CLAIM_IDLE_MS / 1000
        adopted = self.group.adopt(socket.gethostname())
        self._replay = self._replay or adopted > 0
        return adopted

    def _gather(self) -> list[Entry]:
        """Pending entries first (after a start or an outage), else up to ``--batch`` new
        ones, waiting at most ``--max-wait`` after the first."""
        if self._replay:
            pending = self._read("0", self.options.batch, None)
            self._replay = pending != []  # None (read again) or some: go on replaying
            return pending or []
        batch: list[Entry] = []
        first_at: float | None = None
        while not self.stopper.requested:
            now = time.monotonic()
            if batch_due(len(batch), self.options.batch, first_at, now, self.options.max_wait):
                break
            block = wait_ms(first_at, now, self.options.max_wait, self.options.block_cap_ms)
            found = self._read(">", self.options.batch - len(batch), block)
            if found is None:
                return []  # what was read so far is pending: replayed next
            first_at = time.monotonic() if first_at is None and found else first_at
            batch += found
        return batch

    def _read(self, cursor: str, count: int, block: int | None) -> list[Entry] | None:
        """Entries; None after an outage (a lost reply may have handed us entries: they are
        pending) or when the group had to be made again: read the pending ones again."""
        outages = self.patient.outages
        try:
            found = self.patient.call(lambda: self.group.read(cursor, count, block))
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            # Redis lost the stream or the group: whatever the stream holds now is unsent.
            log.event(logger, "group_missing", logging.WARNING, group=self.group.name)
            self.patient.call(lambda: self.group.create("0"))
            found = None
        if found is None or self.patient.outages != outages:
            self._replay = True
            return None
        return found

    def _deliver(self, batch: list[Entry]) -> None:
        """POST until a 2xx, then XACK; Stopped leaves the batch pending (sent again)."""
        events = [events_cli.event_object(i, fields) for i, fields in batch if fields]
        if len(events) < len(batch):  # trimmed while pending
            lost = len(batch) - len(events)
            log.event(logger, "events_lost", logging.ERROR, reason="trimmed_pending", count=lost)
        body = json.dumps(events, ensure_ascii=False, separators=(",", ":")).encode()
        failures = 0
        while events and not (answer := self.endpoint.post(body)).ok:
            failures += 1
            delay = retry_delay(failures)
            log.event(
                logger, "webhook_failed", failure_level(answer.status), url=self.endpoint.shown,
                status=answer.status or "-", error=answer.detail, events=len(events),
                first=batch[0][0], failures=failures, retry_in=f"{delay:.1f}s",
            )  # fmt: skip
            self.stopper.sleep(delay)
        ids = [event_id for event_id, _ in batch]
        self.patient.call(lambda: self.group.ack(ids))
        log.event(logger, "webhook_posted", events=len(events), first=ids[0], last=ids[-1])

    def _outage(self, down: bool, error: str) -> None:
        if down:
            log.event(logger, "redis_unreachable", logging.WARNING, error=error)
        else:
            log.event(logger, "redis_reachable")


# --- the command ------------------------------------------------------------------------
def _batch(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise ValueError(f"{text!r} is not a batch size from 1 to 10000")
    return int(text)


def _timeout(text: str) -> float:
    if (seconds := parse_duration(text)) <= 0:
        raise ValueError("the timeout must be above 0")
    return seconds


def configure_webhook(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument_group("webhook (at least once, in batches)").add_argument
    add(
        "--webhook",
        type=events_cli.arg_type(parse_url),
        metavar="URL",
        help="POST events as JSON arrays",
    )
    add("--group", default="webhook", metavar="NAME", help="consumer group (default webhook)")
    add(
        "--batch",
        type=events_cli.arg_type(_batch),
        default=100,
        metavar="N",
        help="per POST (default 100)",
    )
    add("--max-wait", type=events_cli.arg_type(parse_duration), default=1.0, metavar="DURATION",
        help="longest wait for a full batch (default 1s)")  # fmt: skip
    add("--timeout", type=events_cli.arg_type(_timeout), default=10.0, metavar="DURATION",
        help="per connect, send, answer (default 10s)")  # fmt: skip
    add("--header", type=events_cli.arg_type(parse_header), action="append", default=[],
        metavar="'NAME: VALUE'", help="an extra request header (repeatable)")  # fmt: skip


def forward(settings: Settings, args: argparse.Namespace) -> int:
    log.setup(settings.log_level)
    try:
        client = sync_client(settings)
    except ValueError as exc:  # no redis_url
        log.event(logger, "webhook_stopped", logging.ERROR, error=events_cli.one_line(exc))
        return 2
    consumer = f"{socket.gethostname()}:{os.getpid()}"
    group = Group(client, Keys(settings.redis_key_prefix).events, args.group, consumer)
    endpoint = Endpoint(args.webhook, dict(args.header), args.timeout)
    options = Options(args.batch, args.max_wait, args.since, events_cli.block_ms(settings))
    try:
        return Forwarder(group, endpoint, options, Stopper().install()).run()
    except redis.RedisError as exc:
        log.event(logger, "webhook_stopped", logging.ERROR, error=events_cli.one_line(exc))
        return 1
