"""A real backlog fills Redis up to the ingress's high-water mark and drains: the ingress
answers ``452 4.3.1`` before Redis refuses anything for memory, stays up and answers
commands, and accepts again, without a restart, once the workers have delivered the
backlog; every message that got a 250 arrives once and intact, and nothing else does.

Sized as deploy/README.md asks: the room above the mark (10 % of ``maxmemory``) holds what
the tickets at work claim at once (their replies carry the bodies), so Redis never reaches
``maxmemory`` while it drains either.
"""

import base64
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import redis

from shared import replies
from tests.servers.fleet import Fleet
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtp_sink import SmtpSink
from tests.servers.smtpcheck import wire
from tests.servers.wait import wait_until
from workers import shaping
from workers.store import Store

MAXMEMORY = 40 * 1024 * 1024
HIGH_WATER = 0.9  # the ingress's default redis_high_water
BODY_SIZE = 96 * 1024
# Two tickets claiming 1 MiB of messages each: ~2.3 MB in flight, within the 4 MB above
# the mark.
DELIVERY = {"batch_bytes": "1MiB", "max_connections": "2"}
THREADS = 6
MAX_MESSAGES = 1200  # far more than fit: the flood ends at the first 452, or at this
FLOOD_SECONDS = 20.0
DOMAIN = "hold.test"
SENDER = "sender@example.test"
FULL = wire(replies.SPOOL_FULL)
_ID = re.compile(rb"\r\nX-Overload-Id: (\S+)\r\n")
_TRACE = re.compile(rb"Received: from client\.test [^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*")


