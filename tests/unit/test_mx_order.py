"""workers/mx.py, the pure rules: MX order (RFC 5321 §5.1), null MX, address policy."""

import random
from collections import Counter
from collections.abc import MutableSequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import PermanentFailure, TemporaryFailure
from workers import mx
from workers.mx import MxHost, Target, choose, is_null_mx, is_public, mx_names, order_targets


def _keep(items: MutableSequence[Any]) -> None:
    """A shuffle that leaves the order as it is."""


def _reverse(items: MutableSequence[Any]) -> None:
    items.reverse()


def test_preference_ascending_then_each_hosts_addresses() -> None:
    hosts = [
        MxHost("mx2.example.test", 20, ("192.0.2.2",)),
        MxHost("mx1.example.test", 10, ("192.0.2.1", "2001:db8::1")),
        MxHost("mx3.example.test", 30, ("192.0.2.3",)),
    ]
    assert order_targets(hosts, _keep) == [
        Target("mx1.example.test", "192.0.2.1", 10),
        Target("mx1.example.test", "2001:db8::1", 10),
        Target("mx2.example.test", "192.0.2.2", 20),
        Target("mx3.example.test", "192.0.2.3", 30),
    ]


def test_shuffle_only_within_one_preference() -> None:
    hosts = [MxHost(f"mx{i}.test", 10 if i < 3 else 20, (f"192.0.2.{i}",)) for i in range(5)]
    order = [target.host for target in order_targets(hosts, _reverse)]
    assert order == ["mx2.test", "mx1.test", "mx0.test", "mx4.test", "mx3.test"]


def test_equal_preferences_come_in_every_order() -> None:
    hosts = [MxHost(name, 10, (f"192.0.2.{i}",)) for i, name in enumerate("abc")]
    hosts.append(MxHost("backup", 20, ("192.0.2.9",)))
    orders = Counter(tuple(target.host for target in order_targets(hosts)) for _ in range(3000))
    assert {order[-1] for order in orders} == {"backup"}
    assert len(orders) == 6  # every permutation of a, b, c
    for count in orders.values():  # each expected 500 times; 350 is > 7 standard deviations off
        assert count > 350


def test_implicit_flag_is_kept() -> None:
    targets = order_targets([MxHost("example.test", 0, ("192.0.2.1",), implicit=True)])
    assert targets == [Target("example.test", "192.0.2.1", 0, implicit=True)]


def test_a_host_without_addresses_gives_no_target() -> None:
    assert order_targets([MxHost("mx.test", 10)]) == []


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), max_size=8), st.randoms())
def test_order_is_a_preference_sorted_permutation(
    shape: list[tuple[int, int]], rng: random.Random
) -> None:
    hosts = [
        MxHost(f"mx{i}.test", pref, tuple(f"192.0.2.{i * 4 + j}" for j in range(count)))
        for i, (pref, count) in enumerate(shape)
    ]
    targets = order_targets(hosts, rng.shuffle)
    assert [t.preference for t in targets] == sorted(t.preference for t in targets)
    expected = [Target(h.name, a, h.preference) for h in hosts for a in h.addresses]
    assert sorted(targets, key=repr) == sorted(expected, key=repr)
    for host in hosts:  # a host's addresses stay together and in their order
        mine = [t.address for t in targets if t.host == host.name]
        assert mine == list(host.addresses)


def test_null_mx() -> None:
    assert is_null_mx([(0, ".")])
    assert not is_null_mx([(10, ".")])  # RFC 7505 §3: preference 0
    assert not is_null_mx([(0, "."), (10, "mx.example.test.")])
    assert not is_null_mx([(0, "mx.example.test.")])
    assert not is_null_mx([])


def test_mx_names_sorted_unique_lower_case() -> None:
    records = [
        (20, "MX2.Example.Test."),
        (10, "mx1.example.test."),
        (30, "mx1.example.test."),
        (5, "."),
        (1, "192.0.2.1."),
        (2, "2001:db8::1"),
    ]
    assert mx_names(records) == [(10, "mx1.example.test"), (20, "mx2.example.test")]


