"""``mxfleet events`` as a real command against a real Redis: JSON lines (``--count``,
``--since``), ``--follow`` (through a Redis restart, stopped by SIGTERM), and ``--webhook``
posting to a real HTTP server on 127.0.0.1 that can fail or hang: batches in order, retries
with nothing lost, resume after SIGKILL, adoption of a dead consumer's entries."""

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from shared.embedded import free_port
from tests.conftest import StartRedis
from tests.integration.test_cli import run_cli
from tests.servers.redis_server import RedisServer
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

KEY = "mxf:events"
_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Stream:
    """The events stream, written as ``complete.lua`` writes it (raw commands: typed Any)."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    @staticmethod
    def fields(n: int) -> dict[Any, Any]:
        return {
            "attempt": 1, "id": f"msg{n:05d}", "domain": "example.org",
            "rcpts": "a@example.org,b@example.org", "verdict": "delivered",
            "reply": "250 2.0.0 Ok: queued", "mx": "mx1.example.org", "duration_ms": n,
        }  # fmt: skip

    def add(self, count: int, first: int = 0, ids: list[str] | None = None) -> list[str]:
        """XADD ``count`` events in one transaction; their stream ids."""
        pipe = self.client.pipeline(transaction=True)
        for n in range(first, first + count):
            stream_id = ids[n - first] if ids else "*"
            pipe.xadd(KEY, self.fields(n), id=stream_id, maxlen=100000, approximate=True)
        return [_text(found) for found in pipe.execute()]

    def now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def pending(self, group: str = "webhook") -> int:
        summary: dict[str, Any] = self.client.xpending(KEY, group)
        return int(summary["pending"])

    def group_exists(self, group: str = "webhook") -> bool:
        try:
            found: list[dict[str, Any]] = self.client.xinfo_groups(KEY)
        except redis.ResponseError:  # no stream yet
            return False
        return any(_text(info["name"]) == group for info in found)

    def consumers(self, group: str = "webhook") -> dict[str, int]:
        """name → pending entries."""
        found: list[dict[str, Any]] = self.client.xinfo_consumers(KEY, group)
        return {_text(info["name"]): int(info["pending"]) for info in found}

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def stream(spool: SpoolClient, redis_server: RedisServer) -> Iterator[Stream]:
    events = Stream(redis_server.port)
    yield events
    events.close()


def _env(redis_url: str) -> dict[str, str]:
    environ = {key: os.environ[key] for key in _KEEP if key in os.environ}
    return {**environ, "MXFLEET_REDIS_URL": redis_url}


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


# --- printing ---------------------------------------------------------------------------
def test_prints_events_as_json_lines_oldest_first(
    stream: Stream, redis_server: RedisServer
) -> None:
    ids = stream.add(3)
    result = run_cli("events", env=_env(redis_server.url))
    assert result.returncode == 0, result
    events = _lines(result.stdout)
    assert [event["event_id"] for event in events] == ids
    ms = int(ids[0].split("-")[0])
    assert events[0]["time"].endswith("Z")
    assert events[0]["time"][:19] == _iso_seconds(ms)
    assert events[0] == {
        "event_id": ids[0], "time": events[0]["time"], "attempt": 1, "id": "msg00000",
        "domain": "example.org", "rcpts": ["a@example.org", "b@example.org"],
        "verdict": "delivered", "reply": "250 2.0.0 Ok: queued", "mx": "mx1.example.org",
        "duration_ms": 0,
    }  # fmt: skip


def _iso_seconds(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_prints_the_last_100_or_count(stream: Stream, redis_server: RedisServer) -> None:
    ids = stream.add(150)
    default = run_cli("events", env=_env(redis_server.url))
    assert [event["event_id"] for event in _lines(default.stdout)] == ids[50:]
    three = run_cli("events", "--count", "3", env=_env(redis_server.url))
    assert [event["event_id"] for event in _lines(three.stdout)] == ids[147:]
    assert run_cli("events", "--count", "0", env=_env(redis_server.url)).stdout == ""


def test_since_a_duration_or_a_stream_id(stream: Stream, redis_server: RedisServer) -> None:
    hour_ago = stream.now_ms() - 3_600_000
    old = stream.add(3, ids=[f"{hour_ago}-{n}" for n in range(3)])
    new = stream.add(2, first=3)
    env = _env(redis_server.url)

    def printed(*args: str) -> list[str]:
        result = run_cli("events", *args, env=env)
        assert result.returncode == 0, result
        return [event["event_id"] for event in _lines(result.stdout)]

    assert printed("--since", "10m") == new
    assert printed("--since", "2h") == old + new
    assert printed("--since", old[1]) == old[1:] + new  # from that id on, inclusive
    assert printed("--since", "0", "--count", "2") == old[:2]
    assert printed("--since", "1m", "--count", "0") == []


def test_since_refuses_nonsense() -> None:
    result = run_cli("events", "--since", "yesterday", env=_env("redis://127.0.0.1:9/0"))
    assert result.returncode == 2
    assert "--since" in result.stderr
    assert "Traceback" not in result.stderr


def test_redis_unreachable_is_one_line_and_exit_1() -> None:
    result = run_cli("events", env=_env(f"redis://127.0.0.1:{free_port()}/0"))
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert result.stderr.startswith("mxfleet events: Redis unreachable: ")
    assert len(result.stderr.strip().splitlines()) == 1


# --- following --------------------------------------------------------------------------
class Follower:
    """``mxfleet events --follow`` with its stdout read line by line in a thread."""

    def __init__(self, redis_url: str, stderr: Path, *args: str) -> None:
        self.stderr_path = stderr
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "events", "--follow", *args],
            env=_env(redis_url), stdout=subprocess.PIPE, stderr=stderr.open("w"), text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next(self, timeout: float = 10.0) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.lines.get(timeout=timeout))
        return found

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[Callable[..., Follower]]:
    started: list[Follower] = []

    def start(redis_url: str, *args: str) -> Follower:
        started.append(Follower(redis_url, tmp_path / f"follow{len(started)}.err", *args))
        return started[-1]

    yield start
    for one in started:
        one.close()


def test_follow_prints_new_events_and_stops_on_sigterm(
    stream: Stream, redis_server: RedisServer, follower: Callable[..., Follower]
) -> None:
    before = stream.add(2)
    follow = follower(redis_server.url, "--count", "1")
    assert follow.next()["event_id"] == before[1]  # the backlog: the newest one
    for n in range(3):
        (added,) = stream.add(1, first=10 + n)
        event = follow.next()
        assert event["event_id"] == added
        assert event["id"] == f"msg{10 + n:05d}"
    assert follow.stop() == 0
    assert follow.lines.empty()


def test_follow_rides_out_a_redis_restart(
    start_redis: StartRedis, follower: Callable[..., Follower]
) -> None:
    server = start_redis()
    stream = Stream(server.port)
    try:
        follow = follower(server.url)
        (first,) = stream.add(1)
        assert follow.next()["event_id"] == first
        server.stop()
        wait_until(lambda: "unreachable" in follow.stderr_path.read_text(), timeout=10)
        server.start()
        (second,) = stream.add(1, first=1)
        assert follow.next(timeout=20)["event_id"] == second
        assert follow.stop() == 0
    finally:
        stream.close()
    errors = follow.stderr_path.read_text().splitlines()
    assert len([line for line in errors if "Redis unreachable" in line]) == 1, errors
    assert errors[-1] == "mxfleet events: Redis reachable again"


# --- the webhook ------------------------------------------------------------------------
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: "Receiver"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        receiver = cast(_Server, self.server).receiver
        action = receiver.take(json.loads(body), dict(self.headers.items()))
        if action == "hang":
            receiver.release.wait(60)
            return  # closed without an answer
        self.send_response(int(action))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 -- its signature
        pass


class Receiver:
    """A webhook endpoint on 127.0.0.1. Its ``script`` says how to answer the first
    requests: a status (``"500"``) or ``"hang"`` (never answer); then 200. It records the
    batches it answers 2xx, in the order they came."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)
        self.batches: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.requests = self.hanging = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.receiver = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook?token=t"

    def take(self, batch: list[dict[str, Any]], headers: dict[str, str]) -> str:
        with self._lock:
            self.requests += 1
            action = self.script.pop(0) if self.script else "200"
            if action == "hang":
                self.hanging += 1
            elif action.startswith("2"):
                self.batches.append(batch)
                self.headers.append(headers)
            return action

    def ids(self) -> list[str]:
        with self._lock:
            return [event["event_id"] for batch in self.batches for event in batch]

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Forwarder:
    """``mxfleet events --webhook URL ...`` as a process; its log on stderr, in a file."""

    def __init__(self, redis_url: str, log: Path, *args: str) -> None:
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "events", "--webhook", *args],
            env=_env(redis_url), stdout=subprocess.DEVNULL, stderr=log.open("w"),
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)  # reaped: its pid is gone, as after a crash