def message(name: str) -> bytes:
    """A message of about BODY_SIZE bytes whose header names it; base64 lines, so nothing
    is dot-stuffed and the wire form is the message itself (with Message-ID and Date, so
    the ingress adds only its Received field)."""
    text = base64.encodebytes(os.urandom(BODY_SIZE * 3 // 4)).replace(b"\n", b"\r\n")
    header = (
        f"From: <{SENDER}>\r\nTo: <r@{DOMAIN}>\r\nSubject: overload {name}\r\n"
        f"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\nMessage-ID: <{name}@client.test>\r\n"
        f"X-Overload-Id: {name}\r\n\r\n"
    )
    return header.encode() + text


@dataclass
class Flood:
    """What the clients saw; several threads append (list.append and dict stores are
    atomic), the lock guards the first 452."""

    accepted: dict[str, bytes] = field(default_factory=dict)  # name → original message
    replies: list[tuple[int, str]] = field(default_factory=list)  # MAIL, RCPT, DATA, dot
    full: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    used_at_full: list[int] = field(default_factory=list)  # used_memory at the first 452
    errors: list[BaseException] = field(default_factory=list)


def send_one(smtp: RawSMTP, name: str, flood: Flood) -> str:
    """One transaction on an open session: "accepted" (250), or where a 452 came: "mail",
    "data" (the DATA command) or "dot" (after the data). Any other reply fails the test."""
    original = message(name)
    for stage, line in (("mail", f"MAIL FROM:<{SENDER}> SIZE={len(original)}"),
                        ("rcpt", f"RCPT TO:<r@{DOMAIN}>"), ("data", "DATA")):  # fmt: skip
        reply = smtp.cmd(line)
        flood.replies.append(reply)
        if reply == FULL:
            assert smtp.cmd("RSET")[0] == 250
            return stage
        assert reply[0] == (354 if stage == "data" else 250), (line, reply)
    smtp.send(original)
    reply = smtp.cmd(b".")
    flood.replies.append(reply)
    if reply[0] == 250:
        flood.accepted[name] = original
        return "accepted"
    assert reply == FULL, reply  # never 451: the spool is full, not failing
    assert smtp.cmd("RSET")[0] == 250
    return "dot"


def flood_client(fleet: Fleet, prefix: str, flood: Flood, deadline: float) -> None:
    """Send on one session until any client has seen a 452, or the deadline passes."""
    try:
        with RawSMTP("127.0.0.1", fleet.smtp_port, timeout=30) as smtp:
            assert smtp.cmd("EHLO client.test")[0] == 250
            for k in range(MAX_MESSAGES // THREADS):
                if flood.full.is_set() or time.monotonic() > deadline:
                    return
                if send_one(smtp, f"{prefix}-{k}", flood) != "accepted":
                    with flood.lock:
                        if not flood.full.is_set():
                            flood.used_at_full.append(memory(fleet)["used_memory"])
                            flood.full.set()
    except BaseException as exc:  # noqa: BLE001 -- re-raised in the test's thread
        flood.errors.append(exc)
        flood.full.set()


def run_flood(fleet: Fleet) -> Flood:
    flood = Flood()
    deadline = time.monotonic() + FLOOD_SECONDS
    threads = [
        threading.Thread(target=flood_client, args=(fleet, f"t{n}", flood, deadline))
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(FLOOD_SECONDS + 35)  # a client's own socket timeout ends it before this
    assert not any(thread.is_alive() for thread in threads)
    if flood.errors:
        raise flood.errors[0]
    return flood


def top_up(fleet: Fleet, flood: Flood) -> int:
    """After the first 452, send one by one until the DATA command itself gets 452: a
    message that still fits below the mark may get a 250 until the ingress's next look at
    Redis shows the mark reached. Returns how many more got 250."""
    before = len(flood.accepted)
    with RawSMTP("127.0.0.1", fleet.smtp_port, timeout=30) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for k in range(50):
            if send_one(smtp, f"top-{k}", flood) == "data":
                return len(flood.accepted) - before
            time.sleep(0.1)  # the ingress looks at Redis once a second
    raise AssertionError("DATA never got 452")


def arrived(sink: SmtpSink) -> Iterator[tuple[str, bytes]]:
    """(X-Overload-Id, data) of every message the sink accepted."""
    for transaction in list(sink.messages):
        found = _ID.search(transaction.data)
        assert found is not None, transaction.data[:300]
        yield found.group(1).decode(), transaction.data


def check_relayed(data: bytes, original: bytes) -> None:
    """Our Received field prepended, then the original bytes, byte for byte."""
    assert data.endswith(original), data[:300]
    assert _TRACE.fullmatch(data[: -len(original)]), data[:300]


def memory(fleet: Fleet) -> dict[str, int]:
    found = fleet.client().info("memory")
    return {key: int(found[key]) for key in ("used_memory", "used_memory_peak", "maxmemory")}


def mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def oom_refusals(fleet: Fleet) -> int:
    """Commands Redis refused with OOM since it started, whoever sent them."""
    stats = fleet.client().info("errorstats").get("errorstat_OOM", {"count": 0})
    return int(stats["count"])


def still_answers(fleet: Fleet) -> None:
    """The ingress keeps talking while full; only new mail is refused, before its data."""
    with RawSMTP("127.0.0.1", fleet.smtp_port, timeout=10) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("NOOP")[0] == 250
        for _ in range(2):
            assert smtp.cmd(f"MAIL FROM:<{SENDER}>")[0] == 250
            assert smtp.cmd(f"RCPT TO:<r@{DOMAIN}>")[0] == 250
            assert smtp.cmd("DATA") == FULL
            assert smtp.cmd("RSET")[0] == 250
            assert smtp.cmd("NOOP")[0] == 250
    assert all(role.alive() for role in fleet.roles), fleet.logs()


def accepts_again(fleet: Fleet, flood: Flood) -> bool:
    with RawSMTP("127.0.0.1", fleet.smtp_port, timeout=10) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        return send_one(smtp, f"after-{len(flood.replies)}", flood) == "accepted"


@pytest.mark.timeout(90)
def test_backlog_fills_redis_then_drains_and_the_ingress_recovers(fleet: Fleet) -> None:
    started = time.monotonic()
    sink = fleet.sink(DOMAIN, "127.0.0.2")
    fleet.client().config_set("maxmemory", str(MAXMEMORY))
    store = Store(redis.Redis(port=fleet.redis.port), "mxf:")
    shaping.pause(store, DOMAIN)  # delivery held: the whole backlog stays in Redis
    fleet.settings.update(DELIVERY)
    fleet.up()

    flood = run_flood(fleet)
    filled = time.monotonic()
    before = len(flood.accepted)
    assert flood.full.is_set(), f"no 452 after {before} messages"
    (used_at_full,) = flood.used_at_full
    more = top_up(fleet, flood)
    assert {reply for reply in flood.replies if reply[0] not in (250, 354)} == {FULL}
    assert before * BODY_SIZE > MAXMEMORY // 2  # the backlog filled Redis
    assert 0.8 * HIGH_WATER * MAXMEMORY < used_at_full < MAXMEMORY
    full = memory(fleet)
    assert full["used_memory_peak"] < MAXMEMORY
    assert oom_refusals(fleet) == 0  # the ingress refused first: Redis never had to
    assert sink.messages == []
    still_answers(fleet)

    resumed = time.monotonic()
    shaping.resume(store, DOMAIN)
    wait_until(lambda: accepts_again(fleet, flood), timeout=25, interval=0.2)
    recovered = time.monotonic()
    wait_until(lambda: len(sink.messages) >= len(flood.accepted), timeout=25)
    drained = time.monotonic()
    wait_until(fleet.spool_empty, timeout=15)
    after = memory(fleet)
    print(
        f"\naccepted before the first 452: {before} messages of {BODY_SIZE // 1024} KiB in"
        f" {filled - started:.1f} s, then {more} more until DATA got 452; used_memory at the"
        f" first 452 {mib(used_at_full)} of maxmemory {mib(MAXMEMORY)}"
        f" ({used_at_full / MAXMEMORY:.1%}; high-water {HIGH_WATER:.0%}); peak"
        f" {mib(full['used_memory_peak'])} filling, {mib(after['used_memory_peak'])} draining;"
        f" 250 again {recovered - resumed:.1f} s after resume; all delivered"
        f" {drained - resumed:.1f} s after resume; used_memory then {mib(after['used_memory'])};"
        f" OOM refusals {oom_refusals(fleet)}"
    )

    names = [name for name, _ in arrived(sink)]
    assert len(names) == len(set(names))  # no duplicate: nothing crashed
    assert set(names) == set(flood.accepted)  # every 250 arrived, and nothing else
    for name, data in arrived(sink):
        check_relayed(data, flood.accepted[name])
    assert after["used_memory"] < HIGH_WATER * MAXMEMORY / 2
    assert after["used_memory_peak"] < MAXMEMORY  # the drain stayed within the room too
    assert oom_refusals(fleet) == 0
    assert all(role.alive() for role in fleet.roles), fleet.logs()
    store.client.close()
