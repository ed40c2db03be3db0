"""A ticket's SMTP connection to its destination: reused across messages, and moved to the
next MX host when a host does not answer or says 421 (RFC 5321 §5.1)."""

import logging

from shared import log, metrics
from shared.errors import MxfleetError
from shared.replies import Reply
from shared.settings import Settings
from workers.mx import Target
from workers.smtp_client import SmtpClient
from workers.smtp_connection import Timeouts
from workers.smtp_errors import ConnectionLost

logger = logging.getLogger("mxfleet.worker")

NO_HOST_ANSWERED = Reply(451, "4.4.1", "No mail exchanger answered")


class Connector:
    def __init__(self, targets: list[Target], settings: Settings) -> None:
        self.targets = targets
        self.settings = settings
        self._index = 0
        self._client: SmtpClient | None = None
        self._sent_on_client = 0
        self._losses = 0
        self.last_failure = NO_HOST_ANSWERED
        self.timeouts = Timeouts(
            connect=settings.connect_timeout, data_final=settings.data_reply_timeout
        )

    @property
    def host(self) -> str | None:
        """The MX host of the connection in use (or last tried)."""
        if self._index < len(self.targets):
            return self.targets[self._index].host
        return None

    def send(
        self, sender: str, recipients: list[str], body: bytes, *, smtputf8: bool
    ) -> dict[str, Reply]:
        """One transaction; a reply for every recipient (a deferral when no host took it)."""
        replies: dict[str, Reply] = {}
        pending = list(recipients)
        for _ in range(2):  # the transaction, and once more on a new connection if cut off
            client = self._connect()
            if client is None:
                break
            try:
                delivery = client.send(sender, pending, body, smtputf8=smtputf8)
            except ConnectionLost as exc:
                # A new connection for the rest; a host that drops us twice in a row is
                # given up for the next one.
                self.last_failure = exc.reply
                replies.update(exc.replies)
                pending = [rcpt for rcpt in pending if rcpt in exc.pending]
                if exc.maybe_delivered:
                    metrics.DELIVERY_MAYBE_DUPLICATED.inc(len(pending))
                self._losses += 1
                self._drop(next_host=self._losses >= 2)
                continue
            self._losses = 0
            self._sent_on_client += 1
            replies.update(delivery.replies)
            pending = []
            break
        for rcpt in pending:
            replies[rcpt] = self.last_failure
        return replies

    def _connect(self) -> SmtpClient | None:
        if self._client is not None:
            if self._sent_on_client < self.settings.max_messages_per_connection:
                return self._client
            self._drop(next_host=False)
        while self._index < len(self.targets):
            target = self.targets[self._index]
            try:
                self._client = SmtpClient.connect(
                    target.address,
                    self.settings.delivery_port,
                    mx_name=target.host,
                    helo=self.settings.hostname,
                    tls=self.settings.delivery_tls,
                    timeouts=self.timeouts,
                )
            except (MxfleetError, OSError) as exc:
                reply = getattr(exc, "reply", None)
                self.last_failure = reply if isinstance(reply, Reply) else NO_HOST_ANSWERED
                metrics.DELIVERY_CONNECTIONS.labels("failed").inc()
                log.event(
                    logger, "connect_failed", mx=target.host, address=target.address, error=exc
                )
                self._index += 1
                continue
            metrics.DELIVERY_CONNECTIONS.labels("ok").inc()
            self._sent_on_client = 0
            return self._client
        return None

    def _drop(self, *, next_host: bool) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if next_host:
            self._index += 1
            self._losses = 0

    def close(self) -> None:
        self._drop(next_host=False)