@pytest.fixture
def webhook(
    tmp_path: Path, redis_server: RedisServer
) -> Iterator[tuple[Callable[[list[str]], Receiver], Callable[..., Forwarder]]]:
    receivers: list[Receiver] = []
    forwarders: list[Forwarder] = []

    def receiver(script: list[str]) -> Receiver:
        receivers.append(Receiver(script))
        return receivers[-1]

    def forwarder(*args: str) -> Forwarder:
        log = tmp_path / f"forwarder{len(forwarders)}.log"
        forwarders.append(Forwarder(redis_server.url, log, *args))
        return forwarders[-1]

    yield receiver, forwarder
    for one in forwarders:
        if one.process.poll() is None:
            one.kill()
    for endpoint in receivers:
        endpoint.stop()


Webhook = tuple[Callable[[list[str]], Receiver], Callable[..., Forwarder]]


def test_webhook_posts_full_batches_then_the_rest_after_max_wait(
    stream: Stream, webhook: Webhook
) -> None:
    make_receiver, start = webhook
    receiver = make_receiver([])
    forwarder = start(receiver.url, "--batch", "100", "--max-wait", "0.5s",
                      "--header", "Authorization: Bearer s3cret")  # fmt: skip
    wait_until(stream.group_exists, timeout=10)  # created at "$": only what comes next
    ids = stream.add(250)
    wait_until(lambda: len(receiver.ids()) >= 250, timeout=20)
    assert [len(batch) for batch in receiver.batches] == [100, 100, 50]
    assert receiver.ids() == ids  # all, in order, none twice
    assert receiver.batches[0][0]["rcpts"] == ["a@example.org", "b@example.org"]
    assert receiver.headers[0]["Content-Type"] == "application/json"
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    wait_until(lambda: stream.pending() == 0, timeout=5)
    assert forwarder.stop() == 0
    log = forwarder.text()
    assert "event=webhook_started" in log
    assert "lag=0" in log
    assert "s3cret" not in log
    assert "token=t" not in log  # the query is not logged


