"""Bounces: a DSN (RFC 3464) to the envelope sender, enqueued through the accept script.

Never to the null sender, and never for a message that is itself a DSN or an auto-reply
(:func:`workers.bounce.should_bounce`), so a DSN never causes another DSN.
"""

import logging
import time

from shared import log, metrics
from shared.dkim_sign import Signer
from shared.message import AddressError, new_queue_id, parse_mailbox, split_by_domain
from shared.replies import Reply
from shared.spool import Envelope
from workers import mx, smtp_wire
from workers.bounce import FailedRecipient, build_dsn, should_bounce
from workers.connector import NO_HOST_ANSWERED
from workers.context import Context
from workers.store import Job

logger = logging.getLogger("mxfleet.worker")


def enqueue_dsn(ctx: Context, job: Job, failed: dict[str, Reply], mx: str | None) -> str | None:
    """Spool a DSN for ``failed`` recipients of ``job``; its queue id, or None if none is due."""
    if not should_bounce(job.sender, job.body):
        log.event(logger, "no_dsn", id=job.msg_id, sender=job.sender or "<>")
        return None
    try:
        sender = parse_mailbox(job.sender, utf8=True)
    except AddressError as exc:
        log.event(logger, "no_dsn", logging.WARNING, id=job.msg_id, error=exc)
        return None
    now = time.time()
    recipients = [
        FailedRecipient(rcpt, reply, mx if _remote(reply) else None, now)
        for rcpt, reply in failed.items()
    ]
    dsn = build_dsn(
        reporting_mta=ctx.settings.hostname,
        queue_id=job.msg_id,
        sender=job.sender,
        original=job.body,
        recipients=recipients,
        arrival=job.received_ms / 1000,
        now=now,
    )
    dsn = _signed(ctx.signer, dsn, job.msg_id)
    dsn_id = new_queue_id()
    envelope = Envelope(
        sender="",
        recipients=split_by_domain([sender]),
        client="",
        helo="",
        proto="DSN",
        smtputf8=not job.sender.isascii(),
        extra={"dsn_of": job.msg_id},
    )
    ctx.store.accept(dsn_id, envelope, dsn)
    metrics.DELIVERY_DSN.inc()
    log.event(logger, "dsn", id=dsn_id, of=job.msg_id, to=job.sender, rcpts=len(recipients))
    return dsn_id


def _signed(signer: Signer, dsn: bytes, of: str) -> bytes:
    """The DSN with the DKIM signatures of the relay's own domain, when it has keys; a DSN
    that cannot be signed goes out unsigned (counted and logged), never not at all."""
    if not signer.ring:
        return dsn
    fields, result, error = signer.sign_or_not(dsn, None)
    if error is not None:
        log.event(logger, "dsn_dkim_failed", logging.WARNING, of=of, error=error)
    metrics.DELIVERY_DSN_DKIM.labels(result).inc()
    return fields + dsn


_LOCAL = frozenset(
    {
        mx.NO_SUCH_DOMAIN, mx.NULL_MX, mx.NO_ROUTE, mx.PRIVATE_MX, mx.DNS_TEMPFAIL,
        smtp_wire.MESSAGE_TOO_BIG, smtp_wire.CONNECT_FAILED, smtp_wire.CONNECTION_DROPPED,
        smtp_wire.TIMED_OUT, smtp_wire.PROTOCOL_ERROR, smtp_wire.TLS_NOT_OFFERED,
        smtp_wire.TLS_FAILED, smtp_wire.TLS_NOT_VERIFIED, NO_HOST_ANSWERED,
    }
)  # fmt: skip


def _remote(reply: Reply) -> bool:
    """Replies we made up ourselves (DNS, connection failures) name no remote MTA."""
    return reply not in _LOCAL
