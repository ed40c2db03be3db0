"""shaping.py - how closely per-destination shaping holds its limits, and what it costs in
tickets, with real mxfleet processes (tests/servers/fleet.py) on loopback.

Usage: .venv/bin/python -m tests.bench.shaping [--messages 600] [--workers 1,2,4]
           [--rate 20/s] [--burst 5] [--max-connections 3]

For each worker-process count W: a fresh fleet (its own Redis, DNS server and sinks; one
ingress, two dispatchers, W workers) and two scenarios, one after the other:

- ``rate``: one destination with ``rate``/``burst``; N messages queued while it is paused,
  then resumed. Steady rate = (N - burst) / (last - first arrival); excess = the most
  messages any window of arrivals held beyond rate * its length (GCRA keeps it <= burst).
- ``conns``: one destination with ``max_connections`` and a sink that waits 20 ms before
  every reply; N messages, queued the same way. Rate = (N - 1) / (last - first arrival).

Both report the sink's most concurrent connections, the most messages one connection
carried, tickets run per message (the change of ``tickets`` in ``mxf:stats``, counted when
each ticket ends, over N) and ``secs``, from the resume to the last arrival. Prints one
table; exits 1 when a delivery does not finish within N / rate * 3 + 60 s or a role dies.
"""

import argparse
import contextlib
import math
import shutil
import smtplib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from shared.rates import parse_rate
from tests.servers.dns_server import DnsServer
from tests.servers.fleet import Fleet
from tests.servers.ports import free_port_on
from tests.servers.redis_server import RedisServer
from tests.servers.smtp_sink import Behaviour, SmtpSink
from workers import shaping
from workers.store import Store

BODY = b"Subject: shaping bench\r\nFrom: <sender@example.test>\r\n\r\nhello\r\n"
RATE_DOMAIN, RATE_HOST = "rate.test", "127.0.0.2"
CONN_DOMAIN, CONN_HOST = "conn.test", "127.0.0.3"
SETTLE_S = 30.0  # after the last arrival: every ticket released, the spool empty
COLUMNS = ("scenario", "W", "limit", "msg/s", "err%", "excess", "max_conns", "max_msgs/conn",
           "tickets/msg", "secs")  # fmt: skip


class BenchError(Exception):
    """A delivery did not finish in time, or a role died."""


@dataclass(frozen=True)
class Options:
    messages: int
    workers: list[int]
    rate: str
    per_second: float
    burst: int
    max_connections: int

    @property
    def timeout(self) -> float:
        return self.messages / self.per_second * 3 + 60


def excess_over_rate(times: list[float], rate: float) -> float:
    """max over i <= j of (j - i + 1) - rate * (t_j - t_i), in one pass."""
    worst, lowest = 0.0, math.inf
    for k, t in enumerate(times):
        lowest = min(lowest, k - rate * t)
        worst = max(worst, k + 1 - rate * t - lowest)
    return worst


def tickets(store: Store) -> int:
    return int(store.client.hget(store.keys.stats, "tickets") or 0)


def wait_for(fleet: Fleet, what: str, done: Callable[[], bool], timeout: float) -> None:
    """Poll ``done`` until it holds; BenchError on the deadline or when a role exits."""
    deadline = time.monotonic() + timeout
    while not done():
        dead = [role.name for role in fleet.roles if not role.alive()]
        if dead:
            raise BenchError(f"{', '.join(dead)} exited while waiting for {what}")
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not done within {timeout:.0f} s")
        time.sleep(0.05)


