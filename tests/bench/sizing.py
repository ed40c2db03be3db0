"""sizing.py - what one message costs in Redis memory, AOF, Redis commands and CPU, for the
sizing guide (deploy/README.md), with real mxfleet processes (tests/servers/fleet.py).

Usage: .venv/bin/python -m tests.bench.sizing [--messages 2000] [--sizes 1,10,100]
           [--sessions 4] [--idle 5] [--timeout 300]

One fleet: its own Redis (AOF ``everysec``; automatic AOF rewrites and per-command latency
histograms off, so that the deltas below are the spool's alone), a DNS server, one sink per
size on 127.0.0.N; one ingress, one dispatcher, one worker process. 100 messages are
delivered first (warm-up). Then for each size S KiB (one recipient per message, its own
domain ``sS.test``):

1. accept: the domain is paused (``workers.shaping.pause``), N messages of exactly S KiB
   (headers included) are sent to the ingress over ``--sessions`` parallel SMTP sessions.
   ``MEMORY USAGE`` of the body key and of the three other keys (msg, rcpt, job) of 20 of
   them, and the stored body's length (the ingress adds a Received header), tell where the
   bytes go.
2. idle: ``--idle`` seconds with the backlog paused: the commands, CPU and AOF bytes the
   fleet spends on its own (heartbeats, the dispatcher's loop, Celery's polling, the
   ingress's health checks). Redis ``used_memory``, ``used_memory_rss`` (after ``MEMORY
   PURGE``) and ``aof_current_size`` after it, minus before the accept phase, give bytes per
   queued message (the AOF net of the idle rate).
3. deliver: ``CONFIG RESETSTAT``, resume, wait for the sink to have N and for Redis to have
   recorded every completion and released every ticket; AOF bytes per delivered message,
   and ``used_memory`` ``--idle`` seconds after the spool emptied minus before the accept
   phase (what delivered mail leaves behind: the events stream).

Commands are ``INFO commandstats`` calls (commands run inside Lua scripts counted one by one,
as Redis counts them; ``evalsha`` is the script runs; INFO, CONFIG RESETSTAT and this
script's own polling left out), net of the idle rate. CPU is user + system from
/proc/PID/stat (the process and its descendants) of the ingress, dispatcher, worker and
redis-server. Prints three tables; exits 1 when a phase does not finish within ``--timeout``
seconds (the spool settling: 30 s) or a role dies.
"""

import argparse
import concurrent.futures
import contextlib
import os
import shutil
import smtplib
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.servers.dns_server import DnsServer
from tests.servers.fleet import Fleet
from tests.servers.ports import free_port_on
from tests.servers.redis_server import RedisServer
from tests.servers.smtp_sink import SmtpSink
from workers import shaping
from workers.store import Store

PREFIX = "mxf:"
SENDER = "sender@example.test"
SETTLE_S = 30.0  # after the last arrival: completions recorded, tickets released, spool empty
QUIET_S = 2.0  # after pausing, before the first memory reading
SAMPLE = 20  # messages whose keys MEMORY USAGE looks at
NOT_OURS = ("info", "config|resetstat")  # commandstats entries that are not the fleet's work
TICK = os.sysconf("SC_CLK_TCK")
WARM_DOMAIN, WARM_MESSAGES = "warm.test", 100


class BenchError(Exception):
    """A phase did not finish in time, or a role died."""


@dataclass(frozen=True)
class Options:
    messages: int
    sizes: list[int]
    sessions: int
    idle: float
    timeout: float


@dataclass
class Phase:
    """What one phase cost: wall time, CPU seconds per process, commandstats calls."""

    secs: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)

    def net(self, idle: "Phase") -> dict[str, float]:
        """Calls minus what the idle fleet makes in as long."""
        scale = self.secs / idle.secs if idle.secs else 0.0
        names = set(self.calls) | set(idle.calls)
        return {name: self.calls[name] - idle.calls[name] * scale for name in names}


