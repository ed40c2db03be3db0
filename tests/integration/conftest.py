from collections.abc import Iterator

import pytest

from tests.servers.ingress_process import IngressProcess
from tests.servers.redis_server import RedisServer


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="module")
def shared_ingress(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[IngressProcess]:
    """One ingress per test module (default settings, relaying for 127.0.0.1/32), for
    tests that each leave it as they found it."""
    log = tmp_path_factory.mktemp("ingress") / "ingress.log"
    values = {"redis_url": redis_server.url, "relay_networks": "127.0.0.1/32"}
    process = IngressProcess(values, log).start()
    yield process
    process.stop(timeout=10)
