"""One mail transaction's bookkeeping (pure): which reply decides each recipient.

RFC 5321 §3.3: a recipient is decided by its RCPT reply when refused, otherwise by the
reply that ends the transaction for the accepted ones (DATA refused, or the reply to the
final "."). A MAIL refusal decides everyone.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shared.replies import Reply


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message for ``SmtpClient.send_many``: the arguments of ``SmtpClient.send``.

    ``body``: CRLF lines, not dot-stuffed. ``smtputf8``: the message needs SMTPUTF8 (also
    implied by a non-ASCII address). ``body_8bit``: declare BODY=8BITMIME when offered.
    """

    sender: str
    recipients: Sequence[str]
    body: bytes
    smtputf8: bool = False
    body_8bit: bool = False


@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of ``SmtpClient.send`` (one per message of ``send_many``).

    ``replies``: per recipient (in the order given, duplicates merged) the reply that decides
    it: 2xx delivered, 4xx defer, 5xx bounce (``Reply.is_transient`` / ``is_permanent``).
    ``final``: the reply that ended the transaction (to ".", to DATA, to MAIL, or one the
    client made up, e.g. 554 5.5.1 when no RCPT was accepted).
    """

    replies: dict[str, Reply]
    final: Reply

    @property
    def accepted(self) -> list[str]:
        """Recipients the server took responsibility for (RFC 5321 §6.1)."""
        return [rcpt for rcpt, reply in self.replies.items() if reply.code // 100 == 2]


class Transaction:
    """Mutable state of one ``send``: verdicts so far, RCPTs accepted, data sent or not."""

    __slots__ = ("accepted", "data_sent", "order", "recipients", "replies")

    def __init__(self, recipients: Iterable[str]) -> None:
        self.order = tuple(dict.fromkeys(recipients))
        self.recipients = self.order  # the ones that go on the wire
        self.replies: dict[str, Reply] = {}
        self.accepted: list[str] = []
        self.data_sent = False

    def decide(self, recipients: Iterable[str], reply: Reply) -> None:
        for recipient in recipients:
            self.replies[recipient] = reply

    def record_rcpt(self, recipient: str, reply: Reply) -> None:
        """A RCPT reply: 2xx accepts (verdict later), anything else decides now."""
        if recipient in self.replies:  # MAIL was refused: its reply stands (RFC 2920 §3.1)
            return
        if reply.code // 100 == 2:
            self.accepted.append(recipient)
        else:
            self.replies[recipient] = reply

    def pending(self) -> tuple[str, ...]:
        """Recipients without a verdict yet (what a lost connection leaves to retry)."""
        return tuple(rcpt for rcpt in self.recipients if rcpt not in self.replies)

    def delivery(self, final: Reply) -> Delivery:
        return Delivery({rcpt: self.replies[rcpt] for rcpt in self.order}, final)