def test_webhook_retries_500s_and_loses_nothing(stream: Stream, webhook: Webhook) -> None:
    make_receiver, start = webhook
    receiver = make_receiver(["500", "400", "503"])
    ids = stream.add(20)
    forwarder = start(receiver.url, "--since", "0", "--max-wait", "0.1s")
    wait_until(lambda: len(receiver.ids()) >= 20, timeout=20)
    assert receiver.requests == 4
    assert receiver.ids() == ids
    wait_until(lambda: stream.pending() == 0, timeout=5)
    assert forwarder.stop() == 0
    failures = [line for line in forwarder.text().splitlines() if "event=webhook_failed" in line]
    assert len(failures) == 3, failures
    assert " warning " in failures[0]
    assert "status=500" in failures[0]
    assert " error " in failures[1]  # a 4xx: the receiver refuses, retried all the same
    assert "status=400" in failures[1]
    assert "status=503" in failures[2]


def test_webhook_retries_a_receiver_that_hangs(stream: Stream, webhook: Webhook) -> None:
    make_receiver, start = webhook
    receiver = make_receiver(["hang"])
    ids = stream.add(5)
    forwarder = start(receiver.url, "--since", "0", "--max-wait", "0.1s", "--timeout", "0.5s")
    wait_until(lambda: len(receiver.ids()) >= 5, timeout=20)
    assert receiver.ids() == ids
    assert receiver.hanging == 1
    wait_until(lambda: stream.pending() == 0, timeout=5)
    assert forwarder.stop() == 0
    assert "timed out" in forwarder.text()