@dataclass
class Result:
    kib: int
    messages: int
    sent: int = 0  # bytes per message over SMTP (before dot-stuffing)
    stored: float = 0.0  # mean STRLEN of body:{id}
    body_key: float = 0.0  # mean MEMORY USAGE of body:{id}
    other_keys: float = 0.0  # mean MEMORY USAGE of msg + rcpt + job
    used: int = 0  # used_memory change while queueing
    rss: int = 0
    aof: float = 0.0  # aof_current_size change, net of the idle rate
    aof_deliver: float = 0.0  # aof_current_size change while delivering, net of idle
    kept: int = 0  # used_memory after delivery minus before queueing
    accept: Phase = field(default_factory=Phase)
    idle: Phase = field(default_factory=Phase)
    deliver: Phase = field(default_factory=Phase)
    deliver_wall: float = 0.0  # resume → last arrival at the sink


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (0 once gone)."""
    total, todo, seen = 0.0, [pid], set[int]()
    while todo and len(seen) < 1000:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
            for children in Path(f"/proc/{current}/task").glob("*/children"):
                todo.extend(int(child) for child in children.read_text().split())
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return total


class Probe:
    """Reads Redis's INFO and the processes' CPU; counts this script's own commands."""

    def __init__(self, fleet: Fleet, server: RedisServer, client: "redis.Redis") -> None:
        self.fleet = fleet
        self.client = client
        self.store = Store(client, PREFIX)
        assert server.process is not None
        self.pids = {role.name: role.process.pid for role in fleet.roles}
        self.pids["redis"] = server.process.pid
        self.mine: Counter[str] = Counter()  # commands sent since the last reset

    def info(self, section: str) -> dict[str, Any]:
        return self.client.info(section)

    def cpu(self) -> dict[str, float]:
        return {name: proc_cpu(pid) for name, pid in self.pids.items()}

    def reset(self) -> None:
        self.client.config_resetstat()
        self.mine.clear()

    def calls(self) -> Counter[str]:
        stats = self.info("commandstats")
        calls = Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})
        for name in NOT_OURS:
            calls.pop(name, None)
        calls.subtract(self.mine)
        return +calls

    def memory(self) -> tuple[int, int, int]:
        """used_memory, used_memory_rss (after MEMORY PURGE) and aof_current_size."""
        with contextlib.suppress(redis.ResponseError):  # not every allocator purges
            self.client.memory_purge()
        memory, persistence = self.info("memory"), self.info("persistence")
        aof = int(persistence.get("aof_current_size", 0))
        return int(memory["used_memory"]), int(memory["used_memory_rss"]), aof

    def delivered(self) -> int:
        return int(self.client.hget(self.store.keys.stats, "delivered") or 0)

    def settled(self, target: int) -> bool:
        """Every completion recorded and every ticket released (counted as our commands)."""
        keys = self.store.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(keys.stats, "delivered")
        pipe.zcard(keys.inflight)
        pipe.zcard(keys.tickets)
        delivered, inflight, tickets = pipe.execute()
        self.mine.update({"hget": 1, "zcard": 2})
        return int(delivered or 0) >= target and inflight == 0 and tickets == 0

    def wait(self, what: str, done: Callable[[], bool], timeout: float) -> None:
        """Poll ``done``; BenchError at the deadline or when a role exits."""
        deadline = time.monotonic() + timeout
        while not done():
            dead = [role.name for role in self.fleet.roles if not role.alive()]
            if dead:
                raise BenchError(f"{', '.join(dead)} exited while waiting for {what}")
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: not done within {timeout:.0f} s")
            time.sleep(0.05)


