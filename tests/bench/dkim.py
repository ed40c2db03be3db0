"""dkim.py - what DKIM signing costs the ingress.

Usage: .venv/bin/python -m tests.bench.dkim [--messages 3000] [--clients 4] [--reps 3]

1. ``sign``: CPU per message of shared/dkim_sign.py's ``Signer.sign`` (RSA 2048, Ed25519,
   both) for bodies of 1 KiB to 1 MiB (base64 lines, and prose with double spaces that
   relaxed canonicalisation rewrites), against dkimpy's own ``dkim.sign`` (RSA, relaxed).
2. ``stall``: the longest the event loop waited while ``IngressSigner.signatures`` signed 20
   messages of each size with both keys (inline below 64 KiB, in the default executor at
   and above), measured by a task that yields in a loop.
3. ``ingress``: one ingress process with its own redis-server (AOF everysec), 1 KiB
   messages over ``--clients`` SMTP connections (client processes), without keys and with
   an RSA 2048 key for the sender's domain, in turn per repetition: msg/s and the CPU time
   of the ingress process per message (median over repetitions).

Loopback only; nothing is delivered.
"""

import argparse
import asyncio
import multiprocessing
import os
import smtplib
import statistics
import tempfile
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ingress.dkim_sign import IngressSigner
from shared.dkim_keys import DkimKey, KeyRing
from tests.servers.dkim_records import pem, write_key
from tests.servers.ingress_process import IngressProcess
from tests.servers.redis_server import RedisServer

HEADER = (
    b"From: News <news@example.com>\r\nTo: r@dest.test\r\nSubject: Weekly news\r\n"
    b"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\nMessage-ID: <n1@example.com>\r\n"
    b"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n"
)
SIZES = (1024, 10 * 1024, 100 * 1024, 1024 * 1024)


def body(size: int, kind: str) -> bytes:
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3\r\n"
    if kind == "prose":
        line = b"Dear reader,  this is a line of prose with two spaces after stops.\r\n"
    return HEADER + line * (size // len(line) + 1)


def cpu_ms(function: object, repeat: int) -> float:
    assert callable(function)
    start = time.process_time()
    for _ in range(repeat):
        function()
    return (time.process_time() - start) / repeat * 1000


def bench_sign() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rings = {
        "rsa": KeyRing([DkimKey("example.com", "r", rsa_key, Path("r"))]),
        "ed25519": KeyRing([DkimKey("example.com", "e", ed_key, Path("e"))]),
        "both": KeyRing(
            [
                DkimKey("example.com", "r", rsa_key, Path("r")),
                DkimKey("example.com", "e", ed_key, Path("e")),
            ]
        ),
    }
    print("| body | kind | rsa ms | ed25519 ms | both ms | dkimpy rsa ms |")
    print("|---|---|---|---|---|---|")
    for size in SIZES:
        for kind in ("base64", "prose"):
            message = body(size, kind)
            repeat = max(3, 300 * 1024 // size)
            figures = [
                cpu_ms(lambda r=ring, m=message: IngressSigner(r).sign(m, None), repeat)
                for ring in rings.values()
            ]
            theirs = cpu_ms(
                lambda m=message: dkim.sign(
                    m,
                    b"r",
                    b"example.com",
                    pem(rsa_key),
                    canonicalize=(b"relaxed", b"relaxed"),
                ),
                max(3, repeat // 10),
            )
            cells = " | ".join(f"{figure:.2f}" for figure in [*figures, theirs])
            print(f"| {size // 1024} KiB | {kind} | {cells} |")


async def stall(signer: IngressSigner, message: bytes) -> float:
    loop = asyncio.get_running_loop()
    worst, running = 0.0, True

    async def ticker() -> None:
        nonlocal worst
        last = loop.time()
        while running:
            await asyncio.sleep(0)
            now = loop.time()
            worst, last = max(worst, now - last), now

    await signer.signatures(message, None, "BENCH")  # warm: first-use imports and caches
    task = loop.create_task(ticker())
    await asyncio.sleep(0.01)
    for _ in range(20):
        await signer.signatures(message, None, "BENCH")
        await asyncio.sleep(0)  # as between two sessions' messages
    running = False
    await task
    return worst * 1000


def bench_stall() -> None:
    ring = KeyRing(
        [
            DkimKey(
                "example.com",
                "r",
                rsa.generate_private_key(public_exponent=65537, key_size=2048),
                Path("r"),
            ),
            DkimKey("example.com", "e", ed25519.Ed25519PrivateKey.generate(), Path("e")),
        ]
    )
    print("\n| body | kind | longest loop stall ms |")
    print("|---|---|---|")
    for size in SIZES:
        for kind in ("base64", "prose"):
            worst = asyncio.run(stall(IngressSigner(ring), body(size, kind)))
            print(f"| {size // 1024} KiB | {kind} | {worst:.2f} |")


def client(port: int, count: int) -> None:
    message = body(1024, "base64")
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        for n in range(count):
            smtp.sendmail("bounce@example.com", [f"r{n}@dest.test"], message)


def process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_ingress(
    work: Path, redis: RedisServer, keys: Path | None, messages: int, clients: int
) -> tuple[float, float]:
    settings = {"redis_url": redis.url, "relay_networks": "127.0.0.1/32"}
    if keys is not None:
        settings["dkim_keys_dir"] = str(keys)
    ingress = IngressProcess(settings, work / "ingress.log").start()
    try:
        redis.client().flushall()
        assert ingress.process is not None
        pid = ingress.process.pid
        cpu, start = process_cpu(pid), time.perf_counter()
        procs = [
            multiprocessing.Process(target=client, args=(ingress.port, messages // clients))
            for _ in range(clients)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
            assert proc.exitcode == 0
        wall, used = time.perf_counter() - start, process_cpu(pid) - cpu
        sent = messages // clients * clients
        return sent / wall, used / sent * 1000
    finally:
        ingress.stop(timeout=10)


def bench_ingress(messages: int, clients: int, reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        keys = work / "dkim"
        keys.mkdir()
        write_key(
            keys,
            "s1",
            "example.com",
            rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        redis = RedisServer(work / "redis").start()
        try:
            results: dict[str, list[tuple[float, float]]] = {"off": [], "rsa 2048": []}
            for rep in range(reps):
                order = list(results) if rep % 2 == 0 else list(reversed(results))
                for name in order:
                    directory = keys if name != "off" else None
                    results[name].append(run_ingress(work, redis, directory, messages, clients))
        finally:
            redis.stop()
    print("\n| ingress, 1 KiB | msg/s | ingress CPU ms/msg |")
    print("|---|---|---|")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cost = statistics.median(c for _, c in runs)
        print(f"| DKIM {name} | {rate:.0f} | {cost:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    bench_sign()
    bench_stall()
    bench_ingress(args.messages, args.clients, args.reps)


if __name__ == "__main__":
    main()
