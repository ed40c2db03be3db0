"""Priority classes end to end: a password reset jumps a throttled destination's bulk
backlog of 10,000 messages, and its X-Mxfleet-Priority field never reaches the destination.
"""

import time

from tests.servers.fleet import Fleet
from tests.servers.httpprobe import sample, try_get
from tests.servers.pipelined import Message, send_parallel
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtp_sink import SmtpSink
from tests.servers.wait import wait_until

BULK = 10_000
SESSIONS = 8
FILLER = b"".join(b"%04d lorem ipsum dolor sit amet, consectetur adipiscing elit\r\n" % n
                  for n in range(15))  # fmt: skip
RESET = (
    b"From: <accounts@client.test>\r\nTo: <alice@slow.test>\r\nSubject: password reset\r\n"
    b"X-Mxfleet-Priority: transactional\r\n\r\nYour reset code is 314159.\r\n"
)


def newsletter(n: int) -> Message:
    """Bulk message ``n``: 1 KiB, one recipient at the throttled domain."""
    data = b"From: <news@client.test>\r\nSubject: newsletter %d\r\n\r\n%s" % (n, FILLER)
    return "news@client.test", [f"reader{n}@slow.test"], data


def reset_arrival(sink: SmtpSink) -> float | None:
    for message in list(sink.messages):
        if b"Subject: password reset" in message.data:
            return message.received_at
    return None


def test_a_password_reset_jumps_a_throttled_bulk_backlog(fleet: Fleet) -> None:
    fleet.config('[policy.throttled]\ndomains = ["slow.test"]\nrate = "20/s"\nburst = 5\n')
    sink = fleet.sink("slow.test", "127.0.0.2")
    fleet.up()
    started = time.monotonic()
    assert send_parallel("127.0.0.1", fleet.smtp_port, BULK, SESSIONS, newsletter) == BULK
    queued_in = time.monotonic() - started
    with RawSMTP("127.0.0.1", fleet.smtp_port) as smtp:
        code, text = smtp.transaction("accounts@client.test", ["alice@slow.test"], RESET)
        accepted_at = time.monotonic()
    assert (code, "queued as" in text) == (250, True), text
    wait_until(lambda: reset_arrival(sink) is not None, timeout=10)
    arrival = reset_arrival(sink)
    assert arrival is not None
    latency = arrival - accepted_at
    bulk_by_then = sum(1 for m in list(sink.messages) if m.received_at <= arrival) - 1
    print(
        f"\nqueued {BULK} bulk messages in {queued_in:.1f} s ({BULK / queued_in:.0f}/s, "
        f"{SESSIONS} pipelined sessions); the password reset arrived {latency * 1000:.0f} ms "
        f"after its 250, with {bulk_by_then} of {BULK} bulk messages delivered"
    )
    assert latency < 5.0
    assert bulk_by_then < BULK // 10  # the backlog still waits: the rate was the bottleneck
    client = fleet.client()
    assert client.zcard("mxf:sched:slow.test") > BULK * 9 // 10  # and it is in the spool
    assert client.zcard("mxf:sched:slow.test:t") == 0
    (relayed,) = [m for m in sink.messages if b"Subject: password reset" in m.data]
    assert b"x-mxfleet-priority" not in relayed.data.lower()  # never relayed
    assert list(relayed.rcpt_tos) == ["alice@slow.test"]
    wait_until(lambda: _delivered(fleet, "transactional") == 1, timeout=10)
    assert _delivered(fleet, "bulk") >= bulk_by_then


def _delivered(fleet: Fleet, cls: str) -> float:
    """Recipients the workers delivered in a class (``mxfleet_delivery_class_...``)."""
    total = 0.0
    for role in fleet.roles:
        port = role.metrics_port() if role.name == "worker" else None
        answer = try_get(port, "/metrics") if port else None
        if answer:
            name = "mxfleet_delivery_class_recipients_total"
            total += sample(answer[1], name, **{"class": cls, "verdict": "delivered"}) or 0.0
    return total
