"""The pure parts of ``mxfleet events``: the event object, ``--since``, stream ids, and the
webhook's decisions (when a batch is due, how long to block, the retry schedule, the log
level of a failure, which consumers are dead, what a URL and a header must look like)."""

import json
import logging
import os
import random

import pytest

from workers.events_cli import decode_entry, event_object, id_before, since_id, stream_time
from workers.webhook import batch_due, failure_level, retry_delay, wait_ms
from workers.webhook_endpoint import Answer, parse_header, parse_url
from workers.webhook_group import dead_here

# As complete.lua writes it: attempt first, then the fields of workers.delivery.record.
ENTRY = (
    b"1764403200123-4",
    {
        b"attempt": b"2",
        b"id": b"01JDX4Q7",
        b"domain": b"example.org",
        b"rcpts": b"a@example.org,b@example.org",
        b"verdict": b"deferred",
        b"reply": "451 4.7.1 Gr\u00fc\u00dfe, later".encode(),
        b"mx": b"mx1.example.org",
        b"duration_ms": b"87",
    },
)


def test_an_entry_becomes_the_documented_object() -> None:
    assert event_object(*decode_entry(ENTRY)) == {
        "event_id": "1764403200123-4",
        "time": "2025-11-29T08:00:00.123Z",
        "attempt": 2,
        "id": "01JDX4Q7",
        "domain": "example.org",
        "rcpts": ["a@example.org", "b@example.org"],
        "verdict": "deferred",
        "reply": "451 4.7.1 Grüße, later",
        "mx": "mx1.example.org",
        "duration_ms": 87,
    }


def test_the_object_keeps_the_entry_order_after_id_and_time() -> None:
    keys = list(event_object(*decode_entry(ENTRY)))
    assert keys == ["event_id", "time", "attempt", "id", "domain", "rcpts", "verdict", "reply",
                    "mx", "duration_ms"]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        pytest.param({"rcpts": ""}, {"rcpts": []}, id="no-recipients"),
        pytest.param({"rcpts": "a@x.test"}, {"rcpts": ["a@x.test"]}, id="one-recipient"),
        pytest.param({"attempt": "x"}, {"attempt": "x"}, id="odd-attempt-stays-text"),
        pytest.param({"duration_ms": "-1"}, {"duration_ms": -1}, id="negative-int"),
        pytest.param({"extra": "7"}, {"extra": "7"}, id="unknown-field-is-text"),
    ],
)
def test_field_conversions(fields: dict[str, str], expected: dict[str, object]) -> None:
    found = event_object("5-0", fields)
    assert {key: found[key] for key in expected} == expected


def test_undecodable_bytes_are_replaced_and_the_object_is_json() -> None:
    event_id, fields = decode_entry((b"1-0", {b"reply": b"550 \xff"}))
    text = json.dumps(event_object(event_id, fields))
    assert json.loads(text)["reply"] == "550 \ufffd"


def test_an_entry_trimmed_while_pending_has_no_fields() -> None:
    assert decode_entry((b"1-0", None)) == ("1-0", {})


@pytest.mark.parametrize(
    ("event_id", "expected"),
    [
        ("0-0", "1970-01-01T00:00:00.000Z"),
        ("1764403200000-0", "2025-11-29T08:00:00.000Z"),
        ("1764403200999-17", "2025-11-29T08:00:00.999Z"),
    ],
)
def test_stream_time_is_utc_milliseconds(event_id: str, expected: str) -> None:
    assert stream_time(event_id) == expected


NOW_MS = 1_764_403_200_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1764403200000-3", "1764403200000-3", id="stream-id"),
        pytest.param("1764403200000", "1764403200000-0", id="milliseconds"),
        pytest.param("0", "0-0", id="zero-is-everything"),
        pytest.param("10m", f"{NOW_MS - 600_000}-0", id="minutes"),
        pytest.param("90s", f"{NOW_MS - 90_000}-0", id="seconds"),
        pytest.param("2h", f"{NOW_MS - 7_200_000}-0", id="hours"),
        pytest.param("100000d", "0-0", id="before-the-epoch"),
    ],
)
def test_since(text: str, expected: str) -> None:
    assert since_id(text, NOW_MS) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "10 minutes", "-5m", "1-2-3", "1.5"])
def test_since_refuses_what_is_neither_an_id_nor_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match=r"stream id|duration"):
        since_id(text, NOW_MS)


@pytest.mark.parametrize(
    ("stream_id", "expected"),
    [("5-3", "5-2"), ("5-0", f"4-{2**64 - 1}"), ("0-1", "0-0"), ("0-0", "0-0")],
)
def test_id_before(stream_id: str, expected: str) -> None:
    assert id_before(stream_id) == expected


