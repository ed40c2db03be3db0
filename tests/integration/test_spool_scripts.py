"""The delivery scripts against a real Redis: leases, stale tickets, completion, reaping."""

import redis

from shared.keys import Keys
from shared.message import new_queue_id
from shared.spool import Envelope, Outcome, Shaping
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until
from workers.store import Job, Store

LIMITS = {"lease_ms": 60_000, "hold_ms": 5_000, "batch": 10, "max_tickets": 100}
DEST = "mx.dest.test"
SHAPING = Shaping(DEST, max_connections=2)


def make_store(redis_server: RedisServer) -> Store:
    return Store(redis.Redis(port=redis_server.port), "mxf:")


def accept(store: Store, domain: str = "dest.test", rcpts: int = 1) -> str:
    msg_id = new_queue_id()
    envelope = Envelope(
        sender="s@example.test",
        recipients={domain: [f"r{n}@{domain}" for n in range(rcpts)]},
    )
    store.accept(msg_id, envelope, b"Subject: x\r\n\r\nbody\r\n")
    return msg_id


def claim(store: Store, token: str, lease_ms: int) -> list[Job] | None:
    claimed = store.claim("dest.test", token, SHAPING, count=10, lease_ms=lease_ms)
    return None if claimed is None else claimed.jobs


def event(msg_id: str) -> dict[str, str | int]:
    return {"id": msg_id, "verdict": "test"}


def test_dispatch_claim_complete_release(redis_server: RedisServer, spool: SpoolClient) -> None:
    store = make_store(redis_server)
    msg_id = accept(store, rcpts=2)
    assert store.due_domains(10) == ["dest.test"]
    assert store.dispatch("dest.test", "t1", SHAPING, **LIMITS)[0] == "issued"
    jobs = claim(store, "t1", 60_000)
    assert jobs is not None
    (job,) = jobs
    assert (job.msg_id, job.sender, job.recipients) == (
        msg_id, "s@example.test", ["r0@dest.test", "r1@dest.test"]
    )  # fmt: skip
    assert job.body == b"Subject: x\r\n\r\nbody\r\n"
    outcome = Outcome(delivered=job.recipients, last_reply="250 ok")
    assert store.complete(job, "t1", outcome, next_ms=0, events_maxlen=1000, event=event(msg_id))
    store.release("dest.test", DEST, "t1")
    assert spool.keys(f"mxf:*{msg_id}*") == []
    assert spool.hget("mxf:stats", "delivered") == b"2"
    assert spool.hget("mxf:stats", "jobs") == b"0"
    assert spool.zcard("mxf:queue") == 0


