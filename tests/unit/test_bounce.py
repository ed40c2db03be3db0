"""workers/bounce.py: DSNs (RFC 3464 / 3461 / 6522 / 6533), parsed back with the stdlib."""

import re
from email import message_from_bytes
from email.message import EmailMessage, Message
from email.policy import default

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import replies
from shared.replies import Reply
from tests.unit.fuzz import FUZZ, FUZZ_FEW
from workers.bounce import (
    SUBJECT_DELAYED,
    SUBJECT_FAILED,
    FailedRecipient,
    build_dsn,
    should_bounce,
)

ARRIVAL = 1_700_000_000.0
ARRIVAL_DATE = "Tue, 14 Nov 2023 22:13:20 +0000"
NOW = ARRIVAL + 3600
NOW_DATE = "Tue, 14 Nov 2023 23:13:20 +0000"
ATTEMPT = ARRIVAL + 60
ATTEMPT_DATE = "Tue, 14 Nov 2023 22:14:20 +0000"
ORIGINAL = (
    b"Received: from client ([192.0.2.1])\r\n\tby mta.example.net with ESMTP id Q1\r\n"
    b"From: Alice <alice@example.org>\r\nTo: bob@example.com\r\nSubject: hello\r\n"
    b"Message-ID: <m1@example.org>\r\n\r\nHi Bob,\r\nsee you.\r\n"
)
UNKNOWN = FailedRecipient(
    "bob@example.com", Reply(550, "5.1.1", "<bob@example.com>: User unknown"), "mx1.example.com",
    ATTEMPT,
)  # fmt: skip
BARE_LF_OR_CR = re.compile(rb"(?<!\r)\n|\r(?!\n)")


def dsn(recipients: list[FailedRecipient] | None = None, /, **overrides: object) -> bytes:
    arguments: dict[str, object] = {
        "reporting_mta": "mta.example.net", "queue_id": "Q1", "sender": "alice@example.org",
        "original": ORIGINAL, "recipients": [UNKNOWN] if recipients is None else recipients,
        "arrival": ARRIVAL, "now": NOW,
    }  # fmt: skip
    arguments.update(overrides)
    return build_dsn(**arguments)  # type: ignore[arg-type]  # keyword values of mixed types


