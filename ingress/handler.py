"""The decisions at end of DATA: loop check, priority class, trace headers, the DKIM
signature, the durable accept.

The session owns the protocol; this module turns a complete message into a stored one
and an SMTP reply.
"""

import logging
from dataclasses import dataclass, field

from ingress import policy, priority, suppression, trace
from ingress.dkim_sign import IngressSigner
from ingress.store import Store
from shared import log, metrics, replies
from shared.dkim_keys import KeyRing
from shared.errors import SpoolFull, SpoolUnavailable
from shared.header_section import split_header
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
    # The class named outside the message (the HTTP API); None: header, user or default
    # decide (ingress/priority.py).
    priority: str | None = None
    # Recipients accepted but not to be queued: suppressed (ingress/suppression.py).
    suppressed: list[Mailbox] = field(default_factory=list)


class Handler:
    def __init__(
        self, settings: Settings, store: Store, signer: IngressSigner | None = None
    ) -> None:
        self.settings = settings
        self.store = store
        self.signer = signer or IngressSigner(KeyRing([]))
        self.priority_rules = priority.Rules(
            default=settings.default_priority,
            transactional_users=frozenset(settings.transactional_users),
            bulk_users=frozenset(settings.bulk_users),
            header=settings.priority_header,
        )

    async def accept(self, tx: Transaction, message: bytes) -> Reply:
        """Store ``message`` for ``tx``'s recipients durably; the reply says how it went."""
        header, _ = split_header(message)
        if trace.received_count(header) >= self.settings.max_received_headers:
            metrics.INGRESS_MESSAGES.labels("loop").inc()
            return replies.LOOP_DETECTED
        if tx.suppressed and not tx.recipients:  # every recipient dropped: nothing to store
            return await suppression.drop_all(self.store, tx.suppressed)
        classified = self.classify(tx, message)
        if isinstance(classified, Reply):
            metrics.INGRESS_MESSAGES.labels("bad_priority").inc()
            log.event(logger, "refused", client=tx.client_ip, reply=classified)
            return classified
        message, choice = classified
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
        stamped = trace.stamp(message, b"", queue_id=queue_id, hostname=self.settings.hostname)
        # DKIM signs once, before the trace field (never signed): every attempt reuses it
        body = received + await self.signer.signatures(stamped, tx.sender, queue_id) + stamped
        envelope = Envelope(
            sender=tx.sender.address if tx.sender else "",
            recipients=split_by_domain(tx.recipients),
            client=tx.client_ip,
            helo=tx.helo,
            auth=tx.auth_user,
            proto=proto,
            smtputf8=tx.smtputf8,
            priority=choice.priority,
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
        if tx.suppressed:
            await suppression.record_dropped(self.store, queue_id, tx.suppressed)
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
            priority=choice.priority,
            by=choice.source,
        )
        return replies.OK.with_text(f"Ok: queued as {queue_id}")

    def classify(self, tx: Transaction, message: bytes) -> tuple[bytes, priority.Choice] | Reply:
        """The message without its X-Mxfleet-Priority fields, and its class; or the reply
        that refuses it (a class named that does not exist)."""
        message, values = priority.take_header(message)
        trusted = bool(tx.auth_user) or policy.in_networks(
            tx.client_ip, self.settings.relay_networks
        )
        choice = priority.resolve(
            self.priority_rules, explicit=tx.priority, header=values, trusted=trusted,
            auth_user=tx.auth_user,
        )  # fmt: skip
        return choice if isinstance(choice, Reply) else (message, choice)
