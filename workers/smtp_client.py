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
"""

from shared.replies import Reply
from workers import smtp_wire
from workers.smtp_connection import CHUNK, SmtpConnection, Timeouts, TlsMode
from workers.smtp_errors import ConnectFailed, ConnectionLost, SessionTimeout, TlsFailed
from workers.smtp_transaction import Delivery, Transaction

__all__ = [
    "ConnectFailed",
    "ConnectionLost",
    "Delivery",
    "SessionTimeout",
    "SmtpClient",
    "Timeouts",
    "TlsFailed",
    "TlsMode",
]


class SmtpClient(SmtpConnection):
    """One SMTP session: :meth:`connect`, then :meth:`send` as often as wanted, then
    :meth:`close` (or use it as a context manager)."""

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
        smtputf8 = smtputf8 or not (sender.isascii() and all(r.isascii() for r in recipients))
        txn = Transaction(recipients)
        refusal = self._refuse_locally(txn, sender, smtputf8, len(body))
        if refusal is not None:
            return txn.delivery(refusal)
        try:
            final = self._transact(txn, sender, body, smtputf8, body_8bit)
        except ConnectionLost as exc:
            exc.pending, exc.replies = txn.pending(), dict(txn.replies)
            exc.maybe_delivered = txn.data_sent
            raise
        return txn.delivery(final)

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

    def _transact(
        self, txn: Transaction, sender: str, body: bytes, smtputf8: bool, body_8bit: bool
    ) -> Reply:
        eight_bit = body_8bit or not body.isascii()
        mail = smtp_wire.mail_command(
            sender, self.extensions, size=len(body), eight_bit=eight_bit, smtputf8=smtputf8
        )
        rcpts = [smtp_wire.rcpt_command(r, smtputf8=smtputf8) for r in txn.recipients]
        self.transactions += 1
        if self.extensions.pipelining:
            data_reply = self._envelope_pipelined(txn, mail, rcpts)
        else:
            data_reply = self._envelope_serial(txn, mail, rcpts)
        if data_reply.code != 354:
            txn.decide(txn.accepted, data_reply)
            return data_reply
        payload = smtp_wire.data_payload(body) if txn.accepted else b".\r\n"
        # RFC 2920 §3.1: DATA accepted although no RCPT was: send a lone dot, then move on.
        for offset in range(0, len(payload), CHUNK):
            self._write(payload[offset : offset + CHUNK], self.timeouts.data_block)
        txn.data_sent = bool(txn.accepted)
        final = self._read(self.timeouts.data_final)
        self._needs_rset = False  # the reply to "." ends the transaction (§4.1.1.4)
        if not txn.accepted:
            return smtp_wire.NO_VALID_RECIPIENTS
        txn.decide(txn.accepted, final)
        if final.code // 100 == 2:
            self.delivered += 1
        return final

    def _envelope_pipelined(self, txn: Transaction, mail: bytes, rcpts: list[bytes]) -> Reply:
        """RSET? MAIL RCPT… DATA in one write (RFC 2920 §3.1), then every reply in order."""
        rset = self._needs_rset
        self._needs_rset = True
        self._write(
            b"".join([b"RSET\r\n" if rset else b"", mail, *rcpts, b"DATA\r\n"]), self.timeouts.mail
        )
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