def parse(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    return message


def parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    found = [part for part in payload if isinstance(part, Message)]
    assert len(found) == len(payload)
    return found


def blocks(raw: bytes) -> list[Message]:
    """The delivery-status part's field groups: per-message first, then one per recipient."""
    status = parts(parse(raw))[1]
    assert status.get_content_type() == "message/delivery-status"
    return parts(status)


def fields(block: Message) -> dict[str, str]:
    return {name: str(value) for name, value in block.items()}


def assert_well_formed(raw: bytes) -> None:
    """CRLF only (RFC 5322 §2.3), lines ≤ 998 octets (§2.1.1), ends with CRLF."""
    assert not BARE_LF_OR_CR.search(raw)
    assert raw.endswith(b"\r\n")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


# --- structure ---------------------------------------------------------------------------


def test_top_level_header() -> None:
    raw = dsn()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    message = parse(raw)
    assert message["From"] == "Mail Delivery System <MAILER-DAEMON@mta.example.net>"
    assert b"\r\nTo: <alice@example.org>\r\n" in head + b"\r\n"
    assert message["Subject"] == SUBJECT_FAILED == "Undelivered Mail Returned to Sender"
    assert message["Date"] == NOW_DATE
    assert re.fullmatch(r"<[^<>@\s]+@mta\.example\.net>", message["Message-ID"])
    assert message["MIME-Version"] == "1.0"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert_well_formed(raw)
    assert raw.isascii()


def test_three_parts_in_rfc_6522_order() -> None:
    first, status, returned = parts(parse(dsn()))
    assert first.get_content_type() == "text/plain"
    assert status.get_content_type() == "message/delivery-status"
    assert returned.get_content_type() == "text/rfc822-headers"


def test_human_readable_part_names_recipient_host_and_reply() -> None:
    first = parts(parse(dsn()))[0]
    assert isinstance(first, EmailMessage)
    text = " ".join(first.get_content().split())  # lines are wrapped near 78 characters
    expected = (
        "<bob@example.com>: host mx1.example.com said: 550 5.1.1 <bob@example.com>: User unknown"
    )
    assert expected in text
    assert "mta.example.net" in text
    assert "Q1" in text


def test_per_message_fields() -> None:
    per_message = blocks(dsn())[0]
    assert fields(per_message) == {
        "Reporting-MTA": "dns; mta.example.net",
        "X-Queue-ID": "Q1",
        "Arrival-Date": ARRIVAL_DATE,
    }
    assert "Original-Envelope-Id" not in per_message  # only for an ENVID (RFC 3461 §4.4)


def test_recipient_block_from_a_remote_reply() -> None:
    assert fields(blocks(dsn())[1]) == {
        "Final-Recipient": "rfc822; bob@example.com",
        "Action": "failed",
        "Status": "5.1.1",
        "Remote-MTA": "dns; mx1.example.com",
        "Diagnostic-Code": "smtp; 550 5.1.1 <bob@example.com>: User unknown",
        "Last-Attempt-Date": ATTEMPT_DATE,
    }


def test_local_failure_has_no_remote_mta_nor_diagnostic_code() -> None:
    null_mx = Reply(550, "5.1.10", "Recipient domain example.com accepts no mail (null MX)")
    failure = FailedRecipient("carol@example.com", null_mx, None, ATTEMPT)
    assert fields(blocks(dsn([failure]))[1]) == {
        "Final-Recipient": "rfc822; carol@example.com",
        "Action": "failed",
        "Status": "5.1.10",
        "Last-Attempt-Date": ATTEMPT_DATE,
    }
    text = parts(parse(dsn([failure])))[0].get_payload(decode=True)
    assert isinstance(text, bytes)
    assert b"<carol@example.com>: 550 5.1.10 Recipient domain" in text


def test_one_block_per_recipient_in_order() -> None:
    others = [
        FailedRecipient(f"u{n}@example.com", replies.RELAY_DENIED, "mx.example.com", ATTEMPT)
        for n in range(5)
    ]
    found = blocks(dsn([UNKNOWN, *others]))[1:]
    assert [b["Final-Recipient"] for b in found] == [
        "rfc822; bob@example.com", *(f"rfc822; u{n}@example.com" for n in range(5))
    ]  # fmt: skip
    assert [b["Status"] for b in found] == ["5.1.1"] + ["5.7.1"] * 5


@pytest.mark.parametrize(
    ("reply", "status", "diagnostic"),
    [(Reply(550, "", "No such user"), "5.0.0", "smtp; 550 No such user"),
     (Reply(554, "2.0.0", "odd"), "5.0.0", "smtp; 554 2.0.0 odd"),
     (Reply(552, "5.x.y", "odd"), "5.0.0", "smtp; 552 5.x.y odd"),
     (Reply(550, "4.1.1", "class differs"), "5.0.0", "smtp; 550 4.1.1 class differs"),
     (Reply(451, "5.1.1", "class differs"), "4.0.0", "smtp; 451 5.1.1 class differs"),
     (Reply(421, "", "Try later"), "4.0.0", "smtp; 421 Try later")],
)  # fmt: skip
def test_status_derived_when_the_reply_has_no_usable_enhanced_code(
    reply: Reply, status: str, diagnostic: str
) -> None:
    block = blocks(dsn([FailedRecipient("b@example.com", reply, "mx.example.com", ATTEMPT)]))[1]
    assert block["Status"] == status
    assert block["Diagnostic-Code"] == diagnostic


def test_delayed_warning() -> None:
    delayed = FailedRecipient(
        "bob@example.com", Reply(451, "4.3.0", "Try again later"), "mx1.example.com", ATTEMPT,
        action="delayed",
    )  # fmt: skip
    raw = dsn([delayed])
    assert parse(raw)["Subject"] == SUBJECT_DELAYED == "Delayed Mail (still being retried)"
    block = blocks(raw)[1]
    assert block["Action"] == "delayed"
    assert block["Status"] == "4.3.0"


def test_mixed_failed_and_delayed_is_a_failure_report() -> None:
    delayed = FailedRecipient("d@example.com", replies.TIMEOUT, None, ATTEMPT, action="delayed")
    raw = dsn([UNKNOWN, delayed])
    assert parse(raw)["Subject"] == SUBJECT_FAILED
    assert [b["Action"] for b in blocks(raw)[1:]] == ["failed", "delayed"]


def test_action_is_checked() -> None:
    with pytest.raises(ValueError, match="action"):
        FailedRecipient("b@example.com", replies.RELAY_DENIED, None, ATTEMPT, action="bogus")  # type: ignore[arg-type]  # the point of the test


# --- the returned original ----------------------------------------------------------------


def test_headers_only_by_default() -> None:
    returned = parts(parse(dsn()))[2]
    assert isinstance(returned, EmailMessage)
    text = returned.get_content()
    assert "Subject: hello" in text
    assert "Message-ID: <m1@example.org>" in text
    assert "\tby mta.example.net with ESMTP id Q1" in text  # folded lines kept
    assert "Hi Bob" not in text


def test_include_body_with_a_small_original() -> None:
    returned = parts(parse(dsn(include_body=True)))[2]
    assert returned.get_content_type() == "message/rfc822"
    (inner,) = parts(returned)
    assert isinstance(inner, EmailMessage)
    assert inner["Subject"] == "hello"
    assert "Hi Bob,\r\nsee you." in inner.get_content()
    assert ORIGINAL in dsn(include_body=True)  # byte for byte


def test_include_body_falls_back_to_headers_when_too_big() -> None:
    big = ORIGINAL + b"x" * 900 + b"\r\n" * 100
    raw = dsn(original=big, include_body=True, max_original=len(big) - 1)
    returned = parts(parse(raw))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"x" * 900 not in raw
    assert b"Subject: hello" in raw
    assert_well_formed(raw)


def test_include_body_falls_back_when_not_clean_8bit_data() -> None:
    for bad in (b"Subject: x\r\n\r\nbare\nLF\r\n", b"Subject: x\r\n\r\n" + b"y" * 999 + b"\r\n"):
        raw = dsn(original=bad, include_body=True)
        assert parts(parse(raw))[2].get_content_type() == "text/rfc822-headers"
        assert_well_formed(raw)


def test_huge_header_section_is_cut_at_a_field_boundary() -> None:
    header = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"z" * 70) for n in range(1000))
    raw = dsn(original=header + b"Subject: late\r\n\r\nbody\r\n", max_original=4096)
    text = parts(parse(raw))[2].get_payload()
    assert isinstance(text, str)
    assert 3000 < len(text) <= 4096
    assert text.rstrip("\r\n").endswith("z" * 70)
    assert "late" not in text


