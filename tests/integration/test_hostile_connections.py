"""Hostile and greedy clients against a real ingress process (invariant 7: all is bounded).

A slowloris trickling one byte every 10 s, in the command phase and in DATA, is cut at its
deadline and its slot freed; 2,000 connections from one address are held to the per-address
limit while other addresses are served; running out of file descriptors neither kills nor
spins the node, and a listener lost to an accept error listens again; password guessing is
slowed and then refused for the whole cluster (counted in Redis); 1,000 idle sessions cost
little memory and still time out. Figures are printed (``pytest -s``).
"""

import asyncio
import base64
import functools
import os
import resource
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import pytest
import uvloop

from ingress.listener import Listener
from shared import replies
from shared.embedded import free_port
from shared.passwords import hash_password
from tests.conftest import StartIngress, StartRedis
from tests.servers.crowd import (
    connect,
    cpu_seconds,
    first_replies,
    raise_fd_limit,
    rss_kib,
    settled_fds,
)
from tests.servers.httpprobe import metric
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import queued_id, stored_ids, wire
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

MAIL = b"Subject: hostile\r\n\r\nsent while the node was under attack\r\n"
USER, PASSWORD = "alice", "correct horse battery staple"


def active_sessions(ingress: IngressProcess) -> float:
    return metric(ingress.metrics_port, "mxfleet_ingress_active_sessions")


def greeted(ingress: IngressProcess, source: str) -> bool:
    """True when a new connection from ``source`` gets the 220 banner."""
    with RawSMTP(ingress.host, ingress.port, source=source, read_greeting=False) as smtp:
        return smtp.reply()[0] == 220


# --- slowloris ------------------------------------------------------------------------------

TRICKLE_INTERVAL = 10.0  # seconds between two bytes: literally one byte every 10 s
TRICKLE_TIMEOUT = 12.0  # command_timeout and data_timeout of the node under attack


def trickle(smtp: RawSMTP, data: bytes) -> tuple[tuple[int, str], float, int]:
    """Send ``data`` one byte every TRICKLE_INTERVAL until the server speaks: its reply,
    the seconds since the first byte, and how many bytes went."""
    started = time.monotonic()
    smtp.sock.settimeout(TRICKLE_INTERVAL)
    for sent in range(1, len(data) + 1):
        smtp.send(data[sent - 1 : sent])
        try:
            return smtp.reply(), time.monotonic() - started, sent
        except TimeoutError:  # nothing within the interval: the next byte
            continue
    elapsed = time.monotonic() - started
    raise AssertionError(f"{data!r} trickled for {elapsed:.0f}s and the session is still open")


def command_trickler(ingress: IngressProcess, source: str) -> tuple[tuple[int, str], float, int]:
    with RawSMTP(ingress.host, ingress.port, source=source) as smtp:
        outcome = trickle(smtp, b"NOO")  # were the deadline moved, 30 s without a reply
        assert smtp.closed_by_peer()
    return outcome


def data_trickler(ingress: IngressProcess, source: str) -> tuple[tuple[int, str], float, int]:
    with RawSMTP(ingress.host, ingress.port, source=source) as smtp:
        assert smtp.cmd("EHLO slow.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("DATA") == wire(replies.START_DATA)
        outcome = trickle(smtp, b"Sub")
        assert smtp.closed_by_peer()
    return outcome


def test_a_byte_every_ten_seconds_is_cut_at_the_deadline_and_frees_the_slot(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(
        command_timeout=f"{TRICKLE_TIMEOUT}s",
        data_timeout=f"{TRICKLE_TIMEOUT}s",
        max_sessions_per_ip=1,
        relay_networks="127.0.0.11/32",
    )
    clients = {"command": ("127.0.0.10", command_trickler), "data": ("127.0.0.11", data_trickler)}
    with ThreadPoolExecutor(len(clients)) as pool:
        running = {
            phase: pool.submit(client, ingress, source)
            for phase, (source, client) in clients.items()
        }
        # While they trickle, each holds its address's only slot.
        for source, _ in clients.values():
            wait_until(lambda: active_sessions(ingress) == 2)
            assert not greeted(ingress, source)
        outcomes = {phase: future.result() for phase, future in running.items()}
    for phase, (reply, elapsed, sent) in outcomes.items():
        print(f"slowloris in {phase}: {sent} bytes, cut after {elapsed:.1f}s with {reply}")
        assert reply == wire(replies.TIMEOUT), phase
        # The byte sent at 10 s did not move the 12 s deadline (else: cut at 22 s or later).
        assert sent == 2, (phase, sent)
        assert TRICKLE_TIMEOUT - 1 <= elapsed < TRICKLE_TIMEOUT + 4, (phase, elapsed)
    assert stored_ids(spool) == set()
    for source, _ in clients.values():
        wait_until(functools.partial(greeted, ingress, source), timeout=5)
    wait_until(lambda: active_sessions(ingress) == 0)


# --- a flood of connections and file descriptors -------------------------------------------

FLOOD = 2000
FLOODER, BYSTANDER = "127.0.0.2", "127.0.0.3"


def start_with_low_soft_fd_limit(start: Callable[[], IngressProcess], soft: int) -> IngressProcess:
    """Start an ingress that inherits a soft RLIMIT_NOFILE of ``soft`` (a common default)."""
    ours = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, ours[1]), ours[1]))
    try:
        return start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, ours)


