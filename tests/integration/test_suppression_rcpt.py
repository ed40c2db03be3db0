"""The suppression list at RCPT, against a real ingress and Redis: refused with the exact
reply and nothing queued, per sender domain or global, case-insensitively, in order when
pipelined, until the entry expires; dropped with an event; never looked at for a client
that may not relay, nor with ``suppression = "off"``; fail open while Redis is down."""

import io
import json
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from ingress.suppression import LOOKUP_TIMEOUT
from shared import replies
from shared.keys import Keys
from shared.message import Mailbox
from shared.suppression import GLOBAL, OPERATOR_REASON, parse_address
from tests.conftest import StartIngress, StartRedis
from tests.integration.test_spool_faults import answers_quickly
from tests.servers.httpprobe import metric, try_get
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.redis_server import RedisServer
from tests.servers.smtpcheck import envelope, queued_id, stored_ids, wire
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until
from workers.events_cli import EventStream, print_events
from workers.store import text
from workers.suppress_ops import SuppressionList

BODY = b"Subject: hi\r\n\r\nhello\r\n"
OUTSIDER = "127.0.0.2"  # the test ingress relays for 127.0.0.1/32 only
REFUSED = "mxfleet_ingress_suppressed_recipients_total"


def listing_of(server: RedisServer) -> SuppressionList:
    return SuppressionList(redis.Redis(port=server.port), Keys())


def suppress(listing: SuppressionList, address: str, scope: str = GLOBAL, ttl_ms: int = 0) -> None:
    entries: list[tuple[Mailbox, str]] = [(parse_address(address), OPERATOR_REASON)]
    listing.add(scope, entries, ttl_ms=ttl_ms, source="operator", replace=True)


def begin(smtp: RawSMTP, sender: str = "news@shop.test") -> None:
    assert smtp.cmd("EHLO client.test")[0] == 250
    assert smtp.cmd(f"MAIL FROM:<{sender}>")[0] == 250


def rcpt(smtp: RawSMTP, address: str) -> tuple[int, str]:
    return smtp.cmd(f"RCPT TO:<{address}>")


def finish(smtp: RawSMTP) -> tuple[int, str]:
    assert smtp.cmd("DATA")[0] == 354
    smtp.send(BODY)
    return smtp.cmd(".")


def recipients(spool: SpoolClient, msg_id: str) -> set[str]:
    return {text(r) for r in spool.smembers(f"mxf:rcpt:{msg_id}:dest.test")}


@pytest.fixture
def ingress(shared_ingress: IngressProcess, spool: SpoolClient) -> IngressProcess:
    """The module's ingress (suppression = "refuse", the default) on an empty spool."""
    return shared_ingress


@pytest.fixture
def listing(redis_server: RedisServer) -> Iterator[SuppressionList]:
    found = listing_of(redis_server)
    yield found
    found.client.close()


def test_refused_with_the_reply_and_nothing_queued(
    ingress: IngressProcess, spool: SpoolClient, listing: SuppressionList
) -> None:
    suppress(listing, "Bob@dest.test")
    before = metric(ingress.metrics_port, REFUSED, action="refused")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        begin(smtp)
        assert rcpt(smtp, "bob@dest.test") == wire(replies.SUPPRESSED)
        assert wire(replies.SUPPRESSED) == (550, "5.7.1 " + replies.SUPPRESSED.text)
        assert rcpt(smtp, "BOB@Dest.TEST") == wire(replies.SUPPRESSED)  # any case
        assert rcpt(smtp, '"bob"@dest.test') == wire(replies.SUPPRESSED)  # needless quotes
        assert rcpt(smtp, "bob+news@dest.test") == wire(replies.RECIPIENT_OK)
        assert rcpt(smtp, "alice@dest.test") == wire(replies.RECIPIENT_OK)
        code, reply = finish(smtp)
        assert code == 250, reply
        msg_id = queued_id(reply)
        # A transaction whose only recipient is suppressed has no recipient at all.
        assert smtp.cmd("MAIL FROM:<news@shop.test>")[0] == 250
        assert rcpt(smtp, "bob@dest.test") == wire(replies.SUPPRESSED)
        assert smtp.cmd("DATA") == wire(replies.NEED_RCPT)
    assert stored_ids(spool) == {msg_id}
    assert recipients(spool, msg_id) == {"bob+news@dest.test", "alice@dest.test"}
    assert envelope(spool, msg_id)["rcpts"] == "2"
    assert metric(ingress.metrics_port, REFUSED, action="refused") == before + 4


