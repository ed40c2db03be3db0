"""workers/suppress_ops.py and suppress.lua against a real Redis: what a hard bounce adds and
where, what it never overwrites, expiry and the index's trim, and a Redis failure."""

from collections.abc import Iterator

import pytest
import redis

from shared.keys import Keys
from shared.message import Mailbox
from shared.redis_conn import sync_client
from shared.replies import Reply
from shared.settings import Settings, load_settings
from shared.suppression import GLOBAL, parse_address
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until
from workers.suppress_ops import SuppressionList, learn, to_learn

HARD = Reply(550, "5.1.1", "No such user here")
FULL = Reply(552, "5.2.2", "Mailbox full")


def settings(server: RedisServer, **values: str) -> Settings:
    env = {"MXFLEET_REDIS_URL": server.url, "MXFLEET_HOSTNAME": "mx.test"}
    env.update({f"MXFLEET_{k.upper()}": v for k, v in values.items()})
    return load_settings(env)


def entry(address: str, reason: str = "operator") -> list[tuple[Mailbox, str]]:
    return [(parse_address(address), reason)]


@pytest.fixture
def listing(redis_server: RedisServer, spool: SpoolClient) -> Iterator[SuppressionList]:
    found = SuppressionList(redis.Redis(port=redis_server.port), Keys())
    yield found
    found.client.close()


def test_a_hard_bounce_suppresses_in_the_sender_domain(
    redis_server: RedisServer, listing: SuppressionList, spool: SpoolClient
) -> None:
    s = settings(redis_server, suppression_ttl="1h")
    replies = {"Bob@Dest.test": HARD, "full@dest.test": FULL}
    hard = to_learn(s, "news@Shop.test", replies, ["Bob@Dest.test", "full@dest.test"])
    assert hard == {"Bob@Dest.test": HARD}
    assert learn(listing.client, s, "news@Shop.test", hard) == ["Bob@Dest.test"]
    value = spool.get("mxf:supp:shop.test:bob@dest.test")
    assert value is not None
    source, added, given, reason = value.decode().split("\t")
    assert (source, given, reason) == ("bounce", "Bob@dest.test", "550 5.1.1 No such user here")
    assert 3_590_000 < spool.pttl("mxf:supp:shop.test:bob@dest.test") <= 3_600_000
    assert spool.zscore("mxf:suppressed", "shop.test:bob@dest.test") == int(added) + 3_600_000
    (entry,), _ = listing.entries()
    assert (entry.address, entry.scope, entry.source) == ("Bob@dest.test", "shop.test", "bounce")
    assert (entry.added_ms, entry.expires_ms) == (int(added), int(added) + 3_600_000)
    assert not listing.is_listed(GLOBAL, parse_address("bob@dest.test"))
    assert spool.hget("mxf:stats", "suppressed_bounce") == b"1"


def test_where_a_hard_bounce_suppresses(
    redis_server: RedisServer, listing: SuppressionList, spool: SpoolClient
) -> None:
    bob = parse_address("bob@dest.test")
    everyone = settings(redis_server, suppression_scope="global")
    assert learn(listing.client, everyone, "news@shop.test", {"bob@dest.test": HARD})
    assert listing.is_listed(GLOBAL, bob)
    assert spool.keys("mxf:supp:shop.test:*") == []
    # The null sender has no domain to scope to: a bounced DSN suppresses nothing...
    per_domain = settings(redis_server)
    assert to_learn(per_domain, "", {"eve@dest.test": HARD}, ["eve@dest.test"]) == {}
    assert learn(listing.client, per_domain, "", {"eve@dest.test": HARD}) == []
    # ...unless every entry is global.
    assert to_learn(everyone, "", {"eve@dest.test": HARD}, ["eve@dest.test"])
    off = settings(redis_server, suppression="off")
    assert to_learn(off, "a@shop.test", {"eve@dest.test": HARD}, ["eve@dest.test"]) == {}
    assert learn(listing.client, off, "a@shop.test", {"eve@dest.test": HARD}) == []
    assert not listing.is_listed("shop.test", parse_address("eve@dest.test"))


