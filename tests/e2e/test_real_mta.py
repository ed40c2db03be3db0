"""mxfleet delivering to a real MTA: a private Postfix instance (Debian's package) as the MX.

ingress → spool → worker → Postfix's smtpd on 127.0.0.2 (MX of pf.test) → relayed by
Postfix to a Python sink on 127.0.0.3, which records what arrived. The sender's domain
example.test has its own sink on 127.0.0.4 for the DSNs.
"""

import email
import email.policy
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.fleet import Fleet
from tests.servers.postfix_mta import HOSTNAME, PostfixMta, require_postfix
from tests.servers.smtp_sink import SmtpSink, Transaction
from tests.servers.wait import wait_until

DOMAIN = "pf.test"
POSTFIX_HOST, DOWNSTREAM_HOST, HOME_HOST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
MAILBOXES = ("alice", "bob", "carol", "dave")
SENDER = "sender@example.test"
HEADERS = "From: <sender@example.test>\r\nDate: Thu, 01 Jan 2026 00:00:00 +0000\r\n"

THREE_RECIPIENTS = (
    f"Subject: three\r\nMessage-ID: <three@example.test>\r\n{HEADERS}"
    "To: alice@pf.test, bob@pf.test, carol@pf.test\r\n\r\nhello, three of you\r\n"
).encode()
DOTS = (
    f"Subject: dots\r\nMessage-ID: <dots@example.test>\r\n{HEADERS}To: dave@pf.test\r\n\r\n"
    ".starts with a dot\r\n..starts with two\r\n.\r\n. \r\nlast line\r\n"
).encode()
UTF8 = (
    f"Subject: utf8\r\nMessage-ID: <utf8@example.test>\r\n{HEADERS}To: bob@pf.test\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüße aus Köln, 東京, Ωμέγα ✉\r\n\xa0non-breaking, €uro\r\n"
).encode()


@pytest.fixture
def downstream(fleet: Fleet) -> Iterator[SmtpSink]:
    """Where Postfix relays what it accepted."""
    sink = SmtpSink(DOWNSTREAM_HOST, fleet.delivery_port, hostname="downstream.test").start()
    yield sink
    sink.stop()


@pytest.fixture
def postfix(fleet: Fleet, downstream: SmtpSink, tmp_path: Path) -> Iterator[PostfixMta]:
    """A private Postfix on 127.0.0.2:delivery_port, the MX of pf.test."""
    require_postfix()
    mta = PostfixMta(
        workdir=tmp_path / "postfix",
        host=POSTFIX_HOST,
        port=fleet.delivery_port,
        domain=DOMAIN,
        mailboxes=MAILBOXES,
        relay_to=(DOWNSTREAM_HOST, downstream.port),
    ).start()
    fleet.dns.add_mx(DOMAIN, [(10, f"mx.{DOMAIN}")])
    fleet.dns.add_a(f"mx.{DOMAIN}", POSTFIX_HOST)
    yield mta
    mta.stop()


def arrived(sink: SmtpSink, subject: str) -> list[Transaction]:
    """The transactions at ``sink`` that carry the message with this subject."""
    marker = f"\r\nSubject: {subject}\r\n".encode()
    return [message for message in sink.messages if marker in message.data]


def after_postfix_received(data: bytes) -> tuple[bytes, bytes]:
    """Split what arrived into (Postfix's Received field, the rest)."""
    assert data.startswith(b"Received: "), data[:200]
    end = re.search(rb"\r\n(?![ \t])", data)
    assert end is not None
    return data[: end.end()], data[end.end() :]


def check_relayed(message: Transaction, original: bytes) -> None:
    """Postfix's Received, mxfleet's Received, then the original bytes, byte for byte."""
    postfix_received, rest = after_postfix_received(message.data)
    assert b"by " + HOSTNAME.encode() + b" (Postfix) with ESMTP id " in postfix_received
    assert b"from mx.fleet.test (" in postfix_received  # mxfleet's EHLO name
    assert rest.endswith(original), rest
    ours = rest[: -len(original)]
    assert ours.startswith(b"Received: from client.test"), ours
    assert b"by mx.fleet.test" in ours
    assert re.fullmatch(rb"Received: [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*", ours), ours
    assert message.mail_from == SENDER


