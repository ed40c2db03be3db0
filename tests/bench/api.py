"""api.py - messages accepted per second through the HTTP API against SMTP, same ingress,
same run.

Usage: .venv/bin/python -m tests.bench.api [--reps 3] [--sizes 1024,20480]
           [--clients 8] [--messages 3000] [--batch 100]

One ingress process (``mxfleet ingress``, the API on in plain HTTP on loopback) and its own
redis-server (AOF ``everysec``, no RDB, ``noeviction``). Per size, these targets run in
turn, the order rotating every repetition so that the ratios compare the same moments of a
shared machine; each client is a process of its own, on one keep-alive connection:

- ``smtp``: smtplib, one transaction per message (MAIL, RCPT, DATA: smtplib does not
  pipeline), the same raw message every time;
- ``api``: ``POST /v1/messages``, the message from fields (the server builds it: text of
  the size, 7bit lines);
- ``api_raw``: ``POST /v1/messages``, the same raw message as ``smtp``, base64;
- ``batch``, ``batch_raw``: ``POST /v1/messages/batch`` of ``--batch`` messages, fields or
  raw, over ``--clients`` / 4 connections (at least 1).

``msg/s`` is messages accepted per second of wall time, from the first client's start to
the last one's end; ``cpu ms/msg`` the CPU time (user + system) of the ingress and its
Redis over that time, per message; ``vs smtp`` the ratio of msg/s to the ``smtp`` target of
the same size and repetition; the table gives the median over repetitions. Before each
measurement Redis is emptied and its AOF rewritten. Every client must get every message
accepted, or the script exits 1. Loopback only; nothing is delivered.
"""

import argparse
import base64
import json
import multiprocessing
import os
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import redis

from tests.servers.api_client import ApiClient, wait_for_api
from tests.servers.ingress_process import IngressProcess
from tests.servers.ports import free_port_on
from tests.servers.redis_server import RedisServer
from tests.servers.wait import wait_until

TOKEN = "bench-token-" + "b" * 32
SENDER = "bench@example.test"
TARGETS = ("smtp", "api", "api_raw", "batch", "batch_raw")
Result = tuple[float, float, int]  # (start, end, messages accepted) of one client