def message(kib: int, domain: str) -> bytes:
    """A message of exactly ``kib`` KiB, headers and final CRLF included."""
    head = (
        f"From: <{SENDER}>\r\nTo: <rcpt@{domain}>\r\nSubject: sizing bench {kib} KiB\r\n"
        f"Message-ID: <sizing-{kib}@example.test>\r\n\r\n"
    ).encode()
    room = kib * 1024 - len(head)
    line = b"x" * 76 + b"\r\n"
    body = line * (room // len(line))
    rest = room - len(body)
    if rest == 1:  # no room for a line of its own: the last one gets a byte longer
        body = body[:-2] + b"x\r\n"
    elif rest:
        body += b"y" * (rest - 2) + b"\r\n"
    return head + body


def send_share(port: int, domain: str, body: bytes, numbers: range, deadline: float) -> None:
    """One SMTP session sending messages ``numbers`` (recipient rN@domain)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        if smtp.sock is not None:  # the final dot must not wait for a delayed ACK
            smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        smtp.ehlo("client.test")
        for n in numbers:
            if time.monotonic() > deadline:
                raise BenchError(f"queueing to {domain}: not done in time")
            refused = smtp.sendmail(SENDER, [f"r{n}@{domain}"], body)
            if refused:
                raise BenchError(f"the ingress refused {refused}")


def queue(port: int, domain: str, body: bytes, count: int, opts: Options) -> None:
    """``count`` messages over ``opts.sessions`` sessions in parallel."""
    deadline = time.monotonic() + opts.timeout
    shares = [range(i, count, opts.sessions) for i in range(opts.sessions)]
    with concurrent.futures.ThreadPoolExecutor(opts.sessions) as pool:
        futures = [pool.submit(send_share, port, domain, body, s, deadline) for s in shares]
        for future in futures:
            try:
                future.result(timeout=max(1.0, deadline - time.monotonic()) + 60)
            except (smtplib.SMTPException, OSError, concurrent.futures.TimeoutError) as error:
                raise BenchError(f"queueing to {domain}: {error!r}") from error


def sample_keys(probe: Probe, domain: str) -> tuple[float, float, float]:
    """Means over a sample of queued messages: the stored body's length, MEMORY USAGE of its
    body key and of its three other keys (msg, rcpt, job)."""
    keys, client = probe.store.keys, probe.client
    ids = [_text(i) for i in client.zrange(keys.sched(domain), 0, SAMPLE - 1)]
    if not ids:
        return 0.0, 0.0, 0.0
    stored = body = other = 0
    for msg_id in ids:
        stored += int(client.strlen(keys.body(msg_id)))
        body += int(client.memory_usage(keys.body(msg_id), samples=0) or 0)
        for key in (keys.msg(msg_id), keys.rcpt(msg_id, domain), keys.job(msg_id, domain)):
            other += int(client.memory_usage(key, samples=0) or 0)
    return stored / len(ids), body / len(ids), other / len(ids)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def timed(probe: Probe, phase: Phase, action: Callable[[], None]) -> None:
    """Run ``action`` between a RESETSTAT and a commandstats/CPU reading into ``phase``."""
    probe.reset()
    cpu, started = probe.cpu(), time.monotonic()
    action()
    phase.secs = time.monotonic() - started
    phase.calls = probe.calls()
    phase.cpu = {name: after - cpu[name] for name, after in probe.cpu().items()}


def measure(probe: Probe, sink: SmtpSink, kib: int, opts: Options) -> Result:
    n, domain = opts.messages, f"s{kib}.test"
    result = Result(kib, n)
    body = message(kib, domain)
    result.sent = len(body)
    shaping.pause(probe.store, domain)
    time.sleep(QUIET_S)
    used0, rss0, aof0 = probe.memory()
    aof_at = time.monotonic()
    timed(probe, result.accept, lambda: queue(probe.fleet.smtp_port, domain, body, n, opts))
    result.stored, result.body_key, result.other_keys = sample_keys(probe, domain)
    # The idle window also lets Redis shrink the query buffers the accepts grew.
    aof_idle = probe.memory()[2]
    timed(probe, result.idle, lambda: time.sleep(opts.idle))
    used1, rss1, aof1 = probe.memory()
    aof_rate = (aof1 - aof_idle) / result.idle.secs
    result.used, result.rss = used1 - used0, rss1 - rss0
    result.aof = aof1 - aof0 - aof_rate * (time.monotonic() - aof_at)

    target = probe.delivered() + n
    arrived = len(sink.messages) + n

    def deliver() -> None:
        shaping.resume(probe.store, domain)
        probe.wait(f"{n} messages at the sink of {domain}", lambda: len(sink.messages) >= arrived,
                   opts.timeout)  # fmt: skip
        probe.wait(f"completions of {domain}", lambda: probe.settled(target), SETTLE_S)

    aof_before, resumed = probe.memory()[2], time.monotonic()
    timed(probe, result.deliver, deliver)
    aof_after = probe.memory()[2]
    result.aof_deliver = aof_after - aof_before - aof_rate * (time.monotonic() - resumed)
    result.deliver_wall = max(m.received_at for m in sink.messages) - resumed
    probe.wait(f"the spool to empty after {domain}", probe.fleet.spool_empty, SETTLE_S)
    time.sleep(opts.idle)
    result.kept = probe.memory()[0] - used0
    return result


def warm_up(probe: Probe, sink: SmtpSink, opts: Options) -> None:
    """Deliver a few messages first: the events stream, Celery's keys, the script cache and
    the dispatcher's maps exist before anything is measured."""
    body = message(1, WARM_DOMAIN)
    queue(probe.fleet.smtp_port, WARM_DOMAIN, body, WARM_MESSAGES, opts)
    probe.wait("the warm-up delivery", lambda: len(sink.messages) >= WARM_MESSAGES, opts.timeout)
    probe.wait("the spool to empty after the warm-up", probe.fleet.spool_empty, SETTLE_S)


def run(opts: Options, results: list[Result]) -> None:
    """A fresh fleet; appends one Result per size as it goes."""
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mxfleet-sizing-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        # No automatic AOF rewrite: it would reset aof_current_size in the middle of a phase.
        # No per-command latency histograms: each is ~25 KB of used_memory, allocated on a
        # command's first call and freed by CONFIG RESETSTAT, which would blur the deltas.
        server = RedisServer(
            workdir / "redis", "--auto-aof-rewrite-percentage", "0", "--latency-tracking", "no"
        ).start()
        stack.callback(server.stop)
        dns = DnsServer().start()
        stack.callback(dns.stop)
        hosts = [f"127.0.0.{2 + i}" for i in range(len(opts.sizes) + 1)]
        fleet = Fleet(redis=server, dns=dns, delivery_port=free_port_on(hosts), workdir=workdir)
        stack.callback(fleet.stop)
        pairs = zip(opts.sizes, hosts[:-1], strict=True)
        sinks = {kib: fleet.sink(f"s{kib}.test", host) for kib, host in pairs}
        warm_sink = fleet.sink(WARM_DOMAIN, hosts[-1])
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=30)
        stack.callback(client.close)
        try:
            try:
                fleet.up(dispatchers=1, workers=1)
            except AssertionError as error:  # the ingress did not greet
                raise BenchError(str(error)) from error
            probe = Probe(fleet, server, client)
            warm_up(probe, warm_sink, opts)
            for kib in opts.sizes:
                print(f"sizing: {kib} KiB x {opts.messages}...", file=sys.stderr, flush=True)
                results.append(measure(probe, sinks[kib], kib, opts))
        except BenchError:
            print(fleet.logs(), file=sys.stderr)
            raise


