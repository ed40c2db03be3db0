"""workers/smtp_wire.py and the client's other pure parts: replies, EHLO, commands, data."""

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import TemporaryFailure
from shared.replies import Reply
from workers import smtp_wire
from workers.smtp_errors import ConnectFailed, ConnectionLost, SessionTimeout, TlsFailed
from workers.smtp_transaction import Transaction
from workers.smtp_wire import Extensions, ReplyError, data_payload, parse_ehlo, parse_reply


def parse_all(data: bytes) -> list[Reply]:
    replies, position = [], 0
    while (parsed := parse_reply(data, position)) is not None:
        reply, position = parsed
        replies.append(reply)
    assert position == len(data)
    return replies


# Replies (RFC 5321 §4.2, RFC 3463, RFC 2034)


def test_single_line_with_enhanced_code() -> None:
    assert parse_reply(b"250 2.1.5 Recipient OK\r\n") == (Reply(250, "2.1.5", "Recipient OK"), 24)


def test_missing_enhanced_code_is_synthesised_for_2_4_5() -> None:
    assert parse_all(b"250 OK\r\n451 later\r\n550\r\n") == [
        Reply(250, "2.0.0", "OK"),
        Reply(451, "4.0.0", "later"),
        Reply(550, "5.0.0", ""),
    ]


def test_354_has_no_enhanced_code() -> None:
    assert parse_all(b"354 go ahead\r\n") == [Reply(354, "", "go ahead")]


def test_status_of_another_class_is_text() -> None:
    assert parse_all(b"550 2.1.5 odd\r\n") == [Reply(550, "5.0.0", "2.1.5 odd")]


def test_multi_line_joins_texts_and_strips_repeated_codes() -> None:
    data = b"550-5.7.1 Message rejected\r\n550-5.7.1 see https://x\r\n550 5.7.1\r\n"
    assert parse_all(data) == [Reply(550, "5.7.1", "Message rejected\nsee https://x\n")]


def test_pipelined_replies_come_one_by_one_with_offsets() -> None:
    data = b"250 2.1.0 OK\r\n250 2.1.5 OK\r\n354 go\r\n"
    first = parse_reply(data)
    assert first == (Reply(250, "2.1.0", "OK"), 14)
    assert parse_reply(data, 14) == (Reply(250, "2.1.5", "OK"), 28)
    assert parse_reply(data, 28) == (Reply(354, "", "go"), len(data))
    assert parse_reply(data, len(data)) is None


def test_incomplete_reply_is_none() -> None:
    assert parse_reply(b"250-first\r\n250 sec") is None
    assert parse_reply(b"25") is None
    assert parse_reply(bytearray(b"")) is None


def test_bare_lf_and_utf8_text_are_tolerated() -> None:
    assert parse_all("250 2.0.0 ok ü\n".encode()) == [Reply(250, "2.0.0", "ok ü")]
    assert parse_all(b"250 \xff\r\n") == [Reply(250, "2.0.0", "\ufffd")]


@pytest.mark.parametrize("line", [b"hello\r\n", b"25x ok\r\n", b"250x\r\n", b"\r\n", b"2500\r\n"])
def test_garbage_raises(line: bytes) -> None:
    with pytest.raises(ReplyError):
        parse_reply(line)


def test_endless_reply_is_bounded() -> None:
    with pytest.raises(ReplyError):
        parse_reply(b"250-" + b"x" * smtp_wire.MAX_REPLY_BYTES)
    with pytest.raises(ReplyError):
        parse_reply(b"250-ok\r\n" * (smtp_wire.MAX_REPLY_BYTES // 8 + 1))


line_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\r\n"),
    max_size=40,
).map(str.strip)
statuses = st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda t: f"{t[0]}.{t[1]}")


@given(
    code=st.integers(200, 599),
    status=st.one_of(st.none(), statuses),
    texts=st.lists(line_text, min_size=1, max_size=5),
    split=st.integers(0, 10_000),
)
def test_round_trip_and_any_split(
    code: int, status: str | None, texts: list[str], split: int
) -> None:
    klass = code // 100
    prefix = f"{klass}.{status} " if status and klass in (2, 4, 5) else ""
    lines = [f"{code}-{prefix}{text}" for text in texts[:-1]] + [f"{code} {prefix}{texts[-1]}"]
    data = ("\r\n".join(lines) + "\r\n").encode()
    expected_status = prefix.strip() or (f"{klass}.0.0" if klass in (2, 4, 5) else "")
    if not prefix and re.match(r"[245]\.\d{1,3}\.\d{1,3}( |$)", texts[0]):
        return  # the text itself looks like a status: covered by the examples above
    expected = Reply(code, expected_status, "\n".join(texts))
    assert parse_reply(data) == (expected, len(data))
    cut = split % len(data)
    assert parse_reply(data[:cut]) is None
    assert parse_reply(data + b"250 next\r\n") == (expected, len(data))


# EHLO (RFC 5321 §4.1.1.1)


def test_ehlo_keywords() -> None:
    reply = Reply(
        250,
        "2.0.0",
        "mx.example greets you\nPIPELINING\nsize 35882577\n8BITMIME\nSMTPUTF8\n"
        "STARTTLS\nENHANCEDSTATUSCODES\nAUTH PLAIN LOGIN",
    )
    assert parse_ehlo(reply) == Extensions(
        pipelining=True,
        size=35882577,
        eight_bit_mime=True,
        smtputf8=True,
        starttls=True,
        enhanced_status_codes=True,
        keywords=frozenset(
            {
                "PIPELINING",
                "SIZE",
                "8BITMIME",
                "SMTPUTF8",
                "STARTTLS",
                "ENHANCEDSTATUSCODES",
                "AUTH",
            }
        ),
    )


