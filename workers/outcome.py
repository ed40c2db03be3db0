"""From replies to verdicts (pure): delivered, deferred or bounced, per recipient.

2xx delivered; 4xx deferred (retried with backoff: :mod:`shared.retry`); 5xx bounced
(RFC 5321 §4.2.1). A recipient that would be deferred once its message is older than
``max_age`` is bounced instead, with its last reply (Postfix reports expiry the same way).
"""

from collections.abc import Iterable, Mapping

from shared.replies import Reply
from shared.spool import Outcome


def decide(replies: Mapping[str, Reply], *, expired: bool) -> Outcome:
    """Sort recipients by their reply; deferrals become bounces when the message expired."""
    delivered, deferred, bounced = [], [], []
    for rcpt, reply in replies.items():
        if 200 <= reply.code < 300:
            delivered.append(rcpt)
        elif reply.is_transient and not expired:
            deferred.append(rcpt)
        else:
            bounced.append(rcpt)
    last = summary(replies.values())
    return Outcome(delivered, deferred, bounced, last)


def summary(replies: Iterable[Reply]) -> str:
    """The most telling reply of an attempt for the job's ``last_reply``: a failure first."""
    chosen: Reply | None = None
    for reply in replies:
        if chosen is None or reply.code > chosen.code:
            chosen = reply
    return str(chosen) if chosen is not None else ""


def verdict_name(outcome: Outcome) -> str:
    """One word for the attempt, for events and logs."""
    kinds = [
        name
        for name, rcpts in (
            ("delivered", outcome.delivered),
            ("deferred", outcome.deferred),
            ("bounced", outcome.bounced),
        )
        if rcpts
    ]
    return "+".join(kinds) or "none"