def test_a_bounce_never_shortens_an_entry_an_operator_replaces_it(
    listing: SuppressionList, spool: SpoolClient
) -> None:
    key = "mxf:supp:*:bob@dest.test"
    listing.add(GLOBAL, entry("bob@dest.test"), ttl_ms=0, source="operator", replace=True)
    assert listing.add(GLOBAL, entry("bob@dest.test", "550 5.1.1 x"), ttl_ms=60_000,
                       source="bounce", replace=False) == (0, 0)  # fmt: skip
    assert spool.pttl(key) == -1  # still never expires
    assert spool.get(key) is not None
    assert (spool.get(key) or b"").endswith(b"\toperator")
    # A bounce renews a bounce entry, and never makes it shorter.
    listing.add(GLOBAL, entry("eve@dest.test", "a"), ttl_ms=60_000, source="bounce", replace=False)
    assert listing.add(GLOBAL, entry("eve@dest.test", "b"), ttl_ms=1_000, source="bounce",
                       replace=False) == (0, 0)  # fmt: skip
    assert listing.add(GLOBAL, entry("eve@dest.test", "c"), ttl_ms=120_000, source="bounce",
                       replace=False) == (1, 0)  # fmt: skip
    assert (spool.get("mxf:supp:*:eve@dest.test") or b"").endswith(b"\tc")
    # An operator's add replaces whatever is there.
    assert listing.add(GLOBAL, entry("bob@dest.test"), ttl_ms=5_000, source="operator",
                       replace=True) == (1, 0)  # fmt: skip
    assert 0 < spool.pttl(key) <= 5_000
    assert listing.added_counts() == {"bounce": 2, "operator": 2}


def test_expired_entries_leave_the_index_at_the_next_add(
    listing: SuppressionList, spool: SpoolClient
) -> None:
    listing.add(GLOBAL, entry("a@dest.test"), ttl_ms=200, source="operator", replace=True)
    listing.add("shop.test", entry("b@dest.test"), ttl_ms=0, source="operator", replace=True)
    assert spool.zcard("mxf:suppressed") == 2
    wait_until(lambda: not spool.exists("mxf:supp:*:a@dest.test"), timeout=5)
    assert spool.zcard("mxf:suppressed") == 2
    listing.add(GLOBAL, entry("c@dest.test"), ttl_ms=0, source="operator", replace=True)
    assert {m.decode() for m in spool.zrange("mxf:suppressed", 0, -1)} == {
        "shop.test:b@dest.test", "*:c@dest.test"
    }  # fmt: skip


def test_listing_by_scope_in_expiry_order(listing: SuppressionList) -> None:
    for n, ttl in enumerate((0, 50_000, 10_000)):
        listing.add(GLOBAL, entry(f"g{n}@dest.test"), ttl_ms=ttl, source="operator", replace=True)
        listing.add("shop.test", entry(f"s{n}@dest.test"), ttl_ms=ttl, source="operator",
                    replace=True)  # fmt: skip
    listing.add("myshop.test", entry("x@dest.test"), ttl_ms=0, source="operator", replace=True)
    every, total = listing.entries()
    assert total == 7
    assert [e.address for e in every[:4]] == ["g2@dest.test", "s2@dest.test", "g1@dest.test",
                                             "s1@dest.test"]  # fmt: skip
    globals_, total = listing.entries(GLOBAL)
    assert (total, [e.address for e in globals_]) == (3, ["g2@dest.test", "g1@dest.test",
                                                          "g0@dest.test"])  # fmt: skip
    assert {e.scope for e in globals_} == {GLOBAL}
    shop, total = listing.entries("shop.test", limit=2)
    assert (total, [e.address for e in shop]) == (3, ["s2@dest.test", "s1@dest.test"])
    assert shop[0].expires_ms - shop[0].added_ms == 10_000
    assert listing.entries("none.test") == ([], 0)


def test_redis_unreachable_suppresses_nothing_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = load_settings({"MXFLEET_REDIS_URL": "redis://127.0.0.1:9/0", "MXFLEET_HOSTNAME": "x"})
    client = sync_client(down)  # as the workers build theirs: no silent retries
    assert learn(client, down, "a@shop.test", {"bob@dest.test": HARD}) == []
    assert "event=suppress_failed" in caplog.text