def test_non_ascii_original_header_uses_message_global_headers() -> None:
    original = "Subject: Grüße\r\nFrom: a@example.org\r\n\r\nbody\r\n".encode()
    raw = dsn(original=original)
    returned = parts(parse(raw))[2]
    assert returned.get_content_type() == "message/global-headers"  # RFC 6533 §6.3
    assert returned["Content-Transfer-Encoding"] == "8bit"
    assert "Grüße".encode() in raw
    assert parse(raw)["Content-Transfer-Encoding"] == "8bit"
    with_body = parts(parse(dsn(original=original, include_body=True)))[2]
    assert with_body.get_content_type() == "message/global"  # RFC 6532 §3.7
    assert_well_formed(raw)


def test_original_without_header_section() -> None:
    raw = dsn(original=b"no header here\r\n")
    returned = parts(parse(raw))[2]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert b"no header here" not in raw


# --- internationalised and hostile input ------------------------------------------------


def test_non_ascii_recipient_is_utf8_xtext() -> None:
    recipient = FailedRecipient(
        "jörg+tag@bücher.example", Reply(550, "5.1.1", "unknown"), "mx.xn--bcher-kva.example",
        ATTEMPT,
    )  # fmt: skip
    raw = dsn([recipient])
    # RFC 6533 §3: utf-8-addr-xtext, '+' is not a QCHAR either
    assert blocks(raw)[1]["Final-Recipient"] == "utf-8; j\\x{F6}rg\\x{2B}tag@b\\x{FC}cher.example"
    status_part = raw.split(b"message/delivery-status", 1)[1].split(b"\r\n--=_", 1)[0]
    assert status_part.isascii()
    first = parts(parse(raw))[0]
    assert isinstance(first, EmailMessage)
    assert first["Content-Transfer-Encoding"] == "8bit"
    assert "<jörg+tag@bücher.example>" in first.get_content()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()
    assert_well_formed(raw)