def test_a_ticket_without_its_lease_does_nothing(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    accept(store)
    assert claim(store, "never-issued", 60_000) is None
    assert spool.zcard("mxf:sched:dest.test") == 1  # untouched
    assert spool.zcard("mxf:inflight") == 0


def test_connection_slots_are_capped(redis_server: RedisServer, spool: SpoolClient) -> None:
    store = make_store(redis_server)
    for _ in range(30):
        accept(store)
    verdicts = [store.dispatch("dest.test", f"t{n}", SHAPING, **LIMITS)[0] for n in range(3)]
    assert verdicts == ["issued", "issued", "full"]
    store.release("dest.test", DEST, "t0")
    assert store.dispatch("dest.test", "t3", SHAPING, **LIMITS)[0] == "issued"


def test_completion_after_a_lost_lease_is_refused(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    msg_id = accept(store)
    store.dispatch("dest.test", "t1", SHAPING, **{**LIMITS, "lease_ms": 50})
    jobs = claim(store, "t1", 50)
    assert jobs
    wait_until(lambda: store.reap() == 1, timeout=5)  # the worker is judged dead
    assert spool.zscore("mxf:sched:dest.test", msg_id) is not None  # back in its schedule
    outcome = Outcome(delivered=jobs[0].recipients)
    assert not store.complete(jobs[0], "t1", outcome, next_ms=0, events_maxlen=1000, event={})
    assert spool.hget("mxf:stats", "lease_lost") == b"1"
    assert spool.exists(f"mxf:msg:{msg_id}") == 1  # still there for the next ticket


def test_a_claim_takes_no_more_body_bytes_than_asked(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    body = b"Subject: x\r\n\r\n" + b"x" * 1000 + b"\r\n"  # ~1 KB each
    for _ in range(10):
        store.accept(new_queue_id(), Envelope("s@example.test", {"dest.test": ["r@dest.test"]}),
                     body)  # fmt: skip
    store.dispatch("dest.test", "t1", SHAPING, **LIMITS)

    def take(max_bytes: int) -> int:
        claimed = store.claim(
            "dest.test", "t1", SHAPING, count=10, lease_ms=60_000, max_bytes=max_bytes
        )
        assert claimed is not None
        return len(claimed.jobs)

    assert [take(3 * len(body)), take(1), take(0)] == [3, 1, 6]  # at least one, all when 0


def test_reaper_forgets_tickets_of_dead_workers(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    """A worker killed mid-ticket never releases it; once its lease is over the ticket
    leaves the outstanding set even when nothing is due any more to prune it."""
    store = make_store(redis_server)
    accept(store)
    store.dispatch("dest.test", "t1", SHAPING, **{**LIMITS, "lease_ms": 50})
    store.dispatch("dest.test", "t2", SHAPING, **{**LIMITS, "lease_ms": 60_000})
    assert spool.zcard("mxf:tickets") == 2
    wait_until(lambda: store.reap() == 0 and spool.zcard("mxf:tickets") == 1, timeout=5)
    assert spool.zscore("mxf:tickets", "t2") is not None  # a live ticket stays


def test_deferral_reschedules_and_records_an_event(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    msg_id = accept(store, rcpts=2)
    store.dispatch("dest.test", "t1", SHAPING, **LIMITS)
    (job,) = claim(store, "t1", 60_000) or []
    later = store.now_ms() + 60_000
    outcome = Outcome(
        delivered=["r0@dest.test"], deferred=["r1@dest.test"], last_reply="451 4.3.0 later"
    )
    assert store.complete(
        job, "t1", outcome, next_ms=later, events_maxlen=1000, event=event(msg_id)
    )
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {b"r1@dest.test"}
    assert spool.zscore("mxf:sched:dest.test", msg_id) == later
    assert spool.hget(f"mxf:job:{msg_id}:dest.test", "attempts") == b"1"
    assert spool.hget(f"mxf:job:{msg_id}:dest.test", "last_reply") == b"451 4.3.0 later"
    ((_, fields),) = spool.xrange(Keys().events)
    assert fields[b"id"] == msg_id.encode()
    assert fields[b"attempt"] == b"1"
    store.release("dest.test", DEST, "t1")
    assert store.dispatch("dest.test", "t2", SHAPING, **LIMITS)[0] == "later"


def test_unclaim_gives_back_only_the_tickets_own_jobs(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    for _ in range(3):
        accept(store)
    store.dispatch("dest.test", "t1", SHAPING, **LIMITS)
    jobs = claim(store, "t1", 60_000) or []
    assert len(jobs) == 3
    ids = [job.msg_id for job in jobs]
    assert store.unclaim("dest.test", "someone-else", ids) == 0
    assert store.unclaim("dest.test", "t1", ids[1:]) == 2
    assert spool.zcard("mxf:inflight") == 1  # the first is still being delivered
    assert spool.zcard("mxf:sched:dest.test") == 2
    assert spool.hget(f"mxf:job:{ids[1]}:dest.test", "lease") is None
    assert spool.hget(f"mxf:job:{ids[1]}:dest.test", "attempts") == b"0"  # not an attempt
    assert spool.zscore("mxf:due", "dest.test") is not None