# --- batching ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "first_at", "now", "due"),
    [
        pytest.param(0, None, 100.0, False, id="empty-never"),
        pytest.param(100, 99.9, 100.0, True, id="full"),
        pytest.param(150, 99.9, 100.0, True, id="over-full"),
        pytest.param(5, 99.5, 100.0, False, id="young"),
        pytest.param(5, 99.0, 100.0, True, id="waited-max-wait"),
        pytest.param(1, 90.0, 100.0, True, id="old"),
    ],
)
def test_batch_due(size: int, first_at: float | None, now: float, due: bool) -> None:
    assert batch_due(size, 100, first_at, now, max_wait=1.0) is due


def test_batch_due_with_no_wait_sends_whatever_is_there() -> None:
    assert batch_due(1, 100, 5.0, 5.0, max_wait=0.0)


@pytest.mark.parametrize(
    ("first_at", "now", "expected"),
    [
        pytest.param(None, 10.0, 1000, id="nothing-yet-blocks-the-cap"),
        pytest.param(10.0, 10.0, 1000, id="capped"),
        pytest.param(10.0, 10.75, 250, id="until-due"),
        pytest.param(10.0, 11.5, 1, id="never-zero-which-is-forever"),
    ],
)
def test_wait_ms(first_at: float | None, now: float, expected: int) -> None:
    assert wait_ms(first_at, now, max_wait=1.0, cap_ms=1000) == expected


def test_wait_ms_never_exceeds_a_small_cap() -> None:
    assert wait_ms(10.0, 10.0, max_wait=5.0, cap_ms=200) == 200


# --- retries ----------------------------------------------------------------------------
def test_retry_delay_doubles_from_half_a_second_to_a_minute_with_jitter() -> None:
    rng = random.Random(7)
    for failures in range(1, 40):
        ceiling = min(60.0, 0.5 * 2 ** (failures - 1))
        delays = [retry_delay(failures, rng) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), failures
        assert len(set(delays)) > 1  # jitter: failing forwarders do not retry in step


def test_retry_delay_reaches_the_cap_and_stays() -> None:
    rng = random.Random(1)
    assert max(retry_delay(8, rng) for _ in range(200)) > 55.0  # 0.5 * 2**7 = 64 → 60
    assert max(retry_delay(10_000, rng) for _ in range(200)) <= 60.0


@pytest.mark.parametrize(
    ("status", "level"),
    [
        (None, logging.WARNING),
        (500, logging.WARNING),
        (503, logging.WARNING),
        (408, logging.WARNING),
        (429, logging.WARNING),
        (302, logging.WARNING),
        (400, logging.ERROR),
        (401, logging.ERROR),
        (404, logging.ERROR),
        (413, logging.ERROR),
    ],
)
def test_failure_level(status: int | None, level: int) -> None:
    assert failure_level(status) == level


@pytest.mark.parametrize(
    ("status", "ok"), [(200, True), (204, True), (299, True), (300, False), (None, False)]
)
def test_only_a_2xx_answer_acks(status: int | None, ok: bool) -> None:
    assert Answer(status, "").ok is ok


# --- dead consumers ---------------------------------------------------------------------
def test_dead_here() -> None:
    def alive(pid: int) -> bool:
        return pid == 42

    assert dead_here("host-a:41", "host-a", alive)
    assert not dead_here("host-a:42", "host-a", alive)  # still running
    assert not dead_here("host-b:41", "host-a", alive)  # another host: only idle time tells
    assert not dead_here("host-a", "host-a", alive)
    assert not dead_here("host-a:x1", "host-a", alive)
    assert not dead_here(f"host-a:{os.getpid()}", "host-a", lambda pid: False)  # that is us
    assert dead_here("ip-10-0-0-1.internal:7", "ip-10-0-0-1.internal", alive)


# --- arguments --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    ["http://127.0.0.1:8080/hook", "https://hooks.example.com/in?token=x", "http://[::1]/"],
)
def test_parse_url_takes_http_and_https(text: str) -> None:
    assert parse_url(text).geturl() == text


@pytest.mark.parametrize(
    "text",
    [
        "not a url",
        "ftp://example.com/",
        "http://",
        "127.0.0.1:8080/hook",
        "http://user:secret@example.com/",
        "http://example.com:99999/",
        "http://example.com:port/",
    ],
)
def test_parse_url_refuses(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 -- the messages differ; each names the fault
        parse_url(text)


def test_parse_header() -> None:
    assert parse_header("Authorization: Bearer a:b") == ("Authorization", "Bearer a:b")
    assert parse_header("X-Empty:") == ("X-Empty", "")


@pytest.mark.parametrize("text", ["NoColon", ": value", "Bad Name: x", "X-A: b\r\nX-B: c"])
def test_parse_header_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not a header"):
        parse_header(text)