def table(columns: Sequence[str], rows: list[list[str]]) -> str:
    lines = [list(columns), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True))
        for line in lines
    )


def memory_table(results: list[Result]) -> str:
    rows = []
    for r in results:
        n = r.messages
        rows.append([f"{r.kib} KiB", str(r.sent), f"{r.stored:.0f}", f"{r.body_key:.0f}",
                     f"{r.other_keys:.0f}", f"{r.used / n:.0f}", f"{r.used / n - r.sent:+.0f}",
                     f"{r.rss / n:.0f}", f"{r.aof / n:.0f}", f"{r.aof / n - r.sent:+.0f}",
                     f"{r.aof_deliver / n:.0f}", f"{r.kept / n:.0f}"])  # fmt: skip
    return table(("size", "sent B", "stored B", "body key B", "other keys B", "used B/msg",
                  "overhead", "rss B/msg", "aof B/msg", "aof overhead", "aof deliver B/msg",
                  "kept B/msg"), rows)  # fmt: skip


def per_msg(calls: dict[str, float], n: int, name: str | None = None) -> str:
    value = calls.get(name, 0.0) if name else sum(calls.values())
    return f"{value / n:.2f}"


def top(calls: dict[str, float], n: int, count: int = 10) -> str:
    best = sorted(calls.items(), key=lambda kv: -kv[1])[:count]
    return " ".join(f"{name}:{value / n:.2f}" for name, value in best if value / n >= 0.005)