def test_mx_names_are_bounded() -> None:
    records = [(i, f"mx{i}.example.test.") for i in range(50)]
    names = mx_names(records)
    assert len(names) == mx.MAX_MX_HOSTS
    assert names[0] == (0, "mx0.example.test")


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2001:4860:4860::8888", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_public_addresses(address: str) -> None:
    assert is_public(address)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.9.9.9",
        "10.1.2.3",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.1.1",
        "0.0.0.0",
        "100.64.0.1",  # shared address space (RFC 6598)
        "192.0.2.1",  # documentation
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",  # site-local (deprecated, RFC 3879)
        "ff02::1",
        "ff0e::1",  # global-scope multicast is still multicast
        "2001:db8::1",
        "::ffff:10.0.0.1",  # IPv4-mapped (RFC 4291 §2.5.5.2)
        "::ffff:127.0.0.1",
        "::ffff:192.168.0.1",
        "64:ff9b::a00:1",  # NAT64 (RFC 6052) of 10.0.0.1
        "64:ff9b::7f00:1",
        "2002:a00:1::1",  # 6to4 (RFC 3056) of 10.0.0.1
        "2002:7f00:1::1",
    ],
)
def test_private_local_and_special_addresses(address: str) -> None:
    assert not is_public(address)


def test_choose_drops_private_addresses_and_hosts() -> None:
    hosts = [
        MxHost("inside.test", 10, ("10.0.0.1", "fd00::1")),
        MxHost("mixed.test", 20, ("192.168.0.1", "8.8.8.8", "::ffff:127.0.0.1")),
    ]
    assert choose(hosts, incomplete=False, allow_private=False) == [
        MxHost("mixed.test", 20, ("8.8.8.8",))
    ]
    assert choose(hosts, incomplete=False, allow_private=True) == hosts


def test_choose_only_private() -> None:
    hosts = [MxHost("inside.test", 10, ("127.0.0.1", "::1"))]
    with pytest.raises(PermanentFailure) as failure:
        choose(hosts, incomplete=False, allow_private=False)
    assert failure.value.reply is mx.PRIVATE_MX


def test_choose_no_address() -> None:
    with pytest.raises(PermanentFailure) as failure:
        choose([MxHost("mx.test", 10)], incomplete=False, allow_private=False)
    assert failure.value.reply is mx.NO_ROUTE
    with pytest.raises(PermanentFailure) as failure:
        choose([], incomplete=False, allow_private=True)
    assert failure.value.reply is mx.NO_ROUTE


def test_choose_incomplete() -> None:
    """A host that failed temporarily might have been usable: nothing usable is temporary."""
    for hosts in ([], [MxHost("mx.test", 10)], [MxHost("mx.test", 10, ("10.0.0.1",))]):
        with pytest.raises(TemporaryFailure) as failure:
            choose(hosts, incomplete=True, allow_private=False)
        assert failure.value.reply is mx.DNS_TEMPFAIL
    usable = [MxHost("mx.test", 10, ("8.8.8.8",))]
    assert choose(usable, incomplete=True, allow_private=False) == usable


def test_replies() -> None:
    assert (mx.NULL_MX.code, mx.NULL_MX.status) == (556, "5.1.10")  # RFC 7505 §4.2
    assert (mx.NO_SUCH_DOMAIN.code, mx.NO_SUCH_DOMAIN.status) == (550, "5.1.2")
    assert (mx.NO_ROUTE.code, mx.NO_ROUTE.status) == (550, "5.4.4")
    assert (mx.PRIVATE_MX.code, mx.PRIVATE_MX.status) == (550, "5.4.4")
    assert (mx.DNS_TEMPFAIL.code, mx.DNS_TEMPFAIL.status) == (451, "4.4.3")
    assert mx.DNS_TEMPFAIL.is_transient
    permanent = (mx.NULL_MX, mx.NO_SUCH_DOMAIN, mx.NO_ROUTE, mx.PRIVATE_MX)
    assert all(reply.is_permanent for reply in permanent)
