"""A ticket's SMTP connection to its destination: reused across messages (up to the
policy's ``max_messages_per_connection``), and moved to the next MX host when a host does
not answer or says 421 (RFC 5321 §5.1). With a smarthost ``route`` the targets are the
smarthost's addresses, on its port, with its credentials."""

import logging
from collections.abc import Callable
from dataclasses import replace

from shared import log, metrics
from shared.errors import MxfleetError
from shared.policies import Policy
from shared.replies import Reply
from shared.settings import Settings
from workers.mx import Target
from workers.smtp_auth import Credentials
from workers.smtp_client import SmtpClient
from workers.smtp_connection import Timeouts
from workers.smtp_errors import ConnectionLost
from workers.smtp_transaction import Delivery, Outgoing

logger = logging.getLogger("mxfleet.worker")

NO_HOST_ANSWERED = Reply(451, "4.4.1", "No mail exchanger answered")
Replies = dict[str, Reply]


class Connector:
    def __init__(
        self, targets: list[Target], settings: Settings, policy: Policy,
        auth: Credentials | None = None,
    ) -> None:  # fmt: skip
        self.targets = targets
        self.settings = settings
        self.policy = policy
        self.auth = auth
        self.port = policy.route[1] if policy.route else settings.delivery_port
        self._open_gauge = metrics.DELIVERY_OPEN_CONNECTIONS.labels(policy.name)
        self._index = 0
        self._client: SmtpClient | None = None
        self._sent_on_client = 0
        self._losses = 0
        self.last_failure = NO_HOST_ANSWERED
        self.drops: list[Reply] = []  # replies that ended or refused a connection (shaping)
        self.timeouts = Timeouts(
            connect=policy.connect_timeout, data_final=settings.data_reply_timeout
        )

    @property
    def host(self) -> str | None:
        """The MX host of the connection in use (or last tried)."""
        if self._index < len(self.targets):
            return self.targets[self._index].host
        return None

    def send_many(
        self, items: list[Outgoing], on_done: Callable[[int, Replies], None],
        stop: Callable[[], bool] | None = None, abandon: Callable[[], bool] | None = None,
    ) -> None:  # fmt: skip
        """Transactions in order, pipelined across messages (RFC 2920 §3.1). ``on_done(i,
        replies)`` gets a reply for every recipient of item i as soon as all are final (a
        deferral for those no host took), so the caller can record it at once. Once
        ``stop()`` says True, the message in progress is finished and the items not begun
        get no ``on_done`` (the caller gives them back); with ``abandon()`` True as well, not
        even a message whose content has not gone out yet is finished (see
        :meth:`SmtpClient.send_many`)."""
        results: list[Replies] = [{} for _ in items]
        pending = {index: list(item.recipients) for index, item in enumerate(items)}
        todo = list(range(len(items)))
        fruitless = 0
        while todo and fruitless < 2:
            if stop is not None and stop():
                return
            client = self._connect()
            if client is None:
                break
            now, later = todo[: max(1, self._room())], todo[max(1, self._room()) :]
            batch = [replace(items[i], recipients=pending[i]) for i in now]

            def finished(k: int, delivery: Delivery, now: list[int] = now) -> None:
                results[now[k]].update(delivery.replies)
                on_done(now[k], results[now[k]])

            try:
                sent = len(client.send_many(batch, finished, stop, abandon))
            except ConnectionLost as exc:
                todo = self._resume(exc, now, later, results, pending, on_done)
                fruitless = 0 if exc.deliveries else fruitless + 1
                continue
            self._sent_on_client += sent
            self._losses = 0
            todo = later
            if sent < len(batch) or (stop is not None and stop()):
                return  # stopping: what was not begun stays with the caller
        for index in todo:
            for rcpt in pending[index]:
                results[index].setdefault(rcpt, self.last_failure)
            on_done(index, results[index])

    def _room(self) -> int:
        return self.policy.max_messages_per_connection - self._sent_on_client

    def _resume(
        self, exc: ConnectionLost, now: list[int], later: list[int], results: list[Replies],
        pending: dict[int, list[str]], on_done: Callable[[int, Replies], None],
    ) -> list[int]:  # fmt: skip
        """After a lost connection: what is left to send (the interrupted item first)."""
        done = min(len(exc.deliveries), len(now))
        todo = now[done:] + later
        if done < len(now):
            current = todo[0]
            results[current].update(exc.replies)
            pending[current] = [r for r in pending[current] if r in exc.pending]
            if exc.maybe_delivered:
                metrics.DELIVERY_MAYBE_DUPLICATED.inc(len(pending[current]))
            if not pending[current]:
                on_done(current, results[current])
                todo = todo[1:]
        # A new connection for the rest; a host that drops us twice in a row without
        # progress is given up for the next one.
        self.last_failure = exc.reply
        self.drops.append(exc.reply)
        self._losses += 1
        self._drop(next_host=self._losses >= 2 and not done)
        return todo

    def _connect(self) -> SmtpClient | None:
        if self._client is not None:
            if self._sent_on_client < self.policy.max_messages_per_connection:
                return self._client
            self._drop(next_host=False)
        while self._index < len(self.targets):
            target = self.targets[self._index]
            try:
                self._client = SmtpClient.connect(
                    target.address,
                    self.port,
                    mx_name=target.host,
                    helo=self.settings.hostname,
                    tls=self.policy.tls,
                    timeouts=self.timeouts,
                    auth=self.auth,
                )
            except (MxfleetError, OSError) as exc:
                reply = getattr(exc, "reply", None)
                self.last_failure = reply if isinstance(reply, Reply) else NO_HOST_ANSWERED
                self.drops.append(self.last_failure)
                metrics.DELIVERY_CONNECTIONS.labels("failed").inc()
                log.event(
                    logger, "connect_failed", mx=target.host, address=target.address, error=exc
                )
                self._index += 1
                continue
            metrics.DELIVERY_CONNECTIONS.labels("ok").inc()
            self._open_gauge.inc()
            self._sent_on_client = 0
            return self._client
        return None

    def _drop(self, *, next_host: bool) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
            self._open_gauge.dec()
        if next_host:
            self._index += 1
            self._losses = 0

    def close(self) -> None:
        self._drop(next_host=False)
