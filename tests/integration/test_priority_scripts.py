"""Priority classes in the spool scripts, against a real Redis: each class has its own
schedule, a claim takes due transactional jobs first (also when the rate admits only
one), and every way a job goes back (deferral, reap, unclaim, flush) keeps its class."""

import redis

from shared.message import new_queue_id
from shared.priority import BULK, TRANSACTIONAL, Priority
from shared.settings import load_settings
from shared.spool import Envelope, Outcome, Shaping, discard_call, script
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until
from workers import queue_ops, shaping, status_cli
from workers.store import Job, Store, policy_backlog

LIMITS = {"lease_ms": 60_000, "hold_ms": 5_000, "batch": 10, "max_tickets": 100}
DOM = "dest.test"
DEST = "mx.dest.test"
SHAPING = Shaping(DEST, max_connections=2)
BULK_SCHED, T_SCHED = f"mxf:sched:{DOM}", f"mxf:sched:{DOM}:t"


def make_store(redis_server: RedisServer) -> Store:
    return Store(redis.Redis(port=redis_server.port), "mxf:")


def accept(store: Store, cls: Priority, count: int = 1, domain: str = DOM) -> list[str]:
    ids = []
    for _ in range(count):
        msg_id = new_queue_id()
        envelope = Envelope("s@example.test", {domain: [f"r@{domain}"]}, priority=cls)
        store.accept(msg_id, envelope, b"Subject: x\r\n\r\nbody\r\n")
        ids.append(msg_id)
    return ids


def claim(store: Store, token: str, count: int, limits: Shaping = SHAPING, lease: int = 60_000
          ) -> list[Job]:  # fmt: skip
    claimed = store.claim(DOM, token, limits, count=count, lease_ms=lease)
    assert claimed is not None
    assert claimed.status == "ok", claimed
    return claimed.jobs


def deferred(job: Job) -> Outcome:
    return Outcome(deferred=job.recipients, last_reply="451 4.3.0 later")


