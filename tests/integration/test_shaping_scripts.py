"""The shaping scripts against a real Redis: GCRA on the Redis clock, connection slots per
destination, pause, adaptive backoff, and the throttle hand-off between tickets."""

import time

import redis

from shared.message import new_queue_id
from shared.policies import Policies, PolicySpec, build_policies
from shared.spool import Envelope, Shaping
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient
from tests.unit.test_policies import BASE
from workers import shaping
from workers.store import Claim, Store

LIMITS = {"lease_ms": 60_000, "hold_ms": 5_000, "batch": 10, "max_tickets": 100}
SITE = "mx1.hosting.test"


def make_store(redis_server: RedisServer) -> Store:
    return Store(redis.Redis(port=redis_server.port), "mxf:")


def accept(store: Store, domain: str, count: int = 1) -> None:
    for _ in range(count):
        envelope = Envelope(sender="s@example.test", recipients={domain: [f"r@{domain}"]})
        store.accept(new_queue_id(), envelope, b"Subject: x\r\n\r\nbody\r\n")


def claim(store: Store, domain: str, token: str, limits: Shaping, count: int = 10) -> Claim:
    claimed = store.claim(domain, token, limits, count=count, lease_ms=60_000)
    assert claimed is not None
    return claimed


def test_gcra_admits_the_burst_then_the_rate(redis_server: RedisServer, spool: SpoolClient) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=5, rate_limit=20, rate_period_ms=1000, burst=5)
    accept(store, "a.test", 200)
    assert store.dispatch("a.test", "t1", limits, **LIMITS)[0] == "issued"
    first = claim(store, "a.test", "t1", limits, count=50)
    assert (first.status, len(first.jobs)) == ("ok", 5)  # the burst
    second = claim(store, "a.test", "t1", limits, count=50)
    assert second.status == "rate"  # the first ticket may wait...
    assert 1 <= second.wait_ms <= 50  # ...one emission interval at most
    admitted = 5
    started = time.monotonic()
    while time.monotonic() - started < 1.0:  # bounded: one second
        got = claim(store, "a.test", "t1", limits, count=50)
        if got.status == "rate":
            time.sleep(got.wait_ms / 1000)
        admitted += len(got.jobs)
    elapsed = time.monotonic() - started
    assert admitted <= 5 + 20 * elapsed + 1
    assert admitted >= 5 + 20 * (elapsed - 0.1)


def test_a_throttled_destination_is_not_dispatched_until_its_rate_admits(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=5, rate_limit=1, rate_period_ms=60_000, burst=1)
    accept(store, "a.test", 3)
    assert store.dispatch("a.test", "t1", limits, **LIMITS)[0] == "issued"
    assert len(claim(store, "a.test", "t1", limits).jobs) == 1
    got = claim(store, "a.test", "t1", limits)
    assert got.status == "rate"
    assert 59_000 < got.wait_ms <= 60_000
    store.release("a.test", SITE, "t1", got.now_ms + got.wait_ms)
    due = spool.zscore("mxf:due", "a.test")
    assert due is not None
    assert due >= got.now_ms + 59_000  # due when the rate admits
    verdict, when = store.dispatch("a.test", "t2", limits, **LIMITS)
    assert verdict == "rate"  # no ticket spent on a throttled domain
    assert when >= got.now_ms + 59_000


def test_the_second_ticket_yields_to_the_one_waiting_on_the_rate(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=5, rate_limit=10, rate_period_ms=1000, burst=1)
    accept(store, "a.test", 50)
    assert store.dispatch("a.test", "t1", limits, **LIMITS)[0] == "issued"
    assert store.dispatch("a.test", "t2", limits, **LIMITS)[0] == "issued"
    assert len(claim(store, "a.test", "t1", limits).jobs) == 1
    statuses = {claim(store, "a.test", token, limits).status for token in ("t1", "t2")}
    assert statuses == {"rate", "yield"}  # exactly one waits
    verdict, _ = store.dispatch("a.test", "t3", limits, **LIMITS)
    assert verdict == "rate"  # a ticket already waits on this rate


