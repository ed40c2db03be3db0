"""A real redis-server per test run (or per test), started on a free loopback port."""

import os
import shutil
from pathlib import Path

import pytest

from shared.embedded import EmbeddedRedis
from tests.servers.spool_client import SpoolClient, spool_client


def require_redis_server() -> None:
    """Skip locally when there is no redis-server; fail in CI, where one must exist."""
    if shutil.which("redis-server"):
        return
    message = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


class RedisServer(EmbeddedRedis):
    """EmbeddedRedis with the conveniences tests need."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        super().__init__(data_dir, None, *extra)

    def client(self) -> SpoolClient:
        return spool_client(self.port)

    def start(self, timeout: float = 10.0) -> "RedisServer":
        super().start(timeout)
        return self
