"""The fleet harness: mxfleet as a cluster of hosts, for chaos runs.

Several ingress, dispatcher and worker processes, each on a host of its own; Redis (AOF
``always`` as deploy/redis.conf has it, ``noeviction``) on its own host; the destination MX
hosts (20 addresses on one host, served by :mod:`tests.servers.counting_sink`); a DNS
server that names them, in the test process. Hosts come from :mod:`tests.servers.netns`:
network namespaces joined by a bridge when the tests run as root with ``ip netns``, else
127.0.0.N addresses.

Every node can be SIGKILLed and started again on its host (same address, same port), Redis
included; a host can be cut off the network and healed. Logs go to the work directory, one
file per node and start.
"""

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from shared.embedded import redis_server_binary
from tests.servers.dns_server import DnsServer
from tests.servers.netns import Host, Network
from tests.servers.ports import free_port_on
from tests.servers.wait import wait_until

_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Node:
    """One process of the cluster on its host; ``starts`` counts its lives."""

    role: str
    index: int
    host: Host
    command: list[str]
    env: dict[str, str]
    workdir: Path
    process: "subprocess.Popen[bytes] | None" = None
    starts: int = 0

    @property
    def name(self) -> str:
        return f"{self.role}{self.index}"

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else -1

    def start(self) -> "Node":
        log = self.workdir / f"{self.name}.{self.starts}.log"
        with log.open("ab") as out:
            self.process = self.host.popen(
                self.command, env=self.env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=REPO,
            )  # fmt: skip
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        if self.process is not None and self.alive():
            self.process.kill()
        if self.process is not None:
            self.process.wait(10)
            self.host.pids.discard(self.process.pid)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or not self.alive():
            return
        self.process.send_signal(signal.SIGCONT)
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.workdir.glob(f"{self.name}.*.log"))
        )


