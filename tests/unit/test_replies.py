"""shared/replies.py: the Reply value and the canned replies (RFC 5321 §4.2, RFC 3463)."""

import re

import pytest

from shared import replies
from shared.replies import Reply

ALL = {name: value for name, value in vars(replies).items() if isinstance(value, Reply)}


def test_there_are_canned_replies() -> None:
    assert len(ALL) >= 40


def test_str_and_encode() -> None:
    reply = Reply(250, "2.0.0", "OK")
    assert str(reply) == "250 2.0.0 OK"
    assert reply.encode() == b"250 2.0.0 OK\r\n"
    no_status = Reply(354, "", "Go ahead")
    assert str(no_status) == "354 Go ahead"
    assert no_status.encode() == b"354 Go ahead\r\n"


def test_encode_is_utf8() -> None:
    assert Reply(550, "5.1.1", "ü").encode() == "550 5.1.1 ü\r\n".encode()


def test_with_text_keeps_code_and_status() -> None:
    changed = replies.OK.with_text("Ok: queued as X")
    assert changed == Reply(replies.OK.code, replies.OK.status, "Ok: queued as X")
    assert replies.OK.text == "OK"  # the canned reply is untouched


@pytest.mark.parametrize(
    ("code", "transient", "permanent"),
    [(250, False, False), (354, False, False), (421, True, False), (451, True, False),
     (499, True, False), (500, False, True), (554, False, True)],
)  # fmt: skip
def test_transient_and_permanent(code: int, transient: bool, permanent: bool) -> None:
    reply = Reply(code, "", "x")
    assert reply.is_transient is transient
    assert reply.is_permanent is permanent


@pytest.mark.parametrize("name", sorted(ALL))
def test_canned_reply_is_well_formed(name: str) -> None:
    reply = ALL[name]
    assert 200 <= reply.code <= 599
    assert reply.text
    assert reply.text.isprintable()
    assert "\r" not in reply.text
    assert "\n" not in reply.text
    if reply.code == 354:  # RFC 3463 gives no enhanced code to an intermediate reply
        assert reply.status == ""
    else:
        # RFC 3463 §2: the class digit of the enhanced code matches the reply's first digit.
        assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.status)
        assert reply.status[0] == str(reply.code)[0]
    assert reply.encode().endswith(b"\r\n")
    assert reply.encode().count(b"\r\n") == 1


@pytest.mark.parametrize(
    ("reply", "code", "status"),
    [
        # The codes DESIGN.md promises operators and clients.
        (replies.SPOOL_UNAVAILABLE, 451, "4.3.0"),
        (replies.SPOOL_FULL, 452, "4.3.1"),
        (replies.RELAY_DENIED, 550, "5.7.1"),
        (replies.LOOP_DETECTED, 554, "5.4.6"),
        (replies.MESSAGE_TOO_BIG, 552, "5.3.4"),
        (replies.TOO_MANY_RECIPIENTS, 452, "4.5.3"),
        (replies.AUTH_OK, 235, "2.7.0"),
        (replies.AUTH_FAILED, 535, "5.7.8"),
        (replies.AUTH_LOCKED, 454, "4.7.0"),  # RFC 4954 §6
        (replies.AUTH_TEMPFAIL, 454, "4.7.0"),
        (replies.NEED_SMTPUTF8, 553, "5.6.7"),
        (replies.START_DATA, 354, ""),
    ],
)
def test_contract_codes(reply: Reply, code: int, status: str) -> None:
    assert (reply.code, reply.status) == (code, status)


def test_refusals_that_must_be_told_apart_are_distinct() -> None:
    # The session counts DATA refusals by reply; these three must not compare equal.
    refusals = {replies.MESSAGE_TOO_BIG, replies.BARE_NEWLINE, replies.LINE_TOO_LONG_DATA}
    assert len(refusals) == 3
