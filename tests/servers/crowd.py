"""Crowds of raw client connections, and what a server process spends on them (/proc).

A test opens hundreds or thousands of sockets with :func:`connect`, then reads the first
reply of all of them at once with :func:`first_replies` (one selector, no thread each).
"""

import os
import resource
import selectors
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

# The first reply line of a connection as (code, text after the code), or None when the
# server closed it without one; and the time.monotonic() it came at.
Answer = tuple[tuple[int, str] | None, float]


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (skip the test when that is
    below ``needed``); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 16
    if wanted < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} this test needs")
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return wanted


def connect(host: str, port: int, source: str, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))


def first_replies(socks: Sequence[socket.socket], timeout: float) -> list[Answer]:
    """The next reply line of every socket, read concurrently (what follows it is dropped);
    AssertionError when some socket says nothing within ``timeout``."""
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    for sock in socks:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, sock)
        pending[sock] = b""
    answers: dict[socket.socket, Answer] = {}
    deadline = time.monotonic() + timeout
    try:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{len(pending)} of {len(socks)} sockets silent {timeout}s")
            for key, _ in selector.select(remaining):
                ready: socket.socket = key.data
                answer = _read(ready, pending)
                if answer is not None:
                    answers[ready] = answer
                    del pending[ready]
                    selector.unregister(ready)
    finally:
        selector.close()
        for sock in socks:
            sock.settimeout(10.0)
    return [answers[sock] for sock in socks]


def _read(sock: socket.socket, pending: dict[socket.socket, bytes]) -> Answer | None:
    try:
        chunk = sock.recv(4096)
    except BlockingIOError:
        return None
    except ConnectionError:
        chunk = b""
    buf = pending[sock] + chunk
    pending[sock] = buf
    if b"\r\n" in buf:
        line = buf.split(b"\r\n", 1)[0]
        return (int(line[:3]), line[4:].decode("utf-8", "replace")), time.monotonic()
    if not chunk:  # closed without a (whole) reply
        return None, time.monotonic()
    return None  # more to come


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc/*/stat (PPid is the 4th field)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def family(pid: int) -> list[int]:
    """``pid`` and all its descendants (an ingress node's forked processes)."""
    tree = _children()
    pids = [pid]
    for parent in pids:
        pids.extend(tree.get(parent, []))
    return pids


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants, in KiB (VmRSS of each)."""
    total = 0
    for member in family(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def cpu_seconds(pid: int) -> float:
    """User and system CPU time ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int, quiet: float = 0.3, timeout: float = 10.0) -> int:
    """Descriptors ``pid`` holds once the count has not moved for ``quiet`` seconds.

    A connection that just ended (the start-up probe's session, a metrics request) keeps
    its descriptor until the node's loop gets to closing it.
    """
    deadline = time.monotonic() + timeout
    count = open_fds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = open_fds(pid)
        if now == count:
            return count
        count = now
    raise AssertionError(f"the descriptors of {pid} did not settle in {timeout}s")