def test_each_class_is_accepted_into_its_own_schedule(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (bulk,) = accept(store, BULK)
    (urgent,) = accept(store, TRANSACTIONAL)
    assert [m.decode() for m in spool.zrange(BULK_SCHED, 0, -1)] == [bulk]
    assert [m.decode() for m in spool.zrange(T_SCHED, 0, -1)] == [urgent]
    assert spool.hget(f"mxf:job:{urgent}:{DOM}", "prio") == b"transactional"
    assert spool.hget(f"mxf:job:{bulk}:{DOM}", "prio") == b"bulk"
    assert spool.hget(f"mxf:msg:{urgent}", "priority") == b"transactional"
    assert store.due_domains(10) == [DOM]


def test_a_claim_takes_transactional_jobs_first_then_fills_with_bulk(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    bulk = accept(store, BULK, 5)  # older than the transactional ones
    urgent = accept(store, TRANSACTIONAL, 3)
    assert store.dispatch(DOM, "t1", SHAPING, **LIMITS)[0] == "issued"
    first = claim(store, "t1", 4)
    # (Within a schedule, jobs due in the same millisecond go in id order.)
    assert {j.msg_id for j in first[:3]} == set(urgent)
    assert [j.priority for j in first] == [TRANSACTIONAL] * 3 + [BULK]
    rest = claim(store, "t1", 10)
    assert {j.msg_id for j in [first[3], *rest]} == set(bulk)
    assert [j.priority for j in rest] == [BULK] * 4
    assert spool.zcard(BULK_SCHED) == spool.zcard(T_SCHED) == 0
    assert spool.zcard("mxf:inflight") == 8


def test_when_the_rate_admits_one_the_transactional_job_goes(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    limits = Shaping(DEST, max_connections=2, rate_limit=1, rate_period_ms=60_000, burst=1)
    accept(store, BULK, 20)
    (urgent,) = accept(store, TRANSACTIONAL)
    assert store.dispatch(DOM, "t1", limits, **LIMITS)[0] == "issued"
    (job,) = claim(store, "t1", 10, limits)
    assert (job.msg_id, job.priority) == (urgent, TRANSACTIONAL)
    throttled = store.claim(DOM, "t1", limits, count=10, lease_ms=60_000)
    assert throttled is not None
    assert throttled.status == "rate"  # the bulk backlog waits for the rate
    assert spool.zcard(BULK_SCHED) == 20


def test_a_deferred_job_goes_back_to_its_own_schedule(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (bulk,) = accept(store, BULK)
    (urgent,) = accept(store, TRANSACTIONAL)
    store.dispatch(DOM, "t1", SHAPING, **LIMITS)
    jobs = claim(store, "t1", 10)
    later = store.now_ms() + 60_000
    for job in jobs:
        assert store.complete(job, "t1", deferred(job), next_ms=later, events_maxlen=1000,
                              event={"id": job.msg_id})  # fmt: skip
    assert spool.zscore(T_SCHED, urgent) == later
    assert spool.zscore(BULK_SCHED, bulk) == later
    assert spool.zscore(T_SCHED, bulk) is None
    assert spool.zscore(BULK_SCHED, urgent) is None
    assert spool.zscore("mxf:due", DOM) is not None


def test_a_reaped_job_goes_back_to_its_own_schedule(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (bulk,) = accept(store, BULK)
    (urgent,) = accept(store, TRANSACTIONAL)
    store.dispatch(DOM, "t1", SHAPING, **{**LIMITS, "lease_ms": 50})
    assert len(claim(store, "t1", 10, lease=50)) == 2
    wait_until(lambda: store.reap() == 2, timeout=5)  # the worker is judged dead
    assert [m.decode() for m in spool.zrange(T_SCHED, 0, -1)] == [urgent]
    assert [m.decode() for m in spool.zrange(BULK_SCHED, 0, -1)] == [bulk]
    assert spool.hget(f"mxf:job:{urgent}:{DOM}", "lease") is None


def test_unclaimed_jobs_go_back_to_their_own_schedule(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (bulk,) = accept(store, BULK)
    (urgent,) = accept(store, TRANSACTIONAL)
    store.dispatch(DOM, "t1", SHAPING, **LIMITS)
    claim(store, "t1", 10)
    assert store.unclaim(DOM, "t1", [urgent, bulk]) == 2
    assert [m.decode() for m in spool.zrange(T_SCHED, 0, -1)] == [urgent]
    assert [m.decode() for m in spool.zrange(BULK_SCHED, 0, -1)] == [bulk]
    assert spool.zcard("mxf:inflight") == 0


def test_dispatch_sees_either_schedule_and_the_earlier_due_time(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (urgent,) = accept(store, TRANSACTIONAL)
    (bulk,) = accept(store, BULK)
    now = store.now_ms()
    store.client.zadd(T_SCHED, {urgent: now + 50_000})
    store.client.zadd(BULK_SCHED, {bulk: now + 90_000})
    verdict, when = store.dispatch(DOM, "t1", SHAPING, **LIMITS)
    assert (verdict, when) == ("later", now + 50_000)  # the earlier of the two
    store.client.zadd(T_SCHED, {urgent: now - 1})  # only the transactional job is due
    assert store.dispatch(DOM, "t2", SHAPING, **LIMITS)[0] == "issued"
    assert [j.msg_id for j in claim(store, "t2", 10)] == [urgent]
    store.client.zrem("mxf:due", DOM)
    store.release(DOM, DEST, "t2")  # bulk work remains: due when it is
    assert spool.zscore("mxf:due", DOM) == now + 90_000
    store.client.zrem(BULK_SCHED, bulk)
    assert store.dispatch(DOM, "t3", SHAPING, **LIMITS)[0] == "empty"  # neither has work
    assert spool.zscore("mxf:due", DOM) is None


def test_a_domain_with_only_transactional_work_is_not_empty(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (urgent,) = accept(store, TRANSACTIONAL, domain="only.test")
    shaping.pause(store, "only.test")
    assert shaping.resume(store, "only.test")
    assert spool.zscore("mxf:due", "only.test") is not None  # due again on resume
    assert store.dispatch("only.test", "t1", SHAPING, **LIMITS)[0] == "issued"
    store.release("only.test", DEST, "t1")
    store.client.zrem("mxf:sched:only.test:t", urgent)
    assert store.dispatch("only.test", "t2", SHAPING, **LIMITS)[0] == "empty"


def test_operator_commands_see_both_classes(redis_server: RedisServer, spool: SpoolClient) -> None:
    store = make_store(redis_server)
    bulk = accept(store, BULK, 3)
    urgent = accept(store, TRANSACTIONAL, 2)
    now = store.now_ms()
    store.client.zadd(T_SCHED, {urgent[0]: now + 600_000})
    store.client.zadd(BULK_SCHED, {bulk[0]: now + 600_000})
    (row,) = queue_ops.list_domains(store, load_settings({}).policies)
    assert (row.scheduled, row.transactional, row.due) == (5, 2, 3)
    (backlog,) = policy_backlog(store)
    assert (backlog.scheduled, backlog.transactional) == (5, 2)
    assert status_cli.collect(store, load_settings({})).backlog["transactional"] == 2
    view = queue_ops.show(store, urgent[0])
    assert view.envelope["priority"] == TRANSACTIONAL
    assert [job.priority for job in view.jobs] == [TRANSACTIONAL]
    assert queue_ops.flush(store, [DOM]) == 2  # one of each class was scheduled later
    assert store.client.zcount(T_SCHED, "-inf", now + 60_000) == 2
    assert store.client.zcount(BULK_SCHED, "-inf", now + 60_000) == 3
    assert queue_ops.drop(store, urgent[1], DOM, "deleted", 1000) == [f"r@{DOM}"]
    assert spool.zscore(T_SCHED, urgent[1]) is None
    assert queue_ops.purge(store, [DOM], 1000) == 4
    assert spool.exists(T_SCHED, BULK_SCHED) == 0
    assert spool.zcard("mxf:queue") == 0


def test_an_unconfirmed_transactional_accept_can_be_taken_back(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (urgent,) = accept(store, TRANSACTIONAL)
    discard = store.client.register_script(script("discard"))
    keys, args = discard_call(store.keys, urgent, [DOM], TRANSACTIONAL)
    assert discard(keys=keys, args=args) == 1
    assert spool.keys(f"mxf:*{urgent}*") == []
    assert spool.zcard(T_SCHED) == 0


def test_a_job_queued_before_classes_existed_is_bulk(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    (old,) = accept(store, BULK)
    store.client.hdel(f"mxf:job:{old}:{DOM}", "prio")  # as an older version wrote it
    store.dispatch(DOM, "t1", SHAPING, **LIMITS)
    (job,) = claim(store, "t1", 10)
    assert job.priority == BULK
    assert store.complete(job, "t1", deferred(job), next_ms=store.now_ms(), events_maxlen=1000,
                          event={})  # fmt: skip
    assert spool.zscore(BULK_SCHED, old) is not None


def test_a_bulk_ticket_hands_its_slot_to_a_domain_with_transactional_work(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    """Two domains of one destination with one connection: a ticket busy with bulk mail
    for one gives its slot up at its next claim, not after its fair share, when the other
    has a transactional job waiting; and its release makes that domain due before older
    waiters."""
    store = make_store(redis_server)
    one = Shaping("policy:shared", max_connections=1)
    accept(store, BULK, 20, domain="a.test")
    accept(store, BULK, 1, domain="c.test")
    assert store.dispatch("a.test", "t1", one, **LIMITS)[0] == "issued"
    first = store.claim("a.test", "t1", one, count=5, lease_ms=60_000)
    assert first is not None
    assert first.status == "ok"
    assert store.dispatch("c.test", "t2", one, **LIMITS)[0] == "full"  # the oldest waiter
    again = store.claim("a.test", "t1", one, count=5, lease_ms=60_000)
    assert again is not None
    assert again.status == "ok"  # bulk waiters wait for the fair share
    (urgent,) = accept(store, TRANSACTIONAL, domain="b.test")
    assert store.dispatch("b.test", "t3", one, **LIMITS)[0] == "full"
    handed = store.claim("a.test", "t1", one, count=5, lease_ms=60_000)
    assert handed is not None
    assert handed.status == "handoff"
    store.client.zrem("mxf:due", "b.test", "c.test")
    store.release("a.test", "policy:shared", "t1")
    assert spool.zscore("mxf:due", "b.test") is not None  # its turn, before c.test's
    assert spool.zscore("mxf:due", "c.test") is None
    assert store.dispatch("b.test", "t4", one, **LIMITS)[0] == "issued"
    (job,) = claim_of(store, "b.test", "t4", one)
    assert (job.msg_id, job.priority) == (urgent, TRANSACTIONAL)


def claim_of(store: Store, domain: str, token: str, limits: Shaping) -> list[Job]:
    claimed = store.claim(domain, token, limits, count=10, lease_ms=60_000)
    assert claimed is not None
    return claimed.jobs
