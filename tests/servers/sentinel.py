"""A Redis primary, two replicas and three sentinels on loopback (Debian's redis-server in
sentinel mode, the same binary the redis-sentinel package runs): the topology of the
production overlay, for failover tests."""

import subprocess
import time
from pathlib import Path

import redis

from shared.embedded import free_port, redis_server_binary
from tests.servers.redis_server import RedisServer

SERVICE = "mxf"


class SentinelCluster:
    def __init__(self, workdir: Path, down_after_ms: int = 1000) -> None:
        self.workdir = workdir
        self.down_after_ms = down_after_ms
        self.primary = RedisServer(workdir / "redis0")
        self.replicas: list[RedisServer] = []
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"sentinel://{hosts}/{SERVICE}"

    def start(self) -> "SentinelCluster":
        self.primary.start()
        for n in (1, 2):
            replica = RedisServer(
                self.workdir / f"redis{n}", "--replicaof", "127.0.0.1", str(self.primary.port)
            )
            self.replicas.append(replica.start())
        for index, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel{index}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndaemonize no\ndir {self.workdir}\n"
                f"logfile {self.workdir}/sentinel{index}.log\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 2\n"
            )
            self.sentinels.append(
                subprocess.Popen(
                    [redis_server_binary(), str(conf), "--sentinel"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        self._wait_for_replicas(timeout=20)
        return self

    def _wait_for_replicas(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                known = self.sentinel().sentinel_slaves(SERVICE)
                if len([r for r in known if "s_down" not in r["flags"]]) == 2:
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise AssertionError("the sentinels did not see both replicas")

    def sentinel(self) -> "redis.Redis":
        return redis.Redis(port=self.sentinel_ports[0], socket_timeout=2)

    def primary_port(self) -> int:
        """The port of the primary the sentinels name now."""
        answer = self.sentinel().execute_command(  # type: ignore[no-untyped-call]  # redis-py
            "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE
        )
        return int(answer[1])

    def stop(self) -> None:
        for process in self.sentinels:
            process.kill()
            process.wait(10)
        for server in [*self.replicas, self.primary]:
            server.stop()