def test_non_ascii_reply_and_remote_host_are_escaped() -> None:
    recipient = FailedRecipient("b@example.com", Reply(550, "5.1.1", "Unbekannt: ü"), "mx.ü.de", 0)
    block = blocks(dsn([recipient]))[1]
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 Unbekannt: \\x{FC}"
    assert block["Remote-MTA"] == "dns; mx.xn--tda.de"


def test_reply_text_cannot_inject_fields() -> None:
    evil = Reply(550, "5.1.1", "unknown\r\nAction: delivered\r\n\r\nX-Evil: 1")
    raw = dsn([FailedRecipient("b@example.com\r\nX-Evil: 2", evil, "mx\r\nX: 3", ATTEMPT)])
    found = blocks(raw)
    assert len(found) == 2
    block = fields(found[1])
    assert set(block) == {
        "Final-Recipient", "Action", "Status", "Remote-MTA", "Diagnostic-Code",
        "Last-Attempt-Date",
    }  # fmt: skip
    assert block["Action"] == "failed"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 unknown Action: delivered X-Evil: 1"
    assert_well_formed(raw)


def test_long_reply_is_folded_and_unfolds_to_the_same_text() -> None:
    text = " ".join(f"word{n}" for n in range(300))
    raw = dsn([FailedRecipient("b@example.com", Reply(550, "5.7.1", text), "mx.example", 0)])
    assert_well_formed(raw)
    diagnostic = blocks(raw)[1]["Diagnostic-Code"]
    assert diagnostic.startswith("smtp; 550 5.7.1 word0 word1 ")
    assert text.startswith(diagnostic.removeprefix("smtp; 550 5.7.1 "))
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


def test_non_ascii_sender_is_the_only_non_ascii_top_level_field() -> None:
    raw = dsn(sender="jörg@bücher.example")
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert "\r\nTo: <jörg@bücher.example>\r\n".encode() in head + b"\r\n"  # RFC 6532 §3.2
    assert [line for line in head.split(b"\r\n") if not line.isascii()] == [
        "To: <jörg@bücher.example>".encode()
    ]


def test_undecodable_reply_bytes_are_replaced() -> None:
    reply = Reply(550, "5.1.1", "bad \udcff byte")  # as decoded with surrogateescape
    raw = dsn([FailedRecipient("b@example.com", reply, "mx.example", ATTEMPT)])
    assert blocks(raw)[1]["Diagnostic-Code"] == "smtp; 550 5.1.1 bad ? byte"
    assert_well_formed(raw)


def test_giant_unbreakable_values_still_fit_998() -> None:
    giant = FailedRecipient("ü" * 5000 + "@example.com", Reply(550, "", "x" * 5000), "m" * 400, 0)
    raw = dsn([giant], sender="s" * 3000 + "@example.org")
    assert_well_formed(raw)
    assert len(blocks(raw)) == 2


# --- refusals and determinism -----------------------------------------------------------


@pytest.mark.parametrize("sender", ["", "<>", " "])
def test_never_a_dsn_to_the_null_sender(sender: str) -> None:
    with pytest.raises(ValueError, match="null sender"):
        dsn(sender=sender)


@pytest.mark.parametrize(
    "overrides",
    [{"recipients": []}, {"reporting_mta": "mta example"}, {"reporting_mta": "a\r\nb"},
     {"queue_id": "Q 1"}, {"queue_id": ""}, {"boundary": "bad boundary "},
     {"boundary": "x" * 71}, {"boundary": "hello"}],
)  # fmt: skip
def test_bad_arguments_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  # each case has its own message
        dsn(original=b"Subject: x\r\n\r\n--hello\r\n", include_body=True, **overrides)


