"""A blocking SMTP client for relaying: one connection per worker thread, reused, pipelined.

:class:`SmtpClient` runs mail transactions (RFC 5321 §3.3) over a
:class:`workers.smtp_connection.SmtpConnection`. It decides nothing about retries:
refusals come back as data (a :class:`Delivery`, one reply per recipient); a lost session
raises :class:`ConnectionLost` naming the recipients left without a verdict.

Few syscalls per message: with PIPELINING the envelope (RSET? MAIL RCPT… DATA, RFC 2920
§3.1) is one ``sendall``, the data one more, and replies come from buffered ``recv``s.
Choices worth knowing:

- Decided here without a transaction: SMTPUTF8 needed but not offered → 550 5.6.7
  (RFC 6531 §3.2: the message must not be sent; X.6.7 from RFC 6531, RFC 5248); body over the
  advertised SIZE → 552 5.3.4 (RFC 1870 §6); a CR/LF/NUL in an address → 501 5.1.7 (sender)
  or 5.1.3 (recipient), since it would inject commands.
- An 8-bit body to a server without 8BITMIME is sent as is (RFC 6152 §3 says it should
  not be; Exim does the same, Postfix converts only MIME bodies to 7 bit): bouncing would
  lose mail that practically every server takes. BODY=8BITMIME is declared whenever the
  server offers it and the body is 8-bit, whatever ``body_8bit`` says.
- After a transaction that did not reach the reply to ".", the next one starts with RSET
  (§4.1.1.5), pipelined with the envelope when the server allows (RFC 2920 §3.1).
- :meth:`SmtpClient.send_many` overlaps messages: "the actual transfer of message content
  is explicitly allowed to be the first 'command' in a group" (RFC 2920 §3.1), so message
  i's data and "." go in one write with message i+1's RSET? MAIL RCPT… DATA, and the reply
  to "." is read before the envelope replies: N messages cost N + 1 round trips, not 2N.
"""

from collections.abc import Callable, Sequence

from shared.replies import Reply
from workers import smtp_wire
from workers.smtp_connection import CHUNK, SmtpConnection, Timeouts, TlsMode
from workers.smtp_errors import ConnectFailed, ConnectionLost, SessionTimeout, TlsFailed
from workers.smtp_transaction import Delivery, Outgoing, Transaction

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "Delivery",
    "Outgoing",
    "SessionTimeout",
    "SmtpClient",
    "Timeouts",
    "TlsFailed",
    "TlsMode",
]


