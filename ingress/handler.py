"""The decisions at end of DATA: loop check, trace headers, the durable accept.

The session owns the protocol; this module turns a complete message into a stored one
and an SMTP reply.
"""

import logging
from dataclasses import dataclass

from ingress import trace
from ingress.store import Store
from shared import log, metrics, replies
from shared.errors import SpoolFull, SpoolUnavailable
from shared.message import Mailbox, new_queue_id, split_by_domain
from shared.replies import Reply
from shared.settings import Settings
from shared.spool import Envelope

logger = logging.getLogger("mxfleet.ingress")


@dataclass(slots=True)
class Transaction:
    """One mail transaction as the session saw it (RFC 5321 §3.3)."""

    client_ip: str
    helo: str
    esmtp: bool
    tls: bool
    auth_user: str
    sender: Mailbox | None
    recipients: list[Mailbox]
    smtputf8: bool


class Handler:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store

    async def accept(self, tx: Transaction, message: bytes) -> Reply:
        """Store ``message`` for ``tx``'s recipients durably; the reply says how it went."""
        header, _ = trace.split_header(message)
        if trace.received_count(header) >= self.settings.max_received_headers:
            metrics.INGRESS_MESSAGES.labels("loop").inc()
            return replies.LOOP_DETECTED
        queue_id = new_queue_id()
        proto = trace.protocol(
            esmtp=tx.esmtp, tls=tx.tls, auth=bool(tx.auth_user), utf8=tx.smtputf8
        )
        only = tx.recipients[0].address if len(tx.recipients) == 1 else None
        received = trace.received_field(
            helo=tx.helo,
            client_ip=tx.client_ip,
            by=self.settings.hostname,
            proto=proto,
            queue_id=queue_id,
            rcpt=only,
        )
        body = trace.stamp(message, received, queue_id=queue_id, hostname=self.settings.hostname)
        envelope = Envelope(
            sender=tx.sender.address if tx.sender else "",
            recipients=split_by_domain(tx.recipients),
            client=tx.client_ip,
            helo=tx.helo,
            auth=tx.auth_user,
            proto=proto,
            smtputf8=tx.smtputf8,
        )
        try:
            await self.store.accept(queue_id, envelope, body)
        except SpoolFull as exc:
            metrics.INGRESS_MESSAGES.labels("spool_full").inc()
            log.event(logger, "tempfail", logging.WARNING, client=tx.client_ip, error=exc)
            return exc.reply
        except SpoolUnavailable as exc:
            metrics.INGRESS_MESSAGES.labels("spool_unavailable").inc()
            log.event(logger, "tempfail", logging.WARNING, client=tx.client_ip, error=exc)
            return exc.reply
        metrics.INGRESS_MESSAGES.labels("accepted").inc()
        metrics.INGRESS_BYTES.inc(len(body))
        log.event(
            logger,
            "accepted",
            id=queue_id,
            sender=envelope.sender or "<>",
            rcpts=envelope.recipient_count,
            size=len(body),
            client=tx.client_ip,
        )
        return replies.OK.with_text(f"Ok: queued as {queue_id}")