def test_two_thousand_connections_from_one_address(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    raise_fd_limit(FLOOD + 500)
    ingress = start_with_low_soft_fd_limit(
        lambda: start_ingress(max_sessions_per_ip=100, relay_networks=f"{BYSTANDER}/32"), 1024
    )
    assert ingress.process is not None
    pid = ingress.process.pid
    # The node raised its own soft limit to the hard one, and said so.
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    assert soft == hard, (soft, hard)
    assert f"event=fd_limit soft={soft} hard={hard}" in ingress.log()

    started = time.monotonic()
    flood = [connect(ingress.host, ingress.port, FLOODER) for _ in range(FLOOD)]
    try:
        answers = [reply for reply, _ in first_replies(flood, timeout=120)]
        took = time.monotonic() - started
        print(f"{FLOOD} connections from one address opened and answered in {took:.2f}s")
        welcome = [
            sock
            for sock, reply in zip(flood, answers, strict=True)
            if reply == (220, "mx.test ESMTP mxfleet")
        ]
        refused = [
            sock
            for sock, reply in zip(flood, answers, strict=True)
            if reply == wire(replies.TOO_MANY_SESSIONS_IP)
        ]
        assert (len(welcome), len(refused)) == (100, FLOOD - 100), sorted(set(map(str, answers)))
        # Every refused connection is closed by the node; the welcome ones are served.
        assert all(reply is None for reply, _ in first_replies(refused, timeout=30))
        for sock in welcome:
            sock.sendall(b"NOOP\r\n")
        assert {reply for reply, _ in first_replies(welcome, timeout=30)} == {wire(replies.NOOP_OK)}
        # With all of them still open, another address is greeted and its mail accepted.
        with RawSMTP(ingress.host, ingress.port, source=BYSTANDER) as smtp:
            assert smtp.greeting is not None
            assert smtp.greeting[0] == 220
            code, text = smtp.transaction("s@example.test", ["r@dest.test"], MAIL)
        assert code == 250, text
        assert stored_ids(spool) == {queued_id(text)}
    finally:
        for sock in flood:
            sock.close()
    assert ingress.process.poll() is None
    wait_until(lambda: active_sessions(ingress) == 0)
    # The per-address count is back to zero: the whole allowance again, and no more.
    again = [connect(ingress.host, ingress.port, FLOODER) for _ in range(101)]
    try:
        answers = [reply for reply, _ in first_replies(again, timeout=30)]
        assert answers.count((220, "mx.test ESMTP mxfleet")) == 100
        assert answers.count(wire(replies.TOO_MANY_SESSIONS_IP)) == 1
    finally:
        for sock in again:
            sock.close()


def test_out_of_file_descriptors_the_node_neither_crashes_nor_spins(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(max_sessions_per_ip=1000)
    assert ingress.process is not None
    pid = ingress.process.pid
    limits = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    room = 10
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (settled_fds(pid) + room, limits[1]))
    socks: list[socket.socket] = []
    try:
        socks = [connect(ingress.host, ingress.port, "127.0.0.4") for _ in range(100)]
        answers = [reply for reply, _ in first_replies(socks, timeout=30)]
        served = [sock for sock, reply in zip(socks, answers, strict=True) if reply is not None]
        # Those it had descriptors for are greeted; the rest are closed unanswered.
        assert 0 < len(served) <= room
        assert answers.count(None) == len(socks) - len(served)
        assert {reply for reply in answers if reply is not None} == {(220, "mx.test ESMTP mxfleet")}
        # Clients keep coming (one every 10 ms for a second) while no descriptor is free:
        # the node drops them and idles (spinning on accept() would burn the whole second).
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        for _ in range(100):
            with connect(ingress.host, ingress.port, "127.0.0.5") as late:
                ((reply, _),) = first_replies([late], timeout=10)
            assert reply is None
            time.sleep(0.01)
        spent, took = cpu_seconds(pid) - cpu_before, time.monotonic() - started
        print(f"out of descriptors: 100 connections dropped in {took:.2f}s for {spent:.2f}s CPU")
        assert spent < 0.25 * took, (spent, took)
        assert ingress.process.poll() is None
        for sock in served:
            sock.sendall(b"NOOP\r\n")
        assert {reply for reply, _ in first_replies(served, timeout=10)} == {wire(replies.NOOP_OK)}
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, limits)
        for sock in socks:
            sock.close()
    serves_again(ingress)