class SmtpClient(SmtpConnection):
    """One SMTP session: :meth:`connect`, then :meth:`send` / :meth:`send_many` as often as
    wanted, then :meth:`close` (or use it as a context manager)."""

    def send(
        self,
        sender: str,
        recipients: list[str],
        body: bytes,
        *,
        smtputf8: bool = False,
        body_8bit: bool = False,
    ) -> Delivery:
        """One mail transaction (RFC 5321 §3.3) for ``body`` (CRLF lines, not dot-stuffed).

        Returns a verdict per recipient. Raises :class:`ConnectionLost` (the client is then
        closed) with the recipients still ``pending``. SMTPUTF8 is also used when an address
        is not ASCII.
        """
        if self.closed:
            raise ConnectionLost(f"{self._where()}: closed", pending=tuple(recipients))
        message = Outgoing(sender, recipients, body, smtputf8=smtputf8, body_8bit=body_8bit)
        txn, smtputf8, refusal = self._prepare(message)
        if refusal is not None:
            return txn.delivery(refusal)
        try:
            final = self._transact(txn, message, smtputf8)
        except ConnectionLost as exc:
            _describe(exc, txn)
            raise
        return txn.delivery(final)

    def send_many(
        self,
        messages: Sequence[Outgoing],
        on_delivery: Callable[[int, Delivery], None] | None = None,
        stop: Callable[[], bool] | None = None,
        abandon: Callable[[], bool] | None = None,
    ) -> list[Delivery]:
        """:meth:`send` for each message in turn, with fewer round trips; the same verdicts.

        With PIPELINING, message i's data goes in the same write as message i+1's envelope
        (RFC 2920 §3.1); the reply to its "." is read before message i+1's data is sent, so
        one message's refusal never changes another's outcome. Without PIPELINING it is a
        loop over :meth:`send`. Raises :class:`ConnectionLost` whose ``deliveries`` are the
        messages finished before the loss (see :mod:`workers.smtp_errors`).

        ``on_delivery(i, delivery)`` is called as soon as message i's verdict is final, before
        the next message's data goes out, so a caller can record it at once and keep the
        duplicate window at one message (DESIGN invariant 3).

        ``stop()`` is asked before each message is begun: once it says True, the message in
        progress is finished and the rest are not sent (fewer deliveries come back). When
        ``abandon()`` also says True (the caller no longer holds the message: its lease may
        have passed to another worker), a message whose content has not gone out yet is
        not finished: the connection is closed before its final "." so the server discards
        it (RFC 5321 §4.1.1.4), and no delivery comes back for it.
        """
        deliveries: list[Delivery] = _Reporting(on_delivery)
        stop = stop or _never
        try:
            if self.extensions.pipelining and not self.closed:
                self._send_overlapped(messages, deliveries, stop, abandon or _never)
            else:
                for m in messages:
                    if stop():
                        break
                    deliveries.append(
                        self.send(
                            m.sender,
                            list(m.recipients),
                            m.body,
                            smtputf8=m.smtputf8,
                            body_8bit=m.body_8bit,
                        )
                    )
        except ConnectionLost as exc:
            exc.deliveries = deliveries
            raise
        return deliveries

    def _send_overlapped(
        self, messages: Sequence[Outgoing], deliveries: list[Delivery], stop: Callable[[], bool],
        abandon: Callable[[], bool],
    ) -> None:  # fmt: skip
        """The pipelined batch: appends each message's Delivery as soon as it is final."""
        held: tuple[Transaction, bytes] | None = None  # data that rides with the next write
        current = Transaction(())  # the message a lost connection interrupts
        try:
            for message in messages:
                if stop():
                    break
                txn, smtputf8, refusal = self._prepare(message)
                if refusal is not None:
                    if held is not None:  # keep the order: finish the held message first
                        self._write_data(*held)
                        deliveries.append(self._conclude(held[0]))
                        held = None
                    deliveries.append(txn.delivery(refusal))
                    continue
                group, rset = self._pipelined_envelope(self._envelope(txn, message, smtputf8))
                if held is None:
                    current = txn
                    self._write(group, self.timeouts.mail)
                else:  # RFC 2920 §3.1: the content, then the next group, in one write
                    self._write_data(*held, then=group)
                    deliveries.append(self._conclude(held[0]))
                    held, current = None, txn
                data_reply = self._read_envelope(txn, rset)
                if data_reply.code != 354:
                    deliveries.append(txn.delivery(self._data_refused(txn, data_reply)))
                    continue
                held = (txn, self._payload(txn, message.body))  # ``current`` is txn
                self._needs_rset = False  # its "." goes out next; its reply ends it (§4.1.1.4)
            if held is not None and abandon():
                self._shutdown()  # no "." for the held message: the server drops it
            elif held is not None:
                self._write_data(*held)
                deliveries.append(self._conclude(held[0]))
        except ConnectionLost as exc:
            _describe(exc, current)
            raise

    def _prepare(self, message: Outgoing) -> tuple[Transaction, bool, Reply | None]:
        """The transaction, whether it needs SMTPUTF8, and its local refusal if any."""
        addresses = [message.sender, *message.recipients]
        smtputf8 = message.smtputf8 or not all(address.isascii() for address in addresses)
        txn = Transaction(message.recipients)
        return txn, smtputf8, self._refuse_locally(txn, message.sender, smtputf8, len(message.body))

    def _refuse_locally(
        self, txn: Transaction, sender: str, smtputf8: bool, size: int
    ) -> Reply | None:
        """The reply that ends the transaction before any command, if there is one."""
        limit = self.extensions.size
        if not smtp_wire.valid_address(sender):
            refusal = smtp_wire.BAD_SENDER
        elif smtputf8 and not self.extensions.smtputf8:
            refusal = smtp_wire.NEED_SMTPUTF8
        elif limit and size > limit:
            refusal = smtp_wire.MESSAGE_TOO_BIG
        else:
            for recipient in txn.recipients:
                if not smtp_wire.valid_address(recipient):
                    txn.decide([recipient], smtp_wire.BAD_RECIPIENT)
            txn.recipients = txn.pending()
            if txn.recipients:
                return None
            return smtp_wire.BAD_RECIPIENT if txn.replies else smtp_wire.NO_VALID_RECIPIENTS
        txn.decide(txn.recipients, refusal)
        return refusal

    def _transact(self, txn: Transaction, message: Outgoing, smtputf8: bool) -> Reply:
        envelope = self._envelope(txn, message, smtputf8)
        if self.extensions.pipelining:
            group, rset = self._pipelined_envelope(envelope)
            self._write(group, self.timeouts.mail)
            data_reply = self._read_envelope(txn, rset)
        else:
            data_reply = self._envelope_serial(txn, *envelope)
        if data_reply.code != 354:
            return self._data_refused(txn, data_reply)
        self._write_data(txn, self._payload(txn, message.body))
        delivery = self._conclude(txn)
        self._needs_rset = False  # the reply to "." ends the transaction (§4.1.1.4)
        return delivery.final

    def _envelope(
        self, txn: Transaction, message: Outgoing, smtputf8: bool
    ) -> tuple[bytes, list[bytes]]:
        """MAIL (counted in ``transactions``) and the RCPTs."""
        body = message.body
        mail = smtp_wire.mail_command(
            message.sender,
            self.extensions,
            size=len(body),
            eight_bit=message.body_8bit or not body.isascii(),
            smtputf8=smtputf8,
        )
        self.transactions += 1
        return mail, [smtp_wire.rcpt_command(r, smtputf8=smtputf8) for r in txn.recipients]

    def _data_refused(self, txn: Transaction, data_reply: Reply) -> Reply:
        txn.decide(txn.accepted, data_reply)
        return data_reply

    @staticmethod
    def _payload(txn: Transaction, body: bytes) -> bytes:
        # RFC 2920 §3.1: DATA accepted although no RCPT was: send a lone dot, then move on.
        return smtp_wire.data_payload(body) if txn.accepted else b".\r\n"

    def _write_data(self, txn: Transaction, payload: bytes, then: bytes = b"") -> None:
        """The data in ``CHUNK``-byte writes; ``then`` (the next group) rides with the last."""
        last = (len(payload) - 1) // CHUNK * CHUNK
        for offset in range(0, last, CHUNK):
            self._write(payload[offset : offset + CHUNK], self.timeouts.data_block)
        if then:  # the "." may be out even if the bytes behind it are not
            txn.data_sent = bool(txn.accepted)
        self._write(payload[last:] + then, self.timeouts.data_block)
        txn.data_sent = bool(txn.accepted)

    def _conclude(self, txn: Transaction) -> Delivery:
        """Read the reply to "." and decide the accepted recipients with it."""
        final = self._read(self.timeouts.data_final)
        if not txn.accepted:
            return txn.delivery(smtp_wire.NO_VALID_RECIPIENTS)
        txn.decide(txn.accepted, final)
        if final.code // 100 == 2:
            self.delivered += 1
        return txn.delivery(final)

    def _pipelined_envelope(self, envelope: tuple[bytes, list[bytes]]) -> tuple[bytes, bool]:
        """RSET? MAIL RCPT… DATA as one group (RFC 2920 §3.1); whether it starts with RSET."""
        rset, self._needs_rset = self._needs_rset, True
        mail, rcpts = envelope
        return b"".join([b"RSET\r\n" if rset else b"", mail, *rcpts, b"DATA\r\n"]), rset

    def _read_envelope(self, txn: Transaction, rset: bool) -> Reply:
        """The replies to a pipelined group, in order; returns the one that decides DATA."""
        if rset:
            self._expect_ok(self._read(self.timeouts.command))
        mail_reply = self._read(self.timeouts.mail)
        if mail_reply.code // 100 != 2:
            txn.decide(txn.recipients, mail_reply)
        for recipient in txn.recipients:
            txn.record_rcpt(recipient, self._read(self.timeouts.rcpt))
        data_reply = self._read(self.timeouts.data_init)
        return mail_reply if mail_reply.code // 100 != 2 and data_reply.code != 354 else data_reply

    def _envelope_serial(self, txn: Transaction, mail: bytes, rcpts: list[bytes]) -> Reply:
        if self._needs_rset:  # §4.1.1.5: clear what the last, unfinished transaction left
            self._expect_ok(self._command(b"RSET\r\n", self.timeouts.command))
        self._needs_rset = True
        mail_reply = self._command(mail, self.timeouts.mail)
        if mail_reply.code // 100 != 2:
            txn.decide(txn.recipients, mail_reply)
            return mail_reply
        for recipient, rcpt in zip(txn.recipients, rcpts, strict=True):
            txn.record_rcpt(recipient, self._command(rcpt, self.timeouts.rcpt))
        if not txn.accepted:
            return smtp_wire.NO_VALID_RECIPIENTS
        return self._command(b"DATA\r\n", self.timeouts.data_init)

    def _expect_ok(self, reply: Reply) -> None:
        if reply.code // 100 != 2:
            raise self._failure(reply)


def _never() -> bool:
    return False


def _describe(exc: ConnectionLost, txn: Transaction) -> None:
    """Fill ``exc`` in with ``txn``, the transaction the loss interrupted."""
    exc.pending, exc.replies = txn.pending(), dict(txn.replies)
    exc.maybe_delivered = txn.data_sent


class _Reporting(list[Delivery]):
    """The deliveries of a batch, each reported to a callback when appended."""

    def __init__(self, callback: Callable[[int, Delivery], None] | None) -> None:
        super().__init__()
        self._callback = callback

    def append(self, delivery: Delivery) -> None:
        super().append(delivery)
        if self._callback is not None:
            self._callback(len(self) - 1, delivery)