def test_delivery_through_a_real_postfix(
    fleet: Fleet, postfix: PostfixMta, downstream: SmtpSink
) -> None:
    assert {"PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"} <= postfix.ehlo_keywords
    fleet.up()
    three = [f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol")]
    fleet.send(SENDER, three, THREE_RECIPIENTS)
    fleet.send(SENDER, [f"dave@{DOMAIN}"], DOTS)
    fleet.send(SENDER, [f"bob@{DOMAIN}"], UTF8, ("BODY=8BITMIME",))

    def all_arrived() -> bool:
        return all(arrived(downstream, subject) for subject in ("three", "dots", "utf8"))

    try:
        wait_until(all_arrived, timeout=30)
        wait_until(fleet.spool_empty, timeout=20)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{fleet.logs()}\n== postfix\n{postfix.log()}") from None

    for subject, original, recipients in (
        ("three", THREE_RECIPIENTS, three),
        ("dots", DOTS, [f"dave@{DOMAIN}"]),
        ("utf8", UTF8, [f"bob@{DOMAIN}"]),
    ):
        copies = arrived(downstream, subject)
        for copy in copies:
            check_relayed(copy, original)
        assert sorted(r for copy in copies for r in copy.rcpt_tos) == sorted(recipients)
    assert not downstream.transactions[len(downstream.messages) :]  # nothing refused

    log = postfix.log()
    assert len(re.findall(r"status=sent", log)) == 5, log  # 3 + 1 + 1 recipients
    assert "improper command pipelining" not in log, log
    assert "reject:" not in log, log
    # The sessions as Postfix counted them (the probe's and mxfleet's): every command
    # succeeded ("rcpt=2/3" would say one of three failed), 3 messages with 5 recipients.
    sessions = re.findall(r"disconnect from unknown\[127\.0\.0\.1\] (.*)", log)
    assert sessions, log
    assert all("/" not in session for session in sessions), sessions
    counts = [dict(re.findall(r"(\w+)=(\d+)", session)) for session in sessions]
    totals = {key: sum(int(c.get(key, 0)) for c in counts) for key in ("mail", "rcpt", "data")}
    assert totals == {"mail": 3, "rcpt": 5, "data": 3}, sessions


def test_postfix_refusal_bounces_to_the_sender(
    fleet: Fleet, postfix: PostfixMta, downstream: SmtpSink
) -> None:
    home = fleet.sink("example.test", HOME_HOST)
    fleet.up()
    body = f"Subject: refused\r\nMessage-ID: <refused@example.test>\r\n{HEADERS}\r\nhi\r\n"
    fleet.send(SENDER, [f"nobody@{DOMAIN}"], body.encode())
    try:
        wait_until(lambda: home.messages, timeout=30)
        wait_until(fleet.spool_empty, timeout=20)
    except AssertionError as failure:
        raise AssertionError(f"{failure}\n{fleet.logs()}\n== postfix\n{postfix.log()}") from None

    dsn = home.messages[0]
    assert dsn.mail_from == ""
    assert dsn.rcpt_tos == (SENDER,)
    parsed = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    text = dsn.data.decode("utf-8", "replace")
    assert "Action: failed" in text
    assert "Status: 5.1.1" in text
    assert f"Final-Recipient: rfc822; nobody@{DOMAIN}" in text
    assert "Diagnostic-Code: smtp; 550 5.1.1 " in text
    assert "User unknown in relay recipient table" in text  # Postfix's own words
    assert not arrived(downstream, "refused")
    rejected = r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 550 5\.1\.1 <nobody@pf"
    assert re.search(rejected, postfix.log()), postfix.log()
