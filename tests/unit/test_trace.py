"""ingress/trace.py: Received, Message-ID and Date fields; the header section; hop counting."""

import importlib.util

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingress import trace
from shared.header_section import split_header
from tests.unit.fuzz import FUZZ

DATE = "Tue, 14 Nov 2023 22:13:20 +0000"
RECEIVED = b"Received: from c ([192.0.2.1])\r\n\tby mx with ESMTP id Q; " + DATE.encode() + b"\r\n"


@pytest.fixture
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(trace, "rfc5322_date", lambda now=None: DATE)
    return DATE


# --- dates and protocol keywords ----------------------------------------------------------


def test_rfc5322_date() -> None:
    assert trace.rfc5322_date(1_700_000_000) == DATE
    assert trace.rfc5322_date(1_700_000_000.9) == DATE
    assert trace.rfc5322_date(86_400 * 365) == "Fri, 01 Jan 1971 00:00:00 +0000"


def test_rfc5322_date_of_the_epoch_in_a_freshly_imported_module() -> None:
    # A fresh process: the per-second cache has not been filled yet.
    spec = importlib.util.spec_from_file_location("fresh_trace", trace.__file__)
    assert spec is not None
    assert spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh.rfc5322_date(0) == "Thu, 01 Jan 1970 00:00:00 +0000"


def test_rfc5322_date_now_is_current() -> None:
    assert trace.rfc5322_date().endswith(" +0000")
    assert len(trace.rfc5322_date()) == len(DATE)


@pytest.mark.parametrize(
    ("esmtp", "tls", "auth", "utf8", "keyword"),
    [
        (False, False, False, False, "SMTP"),
        (False, True, True, True, "SMTP"),
        (True, False, False, False, "ESMTP"),  # RFC 3848
        (True, True, False, False, "ESMTPS"),
        (True, False, True, False, "ESMTPA"),
        (True, True, True, False, "ESMTPSA"),
        (True, False, False, True, "UTF8SMTP"),  # RFC 6531 §3.7.3
        (True, True, False, True, "UTF8SMTPS"),
        (True, False, True, True, "UTF8SMTPA"),
        (True, True, True, True, "UTF8SMTPSA"),
    ],
)
def test_protocol(esmtp: bool, tls: bool, auth: bool, utf8: bool, keyword: str) -> None:
    assert trace.protocol(esmtp=esmtp, tls=tls, auth=auth, utf8=utf8) == keyword


# --- header section -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "header", "rest"),
    [
        (b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\r\n", b"\r\nbody\r\n"),
        (b"Subject: a\r\nFrom: b\r\n\r\n", b"Subject: a\r\nFrom: b\r\n", b"\r\n"),
        (b"Subject: a\r\n", b"Subject: a\r\n", b""),
        (b"Subject: a\r\n\tfolded\r\n\r\nx\r\n", b"Subject: a\r\n\tfolded\r\n", b"\r\nx\r\n"),
        (b"hello world\r\n", b"", b"hello world\r\n"),
        (b"From someone\r\n", b"", b"From someone\r\n"),
        (b": empty name\r\n", b"", b": empty name\r\n"),
        (b"\r\nbody\r\n", b"", b"\r\nbody\r\n"),
        (b"", b"", b""),
    ],
)
def test_split_header(message: bytes, header: bytes, rest: bytes) -> None:
    assert split_header(message) == (header, rest)


@FUZZ
@given(st.binary(max_size=80))
def test_split_header_loses_nothing(message: bytes) -> None:
    header, rest = split_header(message)
    assert header + rest == message


def test_received_count() -> None:
    header = (
        b"Received: from a\r\n"
        b"RECEIVED: from b\r\n"
        b"received:from c\r\n"
        b"X-Received: not a hop\r\n"
        b"Subject: Received: neither\r\n"
        b" Received: a continuation line\r\n"
    )
    assert trace.received_count(header) == 3
    assert trace.received_count(b"") == 0


# --- Received field -----------------------------------------------------------------------


def test_received_field_for_one_recipient(fixed_date: str) -> None:
    field = trace.received_field(
        helo="client.example", client_ip="192.0.2.1", by="mx.test", proto="ESMTPS",
        queue_id="01ABC", rcpt="a@example.com",
    )  # fmt: skip
    assert field == (
        b"Received: from client.example ([192.0.2.1])\r\n"
        b"\tby mx.test with ESMTPS id 01ABC\r\n"
        b"\tfor <a@example.com>; " + fixed_date.encode() + b"\r\n"
    )


def test_received_field_for_several_recipients(fixed_date: str) -> None:
    field = trace.received_field(
        helo="", client_ip="192.0.2.1", by="mx.test", proto="SMTP", queue_id="01ABC", rcpt=None
    )
    assert field == (
        b"Received: from unknown ([192.0.2.1])\r\n"
        b"\tby mx.test with SMTP id 01ABC; " + fixed_date.encode() + b"\r\n"
    )