def test_ehlo_size_without_limit_and_nothing_else() -> None:
    assert parse_ehlo(Reply(250, "", "mx\nSIZE")).size == 0
    assert parse_ehlo(Reply(250, "", "mx\nSIZE junk")).size == 0
    assert parse_ehlo(Reply(250, "", "mx.example PIPELINING")) == Extensions()


# Commands (RFC 5321 §4.1.1.2-3, RFC 1870, RFC 6152, RFC 6531)


def test_mail_command_parameters_follow_extensions() -> None:
    full = Extensions(size=1000, eight_bit_mime=True, smtputf8=True)
    assert (
        smtp_wire.mail_command("a@x", full, size=10, eight_bit=True, smtputf8=False)
        == b"MAIL FROM:<a@x> SIZE=10 BODY=8BITMIME\r\n"
    )
    assert (
        smtp_wire.mail_command("", Extensions(), size=10, eight_bit=True, smtputf8=False)
        == b"MAIL FROM:<>\r\n"
    )
    assert (
        smtp_wire.mail_command("ü@x", full, size=0, eight_bit=False, smtputf8=True)
        == "MAIL FROM:<ü@x> SIZE=0 SMTPUTF8\r\n".encode()
    )
    with pytest.raises(UnicodeEncodeError):
        smtp_wire.mail_command("ü@x", full, size=0, eight_bit=False, smtputf8=False)


def test_rcpt_command_and_address_check() -> None:
    assert smtp_wire.rcpt_command("b@y", smtputf8=False) == b"RCPT TO:<b@y>\r\n"
    assert smtp_wire.rcpt_command("ü@y", smtputf8=True) == "RCPT TO:<ü@y>\r\n".encode()
    assert smtp_wire.valid_address("a@b")
    assert smtp_wire.valid_address("")
    for bad in ("a@b>\r\nRCPT TO:<c@d", "a\n", "a\r", "a\0"):
        assert not smtp_wire.valid_address(bad)


# Data (RFC 5321 §4.5.2, §2.3.8)


@pytest.mark.parametrize(
    ("body", "payload"),
    [
        (b"", b".\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".a\r\n.\r\n..\r\nb.\r\n", b"..a\r\n..\r\n...\r\nb.\r\n.\r\n"),
        (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r.\rb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
    ],
)
def test_data_payload(body: bytes, payload: bytes) -> None:
    assert data_payload(body) == payload


def unstuff(payload: bytes) -> bytes:
    """What a server makes of the data (RFC 5321 §4.5.2), checking the end comes last."""
    assert payload.endswith(b".\r\n")
    content = payload[:-3]
    assert content == b"" or content.endswith(b"\r\n")
    lines = content.split(b"\r\n")[:-1]
    assert b"." not in lines  # no early end of data
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines)


def normalised(body: bytes) -> bytes:
    body = re.sub(rb"\r\n|\r|\n", b"\r\n", body)
    return body if body == b"" or body.endswith(b"\r\n") else body + b"\r\n"


@given(st.lists(st.sampled_from([b".", b"..", b"a", b"\r\n", b"\n", b"\r", b" ", b"\xc3"])))
def test_stuffing_round_trip(parts: list[bytes]) -> None:
    body = b"".join(parts)
    payload = data_payload(body)
    assert b"\r\n.\r\n" not in payload[:-3]
    assert unstuff(payload) == normalised(body)
    assert payload.count(b"\n") == payload.count(b"\r\n") == payload.count(b"\r")


def test_plain_body_is_sent_as_is() -> None:
    body = b"Subject: x\r\n\r\nhello\r\n" * 50
    assert data_payload(body) == body + b".\r\n"


# Transaction bookkeeping and the exception tree


def test_transaction_verdicts() -> None:
    txn = Transaction(["a", "b", "c", "a"])
    assert txn.recipients == ("a", "b", "c")
    txn.record_rcpt("a", Reply(250, "2.1.5", "ok"))
    txn.record_rcpt("b", Reply(550, "5.1.1", "no"))
    assert txn.pending() == ("a", "c")
    txn.record_rcpt("c", Reply(251, "2.1.5", "forwarding"))
    final = Reply(250, "2.0.0", "queued")
    txn.decide(txn.accepted, final)
    delivery = txn.delivery(final)
    assert list(delivery.replies) == ["a", "b", "c"]
    assert delivery.accepted == ["a", "c"]
    assert delivery.replies["b"].is_permanent


def test_mail_refusal_stands_over_rcpt_replies() -> None:
    txn = Transaction(["a"])
    refusal = Reply(550, "5.7.1", "go away")
    txn.decide(txn.recipients, refusal)
    txn.record_rcpt("a", Reply(503, "5.5.1", "need MAIL"))
    assert txn.delivery(refusal).replies == {"a": refusal}


def test_exception_tree() -> None:
    lost = SessionTimeout("x", pending=("a",))
    for kind in (ConnectionLost, TemporaryFailure, ConnectionError, TimeoutError):
        assert isinstance(lost, kind)
    assert lost.reply == smtp_wire.TIMED_OUT
    assert (lost.pending, lost.replies, lost.maybe_delivered) == (("a",), {}, False)
    assert issubclass(TlsFailed, ConnectFailed)
    assert issubclass(ConnectFailed, ConnectionLost)
    greeting = Reply(554, "5.0.0", "no service")
    assert ConnectFailed("x", greeting).reply is greeting
    assert str(ConnectionLost(reply=smtp_wire.CONNECTION_DROPPED)) == (
        smtp_wire.CONNECTION_DROPPED.text
    )
