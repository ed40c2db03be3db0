"""ingress/api_messages.py and api_mime.py: JSON → message, and every refusal names its field."""

import base64
import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress.api_errors import ApiError
from ingress.api_messages import (
    MAX_BATCH,
    Limits,
    Rejected,
    Submission,
    batch_items,
    data_checks,
    decode_json,
    parse_submission,
)
from ingress.api_mime import build_message
from shared import replies
from shared.message import parse_mailbox
from tests.unit.fuzz import FUZZ_FEW

LIMITS = Limits(max_message_size=10_000, max_recipients=100, max_line_length=2048,
                bare_newlines="normalize")  # fmt: skip
BASE: dict[str, Any] = {"from": "sender@example.test", "to": ["r@dest.test"], "text": "hello"}


def accepted(item: object, limits: Limits = LIMITS) -> Submission:
    return parse_submission(item, limits)


def refusal(item: object, limits: Limits = LIMITS) -> ApiError:
    with pytest.raises(Rejected) as info:
        parse_submission(item, limits)
    return info.value.error


def parsed(body: bytes) -> EmailMessage:
    message = email.message_from_bytes(body, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def content(part: object) -> str:
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def raw_item(message: bytes, **envelope: object) -> dict[str, Any]:
    env = {"from": "s@example.test", "to": ["r@dest.test"], **envelope}
    return {"envelope": env, "raw": base64.b64encode(message).decode()}


# --- the fields form --------------------------------------------------------------------


def test_text_and_html_make_multipart_alternative() -> None:
    item = {**BASE, "subject": "Hi there", "html": "<p>hello</p>", "headers": {"X-Tag": "a"}}
    sub = accepted(item)
    assert sub.sender is not None
    assert sub.sender.address == "sender@example.test"
    assert [r.address for r in sub.recipients] == ["r@dest.test"]
    assert (sub.smtputf8, sub.priority) == (False, None)
    assert b"\n" not in sub.body.replace(b"\r\n", b"")  # CRLF lines only
    message = parsed(sub.body)
    assert message["From"] == "sender@example.test"
    assert message["To"] == "r@dest.test"
    assert message["Subject"] == "Hi there"
    assert message["X-Tag"] == "a"
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert (text.get_content_type(), content(text)) == ("text/plain", "hello\n")
    assert (html.get_content_type(), content(html)) == ("text/html", "<p>hello</p>\n")
    assert "MIME-Version" not in html
    # the accept adds them (as for SMTP), with the queue id as Message-ID
    assert "Date" not in message
    assert "Message-ID" not in message


@pytest.mark.parametrize(("key", "ctype"), [("text", "text/plain"), ("html", "text/html")])
def test_one_part_alone(key: str, ctype: str) -> None:
    item = {"from": "s@example.test", "to": ["r@dest.test"], key: "only"}
    message = parsed(accepted(item).body)
    assert message.get_content_type() == ctype
    assert content(message) == "only\n"


def test_non_ascii_text_subject_and_addresses() -> None:
    item = {**BASE, "to": ["jörg@bücher.test"], "subject": "Grüße  ", "text": "é" * 2000}
    sub = accepted(item)
    assert sub.smtputf8 is True
    assert sub.recipients[0].destination == "xn--bcher-kva.test"
    message = parsed(sub.body)
    assert message["Subject"] == "Grüße"  # outer blanks dropped: no blank folded line
    assert content(message) == "é" * 2000 + "\n"
    assert max(len(line) for line in sub.body.split(b"\r\n")) <= 998


def test_priority_and_given_date_and_message_id_pass() -> None:
    headers = {"Date": "Sun, 29 Nov 2026 08:00:00 +0000", "Message-ID": "<m1@client.test>"}
    sub = accepted({**BASE, "priority": "transactional", "headers": headers})
    assert sub.priority == "transactional"
    message = parsed(sub.body)
    assert message["Message-ID"] == "<m1@client.test>"
    assert message["Date"] == headers["Date"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"from": None}, "from"),
        ({"from": 7}, "from"),
        ({"from": "not an address"}, "from"),
        ({"from": "a@localhost"}, "from"),
        ({"to": []}, "to"),
        ({"to": "r@dest.test"}, "to"),
        ({"to": ["ok@dest.test", "ok2@dest.test", "bad@@dest.test"]}, "to[2]"),
        ({"to": ["@a:b@dest.test"]}, "to[0]"),
        ({"to": ["r@dest.test", 5]}, "to[1]"),
        ({"text": None}, "text"),
        ({"text": 5}, "text"),
        ({"html": ["x"]}, "html"),
        ({"subject": 1}, "subject"),
        ({"subject": "two\r\nlines"}, "subject"),
        ({"priority": "urgent"}, "priority"),
        ({"priority": "Bulk"}, "priority"),
        ({"headers": []}, "headers"),
        ({"headers": {"X-A": 1}}, "headers.X-A"),
        ({"headers": {"X-A": "v\r\nBcc: victim@x.test"}}, "headers.X-A"),
        ({"headers": {"X-A": "nul\x00"}}, "headers.X-A"),
        ({"headers": {"X A": "v"}}, "headers.X A"),
        ({"headers": {"X:A": "v"}}, "headers.X:A"),
        ({"headers": {"": "v"}}, "headers."),
        ({"headers": {"X-Ä": "v"}}, "headers.X-Ä"),
        ({"headers": {"X-A": "v" * 999}}, "headers.X-A"),
        ({"headers": {"subject": "v"}}, "headers.subject"),
        ({"headers": {"Bcc": "v@x.test"}}, "headers.Bcc"),
        ({"headers": {"Received": "from x"}}, "headers.Received"),
        ({"headers": {"Content-Type": "text/html"}}, "headers.Content-Type"),
        ({"headers": {"Date": "yesterday"}}, "headers.Date"),
        ({"headers": {"Message-ID": "no-brackets@x"}}, "headers.Message-ID"),
        ({"headers": {f"X-{n}": "v" for n in range(101)}}, "headers"),
        ({"cc": ["c@dest.test"]}, "cc"),
        ({"envelope": {}}, "from"),  # the fields of a message and of a raw one, mixed
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    item = {**BASE, **change}
    if change.get("text", 0) is None:
        del item["text"]
    error = refusal(item)
    assert (error.status, error.field) == (400, field), error
    assert error.message
    assert error.body() == {"error": {"message": error.message, "field": field}}