def test_explicit_boundary_and_determinism() -> None:
    raw = dsn(boundary="b-1")
    assert b'boundary="b-1"' in raw
    assert raw.count(b"\r\n--b-1\r\n") == 3
    assert raw.endswith(b"\r\n--b-1--\r\n")
    assert dsn() == dsn()
    assert dsn() != dsn(now=NOW + 1)
    assert parse(dsn())["Message-ID"] != parse(dsn([UNKNOWN, UNKNOWN]))["Message-ID"]


# --- should_bounce -----------------------------------------------------------------------


def test_should_bounce_a_normal_message() -> None:
    assert should_bounce("alice@example.org", ORIGINAL)
    assert should_bounce("alice@example.org", b"Auto-Submitted: no (a person)\r\n\r\nx\r\n")
    assert should_bounce("alice@example.org", b"")
    report = b"Content-Type: multipart/report; report-type=disposition-notification\r\n\r\n"
    assert should_bounce("alice@example.org", report)


@pytest.mark.parametrize("sender", ["", "<>"])
def test_never_bounce_to_the_null_sender(sender: str) -> None:
    assert not should_bounce(sender, ORIGINAL)


def test_a_dsn_never_causes_a_dsn() -> None:
    assert not should_bounce("mailer@example.net", dsn())
    folded = (
        b'Content-Type: multipart/report;\r\n report-type="Delivery-Status";\r\n'
        b' boundary="x"\r\nSubject: y\r\n\r\n'
    )
    assert not should_bounce("mailer@example.net", folded)
    global_dsn = b"Content-Type: multipart/report; report-type=global-delivery-status\r\n\r\n"
    assert not should_bounce("mailer@example.net", global_dsn)


@pytest.mark.parametrize(
    "value", ["auto-replied", "auto-generated", "Auto-Generated (vacation)", "auto-notified; x=1"]
)
def test_auto_submitted_messages_are_not_bounced(value: str) -> None:
    original = f"Subject: away\r\nAuto-Submitted: {value}\r\n\r\nbody\r\n".encode()
    assert not should_bounce("alice@example.org", original)


def test_only_the_top_level_header_counts() -> None:
    body_mentions = ORIGINAL + b"Auto-Submitted: auto-replied\r\n"
    assert should_bounce("alice@example.org", body_mentions)


# --- properties -----------------------------------------------------------------------------

replies_ = st.builds(
    Reply,
    st.integers(400, 599),
    st.one_of(st.just(""), st.from_regex(r"[45]\.[0-9]{1,3}\.[0-9]{1,3}", fullmatch=True)),
    st.text(max_size=300),
)
recipients_ = st.builds(
    FailedRecipient,
    st.text(min_size=1, max_size=80),
    replies_,
    st.one_of(st.none(), st.text(max_size=60)),
    st.floats(0, 4e9),
    st.sampled_from(["failed", "delayed"]),
)


@FUZZ
@given(st.lists(recipients_, min_size=1, max_size=8))
def test_any_recipients_give_one_block_each(recipients: list[FailedRecipient]) -> None:
    raw = dsn(recipients)
    assert_well_formed(raw)
    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert len(parts(message)) == 3
    found = blocks(raw)
    assert len(found) == 1 + len(recipients)
    for block, recipient in zip(found[1:], recipients, strict=True):
        assert block["Action"] == recipient.action
        assert block["Status"][0] == str(recipient.reply.code)[0]
        assert ("Remote-MTA" in block) == ("Diagnostic-Code" in block)
    assert not should_bounce("x@example.org", raw)


@FUZZ_FEW
@given(st.binary(max_size=3000), st.booleans())
def test_any_original_gives_a_well_formed_dsn(original: bytes, include_body: bool) -> None:
    raw = dsn(original=original, include_body=include_body, max_original=2000)
    assert_well_formed(raw)
    assert len(parts(parse(raw))) == 3