def deliver(
    fleet: Fleet, store: Store, sink: SmtpSink, domain: str, opts: Options
) -> tuple[float, float]:
    """Queue N messages for ``domain`` while it is paused, resume, wait for the sink and
    for the spool to settle; the tickets run per message, and when it resumed."""
    shaping.pause(store, domain)
    with smtplib.SMTP("127.0.0.1", fleet.smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        for n in range(opts.messages):
            smtp.sendmail("sender@example.test", [f"r{n}@{domain}"], BODY)
    before = tickets(store)
    resumed = time.monotonic()
    shaping.resume(store, domain)
    count = opts.messages
    wait_for(fleet, f"{count} messages to {domain}", lambda: len(sink.messages) >= count,
             opts.timeout)  # fmt: skip
    wait_for(fleet, f"the spool to empty after {domain}", fleet.spool_empty, SETTLE_S)
    return (tickets(store) - before) / count, resumed


def rate_row(fleet: Fleet, store: Store, sink: SmtpSink, opts: Options, w: int) -> list[str]:
    churn, started = deliver(fleet, store, sink, RATE_DOMAIN, opts)
    times = sorted(message.received_at for message in sink.messages)
    steady = (len(times) - opts.burst) / (times[-1] - times[0])
    error = (steady - opts.per_second) / opts.per_second * 100
    excess = excess_over_rate(times, opts.per_second)
    per_conn = max(sink.transactions_per_connection.values())
    return ["rate", str(w), f"{opts.rate} burst {opts.burst}", f"{steady:.2f}", f"{error:+.1f}",
            f"{excess:.2f}", str(sink.max_open_connections), str(per_conn), f"{churn:.3f}",
            f"{times[-1] - started:.1f}"]  # fmt: skip


def conn_row(fleet: Fleet, store: Store, sink: SmtpSink, opts: Options, w: int) -> list[str]:
    churn, started = deliver(fleet, store, sink, CONN_DOMAIN, opts)
    times = sorted(message.received_at for message in sink.messages)
    mps = (len(times) - 1) / (times[-1] - times[0])
    per_conn = max(sink.transactions_per_connection.values())
    return ["conns", str(w), f"{opts.max_connections} conns", f"{mps:.2f}", "-", "-",
            str(sink.max_open_connections), str(per_conn), f"{churn:.3f}",
            f"{times[-1] - started:.1f}"]  # fmt: skip


def run_fleet(w: int, opts: Options) -> list[list[str]]:
    """Both scenarios on a fresh fleet with ``w`` worker processes."""
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="mxfleet-shaping-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        server = RedisServer(workdir / "redis").start()
        stack.callback(server.stop)
        dns = DnsServer().start()
        stack.callback(dns.stop)
        hosts = [f"127.0.0.{n}" for n in range(2, 21)]
        fleet = Fleet(redis=server, dns=dns, delivery_port=free_port_on(hosts), workdir=workdir)
        stack.callback(fleet.stop)
        fleet.config(
            f'[policy.paced]\ndomains = ["{RATE_DOMAIN}"]\nrate = "{opts.rate}"\n'
            f"burst = {opts.burst}\n"
            f'[policy.capped]\ndomains = ["{CONN_DOMAIN}"]\n'
            f"max_connections = {opts.max_connections}\n"
        )
        rate_sink = fleet.sink(RATE_DOMAIN, RATE_HOST)
        conn_sink = fleet.sink(CONN_DOMAIN, CONN_HOST, Behaviour(delay=0.02))
        client = redis.Redis(host="127.0.0.1", port=server.port)
        stack.callback(client.close)
        store = Store(client, "mxf:")
        try:
            fleet.up(dispatchers=2, workers=w)
            return [
                rate_row(fleet, store, rate_sink, opts, w),
                conn_row(fleet, store, conn_sink, opts, w),
            ]
        except BenchError:
            print(fleet.logs(), file=sys.stderr)
            raise
    raise AssertionError("unreachable")  # ExitStack may swallow exceptions, for mypy


def table(rows: list[list[str]]) -> str:
    lines = [list(COLUMNS), *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                  for i, (cell, width) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    )  # fmt: skip


def options(argv: list[str] | None) -> Options:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--messages", type=int, default=600)
    ap.add_argument("--workers", default="1,2,4", help="worker-process counts, comma-separated")
    ap.add_argument("--rate", default="20/s")
    ap.add_argument("--burst", type=int, default=5)
    ap.add_argument("--max-connections", type=int, default=3)
    a = ap.parse_args(argv)
    try:
        workers = [int(part) for part in a.workers.split(",") if part.strip()]
        per_second = parse_rate(a.rate).per_second
    except ValueError as error:
        ap.error(str(error))
    if not workers or min(workers) < 1:
        ap.error("--workers: positive counts, e.g. 1,2,4")
    if a.burst < 1 or a.max_connections < 1 or a.messages <= max(a.burst, 1):
        ap.error("--burst and --max-connections must be >= 1, --messages more than the burst")
    return Options(a.messages, workers, a.rate, per_second, a.burst, a.max_connections)


def main(argv: list[str] | None = None) -> int:
    opts = options(argv)
    rows: list[list[str]] = []
    try:
        for w in opts.workers:
            print(f"shaping: {w} worker process(es)...", file=sys.stderr, flush=True)
            rows.extend(run_fleet(w, opts))
    except BenchError as error:
        if rows:
            print(table(rows))
        print(f"shaping: {error}", file=sys.stderr)
        return 1
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
