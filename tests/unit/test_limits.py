"""ingress/limits.py: session counts per node and per client address, shared across forks."""

import multiprocessing
import zlib

import pytest

from ingress import limits
from ingress.limits import SessionTable


def test_node_limit() -> None:
    table = SessionTable(max_sessions=2, max_per_ip=10)
    assert table.total == 0
    assert table.acquire_node() is True
    assert table.acquire_node() is True
    assert table.acquire_node() is False
    assert table.total == 2
    table.release_node()
    assert table.total == 1
    assert table.acquire_node() is True
    assert table.acquire_node() is False


def test_node_release_never_goes_below_zero() -> None:
    table = SessionTable(max_sessions=1, max_per_ip=1)
    table.release_node()
    assert table.total == 0
    assert table.acquire_node() is True
    assert table.acquire_node() is False


def test_per_ip_limit() -> None:
    table = SessionTable(max_sessions=100, max_per_ip=2)
    assert table.acquire_ip("192.0.2.1") is True
    assert table.acquire_ip("192.0.2.1") is True
    assert table.acquire_ip("192.0.2.1") is False
    assert table.count("192.0.2.1") == 2
    table.release_ip("192.0.2.1")
    assert table.count("192.0.2.1") == 1
    assert table.acquire_ip("192.0.2.1") is True
    assert table.total == 0  # the two counts are independent


def test_per_ip_release_never_goes_below_zero() -> None:
    table = SessionTable(max_sessions=10, max_per_ip=1)
    table.release_ip("192.0.2.1")
    assert table.count("192.0.2.1") == 0
    assert table.acquire_ip("192.0.2.1") is True
    assert table.acquire_ip("192.0.2.1") is False


@pytest.mark.parametrize("ip", ["192.0.2.1", "2001:db8::1", "::1", "not-an-ip", ""])
def test_any_address_text_is_counted(ip: str) -> None:
    table = SessionTable(max_sessions=10, max_per_ip=1)
    assert table.acquire_ip(ip) is True
    assert table.acquire_ip(ip) is False
    assert table.count(ip) == 1


def test_addresses_in_different_buckets_are_independent() -> None:
    first, second = "192.0.2.1", "192.0.2.2"
    assert limits._bucket(first) != limits._bucket(second)
    table = SessionTable(max_sessions=10, max_per_ip=1)
    assert table.acquire_ip(first) is True
    assert table.acquire_ip(second) is True
    assert table.count(first) == 1
    assert table.count(second) == 1


def test_bucket_is_a_stable_hash_of_the_packed_address() -> None:
    assert limits._bucket("192.0.2.1") == zlib.crc32(bytes([192, 0, 2, 1])) & 0xFFFF
    assert limits._bucket("2001:db8::1") == limits._bucket("2001:0db8:0:0:0:0:0:1")
    assert 0 <= limits._bucket("x") < 1 << 16


def test_colliding_addresses_share_their_cap() -> None:
    # A collision only makes the limit stricter, never looser.
    seen: dict[int, str] = {}
    for n in range(1 << 17):
        ip = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
        bucket = limits._bucket(ip)
        if bucket in seen:
            other = seen[bucket]
            break
        seen[bucket] = ip
    else:
        pytest.fail("no collision found")
    table = SessionTable(max_sessions=10, max_per_ip=1)
    assert table.acquire_ip(other) is True
    assert table.acquire_ip(ip) is False


def _open_sessions(table: SessionTable, ip: str, count: int) -> None:
    for _ in range(count):
        assert table.acquire_node()
        assert table.acquire_ip(ip)


def test_counts_are_shared_with_forked_processes() -> None:
    table = SessionTable(max_sessions=5, max_per_ip=4)
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_open_sessions, args=(table, "192.0.2.7", 2)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    assert table.total == 4
    assert table.count("192.0.2.7") == 4
    assert table.acquire_ip("192.0.2.7") is False  # the per-IP cap holds for the node
    assert table.acquire_node() is True
    assert table.acquire_node() is False  # and so does the node cap
