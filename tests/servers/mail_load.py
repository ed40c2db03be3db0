"""Bulk senders for chaos runs, and the ledger of what each attempt got.

A message ``i`` is the same on every attempt except its ``X-Chaos-Id: i.attempt`` (and
``Message-ID``): 1-5 recipients over the fleet's domains, a body of 1-100 KiB (log-uniform:
most bulk mail is small, some is large) of 76-column base64 lines. The ledger keeps each
attempt's recipients, the SHA-256 of the bytes sent, and its outcome:

- ``accepted``: the ingress answered 250 to the final dot (the message is the relay's);
- ``refused``: any other reply, or the connection failed before the final dot was sent;
- ``unknown``: the final dot was sent and the connection broke before a reply came, so the
  relay may or may not hold it (the client retries, as RFC 5321 §4.1.1.4 clients do).

Senders retry a message that was not accepted with a new attempt, over a fresh connection
to a random ingress node, until it is accepted or their deadline passes.
"""

import base64
import contextlib
import hashlib
import queue
import random
import re
import smtplib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_DOT = re.compile(rb"^\.", re.MULTILINE)


@dataclass
class Attempt:
    index: int
    recipients: list[str]
    digest: str
    outcome: str = "pending"
    reply: str = ""
    accepted_at: float = 0.0


def message(index: int, attempt: int, domains: Sequence[str], seed: int) -> tuple[bytes, list[str]]:
    """The bytes (CRLF lines) and recipients of attempt ``attempt`` of message ``index``."""
    rng = random.Random(seed * 1_000_003 + index)
    count = rng.randint(1, 5)
    recipients = [f"u{index}r{k}@{rng.choice(domains)}" for k in range(count)]
    size = int(1024 * 100 ** rng.random())
    body = base64.encodebytes(rng.randbytes(size * 3 // 4)).replace(b"\n", b"\r\n")
    header = (
        f"From: Sender <bulk@client.test>\r\nTo: <{recipients[0]}>\r\n"
        f"Subject: chaos {index}\r\nDate: Sun, 29 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{index}.{attempt}@client.test>\r\nX-Chaos-Id: {index}.{attempt}\r\n"
        "MIME-Version: 1.0\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    ).encode()
    return header + body, recipients


@dataclass
class Load:
    """``count`` messages through ``targets`` (ingress (host, port) pairs)."""

    count: int
    domains: Sequence[str]
    targets: Callable[[], Sequence[tuple[str, int]]]
    seed: int = 7
    ledger: dict[str, Attempt] = field(default_factory=dict)
    accepted: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _todo: "queue.Queue[int]" = field(default_factory=queue.Queue)
    _attempts: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for index in range(self.count):
            self._todo.put(index)

    def run(self, senders: int, deadline: float) -> None:
        threads = [
            threading.Thread(target=self._sender, args=(n, deadline), daemon=True)
            for n in range(senders)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 60)

    def outcomes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for attempt in list(self.ledger.values()):
            counts[attempt.outcome] = counts.get(attempt.outcome, 0) + 1
        return counts

    def _sender(self, number: int, deadline: float) -> None:
        rng = random.Random(number)
        smtp: smtplib.SMTP | None = None
        while time.monotonic() < deadline:
            try:
                index = self._todo.get(timeout=0.5)
            except queue.Empty:
                if self.accepted >= self.count:
                    break
                continue
            if smtp is None:
                smtp = self._connect(rng)
            ok = smtp is not None and self._send(smtp, index)
            if not ok:
                self._todo.put(index)
                if smtp is not None:
                    with contextlib.suppress(Exception):
                        smtp.close()
                smtp = None
                time.sleep(0.05 + rng.random() * 0.2)  # a client's pause before retrying
        if smtp is not None:
            with contextlib.suppress(Exception):
                smtp.quit()

    def _connect(self, rng: random.Random) -> smtplib.SMTP | None:
        host, port = rng.choice(list(self.targets()))
        try:
            smtp = smtplib.SMTP(host, port, timeout=30)
            smtp.ehlo("client.test")
        except (OSError, smtplib.SMTPException):
            return None
        return smtp

    def _send(self, smtp: smtplib.SMTP, index: int) -> bool:
        with self._lock:
            number = self._attempts[index] = self._attempts.get(index, -1) + 1
        data, recipients = message(index, number, self.domains, self.seed)
        attempt = Attempt(index, recipients, hashlib.sha256(data).hexdigest())
        self.ledger[f"{index}.{number}"] = attempt
        sent_dot = False
        try:
            code, reply = smtp.mail("bulk@client.test")
            for recipient in recipients:
                if code == 250:
                    code, reply = smtp.rcpt(recipient)
            if code == 250:
                code, reply = smtp.docmd("DATA")
            if code == 354:
                smtp.send(_DOT.sub(b"..", data) + b".\r\n")
                sent_dot = True
                code, reply = smtp.getreply()
        except (OSError, smtplib.SMTPException) as exc:
            attempt.outcome, attempt.reply = ("unknown" if sent_dot else "refused"), repr(exc)
            return False
        attempt.reply = f"{code} {reply.decode(errors='replace')}"
        if code != 250:
            attempt.outcome = "refused"  # the message is retried on a new connection
            return False
        attempt.outcome, attempt.accepted_at = "accepted", time.time()
        with self._lock:
            self.accepted += 1
        return True
