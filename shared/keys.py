"""Every Redis key of the spool, in one place; the prefix (``mxf:``) is a setting.

```
{p}msg:{id}          HASH    envelope and bookkeeping of an accepted message:
                             from, rcpts (count), size, received_ms, client, helo, auth,
                             proto, smtputf8, domains, jobs_left (refcount of open jobs)
{p}body:{id}         STRING  the raw message as stored (trace headers added), CRLF lines
{p}rcpt:{id}:{dom}   SET     recipients still pending for that domain
{p}job:{id}:{dom}    HASH    one job (message x destination domain): attempts,
                             created_ms, not_before_ms, last_reply
{p}sched:{dom}       ZSET    message id → not-before ms (the domain's schedule)
{p}due               ZSET    domain → when the dispatcher should look at it (ms)
{p}stats             HASH    cluster counters: accepted, accepted_bytes
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

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"