@dataclass
class Cluster:
    net: Network
    workdir: Path
    domains: int = 20
    settings: dict[str, str] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        namespaced = self.net.namespaced
        self.redis_host = self.net.add("redis")
        self.mx_host = self.net.add("mx", self.domains)
        self.redis_port = 6379 if namespaced else free_port_on([self.redis_host.address])
        self.delivery_port = 25 if namespaced else free_port_on(self.mx_host.addresses)
        self.smtp_port = 25 if namespaced else 0
        dns_port = 53 if namespaced else 0
        self.dns = DnsServer(self.net.own_address, dns_port)
        self.sink_log = self.workdir / "deliveries.txt"
        self.redis = Node("redis", 0, self.redis_host, self._redis_command(), {}, self.workdir)
        self.sink = Node("sink", 0, self.mx_host, [
            sys.executable, "-m", "tests.servers.counting_sink", "--port",
            str(self.delivery_port), "--out", str(self.sink_log), *self.mx_host.addresses,
        ], self._base_env(), self.workdir)  # fmt: skip

    # --- the fixed parts -------------------------------------------------------------

    def domain(self, index: int) -> str:
        return f"d{index}.chaos.test"

    def start_base(self) -> "Cluster":
        """DNS, the MX hosts' sink and Redis."""
        self.dns.start()
        for index, address in enumerate(self.mx_host.addresses):
            name = f"mx.{self.domain(index)}"
            self.dns.add_mx(self.domain(index), [(10, name)], ttl=3600)
            self.dns.add_a(name, address, ttl=3600)
        self.sink.start()
        self.start_redis()
        return self

    def _redis_command(self) -> list[str]:
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        return [
            redis_server_binary(), "--bind", self.redis_host.address,
            "--port", str(self.redis_port), "--dir", str(data), "--appendonly", "yes",
            "--appendfsync", "always", "--save", "", "--maxmemory-policy", "noeviction",
            "--protected-mode", "no", "--daemonize", "no", "--logfile", str(data / "redis.log"),
        ]  # fmt: skip

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host.address}:{self.redis_port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.redis_host.address, port=self.redis_port, socket_timeout=5)

    def start_redis(self) -> None:
        self.redis.start()
        wait_until(self._redis_ready, timeout=120)

    def _redis_ready(self) -> bool:
        if not self.redis.alive():
            raise AssertionError(f"redis exited:\n{self.redis.logs()}")
        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
            return False

    def restart_redis(self) -> None:
        """SIGKILL Redis and start it again from its AOF."""
        self.redis.kill()
        self.start_redis()

    # --- mxfleet nodes ----------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in _KEEP if key in os.environ}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        return env

    def env(self, **extra: str) -> dict[str, str]:
        env = self._base_env()
        env.update(
            {
                "MXFLEET_REDIS_URL": self.redis_url,
                "MXFLEET_METRICS_LISTEN": "127.0.0.1:0",
                "MXFLEET_HOSTNAME": "mx.fleet.test",
                "MXFLEET_DNS_SERVERS": self.dns.address,
                "MXFLEET_DELIVERY_PORT": str(self.delivery_port),
                "MXFLEET_ALLOW_PRIVATE_MX": "true",
                "MXFLEET_RELAY_NETWORKS": self.net.subnet,
                "MXFLEET_RETRY_BASE": "1s",
                "MXFLEET_RETRY_CAP": "4s",
                "MXFLEET_LEASE_TIME": "10s",
                "MXFLEET_TICKET_BUDGET": "5s",
                "MXFLEET_CONNECT_TIMEOUT": "3s",
            }
        )
        env.update({f"MXFLEET_{k.upper()}": v for k, v in {**self.settings, **extra}.items()})
        return env

    def add(self, role: str) -> Node:
        """A new host running one ``mxfleet ROLE`` process (not started yet)."""
        index = sum(1 for node in self.nodes if node.role == role)
        host = self.net.add(f"{role}{index}")
        extra: dict[str, str] = {}
        if role == "ingress":
            port = self.smtp_port or free_port_on([host.address])
            extra["listen"] = f"{host.address}:{port}"
        command = [sys.executable, "-m", "shared.cli", role]
        node = Node(role, index, host, command, self.env(**extra), self.workdir)
        self.nodes.append(node)
        return node

    def up(self, *, ingress: int, dispatchers: int, workers: int) -> "Cluster":
        for role, count in (("ingress", ingress), ("dispatcher", dispatchers),
                            ("worker", workers)):  # fmt: skip
            for _ in range(count):
                self.add(role).start()
        for node in self.of("ingress"):
            wait_until(lambda node=node: self.greets(node), timeout=30)  # type: ignore[misc]
        return self

    def of(self, role: str) -> list[Node]:
        return [node for node in self.nodes if node.role == role]

    def listen(self, node: Node) -> tuple[str, int]:
        host, port = node.env["MXFLEET_LISTEN"].rsplit(":", 1)
        return host, int(port)

    def greets(self, node: Node) -> bool:
        import socket

        if not node.alive():
            raise AssertionError(f"{node.name} exited:\n{node.logs()}")
        try:
            with socket.create_connection(self.listen(node), timeout=2) as sock:
                return sock.recv(4).startswith(b"220")
        except OSError:
            return False

    def leader(self) -> Node | None:
        """The dispatcher holding the leader lock now (its pid is part of the lock's value)."""
        try:
            with self.client() as client:
                value = client.get("mxf:leader") or b""
        except redis.RedisError:
            return None
        for node in self.of("dispatcher"):
            if node.alive() and f":{node.pid}:".encode() in value:
                return node
        return None

    def random(self, role: str, rng: random.Random) -> Node:
        return rng.choice(self.of(role))

    def spool_leftovers(self) -> list[bytes]:
        """Keys of mail still in the spool: messages, bodies, jobs, schedules, leases, due
        domains. Counters, the events stream, locks, heartbeats and shaping state stay."""
        kept = (b"mxf:stats", b"mxf:events", b"mxf:leader", b"mxf:adapted", b"mxf:nodes",
                b"mxf:dest")  # fmt: skip
        expiring = (b"mxf:gcra:", b"mxf:adapt:", b"mxf:throttled:", b"mxf:stats:", b"mxf:node:",
                    b"mxf:authfail:")  # fmt: skip
        with self.client() as client:
            keys: list[bytes] = client.keys("mxf:*")
        return [key for key in keys if key not in kept and not key.startswith(expiring)]

    def logs(self) -> str:
        return "\n".join(node.logs() for node in [*self.nodes, self.redis, self.sink])

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.sink.stop()
        self.redis.stop()
        self.dns.stop()


def wait_gone(seconds: float) -> None:
    """Sleep in a chaos schedule (the schedule is the behaviour under test)."""
    time.sleep(seconds)
