"""workers/mx.py against a real DNS server on 127.0.0.1 (tests/servers/dns_server.py)."""

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from shared.errors import PermanentFailure, TemporaryFailure
from shared.settings import parse_nameserver
from tests.servers.dns_server import DnsServer
from workers import mx
from workers.mx import MxResolver, Target

DOMAIN = "example.test"
MX1, MX2, MX3 = "mx1.example.test", "mx2.example.test", "mx3.example.test"


class FakeClock:
    """The resolver's clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dns_server() -> Iterator[DnsServer]:
    with DnsServer(negative_ttl=60) as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_resolver(
    server: DnsServer,
    clock: FakeClock | None = None,
    *,
    allow_private: bool = True,
    timeout: float = 2.0,
) -> MxResolver:
    nameservers = [parse_nameserver(server.address)]  # the MXFLEET_DNS_SERVERS format
    return MxResolver(
        nameservers, allow_private=allow_private, timeout=timeout, clock=clock or FakeClock()
    )


def failure_reply(resolver: MxResolver, domain: str = DOMAIN) -> object:
    with pytest.raises((PermanentFailure, TemporaryFailure)) as failure:
        resolver.route(domain)
    return failure.value.reply


def test_mx_order_and_addresses(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(20, MX2), (10, MX1)])
    dns_server.add_a(MX1, "192.0.2.1")
    dns_server.add_aaaa(MX1, "2001:db8::1")
    dns_server.add_a(MX2, "192.0.2.2")
    assert make_resolver(dns_server).route(DOMAIN) == [
        Target(MX1, "192.0.2.1", 10),  # IPv4 first, then IPv6
        Target(MX1, "2001:db8::1", 10),
        Target(MX2, "192.0.2.2", 20),
    ]


def test_equal_preferences_shuffled_on_every_call(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1), (10, MX2), (10, MX3), (20, "backup.example.test")])
    for i, host in enumerate([MX1, MX2, MX3, "backup.example.test"]):
        dns_server.add_a(host, f"192.0.2.{i + 1}")
    resolver = make_resolver(dns_server)
    orders = Counter(tuple(t.host for t in resolver.route(DOMAIN)) for _ in range(600))
    assert len(orders) == 6  # every order of the three equals, from one cached lookup
    assert {order[-1] for order in orders} == {"backup.example.test"}
    assert dns_server.query_count(DOMAIN, "MX") == 1


def test_implicit_mx(dns_server: DnsServer) -> None:
    dns_server.add_a(DOMAIN, "192.0.2.7")
    dns_server.add_aaaa(DOMAIN, "2001:db8::7")
    assert make_resolver(dns_server).route(DOMAIN) == [
        Target(DOMAIN, "192.0.2.7", 0, implicit=True),
        Target(DOMAIN, "2001:db8::7", 0, implicit=True),
    ]


def test_implicit_mx_without_address(dns_server: DnsServer) -> None:
    dns_server.add(DOMAIN, "TXT", '"v=spf1 -all"')
    assert failure_reply(make_resolver(dns_server)) is mx.NO_ROUTE


def test_null_mx(dns_server: DnsServer, clock: FakeClock) -> None:
    dns_server.add_null_mx(DOMAIN)
    dns_server.add_a(DOMAIN, "192.0.2.7")  # must not be used as an implicit MX
    resolver = make_resolver(dns_server, clock)
    assert failure_reply(resolver) is mx.NULL_MX
    assert failure_reply(resolver) is mx.NULL_MX
    assert dns_server.query_count(DOMAIN) == 1  # one MX query: cached, no A/AAAA lookups


def test_nxdomain_is_permanent_and_cached_for_the_negative_ttl(
    dns_server: DnsServer, clock: FakeClock
) -> None:
    resolver = make_resolver(dns_server, clock)
    assert failure_reply(resolver, "nowhere.test") is mx.NO_SUCH_DOMAIN
    clock.now += 59
    assert failure_reply(resolver, "nowhere.test") is mx.NO_SUCH_DOMAIN
    assert dns_server.query_count("nowhere.test") == 1
    clock.now += 2  # past the SOA's negative TTL (RFC 2308 §5)
    assert failure_reply(resolver, "nowhere.test") is mx.NO_SUCH_DOMAIN
    assert dns_server.query_count("nowhere.test") == 2


def test_servfail_is_temporary_and_not_cached(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1)])
    dns_server.add_a(MX1, "192.0.2.1")
    dns_server.servfail(DOMAIN)
    resolver = make_resolver(dns_server)
    assert failure_reply(resolver) is mx.DNS_TEMPFAIL
    dns_server.clear(DOMAIN)
    assert resolver.route(DOMAIN) == [Target(MX1, "192.0.2.1", 10)]


def test_timeout_is_temporary_within_the_timeout(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1)])
    dns_server.timeout(DOMAIN)
    resolver = make_resolver(dns_server, timeout=0.5)
    started = time.monotonic()
    assert failure_reply(resolver) is mx.DNS_TEMPFAIL
    assert 0.4 < time.monotonic() - started < 1.5


def test_private_targets_refused(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1), (20, MX2)])
    dns_server.add_a(MX1, "127.0.0.1")
    dns_server.add_aaaa(MX1, "::ffff:10.0.0.1")
    dns_server.add_a(MX2, "10.1.2.3")
    dns_server.add_aaaa(MX2, "fd00::25")
    assert failure_reply(make_resolver(dns_server, allow_private=False)) is mx.PRIVATE_MX
    allowed = make_resolver(dns_server, allow_private=True).route(DOMAIN)
    assert [t.address for t in allowed] == ["127.0.0.1", "::ffff:10.0.0.1", "10.1.2.3", "fd00::25"]


def test_private_addresses_dropped_public_kept(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1), (20, MX2)])
    dns_server.add_a(MX1, "192.168.1.25")
    dns_server.add_a(MX2, "8.8.8.8")  # never contacted: route() only resolves
    dns_server.add_aaaa(MX2, "fe80::1")
    resolver = make_resolver(dns_server, allow_private=False)
    assert resolver.route(DOMAIN) == [Target(MX2, "8.8.8.8", 20)]


def test_unresolvable_and_literal_mx_hosts_skipped(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(5, "192.0.2.9"), (10, "gone.example.test"), (20, MX2)])
    dns_server.add_a(MX2, "192.0.2.2")
    assert make_resolver(dns_server).route(DOMAIN) == [Target(MX2, "192.0.2.2", 20)]
    assert dns_server.query_count("192.0.2.9") == 0  # an IP literal is not a host name


def test_no_mx_host_resolves(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, "gone.example.test"), (20, "192.0.2.9")])
    assert failure_reply(make_resolver(dns_server)) is mx.NO_ROUTE


def test_mx_host_failing_temporarily(dns_server: DnsServer, clock: FakeClock) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1), (20, MX2)])
    dns_server.add_a(MX1, "192.0.2.1")
    dns_server.add_a(MX2, "192.0.2.2")
    dns_server.servfail(MX1)
    resolver = make_resolver(dns_server, clock)
    assert resolver.route(DOMAIN) == [Target(MX2, "192.0.2.2", 20)]
    dns_server.clear(MX1)
    clock.now += mx.PARTIAL_TTL - 1
    assert len(resolver.route(DOMAIN)) == 1  # the partial route, cached briefly
    clock.now += 2
    assert len(resolver.route(DOMAIN)) == 2


def test_every_mx_host_failing_temporarily(dns_server: DnsServer) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1), (20, "gone.example.test")])
    dns_server.servfail(MX1)
    resolver = make_resolver(dns_server)
    assert failure_reply(resolver) is mx.DNS_TEMPFAIL
    assert failure_reply(resolver) is mx.DNS_TEMPFAIL
    assert dns_server.query_count(DOMAIN, "MX") == 2  # temporary failures are not cached


def test_cached_for_the_smallest_ttl(dns_server: DnsServer, clock: FakeClock) -> None:
    dns_server.add_mx(DOMAIN, [(10, MX1)], ttl=300)
    dns_server.add_a(MX1, "192.0.2.1", ttl=120)
    dns_server.add_aaaa(MX1, "2001:db8::1", ttl=600)
    resolver = make_resolver(dns_server, clock)
    first = resolver.route(DOMAIN)
    clock.now += 119
    assert resolver.route(DOMAIN) == first
    assert dns_server.query_count(DOMAIN, "MX") == 1
    assert dns_server.query_count(MX1, "A") == 1
    dns_server.add_a(MX1, "192.0.2.99", ttl=120)
    clock.now += 2
    addresses = [t.address for t in resolver.route(DOMAIN)]  # a server may rotate an RRset
    assert sorted(addresses[:2]) == ["192.0.2.1", "192.0.2.99"]
    assert addresses[2] == "2001:db8::1"
    assert dns_server.query_count(DOMAIN, "MX") == 2


def test_cache_is_bounded(
    dns_server: DnsServer, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mx, "MAX_ENTRIES", 2)
    for name in ("a.test", "b.test", "c.test"):
        dns_server.add_a(name, "192.0.2.1")
    resolver = make_resolver(dns_server, clock)
    for name in ("a.test", "b.test", "a.test", "c.test", "a.test", "b.test"):
        resolver.route(name)
    # a stays (recently used); b is evicted by c and looked up again
    assert dns_server.query_count("a.test", "MX") == 1
    assert dns_server.query_count("b.test", "MX") == 2


def test_nameservers_on_different_ports() -> None:
    with DnsServer() as broken, DnsServer() as good:
        broken.servfail(DOMAIN)  # SERVFAIL: the resolver asks the next server
        broken.servfail(MX1)
        good.add_mx(DOMAIN, [(10, MX1)])
        good.add_a(MX1, "192.0.2.1")
        servers = [(broken.host, broken.port), (good.host, good.port)]
        resolver = MxResolver(servers, allow_private=True, timeout=2.0)
        assert resolver.route(DOMAIN) == [Target(MX1, "192.0.2.1", 10)]


def test_threads_share_one_resolver(dns_server: DnsServer) -> None:
    for i in range(20):
        dns_server.add_mx(f"d{i}.test", [(10, f"mx.d{i}.test")])
        dns_server.add_a(f"mx.d{i}.test", f"192.0.2.{i + 1}")
    resolver = make_resolver(dns_server)
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(60):
                i = (offset + n) % 20
                assert resolver.route(f"d{i}.test") == [
                    Target(f"mx.d{i}.test", f"192.0.2.{i + 1}", 10)
                ]
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