class _Banner(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        tcp = cast(asyncio.Transport, transport)
        tcp.write(b"220 ok\r\n")
        tcp.close()


async def _lose_and_regain(listener: Listener, port: int) -> None:
    await listener.start()
    watch = asyncio.get_running_loop().create_task(listener.watch(interval=0.05))
    try:
        # shutdown() makes the listening socket fail every accept() (EINVAL), as an accept
        # error the loop cannot get past would; uvloop then closes the listener for good.
        (sock,) = listener.sockets
        with socket.socket(fileno=os.dup(sock.fileno())) as twin:
            twin.shutdown(socket.SHUT_RD)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if listener.sockets not in ((), (sock,)) and listener.alive():
                break
        assert listener.sockets not in ((), (sock,)), "the lost socket was not replaced"
        assert listener.listening
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readline() == b"220 ok\r\n"
        writer.close()
    finally:
        listener.close()
        watch.cancel()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_listener_lost_to_an_accept_error_listens_again(loop: str) -> None:
    port = free_port()
    listener = Listener(_Banner, "127.0.0.1", port)
    if loop == "uvloop":
        uvloop.run(_lose_and_regain(listener, port))
    else:
        asyncio.run(_lose_and_regain(listener, port))


# --- password guessing --------------------------------------------------------------------

GUESSER, HONEST = "127.0.0.2", "127.0.0.3"
GUESSES = 4  # max_auth_failures_per_ip of the nodes under attack
DELAY = 0.25  # their auth_failure_delay: the n-th failure costs n x 0.25 s (up to 5)


def plain(user: str, password: str) -> str:
    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


@pytest.fixture
def auth_nodes(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> tuple[IngressProcess, IngressProcess]:
    """Two ingress nodes sharing one Redis, AUTH without TLS (auth_require_tls = false)."""
    credentials = tmp_path / "credentials"
    credentials.write_text(f"{USER}:{hash_password(PASSWORD, ln=10)}\n")
    settings = {
        "auth_file": credentials,
        "auth_require_tls": "false",
        "max_auth_failures": 10,  # one session may try them all
        "max_auth_failures_per_ip": GUESSES,
        "auth_failure_delay": f"{DELAY}s",
        "auth_failure_window": "4s",
    }
    return start_ingress(**settings), start_ingress(**settings)


def auth(node: IngressProcess, source: str, password: str) -> tuple[int, str]:
    """The reply to AUTH PLAIN in a new session from ``source``."""
    with RawSMTP(node.host, node.port, source=source) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        return smtp.cmd(f"AUTH PLAIN {plain(USER, password)}")


def test_auth_guessing_is_slowed_then_refused_across_the_cluster(
    auth_nodes: tuple[IngressProcess, IngressProcess], spool: SpoolClient
) -> None:
    first, second = auth_nodes
    took = []
    with RawSMTP(first.host, first.port, source=GUESSER) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for guess in range(GUESSES):
            started = time.monotonic()
            reply = smtp.cmd(f"AUTH PLAIN {plain(USER, f'guess {guess}')}")
            took.append(time.monotonic() - started)
            assert reply == wire(replies.AUTH_FAILED)
        # Over the limit: the right password is refused too, at once.
        started = time.monotonic()
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_LOCKED)
        refused_in = time.monotonic() - started
        assert smtp.cmd("AUTH LOGIN") == wire(replies.AUTH_LOCKED)  # no 334: nothing asked
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
    print("AUTH failure replies took " + ", ".join(f"{t:.2f}s" for t in took))
    print(f"AUTH over the limit refused in {refused_in:.3f}s")
    assert took[0] >= DELAY
    assert took[-1] >= GUESSES * DELAY
    assert took[-1] > took[0] + (GUESSES - 1) * DELAY * 0.8
    assert refused_in < took[0]
    # New sessions, on this node and on another one sharing the Redis: still refused.
    for node in (first, second):
        assert auth(node, GUESSER, PASSWORD) == wire(replies.AUTH_LOCKED)
    # Another address authenticates on the other node and relays; that frees no one else.
    with RawSMTP(second.host, second.port, source=HONEST) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_OK)
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MAIL, ehlo=False)
    assert code == 250, text
    assert auth(second, GUESSER, PASSWORD) == wire(replies.AUTH_LOCKED)
    key = f"mxf:authfail:{GUESSER}"
    assert spool.get(key) == str(GUESSES).encode()  # refusals are not failures
    assert 0 < spool.pttl(key) <= 4000
    assert spool.get(f"mxf:authfail:{HONEST}") is None
    refused = "mxfleet_ingress_auth_refused_total"
    assert metric(first.metrics_port, refused, reason="locked") == 3
    assert metric(second.metrics_port, refused, reason="locked") == 2
    # A window after the last failure, the address may try again.
    wait_until(lambda: not spool.exists(key), timeout=10)
    assert auth(first, GUESSER, PASSWORD) == wire(replies.AUTH_OK)