def test_recipients_over_the_limit() -> None:
    error = refusal({**BASE, "to": [f"r{n}@dest.test" for n in range(101)]})
    assert (error.status, error.field) == (400, "to")
    assert "at most 100" in error.message


def test_not_an_object() -> None:
    items: list[object] = [None, [], "x", 3]
    for item in items:
        error = refusal(item)
        assert (error.status, error.field) == (400, None)


def test_too_big_is_413_with_the_smtp_reply() -> None:
    for item in (
        {**BASE, "text": "x" * 10_001},
        {**BASE, "text": "x\n" * 4000, "html": "y" * 3000},
    ):
        error = refusal(item)
        assert (error.status, error.reply) == (413, replies.MESSAGE_TOO_BIG)
        assert error.detail()["smtp"] == {"code": 552, "status": "5.3.4", "text": error.message}


# --- the raw form -----------------------------------------------------------------------

MESSAGE = b"Subject: raw\r\nFrom: s@example.test\r\n\r\nbody\r\n"


def test_raw_message_is_taken_as_it_is() -> None:
    sub = accepted(raw_item(MESSAGE, **{"from": ""}))
    assert sub.body == MESSAGE
    assert sub.sender is None  # "" is the null sender <>
    assert sub.smtputf8 is False


def test_raw_message_in_mime_lines_and_without_final_crlf() -> None:
    item = raw_item(b"Subject: x\r\n\r\nno final newline")
    item["raw"] = base64.encodebytes(b"Subject: x\r\n\r\nno final newline").decode()
    assert accepted(item).body == b"Subject: x\r\n\r\nno final newline\r\n"


def test_raw_utf8_envelope_is_smtputf8() -> None:
    assert accepted(raw_item(MESSAGE, to=["ü@bücher.test"])).smtputf8 is True


def test_bare_newlines_normalized_or_refused() -> None:
    smuggle = b"Subject: x\n\nline\r\n.\nMAIL FROM:<evil@x.test>\r\n"
    body = accepted(raw_item(smuggle)).body
    assert body == b"Subject: x\r\n\r\nline\r\n.\r\nMAIL FROM:<evil@x.test>\r\n"
    strict = Limits(10_000, 100, 2048, "reject")
    error = refusal(raw_item(smuggle), strict)
    assert (error.status, error.field, error.reply) == (422, "raw", replies.BARE_NEWLINE)