def test_domains_of_one_destination_share_its_connections(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=2)
    accept(store, "a.test", 30)
    accept(store, "b.test", 30)
    verdicts = [
        store.dispatch(domain, f"t{n}", limits, **LIMITS)[0]
        for n, domain in enumerate(["a.test", "b.test", "a.test", "b.test"])
    ]
    assert verdicts == ["issued", "issued", "full", "full"]
    assert spool.zcard(f"mxf:conn:{SITE}") == 2
    store.release("a.test", SITE, "t0")
    assert store.dispatch("b.test", "t9", limits, **LIMITS)[0] == "issued"


def test_pause_stops_dispatch_and_claims_and_resume_brings_the_domain_back(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=5)
    accept(store, "a.test", 3)
    assert store.dispatch("a.test", "t1", limits, **LIMITS)[0] == "issued"
    assert shaping.pause(store, SITE)
    assert claim(store, "a.test", "t1", limits).status == "paused"
    assert store.dispatch("a.test", "t2", limits, **LIMITS)[0] == "paused"
    assert shaping.paused(store) == [SITE]
    assert shaping.resume(store, SITE)
    assert shaping.pause(store, "a.test")
    assert store.dispatch("a.test", "t3", limits, **LIMITS)[0] == "paused"
    assert shaping.resume(store, "a.test")
    assert store.due_domains(10) == ["a.test"]  # due at once
    assert len(claim(store, "a.test", "t1", limits).jobs) == 3
    assert not shaping.resume(store, "a.test")  # not paused any more


def test_backoff_halves_connections_and_rate_once_a_second(
    redis_server: RedisServer, spool: SpoolClient
) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=4, rate_limit=100, rate_period_ms=1000, burst=10,
                     recovery_ms=60_000)  # fmt: skip
    accept(store, "a.test", 100)
    tokens = [f"t{n}" for n in range(4)]
    assert [store.dispatch("a.test", t, limits, **LIMITS)[0] for t in tokens] == ["issued"] * 4
    assert store.backoff(SITE, 60_000) == (True, 0.5)
    assert store.backoff(SITE, 60_000) == (False, 0.5)  # one signal per second
    statuses = [claim(store, "a.test", t, limits, count=1).status for t in tokens]
    assert sorted(statuses) == ["ok", "ok", "shrink", "shrink"]  # two connections now
    assert spool.exists(f"mxf:gcra:{SITE}:50:1000:5") == 1  # half the rate, half the burst
    (backoff,) = shaping.backoffs(store, _policies("60s"))
    assert (backoff.destination, backoff.factor, backoff.connections) == (SITE, 0.5, 5)


def test_backoff_recovers_step_by_step(redis_server: RedisServer, spool: SpoolClient) -> None:
    store = make_store(redis_server)
    assert store.backoff(SITE, 100) == (True, 0.5)
    time.sleep(0.25)
    (backoff,) = shaping.backoffs(store, _policies("100ms"))
    assert 0.65 <= backoff.factor <= 0.75  # two steps of 0.1 (± one, for a slow machine)
    time.sleep(0.6)
    assert shaping.backoffs(store, _policies("100ms")) == []
    assert spool.zcard("mxf:adapted") == 0


def _policies(recovery: str) -> Policies:
    spec = PolicySpec.model_validate({"adaptive_recovery": recovery})
    return build_policies({"default": spec}, BASE)


def test_domains_of_a_destination_take_turns(redis_server: RedisServer, spool: SpoolClient) -> None:
    store = make_store(redis_server)
    limits = Shaping(SITE, max_connections=1)
    accept(store, "big.test", 100)
    accept(store, "small.test", 2)
    assert store.dispatch("big.test", "t1", limits, **LIMITS)[0] == "issued"
    assert store.dispatch("small.test", "t2", limits, **LIMITS)[0] == "full"
    early = store.claim("big.test", "t1", limits, count=10, lease_ms=60_000)
    assert early is not None
    assert len(early.jobs) == 10  # its fair share is not used up yet
    late = store.claim("big.test", "t1", limits, count=10, lease_ms=60_000, hand_off=True)
    assert late is not None
    assert late.status == "handoff"  # small.test waits for the only slot
    store.release("big.test", SITE, "t1")
    assert store.due_domains(10) == ["small.test"]  # its turn; big.test waits for the next
    assert store.dispatch("small.test", "t3", limits, **LIMITS)[0] == "issued"
    assert len(claim(store, "small.test", "t3", limits).jobs) == 2
    store.release("small.test", SITE, "t3")
    assert store.due_domains(10) == ["big.test"]  # handed back at once
    assert spool.zcard(f"mxf:waiting:{SITE}") == 0