def test_auth_fails_closed_when_redis_is_unreachable(
    start_ingress: StartIngress, start_redis: StartRedis, tmp_path: Path
) -> None:
    redis = start_redis()
    credentials = tmp_path / "credentials"
    credentials.write_text(f"{USER}:{hash_password(PASSWORD, ln=10)}\n")
    ingress = start_ingress(redis_url=redis.url, auth_file=credentials, auth_require_tls="false")
    with RawSMTP(ingress.host, ingress.port, source=GUESSER) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        redis.stop()
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_TEMPFAIL)
        assert smtp.cmd("AUTH LOGIN") == wire(replies.AUTH_TEMPFAIL)
        # The session goes on, unauthenticated.
        assert smtp.cmd("NOOP") == wire(replies.NOOP_OK)
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
    assert ingress.process is not None
    assert ingress.process.poll() is None
    refused = metric(
        ingress.metrics_port, "mxfleet_ingress_auth_refused_total", reason="unavailable"
    )
    assert refused == 2


# --- many idle sessions -------------------------------------------------------------------

IDLE = 1000
IDLE_SOURCES = [f"127.0.0.{n}" for n in range(20, 30)]  # 100 each: the default per-address cap
IDLE_TIMEOUT = 8.0
KIB_PER_SESSION = 16  # the bound; ~1.6 KiB measured (uvloop, Python 3.11)


def test_a_thousand_idle_sessions_cost_bounded_memory_and_still_time_out(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    raise_fd_limit(IDLE + 500)
    ingress = start_ingress(command_timeout=f"{IDLE_TIMEOUT}s")
    assert ingress.process is not None
    pid = ingress.process.pid
    for source in IDLE_SOURCES:  # warm up: whatever a first session builds lazily
        with RawSMTP(ingress.host, ingress.port, source=source) as smtp:
            assert smtp.cmd("NOOP") == wire(replies.NOOP_OK)
    wait_until(lambda: active_sessions(ingress) == 0)
    before = rss_kib(pid)
    started = time.monotonic()
    idle = [connect(ingress.host, ingress.port, IDLE_SOURCES[n % 10]) for n in range(IDLE)]
    try:
        greetings = first_replies(idle, timeout=60)
        assert {reply for reply, _ in greetings} == {(220, "mx.test ESMTP mxfleet")}
        opened = time.monotonic() - started
        with_sessions = rss_kib(pid)
        assert active_sessions(ingress) == IDLE
        per_session = (with_sessions - before) / IDLE
        print(
            f"{IDLE} idle sessions opened in {opened:.2f}s; ingress RSS {before} KiB before, "
            f"{with_sessions} KiB with them: {per_session:.1f} KiB per session"
        )
        assert opened < IDLE_TIMEOUT, "too slow to measure before the idle timeout"
        assert per_session < KIB_PER_SESSION
        # The idle timeout holds with a thousand open: each is told 421 4.4.2 at its deadline.
        timeouts = first_replies(idle, timeout=IDLE_TIMEOUT + 30)
        assert {reply for reply, _ in timeouts} == {wire(replies.TIMEOUT)}
        came = sorted(at for _, at in timeouts)
        print(f"idle timeouts came {came[0] - started:.1f}-{came[-1] - started:.1f}s after start")
        assert came[0] - started >= IDLE_TIMEOUT - 0.1
        assert came[-1] - started < opened + IDLE_TIMEOUT + 5
    finally:
        for sock in idle:
            sock.close()
    serves_again(ingress)


def serves_again(ingress: IngressProcess) -> None:
    """Every session is gone from the node's table and a new client gets its message in."""
    wait_until(lambda: active_sessions(ingress) == 0)
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MAIL)
    assert code == 250, text