def test_raw_limits() -> None:
    long_line = refusal(raw_item(b"Subject: x\r\n\r\n" + b"y" * 2047 + b"\r\n"))
    assert (long_line.status, long_line.reply) == (422, replies.LINE_TOO_LONG_DATA)
    assert accepted(raw_item(b"Subject: x\r\n\r\n" + b"y" * 2046 + b"\r\n"))
    big = refusal(raw_item(b"x" * 10_000))  # 10,002 with the CRLF added
    assert (big.status, big.field, big.reply) == (413, "raw", replies.MESSAGE_TOO_BIG)
    huge = refusal(raw_item(b"x" * 20_000))  # refused before it is decoded
    assert (huge.status, huge.reply) == (413, replies.MESSAGE_TOO_BIG)


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}}, "raw"),
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}, "raw": ""}, "raw"),
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}, "raw": "!!!"}, "raw"),
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}, "raw": "QUJ"}, "raw"),
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}, "raw": "é"}, "raw"),
        ({"envelope": {"from": "s@example.test", "to": ["r@dest.test"]}, "raw": 5}, "raw"),
        ({"raw": "QUJD"}, "envelope"),
        ({"envelope": ["s@example.test"], "raw": "QUJD"}, "envelope"),
        ({"envelope": {"to": ["r@dest.test"]}, "raw": "QUJD"}, "envelope.from"),
        ({"envelope": {"from": "bad", "to": ["r@dest.test"]}, "raw": "QUJD"}, "envelope.from"),
        ({"envelope": {"from": "", "to": []}, "raw": "QUJD"}, "envelope.to"),
        ({"envelope": {"from": "", "to": ["r@dest.test", "x"]}, "raw": "QUJD"}, "envelope.to[1]"),
        ({"envelope": {"from": "", "to": ["r@d.test"], "cc": []}, "raw": "QUJD"}, "envelope.cc"),
        ({"envelope": {"from": "", "to": ["r@dest.test"]}, "raw": "QUJD", "text": "x"}, "text"),
    ],
)
def test_bad_raw_fields_are_named(item: dict[str, Any], field: str) -> None:
    error = refusal(item)
    assert (error.status, error.field) == (400, field), error


def test_data_checks_leave_a_clean_message_alone() -> None:
    assert data_checks(MESSAGE, LIMITS) is MESSAGE


# --- request bodies and batches ---------------------------------------------------------


def test_decode_json_refuses_what_is_not_json() -> None:
    assert decode_json(b'{"a": [1]}') == {"a": [1]}
    for body in (b"", b"{", b"\xff\xfe\x00", b"[" * 100_000):
        with pytest.raises(Rejected) as info:
            decode_json(body)
        assert info.value.error.status == 400


def test_batch_items() -> None:
    assert batch_items({"messages": [1, 2]}) == [1, 2]
    for document, field in (([], None), ({"messages": []}, "messages"), ({"msgs": [1]}, "msgs")):
        with pytest.raises(Rejected) as info:
            batch_items(document)
        assert (info.value.error.status, info.value.error.field) == (400, field)
    with pytest.raises(Rejected) as info:
        batch_items({"messages": [{}] * (MAX_BATCH + 1)})
    assert (info.value.error.status, info.value.error.field) == (413, "messages")


@FUZZ_FEW
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=30),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(
                st.sampled_from(["from", "to", "text", "html", "headers", "raw", "envelope", "x"]),
                inner,
                max_size=5,
            )
        ),
        max_leaves=12,
    )
)
def test_any_json_gives_a_submission_or_a_named_refusal(item: object) -> None:
    try:
        outcome: Submission | ApiError = parse_submission(item, LIMITS)
    except Rejected as exc:
        outcome = exc.error
    if isinstance(outcome, ApiError):
        assert outcome.status in (400, 413, 422)
        assert outcome.message
    else:
        assert outcome.recipients
        assert outcome.body.endswith(b"\r\n")


# --- the direct writer of plain messages against EmailMessage ----------------------------

_ASCII = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60)
_BODY = st.none() | st.lists(st.sampled_from([*"abc <>=.-\n\r\t", "\r\n"]), max_size=200).map(
    "".join
)


def shape(body: bytes) -> list[tuple[str, str, str]]:
    """(content type, Subject/To, content) of every leaf part: what a reader sees."""
    message = parsed(body)
    head = f"{message['From']}|{message['To']}|{message['Subject']}|{message['X-Campaign']}"
    return [(part.get_content_type(), head, content(part)) for part in message.walk()
            if not part.is_multipart()]  # fmt: skip


@FUZZ_FEW
@given(subject=st.none() | _ASCII, text=_BODY, html=_BODY, campaign=_ASCII)
def test_plain_messages_read_as_the_email_package_writes_them(
    subject: str | None, text: str | None, html: str | None, campaign: str
) -> None:
    sender = parse_mailbox("s@example.test", utf8=False)
    rcpt = parse_mailbox("r@dest.test", utf8=False)
    headers = {"X-Campaign": campaign} if campaign.strip() else {}
    direct = build_message(sender, [rcpt], subject, text, html, headers, utf8=False)
    reference = build_message(sender, [rcpt], subject, text, html, headers, utf8=True)
    assert shape(direct) == shape(reference)
    assert b"\n" not in direct.replace(b"\r\n", b"")