def test_webhook_resumes_after_sigkill_without_resending_acked_batches(
    stream: Stream, webhook: Webhook
) -> None:
    make_receiver, start = webhook
    receiver = make_receiver(["200", "hang"])  # the 2nd POST is in flight at the kill
    ids = stream.add(300)
    first = start(receiver.url, "--since", "0", "--batch", "100", "--max-wait", "0.2s",
                  "--timeout", "30s")  # fmt: skip
    wait_until(lambda: receiver.hanging == 1, timeout=20)
    first.kill()
    assert receiver.ids() == ids[:100]
    assert stream.pending() == 100  # the batch in flight, held by the dead consumer
    second = start(receiver.url, "--batch", "100", "--max-wait", "0.2s")
    wait_until(lambda: set(receiver.ids()) >= set(ids), timeout=20)
    received = receiver.ids()
    assert received[:100] == ids[:100]
    assert all(received.count(event_id) == 1 for event_id in ids[:100])  # acked: not resent
    assert set(received[100:]) == set(ids[100:])  # at least once
    wait_until(lambda: stream.pending() == 0, timeout=5)
    assert list(stream.consumers()) == [f"{socket.gethostname()}:{second.process.pid}"]
    assert "adopted=100" in second.text()
    assert second.stop() == 0


def test_webhook_adopts_entries_idle_for_over_a_minute(stream: Stream, webhook: Webhook) -> None:
    make_receiver, start = webhook
    receiver = make_receiver([])
    ids = stream.add(30)
    client = stream.client
    streams: dict[Any, Any] = {KEY: ">"}
    client.xgroup_create(KEY, "webhook", id="0")
    client.xreadgroup("webhook", "gone:1", streams, count=10)
    # XCLAIM with IDLE backdates them: as if gone:1 (another host) had been silent for 2 min.
    idle: list[Any] = ids[:10]
    client.xclaim(KEY, "webhook", "gone:1", 0, idle, idle=120_000, justid=True)
    client.xreadgroup("webhook", "busy:1", streams, count=5)
    forwarder = start(receiver.url, "--max-wait", "0.1s")
    wait_until(lambda: len(receiver.ids()) >= 25, timeout=20)
    assert receiver.ids() == ids[:10] + ids[15:]  # busy:1's five are still its own
    wait_until(lambda: stream.pending() == 5, timeout=5)
    assert stream.consumers()["busy:1"] == 5
    assert forwarder.stop() == 0


def test_webhook_keeps_events_pending_while_the_receiver_is_down(
    stream: Stream, webhook: Webhook
) -> None:
    _, start = webhook
    stream.add(7)
    forwarder = start(f"http://127.0.0.1:{free_port()}/hook", "--since", "0", "--max-wait", "0")
    wait_until(lambda: forwarder.text().count("event=webhook_failed") >= 2, timeout=10)
    assert "refused" in forwarder.text()
    assert forwarder.stop() == 0  # SIGTERM during the backoff
    assert stream.pending() == 7  # not acked: the next forwarder sends them


@pytest.mark.parametrize(
    ("args", "named"),
    [
        pytest.param(
            ["--webhook", "ftp://example.com/"], "is not an http:// or https://", id="ftp"
        ),
        pytest.param(["--webhook", "hooks.example.com"], "is not an http", id="no-scheme"),
        pytest.param(["--webhook", "http://u:p@example.com/"], "credentials", id="userinfo"),
        pytest.param(["--webhook", "http://x.test/", "--header", "oops"], "not a header", id="hdr"),
        pytest.param(["--webhook", "http://x.test/", "--batch", "0"], "batch size", id="batch"),
    ],
)
def test_webhook_bad_arguments_are_a_clear_error(args: list[str], named: str) -> None:
    result = run_cli("events", *args, env=_env("redis://127.0.0.1:9/0"))
    assert result.returncode == 2, result
    assert named in result.stderr
    assert "Traceback" not in result.stderr


def test_webhook_does_not_go_with_follow() -> None:
    result = run_cli("events", "--webhook", "http://x.test/", "--follow",
                     env=_env("redis://127.0.0.1:9/0"))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "mxfleet events: --webhook does not go with --follow or --count"
