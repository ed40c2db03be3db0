"""Every Redis key of the spool, in one place; the prefix (``mxf:``) is a setting.

```
{p}msg:{id}          HASH    envelope and bookkeeping of an accepted message:
                             from, rcpts (count), size, received_ms, client, helo, auth,
                             proto, smtputf8, priority (its class), domains, jobs_left
                             (refcount of open jobs)
{p}body:{id}         STRING  the raw message as stored (trace headers added), CRLF lines
{p}rcpt:{id}:{dom}   SET     recipients still pending for that domain
{p}job:{id}:{dom}    HASH    one job (message x destination domain): msg, domain,
                             attempts, created_ms, not_before_ms, prio (its class,
                             ``transactional`` or ``bulk``; missing: bulk), last_reply,
                             lease (the token of the ticket that holds it, while in flight)
{p}sched:{dom}       ZSET    message id → not-before ms (the domain's bulk schedule)
{p}sched:{dom}:t     ZSET    the same for its transactional jobs: a claim takes the due
                             ones of this schedule first (see :mod:`shared.priority`); a
                             job deferred, reaped or given back returns to the schedule
                             of its class (its ``prio``)
{p}due               ZSET    domain → when the dispatcher should look at it (ms)
{p}queue             ZSET    message id → accept time ms (every message not finished)
{p}inflight          ZSET    "{id}:{dom}" → lease deadline ms (jobs a ticket holds)
{p}conn:{dest}       ZSET    ticket token → lease expiry ms (a destination's connection
                             slots; a destination is a named policy, ``policy:NAME``, or
                             an MX site, see :mod:`shared.policies`)
{p}gcra:{dest}:{limit}:{period_ms}:{burst}
                     STRING  GCRA theoretical arrival time of the destination's rate (ms);
                             the parameters are in the key, so a new limit starts afresh
{p}adapt:{dest}      HASH    adaptive backoff: f (factor 0.1..1 at the last cut), at (ms)
{p}adapted           ZSET    destination → time of its last adaptive cut (ms)
{p}throttled:{dest}  STRING  a ticket of the destination waits on its rate (PX, short)
{p}waiting:{dest}     ZSET    domain → since when (ms) it waits for a slot or the rate of
                             its destination (the next ticket to end hands over to it)
{p}paused            SET     domains and destinations an operator paused
{p}tickets           ZSET    ticket token → lease expiry ms (every outstanding ticket)
{p}events            STREAM  one entry per delivery attempt (MAXLEN ~ events_maxlen)
{p}leader            STRING  the leading dispatcher's id (PX lease)
{p}nodes             ZSET    "{role}:{host}:{pid}" → last heartbeat ms (every process)
{p}node:{member}     HASH    role, host, pid, started_ms, seen_ms, ... (PX: gone when dead)
{p}dest              HASH    domain → "destination policy" as the dispatcher last resolved it
{p}stats:{n}         HASH    the counters of stats for the 10 s starting at n * 10 s (1 h TTL)
{p}stats             HASH    cluster counters: accepted, jobs (open now), delivered,
                             deferred, bounced, reaped, lease_lost, dsn, tickets (ended),
                             suppressed_bounce, suppressed_operator (suppression entries
                             written)
{p}authfail:{client} STRING  failed SMTP AUTH attempts of a client (an IPv4 address or an
                             IPv6 /64), PX auth_failure_window, restarted by each failure
{p}supp:{scope}:{address}
                     STRING  a suppressed recipient (see :mod:`shared.suppression`):
                             "source TAB added_ms TAB address as given TAB reason" (source:
                             bounce | operator; the address empty when it is the key's;
                             reason: the bounce reply, or "operator"); PX until it expires.
                             scope: a sender domain, or ``*`` (global); address: local part
                             lower-cased, domain A-label
{p}suppressed        ZSET    "{scope}:{address}" → expiry ms (+inf: never), the index of the
                             entries for listing them; each add trims its expired members
```
Message ids are time-ordered (see :mod:`shared.message`) and never contain ``:``; domains
are lower-case IDNA A-labels, so neither needs escaping inside a key. A client address is
the last part of its key, so the colons of an IPv6 one need no escaping either; nor do
those of a suppressed address (a scope holds none, so the first colon after it splits).
"""

from dataclasses import dataclass

from shared.priority import BULK, CLASSES, SCHED_SUFFIX, Priority


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "mxf:"

    def msg(self, msg_id: str) -> str:
        return f"{self.prefix}msg:{msg_id}"

    def body(self, msg_id: str) -> str:
        return f"{self.prefix}body:{msg_id}"

    def rcpt(self, msg_id: str, domain: str) -> str:
        return f"{self.prefix}rcpt:{msg_id}:{domain}"

    def job(self, msg_id: str, domain: str) -> str:
        return f"{self.prefix}job:{msg_id}:{domain}"

    def sched(self, domain: str, priority: Priority = BULK) -> str:
        """The domain's schedule of one class (bulk: the plain key)."""
        return f"{self.prefix}sched:{domain}{SCHED_SUFFIX[priority]}"

    def schedules(self, domain: str) -> tuple[str, ...]:
        """The domain's schedules, in the order a claim serves them (transactional first)."""
        return tuple(self.sched(domain, cls) for cls in CLASSES)

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    def conn(self, destination: str) -> str:
        return f"{self.prefix}conn:{destination}"

    def adapt(self, destination: str) -> str:
        return f"{self.prefix}adapt:{destination}"

    def waiting(self, destination: str) -> str:
        return f"{self.prefix}waiting:{destination}"

    def throttled(self, destination: str) -> str:
        return f"{self.prefix}throttled:{destination}"

    def gcra(self, destination: str, limit: float, period_ms: int, burst: int) -> str:
        """The GCRA key, spelled as ``shaping.lua`` spells it (limit as ``%.6g``)."""
        return f"{self.prefix}gcra:{destination}:{limit:.6g}:{period_ms}:{burst}"

    @property
    def adapted(self) -> str:
        return f"{self.prefix}adapted"

    @property
    def paused(self) -> str:
        return f"{self.prefix}paused"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    @property
    def queue(self) -> str:
        return f"{self.prefix}queue"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}inflight"

    @property
    def tickets(self) -> str:
        return f"{self.prefix}tickets"

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def node(self, member: str) -> str:
        return f"{self.prefix}node:{member}"

    @property
    def dest(self) -> str:
        return f"{self.prefix}dest"

    def stats_bucket(self, start_ms: int) -> str:
        """The 10-second bucket of the counters that holds ``start_ms``."""
        return f"{self.prefix}stats:{start_ms // 10_000}"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    def authfail(self, client: str) -> str:
        return f"{self.prefix}authfail:{client}"

    def supp(self, scope: str, address: str) -> str:
        """A suppression entry: ``scope`` a sender domain or ``*``, ``address`` in the
        list's lookup form (:func:`shared.suppression.lookup_form`)."""
        return f"{self.prefix}supp:{scope}:{address}"

    @property
    def suppressed(self) -> str:
        return f"{self.prefix}suppressed"
