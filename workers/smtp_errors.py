"""What the SMTP client raises: the session with one host is unusable, try later or elsewhere.

```
shared.errors.TemporaryFailure
 └── ConnectionLost (+ ConnectionError)   421 at any point, connection dropped, garbage
      ├── ConnectFailed                   TCP connect, greeting, EHLO/HELO: before any send()
      │    └── TlsFailed                  tls="required"/"verify" not met (4.7.4 / 4.7.5)
      └── SessionTimeout (+ TimeoutError) no reply within an RFC 5321 §4.5.3.2 timeout
```

These are always *temporary for this host*, whatever ``reply`` says: a 554 greeting
(RFC 5321 §3.1, "no SMTP service here") is carried as is, so that logs and DSNs show it,
but the caller tries the next MX host (§5.1) and defers if none is left. Per-recipient
refusals are never exceptions: they are data in :class:`workers.smtp_client.Delivery`.

``SmtpClient.send_many(messages)`` raises the same exceptions; the batch is then in three
parts: ``messages[:k]`` are finished, their verdicts in ``exc.deliveries`` (k =
``len(exc.deliveries)``, in order, local refusals included); ``messages[k]`` was in
progress and ``pending`` / ``replies`` / ``maybe_delivered`` describe it as for ``send``
(``maybe_delivered``: its "." was sent, the reply never came); ``messages[k + 1:]`` were
not attempted (no data of theirs was sent; at most the envelope of ``messages[k + 1]``,
pipelined behind the data of ``messages[k]``, which ends with no DATA reply read). For
``send``, ``deliveries`` is empty.
"""

from shared.errors import TemporaryFailure
from shared.replies import Reply
from workers import smtp_wire
from workers.smtp_transaction import Delivery


class ConnectionLost(TemporaryFailure, ConnectionError):
    """The session ended before the transaction did; the client is closed.

    ``reply``: the server's 421 or a synthesised 421 4.4.x / 4.5.0 (see :mod:`smtp_wire`).
    ``pending``: recipients of the interrupted ``send`` that got no verdict — retry them.
    ``replies``: verdicts that were final before the loss (e.g. a 550 to RCPT).
    ``maybe_delivered``: the end of data was sent but its reply never came: the server may
    have taken the message (RFC 5321 §6.1), so a retry may duplicate it — count it.
    ``deliveries``: for ``send_many``, the messages finished before the loss (see above).
    """

    reply: Reply = smtp_wire.CONNECTION_DROPPED

    def __init__(
        self,
        detail: str = "",
        reply: Reply | None = None,
        *,
        pending: tuple[str, ...] = (),
        replies: dict[str, Reply] | None = None,
        maybe_delivered: bool = False,
    ) -> None:
        super().__init__(detail, reply)
        self.pending = pending
        self.replies: dict[str, Reply] = replies or {}
        self.maybe_delivered = maybe_delivered
        self.deliveries: list[Delivery] = []


class ConnectFailed(ConnectionLost):
    reply = smtp_wire.CONNECT_FAILED


class TlsFailed(ConnectFailed):
    reply = smtp_wire.TLS_FAILED


class SessionTimeout(ConnectionLost, TimeoutError):
    reply = smtp_wire.TIMED_OUT
