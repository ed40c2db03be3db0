"""The embedded redis-server's stop (shared/embedded.py), against a real one."""

import time
from pathlib import Path

import redis

from shared.embedded import EmbeddedRedis
from tests.servers.redis_server import require_redis_server


def test_a_stop_while_the_first_aof_is_written_waits_for_it_and_ends_cleanly(
    tmp_path: Path,
) -> None:
    require_redis_server()
    server = EmbeddedRedis(tmp_path).start()
    client = redis.Redis(port=server.port)
    client.mset({f"k{n}": n for n in range(100)})
    client.config_set("appendonly", "no")
    client.config_set("rdb-key-save-delay", "10000")  # 10 ms a key: a rewrite of ~1 s
    client.config_set("appendonly", "yes")  # the first AOF, written in the background
    process = server.process
    assert process is not None
    started = time.monotonic()
    server.stop(timeout=20)
    took = time.monotonic() - started
    log = (tmp_path / "redis.log").read_text()
    assert "Writing initial AOF, can't exit" in log  # the first SIGTERM was refused
    assert process.returncode == 0, log[-2000:]  # it exited on its own, not SIGKILLed
    assert took < 10, took
    server.start()
    restarted = redis.Redis(port=server.port)
    assert restarted.dbsize() == 100
    assert restarted.get("k99") == b"99"
    server.stop()