def test_pipelined_rcpts_are_answered_in_order(
    ingress: IngressProcess, spool: SpoolClient, listing: SuppressionList
) -> None:
    suppress(listing, "bob@dest.test")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        smtp.send(
            b"MAIL FROM:<news@shop.test>\r\nRCPT TO:<a@dest.test>\r\nRCPT TO:<bob@dest.test>\r\n"
            b"RCPT TO:<c@dest.test>\r\nRCPT TO:<Bob@dest.test>\r\nDATA\r\n"
        )
        answers = [smtp.reply() for _ in range(6)]
        assert answers == [
            wire(replies.SENDER_OK), wire(replies.RECIPIENT_OK), wire(replies.SUPPRESSED),
            wire(replies.RECIPIENT_OK), wire(replies.SUPPRESSED), wire(replies.START_DATA),
        ]  # fmt: skip
        smtp.send(BODY + b".\r\n")
        code, reply = smtp.reply()
    assert code == 250, reply
    assert recipients(spool, queued_id(reply)) == {"a@dest.test", "c@dest.test"}


def test_a_sender_domain_entry_holds_for_that_domain_only(
    ingress: IngressProcess, listing: SuppressionList
) -> None:
    suppress(listing, "bob@dest.test", scope="shop.test")
    suppress(listing, "eve@dest.test")  # global
    cases = [
        ("news@shop.test", True, True),
        ("Billing@SHOP.Test", True, True),  # the sender's domain in any case
        ("news@other.test", False, True),
        ("", False, True),  # the null sender: global entries only
    ]
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for sender, bob_refused, eve_refused in cases:
            assert smtp.cmd(f"MAIL FROM:<{sender}>")[0] == 250
            for address, refused in (
                ("bob@dest.test", bob_refused),
                ("eve@dest.test", eve_refused),
            ):
                expected = replies.SUPPRESSED if refused else replies.RECIPIENT_OK
                assert rcpt(smtp, address) == wire(expected), (sender, address)
            assert smtp.cmd("RSET")[0] == 250


def test_an_entry_expires(
    ingress: IngressProcess, spool: SpoolClient, listing: SuppressionList
) -> None:
    suppress(listing, "bob@dest.test", ttl_ms=500)
    with RawSMTP(ingress.host, ingress.port) as smtp:
        begin(smtp)
        assert rcpt(smtp, "bob@dest.test") == wire(replies.SUPPRESSED)
        wait_until(lambda: rcpt(smtp, "bob@dest.test") == wire(replies.RECIPIENT_OK), timeout=5)
    assert spool.zcard("mxf:suppressed") == 1  # the index keeps it until the next trim
    assert listing.entries() == ([], 0)  # listing trims it
    assert spool.zcard("mxf:suppressed") == 0


def test_a_client_that_may_not_relay_is_not_checked(
    ingress: IngressProcess, listing: SuppressionList
) -> None:
    suppress(listing, "bob@dest.test")
    before = metric(ingress.metrics_port, REFUSED, action="refused")
    with RawSMTP(ingress.host, ingress.port, source=OUTSIDER) as smtp:
        begin(smtp)
        assert rcpt(smtp, "bob@dest.test") == wire(replies.RELAY_DENIED)
        assert rcpt(smtp, "alice@dest.test") == wire(replies.RELAY_DENIED)
    assert metric(ingress.metrics_port, REFUSED, action="refused") == before
    assert metric(ingress.metrics_port, "mxfleet_ingress_suppression_unchecked_total") == 0


