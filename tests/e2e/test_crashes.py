"""Nothing accepted is lost when workers, dispatchers or Redis die mid-delivery."""

import re

from tests.servers.fleet import Fleet
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtp_sink import Behaviour, SmtpSink
from tests.servers.wait import wait_until

_ID = re.compile(rb"with E?SMTP\w* id ([0-9A-Z]{26})")


def queue_ids(sink: SmtpSink) -> list[str]:
    """The mxfleet queue id of every message the sink accepted (from our Received field)."""
    ids = []
    for message in list(sink.messages):
        match = _ID.search(message.data)
        assert match is not None, message.data[:300]
        ids.append(match.group(1).decode())
    return ids


def send(fleet: Fleet, count: int, domain: str) -> set[str]:
    """``count`` messages over one session; their queue ids (each must get a 250)."""
    accepted: set[str] = set()
    with RawSMTP("127.0.0.1", fleet.smtp_port, timeout=60) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for n in range(count):
            body = b"Subject: %d\r\n\r\nmessage %d\r\n" % (n, n)
            code, text = smtp.transaction(
                "sender@example.test", [f"r{n}@{domain}"], body, ehlo=False
            )
            assert code == 250, (code, text)
            accepted.add(text.rsplit(" ", 1)[1])
    return accepted


def test_sigkill_worker_mid_batch_loses_nothing(fleet: Fleet) -> None:
    sink = fleet.sink("crash.test", "127.0.0.2", Behaviour(delay=0.002))
    fleet.settings.update(batch_size="100", lease_time="6s")
    fleet.start("ingress")
    fleet.start("dispatcher")
    victim = fleet.start("worker")
    accepted = send(fleet, 2000, "crash.test")
    wait_until(lambda: len(sink.messages) >= 100, timeout=120)
    victim.kill()
    fleet.start("worker")
    wait_until(lambda: set(queue_ids(sink)) >= accepted, timeout=240)
    delivered = queue_ids(sink)
    duplicates = len(delivered) - len(set(delivered))
    print(f"accepted={len(accepted)} delivered={len(set(delivered))} duplicates={duplicates}")
    assert set(delivered) == accepted  # nothing lost, nothing that was not accepted
    assert duplicates <= 100  # at most what the dead worker held: one batch
    wait_until(fleet.spool_empty, timeout=30)


def test_sigkill_of_the_leading_dispatcher_lets_the_other_take_over(fleet: Fleet) -> None:
    sink = fleet.sink("lead.test", "127.0.0.2")
    fleet.start("ingress")
    first = fleet.start("dispatcher")
    wait_until(lambda: fleet.client().get("mxf:leader") is not None, timeout=20)
    second = fleet.start("dispatcher")
    fleet.start("worker")
    leader = fleet.client().get("mxf:leader") or b""
    victim, standby = (
        (first, second) if f":{first.process.pid}:".encode() in leader else (second, first)
    )
    victim.kill()
    accepted = send(fleet, 20, "lead.test")
    wait_until(lambda: set(queue_ids(sink)) >= accepted, timeout=60)
    leader = fleet.client().get("mxf:leader") or b""
    assert f":{standby.process.pid}:".encode() in leader


def test_redis_killed_and_restarted_during_delivery_loses_nothing(fleet: Fleet) -> None:
    sink = fleet.sink("outage.test", "127.0.0.2", Behaviour(delay=0.003))
    fleet.up(lease_time="6s")
    accepted = send(fleet, 400, "outage.test")
    wait_until(lambda: len(sink.messages) >= 50, timeout=60)
    fleet.redis.kill()
    fleet.redis.start()  # same port, same AOF directory
    wait_until(lambda: set(queue_ids(sink)) >= accepted, timeout=240)
    delivered = queue_ids(sink)
    print(f"accepted={len(accepted)} delivered={len(set(delivered))} "
          f"duplicates={len(delivered) - len(set(delivered))}")  # fmt: skip
    assert set(delivered) == accepted
    wait_until(fleet.spool_empty, timeout=60)
