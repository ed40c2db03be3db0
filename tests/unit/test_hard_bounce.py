"""workers/hard_bounce.py: which bounces put a recipient on the suppression list."""

import pytest

from shared.replies import Reply
from workers import mx, smtp_wire
from workers.hard_bounce import HARD_STATUSES, hard_bounces, is_hard_bounce
from workers.smtp_wire import parse_reply


@pytest.mark.parametrize(
    "reply",
    [
        Reply(550, "5.1.1", "No such user here"),
        Reply(550, "5.1.0", "Address rejected"),
        Reply(553, "5.1.3", "Bad recipient address syntax"),
        Reply(551, "5.1.6", "Mailbox has moved"),
        Reply(554, "5.1.2", "Host unknown"),
        mx.NO_SUCH_DOMAIN,  # ours, NXDOMAIN: 550 5.1.2
        mx.NULL_MX,  # ours, RFC 7505: 556 5.1.10
        smtp_wire.BAD_RECIPIENT,  # ours: 501 5.1.3
        Reply(550, "5.0.0", "User unknown"),  # a 550 without an enhanced code
        Reply(550, "5.0.0", "<bob@example.org>: Recipient address rejected: User unknown"),
        Reply(550, "", "no such user - bob"),
        Reply(550, "5.0.0", "Unknown recipient"),
        Reply(550, "5.0.0", "Mailbox not found"),
        Reply(550, "5.0.0", "Requested action not taken: no such mailbox"),
    ],
    ids=str,
)
def test_hard_bounces(reply: Reply) -> None:
    assert is_hard_bounce(reply)


@pytest.mark.parametrize(
    "reply",
    [
        Reply(250, "2.1.5", "OK"),
        Reply(450, "4.1.1", "User unknown in local table, try later"),  # transient: never
        Reply(452, "4.2.2", "Mailbox full"),
        Reply(451, "4.3.0", "Try again"),
        Reply(552, "5.2.2", "Mailbox full"),  # RFC 3463 §3.3: the owner may fix it
        Reply(550, "5.2.1", "Mailbox disabled"),
        Reply(550, "5.7.1", "User unknown or message refused by policy"),  # policy wins
        Reply(554, "5.7.1", "Service unavailable; client host blocked"),
        Reply(550, "5.1.7", "Bad sender address"),  # about the sender
        Reply(550, "5.1.8", "Sender domain does not exist"),
        Reply(552, "5.3.4", "Message too big"),
        Reply(550, "5.4.4", "Unable to route"),
        Reply(554, "5.5.1", "No valid recipients"),
        Reply(550, "5.6.7", "SMTPUTF8 required"),
        Reply(550, "5.0.0", "Message rejected as spam"),  # a bare 550 that names no user
        Reply(550, "5.0.0", "Mailbox unavailable"),  # often a block, not a missing user
        Reply(554, "5.0.0", "User unknown"),  # only a plain 550 reads the text
        Reply(551, "5.0.0", "User not local; please try <bob@example.net>"),
        Reply(550, "5.0.0", "users unknownish"),  # whole words only
        mx.NO_ROUTE,
        mx.DNS_TEMPFAIL,
        smtp_wire.CONNECT_FAILED,
    ],
    ids=str,
)
def test_soft_bounces_and_other_replies(reply: Reply) -> None:
    assert not is_hard_bounce(reply)


def test_the_hard_statuses_are_all_addressing_statuses() -> None:
    # RFC 3463 §3.2: X.1.Y is "Addressing Status"; 5.1.7 and 5.1.8 are the sender's.
    assert all(status.startswith("5.1.") for status in HARD_STATUSES)
    assert not HARD_STATUSES & {"5.1.7", "5.1.8"}


def test_a_reply_from_the_wire_without_an_enhanced_code() -> None:
    parsed = parse_reply(bytearray(b"550 User unknown\r\n"))
    assert parsed is not None
    reply, _ = parsed
    assert (reply.code, reply.status) == (550, "5.0.0")
    assert is_hard_bounce(reply)


def test_hard_bounces_keeps_only_the_bounced_hard_ones() -> None:
    replies = {
        "hard@x.test": Reply(550, "5.1.1", "No such user"),
        "full@x.test": Reply(552, "5.2.2", "Mailbox full"),
        "later@x.test": Reply(452, "4.2.2", "Over quota"),  # expired: bounced with a 4xx
        "ok@x.test": Reply(250, "2.0.0", "OK"),
        "deferred@x.test": Reply(550, "5.1.1", "listed as deferred, not bounced"),
    }
    bounced = ["hard@x.test", "full@x.test", "later@x.test", "missing@x.test"]
    assert hard_bounces(replies, bounced) == {"hard@x.test": replies["hard@x.test"]}
