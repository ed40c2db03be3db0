"""A worker's side of the spool when Redis goes away: the lease keeper says when a lease
may be gone, and a completion waits out a restart."""

import threading
import time

import redis

from shared.embedded import EmbeddedRedis
from shared.keys import Keys
from shared.spool import Outcome
from tests.conftest import StartRedis
from tests.integration.test_spool_scripts import DEST, LIMITS, SHAPING, accept
from tests.servers.wait import wait_until
from workers.lease import LeaseKeeper
from workers.store import Store

LEASE_MS = 600


def keeper_at_work(store: Store) -> LeaseKeeper:
    """A ticket holding one claimed job, and its lease keeper started."""
    accept(store)
    store.dispatch("dest.test", "t1", SHAPING, **{**LIMITS, "lease_ms": LEASE_MS})
    claimed = store.claim("dest.test", "t1", SHAPING, count=10, lease_ms=LEASE_MS)
    assert claimed is not None
    keeper = LeaseKeeper(store, DEST, "t1", LEASE_MS)
    keeper.hold(claimed.jobs)
    return keeper


def test_renewals_keep_the_lease_past_its_time(start_redis: StartRedis) -> None:
    server = start_redis()
    store = Store(redis.Redis(port=server.port), Keys().prefix)
    keeper = keeper_at_work(store)
    try:
        until = time.monotonic() + 3 * LEASE_MS / 1000
        while time.monotonic() < until:  # three lease times, checked all along
            assert not keeper.expired()
            assert store.reap() == 0
            time.sleep(0.05)
    finally:
        keeper.stop()


def test_a_keeper_cut_off_from_redis_says_its_lease_may_be_gone(start_redis: StartRedis) -> None:
    """A frozen or partitioned worker must not send what the reaper may have handed on."""
    server = start_redis()
    store = Store(redis.Redis(port=server.port, socket_timeout=0.2), Keys().prefix)
    keeper = keeper_at_work(store)
    try:
        server.kill()
        cut = time.monotonic()
        wait_until(keeper.expired, timeout=5)
        assert time.monotonic() - cut < LEASE_MS / 1000  # before the reaper could act
        assert not keeper.lost  # nobody said it was lost: it may be, that is enough
    finally:
        keeper.stop()


def test_a_completion_waits_out_a_redis_restart(start_redis: StartRedis) -> None:
    """The mail has left: a record refused because Redis is restarting is tried again,
    rather than left to become a duplicate when the lease runs out."""
    server = start_redis()
    store = Store(redis.Redis(port=server.port, socket_timeout=1), Keys().prefix)
    msg_id = accept(store)
    store.dispatch("dest.test", "t1", SHAPING, **LIMITS)
    claimed = store.claim("dest.test", "t1", SHAPING, count=10, lease_ms=60_000)
    assert claimed is not None
    (job,) = claimed.jobs
    server.kill()
    again = EmbeddedRedis(server.data_dir, server.port)  # the same port, from its AOF
    restart = threading.Timer(0.5, again.start)
    restart.start()
    try:
        outcome = Outcome(delivered=job.recipients, last_reply="250 ok")
        assert store.complete(job, "t1", outcome, next_ms=0, events_maxlen=100, event={},
                              retry_for=10.0)  # fmt: skip
        restart.join()
        assert store.client.exists(f"mxf:msg:{msg_id}") == 0  # recorded: the message is done
    finally:
        restart.join()
        again.stop()
