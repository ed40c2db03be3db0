"""Graceful shutdown as Kubernetes does it (SIGTERM, then a grace period): a worker finishes
the message in progress, gives back what it held, and another worker delivers the rest
at once, not after the lease expires."""

import time

from tests.servers.fleet import Fleet, queue_ids, send
from tests.servers.smtp_sink import Behaviour
from tests.servers.wait import wait_until


def test_worker_sigterm_finishes_its_message_and_gives_back_the_rest(fleet: Fleet) -> None:
    sink = fleet.sink("slow.test", "127.0.0.2", Behaviour(delay=0.1))  # ~0.4 s per message
    fleet.settings.update(lease_time="60s", ticket_budget="60s", max_connections="1")
    fleet.start("ingress")
    fleet.start("dispatcher")
    first = fleet.start("worker")
    accepted = send(fleet, 24, "slow.test")
    wait_until(lambda: len(sink.messages) >= 3, timeout=30)
    started = time.monotonic()
    assert first.stop(timeout=30) == 0
    took = time.monotonic() - started
    client = fleet.client()
    assert client.zcard("mxf:inflight") == 0  # every lease given back, none left to expire
    assert client.zcard("mxf:sched:slow.test") == 24 - len(set(queue_ids(sink)))
    assert "event=gave_back" in first.log.read_text()
    stopped_at = len(sink.messages)
    fleet.start("worker")
    restarted = time.monotonic()
    wait_until(lambda: len(sink.messages) > stopped_at, timeout=20)
    resumed = time.monotonic() - restarted  # the lease (60 s) did not have to expire
    wait_until(lambda: set(queue_ids(sink)) >= accepted, timeout=40)
    delivered = queue_ids(sink)
    duplicates = len(delivered) - len(set(delivered))
    print(f"\nSIGTERM to exit {took:.2f} s; next delivery {resumed:.1f} s after a new worker "
          f"started; duplicates {duplicates}")  # fmt: skip
    assert took < 5  # not the ~9 s the claimed batch would take
    assert resumed < 15
    assert len(delivered) == len(set(delivered)) == 24  # nothing lost, nothing twice
    wait_until(fleet.spool_empty, timeout=30)