def text_of(size: int) -> str:
    """ASCII text of ``size`` bytes in 76-character lines (7bit: no transfer encoding)."""
    line = ("mxfleet benchmark text " * 4)[:76] + "\n"
    return (line * (size // len(line) + 1))[:size]


def raw_of(size: int, rcpt: str) -> bytes:
    header = f"From: {SENDER}\r\nTo: {rcpt}\r\nSubject: bench\r\n\r\n".encode()
    return header + text_of(size).replace("\n", "\r\n").encode()[: max(0, size - len(header))]


def item(kind: str, size: int, n: int) -> dict[str, Any]:
    rcpt = f"r{n}@d{n % 10}.bench.test"
    if kind == "raw":
        body = base64.b64encode(raw_of(size, rcpt)).decode()
        return {"envelope": {"from": SENDER, "to": [rcpt]}, "raw": body}
    return {"from": SENDER, "to": [rcpt], "subject": "bench", "text": text_of(size)}


# --- the clients (each in a process of its own) ---------------------------------------


def smtp_client(port: int, size: int, count: int, go: Event, out: "Queue[Result]") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("bench.test")
        rcpts = [f"r{n}@d{n}.bench.test" for n in range(10)]
        messages = [(rcpt, raw_of(size, rcpt)) for rcpt in rcpts]
        go.wait()
        start, done = time.monotonic(), 0
        for n in range(count):
            rcpt, message = messages[n % 10]
            smtp.sendmail(SENDER, [rcpt], message)
            done += 1
        out.put((start, time.monotonic(), done))


def api_client(
    port: int, size: int, count: int, go: Event, out: "Queue[Result]", kind: str, batch: int
) -> None:
    with ApiClient(port, TOKEN, timeout=120) as api:
        if batch:
            items = [item(kind, size, n) for n in range(batch)]
            body, path = json.dumps({"messages": items}).encode(), "/v1/messages/batch"
        else:
            body, path = json.dumps(item(kind, size, os.getpid())).encode(), "/v1/messages"
        go.wait()
        start, done = time.monotonic(), 0
        while done < count:
            answer = api.request("POST", path, body)
            if batch:
                assert answer.status == 200, answer.body[:300]
                done += int(answer.json["accepted"])
            else:
                assert answer.status == 201, answer.body[:300]
                done += 1
        out.put((start, time.monotonic(), done))


# --- one measurement ----------------------------------------------------------------------


@dataclass
class Rig:
    redis: RedisServer
    ingress: IngressProcess
    api_port: int

    def cpu(self) -> float:
        """CPU seconds (user + system) of the ingress and its Redis so far."""
        total = 0.0
        for process in (self.ingress.process, self.redis.process):
            assert process is not None
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def reset(self) -> None:
        client = redis.Redis(port=self.redis.port)
        client.flushall()
        client.bgrewriteaof()
        wait_until(lambda: client.info("persistence")["aof_rewrite_in_progress"] == 0, 60)
        client.close()


def measure(
    rig: Rig, target: str, size: int, clients: int, messages: int, batch: int
) -> tuple[float, float]:
    """(msg/s, server CPU ms per message) of one target."""
    rig.reset()
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Event(), ctx.Queue()
    work: Callable[..., None]
    extra: tuple[object, ...]
    if target == "smtp":
        work, port, extra = smtp_client, rig.ingress.port, ()
    else:
        work, port = api_client, rig.api_port
        extra = (
            "raw" if target.endswith("raw") else "fields",
            batch if target.startswith("batch") else 0,
        )
    if target.startswith("batch"):
        clients = max(1, clients // 4)
    share = messages // clients
    procs = [
        ctx.Process(target=work, args=(port, size, share, go, out, *extra)) for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.5)  # the clients connect (and build their requests) before the start
    cpu = rig.cpu()
    go.set()
    results = [out.get(timeout=600) for _ in procs]
    used = rig.cpu() - cpu
    for proc in procs:
        proc.join(30)
        if proc.exitcode != 0:
            raise SystemExit(f"a {target} client failed (exit {proc.exitcode})")
    start, end = min(r[0] for r in results), max(r[1] for r in results)
    done = sum(r[2] for r in results)
    return done / (end - start), used * 1000 / done


# --- the run ------------------------------------------------------------------------------


def start_rig(workdir: Path) -> Rig:
    server = RedisServer(workdir / "redis").start()
    api_port = free_port_on(["127.0.0.1"])
    tokens = workdir / "tokens"
    tokens.write_text(f"bench:{TOKEN}\n")
    values = {
        "redis_url": server.url,
        "relay_networks": "127.0.0.0/8",
        "api_listen": f"127.0.0.1:{api_port}",
        "api_tokens_file": str(tokens),
        "api_allow_plaintext": "true",
        "max_sessions_per_ip": "1000",
    }
    ingress = IngressProcess(values, workdir / "ingress.log").start()
    wait_for_api(api_port)
    return Rig(server, ingress, api_port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="1024,20480")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--messages", type=int, default=3000, help="per measurement (1 KiB)")
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="mxfleet-bench-api-"))
    rig = start_rig(workdir)
    figures: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    try:
        for rep in range(args.reps):
            for size in sizes:
                count = args.messages if size <= 1024 else args.messages // 2
                order = TARGETS[rep % len(TARGETS) :] + TARGETS[: rep % len(TARGETS)]
                rates: dict[str, tuple[float, float]] = {}
                for target in order:
                    rates[target] = measure(rig, target, size, args.clients, count, args.batch)
                    rate, cpu = rates[target]
                    print(
                        f"rep={rep + 1} size={size} target={target} "
                        f"msg_s={rate:.0f} cpu_ms={cpu:.3f}",
                        file=sys.stderr,
                        flush=True,
                    )
                for target, (rate, cpu) in rates.items():
                    figures.setdefault((size, target), []).append(
                        (rate, cpu, rate / rates["smtp"][0])
                    )
    finally:
        rig.ingress.stop()
        rig.redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(figures, sizes, args)
    return 0


def print_table(
    figures: dict[tuple[int, str], list[tuple[float, float, float]]],
    sizes: list[int],
    args: argparse.Namespace,
) -> None:
    print(
        f"clients={args.clients} (batches: {max(1, args.clients // 4)}) batch={args.batch} "
        f"reps={args.reps} load={os.getloadavg()[0]:.1f} cpus={os.cpu_count()}"
    )
    print("| size | target | msg/s | cpu ms/msg | vs smtp |")
    print("|---|---|---|---|---|")
    for size in sizes:
        for target in TARGETS:
            rows = figures[(size, target)]
            rate = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[1] for r in rows)
            ratio = statistics.median(r[2] for r in rows)
            print(f"| {size // 1024} KiB | {target} | {rate:.0f} | {cpu:.2f} | {ratio:.2f}x |")


if __name__ == "__main__":
    sys.exit(main())
