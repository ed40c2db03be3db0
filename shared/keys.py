"""Every Redis key of the spool, in one place; the prefix (``mxf:``) is a setting.

```
{p}msg:{id}          HASH    envelope and bookkeeping of an accepted message:
                             from, rcpts (count), size, received_ms, client, helo, auth,
                             proto, smtputf8, domains, jobs_left (refcount of open jobs)
{p}body:{id}         STRING  the raw message as stored (trace headers added), CRLF lines
{p}rcpt:{id}:{dom}   SET     recipients still pending for that domain
{p}job:{id}:{dom}    HASH    one job (message x destination domain): msg, domain,
                             attempts, created_ms, not_before_ms, last_reply, lease
                             (the token of the ticket that holds it, while in flight)
{p}sched:{dom}       ZSET    message id → not-before ms (the domain's schedule)
{p}due               ZSET    domain → when the dispatcher should look at it (ms)
{p}queue             ZSET    message id → accept time ms (every message not finished)
{p}inflight          ZSET    "{id}:{dom}" → lease deadline ms (jobs a ticket holds)
{p}conn:{dom}        ZSET    ticket token → lease expiry ms (a domain's connection slots)
{p}tickets           ZSET    ticket token → lease expiry ms (every outstanding ticket)
{p}events            STREAM  one entry per delivery attempt (MAXLEN ~ events_maxlen)
{p}leader            STRING  the leading dispatcher's id (PX lease)
{p}stats             HASH    cluster counters: accepted, jobs (open now), delivered,
                             deferred, bounced, reaped, lease_lost, dsn
```
Message ids are time-ordered (see :mod:`shared.message`) and never contain ``:``; domains
are lower-case IDNA A-labels, so neither needs escaping inside a key.
"""

from dataclasses import dataclass


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

    def sched(self, domain: str) -> str:
        return f"{self.prefix}sched:{domain}"

    @property
    def due(self) -> str:
        return f"{self.prefix}due"

    def conn(self, domain: str) -> str:
        return f"{self.prefix}conn:{domain}"

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
    def leader(self) -> str:
        return f"{self.prefix}leader"