def test_received_field_utf8_recipient(fixed_date: str) -> None:
    field = trace.received_field(
        helo="c", client_ip="192.0.2.1", by="mx", proto="UTF8SMTP", queue_id="Q", rcpt="ü@bücher.de"
    )
    assert "\tfor <ü@bücher.de>; ".encode() in field


def test_received_field_ipv6_address_literal(fixed_date: str) -> None:
    # RFC 5321 §4.4 TCP-info is an address-literal; §4.1.3: IPv6 literals carry "IPv6:".
    field = trace.received_field(
        helo="c", client_ip="2001:db8::1", by="mx", proto="ESMTP", queue_id="Q", rcpt=None
    )
    assert field.startswith(b"Received: from c ([IPv6:2001:db8::1])\r\n")


# --- stamp --------------------------------------------------------------------------------


def ids(queue_id: str = "Q", host: str = "mx.test") -> bytes:
    return f"Message-ID: <{queue_id}@{host}>\r\nDate: {DATE}\r\n".encode()


def test_stamp_adds_missing_message_id_and_date(fixed_date: str) -> None:
    message = b"Subject: a\r\n\r\nbody\r\n"
    stamped = trace.stamp(message, RECEIVED, queue_id="Q", hostname="mx.test")
    assert stamped == RECEIVED + b"Subject: a\r\n" + ids() + b"\r\nbody\r\n"


def test_stamp_keeps_existing_fields(fixed_date: str) -> None:
    message = b"message-id: <x@y>\r\nDATE: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n"
    assert trace.stamp(message, RECEIVED, queue_id="Q", hostname="h") == RECEIVED + message


def test_stamp_adds_only_what_is_missing(fixed_date: str) -> None:
    message = b"Message-ID: <x@y>\r\n\r\nb\r\n"
    stamped = trace.stamp(message, RECEIVED, queue_id="Q", hostname="h")
    assert (
        stamped == RECEIVED + b"Message-ID: <x@y>\r\n" + f"Date: {DATE}\r\n".encode() + b"\r\nb\r\n"
    )


def test_stamp_ignores_look_alikes_in_the_body(fixed_date: str) -> None:
    message = b"Subject: a\r\n\r\nMessage-ID: <x@y>\r\nDate: today\r\n"
    stamped = trace.stamp(message, RECEIVED, queue_id="Q", hostname="mx.test")
    assert (
        stamped
        == RECEIVED + b"Subject: a\r\n" + ids() + b"\r\nMessage-ID: <x@y>\r\nDate: today\r\n"
    )


def test_stamp_ignores_field_names_that_only_start_alike(fixed_date: str) -> None:
    message = b"Message-IDs: 1\r\nDated: 2\r\n\r\n"
    stamped = trace.stamp(message, RECEIVED, queue_id="Q", hostname="mx.test")
    assert stamped == RECEIVED + b"Message-IDs: 1\r\nDated: 2\r\n" + ids() + b"\r\n"


def test_stamp_header_only_message(fixed_date: str) -> None:
    stamped = trace.stamp(b"Subject: a\r\n", RECEIVED, queue_id="Q", hostname="mx.test")
    assert stamped == RECEIVED + b"Subject: a\r\n" + ids()


def test_stamp_message_without_header_section(fixed_date: str) -> None:
    stamped = trace.stamp(b"just text\r\n", RECEIVED, queue_id="Q", hostname="mx.test")
    assert stamped == RECEIVED + ids() + b"\r\njust text\r\n"


def test_stamp_empty_message(fixed_date: str) -> None:
    assert (
        trace.stamp(b"", RECEIVED, queue_id="Q", hostname="mx.test") == RECEIVED + ids() + b"\r\n"
    )


def test_stamp_message_with_empty_header_section_keeps_the_body(fixed_date: str) -> None:
    # RFC 5322 §3.5: the message starts with the blank line, the body follows it. The added
    # fields go before that blank line; the body must not gain a second one.
    stamped = trace.stamp(b"\r\nbody\r\n", RECEIVED, queue_id="Q", hostname="mx.test")
    assert stamped == RECEIVED + ids() + b"\r\nbody\r\n"


@FUZZ
@given(st.binary(max_size=80).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"\r\n")))
def test_stamp_keeps_the_message_as_a_suffix_or_after_the_header(message: bytes) -> None:
    stamped = trace.stamp(message, RECEIVED, queue_id="Q", hostname="h")
    header, rest = split_header(message)
    assert stamped.startswith(RECEIVED + header)
    assert stamped.endswith(rest)
    assert trace.received_count(split_header(stamped)[0]) == 1 + trace.received_count(header)