def command_table(results: list[Result]) -> str:
    rows, notes = [], []
    for r in results:
        n = r.messages
        accept, deliver = r.accept.net(r.idle), r.deliver.net(r.idle)
        both = {k: accept.get(k, 0.0) + deliver.get(k, 0.0) for k in set(accept) | set(deliver)}
        idle_rate = sum(r.idle.calls.values()) / r.idle.secs
        rows.append([f"{r.kib} KiB", per_msg(accept, n), per_msg(accept, n, "evalsha"),
                     per_msg(deliver, n), per_msg(deliver, n, "evalsha"), per_msg(both, n),
                     per_msg(both, n, "evalsha"), f"{idle_rate:.1f}",
                     f"{idle_rate * r.deliver.secs / n:.2f}"])  # fmt: skip
        notes += [f"{r.kib} KiB accept per msg:  {top(accept, n)}",
                  f"{r.kib} KiB deliver per msg: {top(deliver, n)}"]  # fmt: skip
    if results:
        idle = results[0].idle
        per_s = {name: count / idle.secs for name, count in idle.calls.items()}
        notes.append(f"idle fleet per second: {top(per_s, 1, 12)} (over {idle.secs:.1f} s)")
    header = ("size", "accept cmds/msg", "evalsha", "deliver cmds/msg", "evalsha",
              "total cmds/msg", "evalsha", "idle cmds/s", "idle in deliver/msg")  # fmt: skip
    return table(header, rows) + "\n" + "\n".join(notes)


def cpu_table(results: list[Result]) -> str:
    rows, notes = [], []
    for r in results:
        n, a, d = r.messages, r.accept, r.deliver
        worker_ms = d.cpu["worker"] * 1000 / n
        rows.append([f"{r.kib} KiB", f"{n / a.secs:.0f}", f"{a.cpu['ingress'] * 1000 / n:.3f}",
                     f"{a.cpu['redis'] * 1000 / n:.3f}", f"{r.deliver_wall:.2f}",
                     f"{n / r.deliver_wall:.0f}", f"{worker_ms:.3f}",
                     f"{1000 / worker_ms:.0f}" if worker_ms else "-",
                     f"{d.cpu['dispatcher'] * 1000 / n:.3f}",
                     f"{d.cpu['redis'] * 1000 / n:.3f}"])  # fmt: skip
        idle = " ".join(f"{k} {v * 1000 / r.idle.secs:.1f}" for k, v in r.idle.cpu.items())
        notes.append(f"{r.kib} KiB idle CPU ms/s: {idle}")
    header = ("size", "accept msg/s", "ingress ms/msg", "redis ms/msg", "deliver s",
              "deliver msg/s", "worker ms/msg", "msg/s/core", "dispatcher ms/msg",
              "redis ms/msg")  # fmt: skip
    return table(header, rows) + "\n" + "\n".join(notes)


def report(results: list[Result]) -> str:
    return "\n\n".join(
        [
            "Redis memory and AOF per message (bytes): queued (paused) | after delivery",
            memory_table(results),
            "Redis commands per message (net of the idle fleet's own)",
            command_table(results),
            "CPU per message (ms): accept phase | deliver phase",
            cpu_table(results),
        ]
    )


def options(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--sizes", default="1,10,100", help="message sizes in KiB, comma-separated")
    ap.add_argument("--sessions", type=int, default=4, help="parallel SMTP sessions to queue")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds of idle-fleet measurement")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per phase at most")
    a = ap.parse_args(argv)
    try:
        sizes = [int(part) for part in a.sizes.split(",") if part.strip()]
    except ValueError as error:
        ap.error(str(error))
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes) or len(sizes) > 20:
        ap.error("--sizes: distinct positive KiB counts, e.g. 1,10,100")
    if a.messages < 10 or not 1 <= a.sessions <= 64 or a.idle < 1 or a.timeout < 10:
        ap.error("--messages >= 10, --sessions 1-64, --idle >= 1, --timeout >= 10")
    return Options(a.messages, sizes, a.sessions, a.idle, a.timeout)


def main(argv: list[str] | None = None) -> int:
    opts = options(argv)
    results: list[Result] = []
    load = os.getloadavg()[0]
    try:
        run(opts, results)
    except BenchError as error:
        if results:
            print(report(results))
        print(f"sizing: {error}", file=sys.stderr)
        return 1
    print(report(results))
    print(f"\nload average (1 min): {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end;"
          f" {os.cpu_count()} CPUs")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