def test_drop_accepts_writes_an_event_and_queues_nothing_for_it(
    start_ingress: StartIngress, spool: SpoolClient, listing: SuppressionList
) -> None:
    ingress = start_ingress(suppression="drop")
    suppress(listing, "bob@dest.test")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        begin(smtp)
        assert rcpt(smtp, "bob@dest.test") == wire(replies.RECIPIENT_OK)
        assert rcpt(smtp, "alice@dest.test") == wire(replies.RECIPIENT_OK)
        code, reply = finish(smtp)
        assert code == 250, reply
        mixed = queued_id(reply)
        # Every recipient dropped: a 250 with an id of its own, and nothing stored.
        assert smtp.cmd("MAIL FROM:<news@shop.test>")[0] == 250
        assert rcpt(smtp, "Bob@dest.test") == wire(replies.RECIPIENT_OK)
        code, reply = finish(smtp)
        assert code == 250, reply
        alone = queued_id(reply)
    assert stored_ids(spool) == {mixed}
    assert recipients(spool, mixed) == {"alice@dest.test"}
    out = io.StringIO()
    print_events(EventStream(listing.client, "mxf:events"), None, None, out)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["id"], e["rcpts"]) for e in events] == [
        (mixed, ["bob@dest.test"]), (alone, ["Bob@dest.test"])
    ]  # fmt: skip
    for event in events:
        assert event["verdict"] == "suppressed"
        assert event["domain"] == "dest.test"
        assert event["reply"] == str(replies.SUPPRESSED)
    port = ingress.metrics_port
    assert metric(port, REFUSED, action="dropped") == 2
    assert metric(port, "mxfleet_ingress_messages_total", result="suppressed") == 1
    assert metric(port, "mxfleet_ingress_messages_total", result="accepted") == 1


def test_off_does_not_look(
    start_ingress: StartIngress, spool: SpoolClient, listing: SuppressionList
) -> None:
    ingress = start_ingress(suppression="off")
    suppress(listing, "bob@dest.test")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        begin(smtp)
        assert rcpt(smtp, "bob@dest.test") == wire(replies.RECIPIENT_OK)
        code, reply = finish(smtp)
    assert code == 250, reply
    assert recipients(spool, queued_id(reply)) == {"bob@dest.test"}


def test_redis_down_fails_open_at_rcpt(
    start_ingress: StartIngress, start_redis: StartRedis
) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url, suppression="drop")
    listing = listing_of(server)
    suppress(listing, "bob@dest.test")
    suppress(listing, "eve@dest.test")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        begin(smtp)
        assert rcpt(smtp, "bob@dest.test") == wire(replies.RECIPIENT_OK)  # dropped
        server.stop()
        # The dropped recipient's event cannot be written: the client is told to retry.
        assert finish(smtp) == wire(replies.SPOOL_UNAVAILABLE)
        assert smtp.cmd("MAIL FROM:<news@shop.test>")[0] == 250
        # The list cannot be asked: the recipient is accepted as any other (fail open).
        assert rcpt(smtp, "eve@dest.test") == wire(replies.RECIPIENT_OK)
        assert rcpt(smtp, "alice@dest.test") == wire(replies.RECIPIENT_OK)
        server.start()
        wait_until(lambda: (try_get(ingress.metrics_port, "/readyz") or (0,))[0] == 200, 10)
        code, reply = finish(smtp)
    assert code == 250, reply
    msg_id = queued_id(reply)
    assert recipients(server.client(), msg_id) == {"eve@dest.test", "alice@dest.test"}
    assert metric(ingress.metrics_port, "mxfleet_ingress_suppression_unchecked_total") == 2
    assert ingress.log().count("event=suppression_unchecked") == 2
    assert metric(ingress.metrics_port, REFUSED, action="dropped") == 1


def test_a_slow_redis_fails_open_within_the_lookup_timeout(
    start_ingress: StartIngress, start_redis: StartRedis
) -> None:
    server = start_redis("--enable-debug-command", "yes")
    ingress = start_ingress(redis_url=server.url, redis_timeout="5s")
    listing = listing_of(server)
    suppress(listing, "bob@dest.test")
    sleeper = redis.Redis(port=server.port, socket_timeout=10)
    thread = threading.Thread(target=sleeper.execute_command, args=("DEBUG", "SLEEP", "1.5"))
    with RawSMTP(ingress.host, ingress.port) as smtp:
        begin(smtp)
        thread.start()
        try:
            wait_until(lambda: not answers_quickly(server.port), timeout=5)  # the sleep began
            started = time.monotonic()
            assert rcpt(smtp, "bob@dest.test") == wire(replies.RECIPIENT_OK)
            assert time.monotonic() - started < LOOKUP_TIMEOUT + 0.5  # not redis_timeout
        finally:
            thread.join()
        # The lookup that was cut off cost its connection, not the next lookups.
        assert rcpt(smtp, "bob@dest.test") == wire(replies.SUPPRESSED)
    assert metric(ingress.metrics_port, "mxfleet_ingress_suppression_unchecked_total") == 1
    assert 'error="no answer in time"' in ingress.log()
