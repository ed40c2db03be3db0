"""``ingress_processes = N``: N processes share the SMTP port and the session limits, and a
child that dies is replaced while the port keeps answering."""

import os
import signal
import smtplib
import subprocess
from contextlib import ExitStack

import pytest

from shared import replies
from tests.conftest import StartIngress
from tests.servers.httpprobe import metric, try_get
from tests.servers.ingress_process import IngressProcess
from tests.servers.ports import free_ports
from tests.servers.rawsmtp import Closed, RawSMTP
from tests.servers.smtpcheck import stored_ids, wire
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

PROCESSES = 2


def children(ingress: IngressProcess) -> set[int]:
    """The pids of the supervisor's children."""
    assert ingress.process is not None
    found = subprocess.run(
        ["pgrep", "-P", str(ingress.process.pid)], capture_output=True, text=True, check=False
    )
    return {int(pid) for pid in found.stdout.split()}


def metrics_ports(ingress: IngressProcess) -> list[int]:
    """Process *i* serves its metrics on the metrics port + *i*."""
    return [ingress.metrics_port + index for index in range(PROCESSES)]


def total(ingress: IngressProcess, name: str, **labels: str) -> float:
    return sum(metric(port, name, **labels) for port in metrics_ports(ingress))


def all_up(ingress: IngressProcess) -> bool:
    """Every child listens (SMTP and metrics) and has no session open."""
    if len(children(ingress)) != PROCESSES:
        return False
    if any(try_get(port, "/readyz") != (200, "ready\n") for port in metrics_ports(ingress)):
        return False
    return total(ingress, "mxfleet_ingress_active_sessions") == 0


@pytest.fixture
def node(start_ingress: StartIngress, spool: SpoolClient) -> IngressProcess:
    metrics_port = free_ports(PROCESSES)
    ingress = start_ingress(
        ingress_processes=PROCESSES,
        max_sessions_per_ip=3,
        metrics_listen=f"127.0.0.1:{metrics_port}",
    )
    ingress.metrics_port = metrics_port  # the one set above, not the fixture's default
    wait_until_all_up(ingress)
    return ingress


def wait_until_all_up(ingress: IngressProcess) -> None:
    try:
        wait_until(lambda: all_up(ingress), timeout=20)
    except AssertionError:
        state = {port: try_get(port, "/metrics") for port in metrics_ports(ingress)}
        pytest.fail(f"children {children(ingress)}; metrics {state}; log:\n{ingress.log()}")


def greeting(ingress: IngressProcess) -> tuple[int, str] | None:
    """The greeting a new session gets (the session is closed again)."""
    try:
        with RawSMTP(ingress.host, ingress.port) as smtp:
            return smtp.greeting
    except (Closed, OSError):
        return None


def send_one(ingress: IngressProcess, n: int) -> None:
    with smtplib.SMTP(ingress.host, ingress.port, timeout=10) as smtp:
        smtp.sendmail("s@example.test", [f"r{n}@dest.test"], b"Subject: %d\r\n\r\nx\r\n" % n)


def test_both_processes_accept_mail(node: IngressProcess, spool: SpoolClient) -> None:
    for n in range(20):
        send_one(node, n)
    assert len(stored_ids(spool)) == 20
    accepted = [
        metric(port, "mxfleet_ingress_messages_total", result="accepted")
        for port in metrics_ports(node)
    ]
    assert sum(accepted) == 20
    # The kernel spreads connections over both listeners (SO_REUSEPORT): with 20
    # connections, one process getting all of them has a probability of 2**-19.
    assert all(count > 0 for count in accepted), accepted


def test_per_ip_limit_holds_across_processes(node: IngressProcess, spool: SpoolClient) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(RawSMTP(node.host, node.port)) for _ in range(3)]
        assert [smtp.greeting for smtp in held if smtp.greeting and smtp.greeting[0] != 220] == []
        for _ in range(8):
            with RawSMTP(node.host, node.port) as extra:
                assert extra.greeting == wire(replies.TOO_MANY_SESSIONS_IP)
                assert extra.closed_by_peer()
        assert total(node, "mxfleet_ingress_sessions_refused_total", reason="ip_limit") == 8
        for smtp in held:  # the held sessions still work
            assert smtp.cmd("NOOP") == wire(replies.NOOP_OK)
        assert held[0].cmd("QUIT") == wire(replies.BYE)
        # One slot is free again, whichever process the next session lands on.
        wait_until(lambda: (greeting(node) or (0,))[0] == 220, timeout=10)


def test_a_killed_child_is_replaced(node: IngressProcess, spool: SpoolClient) -> None:
    before = children(node)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: "event=child_died" in node.log(), timeout=10)

    def replaced() -> set[int]:
        pids = children(node)
        return pids if len(pids) == PROCESSES and victim not in pids else set()

    after = wait_until(replaced, timeout=15)
    assert len(after & before) == PROCESSES - 1
    wait_until_all_up(node)
    for n in range(10):  # the port answered throughout and answers now
        send_one(node, n)
    assert len(stored_ids(spool)) == 10
    assert node.process is not None
    assert node.process.poll() is None


def test_sessions_of_killed_children_are_released(node: IngressProcess, spool: SpoolClient) -> None:
    # Three sessions hold the client's whole quota; then every child dies (as in an OOM
    # kill). The held sessions die with them, so the quota must come back.
    with ExitStack() as stack:
        held = [stack.enter_context(RawSMTP(node.host, node.port)) for _ in range(3)]
        assert all(smtp.greeting and smtp.greeting[0] == 220 for smtp in held)
        for pid in children(node):
            os.kill(pid, signal.SIGKILL)
        for smtp in held:
            assert smtp.closed_by_peer()
    wait_until_all_up(node)
    # Both children are new and idle; the client's quota of 3 must be whole again (a few
    # seconds of grace for a clean-up that would run after the restart).
    try:
        wait_until(lambda: quota_left(node) == 3, timeout=5)
    except AssertionError:
        pytest.fail(
            f"the client gets {quota_left(node)} of its 3 sessions after every child was "
            "killed and replaced: the dead children's sessions are still counted"
        )


def quota_left(ingress: IngressProcess) -> int:
    """How many sessions the client gets now, holding them all at once (up to 3)."""
    with ExitStack() as stack:
        sessions = [stack.enter_context(RawSMTP(ingress.host, ingress.port)) for _ in range(3)]
        return sum(1 for smtp in sessions if smtp.greeting and smtp.greeting[0] == 220)


def test_sigterm_stops_every_child(node: IngressProcess, spool: SpoolClient) -> None:
    pids = children(node)
    assert node.process is not None
    with RawSMTP(node.host, node.port) as idle:
        assert idle.cmd("EHLO client.test")[0] == 250
        node.signal(signal.SIGTERM)
        assert idle.reply() == wire(replies.SHUTTING_DOWN)
        assert idle.closed_by_peer()
    assert node.process.wait(timeout=20) == 0
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids), node.log()
    assert node.log().count("event=stopped") == PROCESSES
    assert "event=child_died" not in node.log()
