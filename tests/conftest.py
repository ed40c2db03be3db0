"""Fixtures shared by every test tier: real redis-server, ingress processes, helpers."""

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.servers.dns_server import DnsServer
from tests.servers.fleet import Fleet
from tests.servers.ingress_process import IngressProcess
from tests.servers.ports import free_port_on
from tests.servers.redis_server import RedisServer, require_redis_server
from tests.servers.spool_client import SpoolClient


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        help="run the chaos scenario ten times longer (200,000 messages)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--soak"):
        return
    for item in items:  # a soak run has no time limit but its own deadlines
        if item.get_closest_marker("timeout") is not None:
            item.add_marker(pytest.mark.timeout(0))


StartIngress = Callable[..., IngressProcess]
StartRedis = Callable[..., RedisServer]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server (AOF everysec, noeviction) for the session; flushed per test."""
    require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def spool(redis_server: RedisServer) -> Iterator[SpoolClient]:
    """A client of the shared redis-server, emptied before the test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[StartRedis]:
    """Start dedicated redis-servers (for tests that stop, kill or reconfigure them)."""
    require_redis_server()
    servers: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", *extra).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def start_ingress(tmp_path: Path, redis_server: RedisServer) -> Iterator[StartIngress]:
    """Start ingress processes; keyword arguments are settings (``max_recipients=100``).

    Defaults: the shared redis-server, relay for 127.0.0.1/32 only (so a client bound to
    127.0.0.2 is an outsider), hostname mx.test.
    """
    processes: list[IngressProcess] = []

    def start(**settings: object) -> IngressProcess:
        values = {"redis_url": redis_server.url, "relay_networks": "127.0.0.1/32"}
        values.update({key: str(value) for key, value in settings.items()})
        log = tmp_path / f"ingress{len(processes)}.log"
        process = IngressProcess(values, log).start()
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop(timeout=10)


@pytest.fixture
def fleet(tmp_path: Path, start_redis: StartRedis) -> Iterator[Fleet]:
    """A Redis, a DNS server and a delivery port on 127.0.0.2-20, ready for mxfleet roles."""
    dns = DnsServer().start()
    rig = Fleet(
        redis=start_redis(),
        dns=dns,
        delivery_port=free_port_on([f"127.0.0.{n}" for n in range(2, 21)]),
        workdir=tmp_path,
    )
    yield rig
    rig.kill()
    dns.stop()


@pytest.fixture
def ingress(start_ingress: StartIngress, spool: SpoolClient) -> IngressProcess:
    """One ingress with default test settings, on an empty spool."""
    return start_ingress()
