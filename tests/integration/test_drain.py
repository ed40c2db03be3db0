"""Graceful shutdown: SIGTERM drains (idle sessions get 421, DATA in progress finishes), and
a 250 survives even a SIGKILL of the ingress right after it (invariant 1)."""

import base64
import signal
import socket
import subprocess
import time
from pathlib import Path

from shared import replies
from shared.passwords import hash_password
from tests.conftest import StartIngress
from tests.servers.httpprobe import try_get
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import Closed, RawSMTP
from tests.servers.smtpcheck import body, envelope, queued_id, spool_keys, stored_ids, wire
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until


def process_of(ingress: IngressProcess) -> "subprocess.Popen[bytes]":
    assert ingress.process is not None
    return ingress.process


def in_data(ingress: IngressProcess, first_part: bytes) -> RawSMTP:
    """A session that is inside DATA and has sent ``first_part`` of the message."""
    smtp = RawSMTP(ingress.host, ingress.port, timeout=20)
    assert smtp.cmd("EHLO client.test")[0] == 250
    assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
    assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
    assert smtp.cmd("DATA") == wire(replies.START_DATA)
    smtp.send(first_part)
    return smtp


def draining(ingress: IngressProcess) -> bool:
    answer = try_get(ingress.metrics_port, "/readyz")
    return answer is not None and answer == (503, "draining\n")


def refuses_new_sessions(ingress: IngressProcess) -> bool:
    """A new connection is refused, reset, closed, or greeted 421: never served."""
    try:
        with socket.create_connection((ingress.host, ingress.port), timeout=5) as sock:
            greeting = sock.recv(1024)
    except TimeoutError:
        return False  # connected, and nobody said anything
    except OSError:
        return True
    return greeting == b"" or greeting.startswith(b"421")


def test_sigterm_tells_idle_sessions_421_and_exits(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(drain_timeout="5s")
    with RawSMTP(ingress.host, ingress.port) as idle, RawSMTP(ingress.host, ingress.port) as fresh:
        assert idle.cmd("EHLO client.test")[0] == 250
        assert idle.cmd("MAIL FROM:<s@example.test>")[0] == 250  # a transaction, but no DATA
        ingress.signal(signal.SIGTERM)
        started = time.monotonic()
        assert idle.reply() == wire(replies.SHUTTING_DOWN)
        assert idle.closed_by_peer()
        assert fresh.reply() == wire(replies.SHUTTING_DOWN)  # greeted, never said a word
        assert fresh.closed_by_peer()
    assert process_of(ingress).wait(timeout=5) == 0
    assert time.monotonic() - started < 5, "did not exit within drain_timeout"
    assert "event=stopped left=0" in ingress.log()
    assert spool_keys(spool) == []


def test_data_in_progress_finishes_after_sigterm(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(drain_timeout="20s")
    smtp = in_data(ingress, b"Subject: drain\r\n\r\nfirst half\r\n")
    with smtp, RawSMTP(ingress.host, ingress.port) as idle:
        assert idle.cmd("EHLO client.test")[0] == 250
        ingress.signal(signal.SIGTERM)
        assert idle.reply() == wire(replies.SHUTTING_DOWN)
        wait_until(lambda: draining(ingress), timeout=10)
        # New clients are turned away while the DATA session is still going.
        assert refuses_new_sessions(ingress)
        assert process_of(ingress).poll() is None, "exited with a DATA in progress"
        smtp.send(b"second half\r\n.\r\n")
        code, text = smtp.reply()
        assert code == 250, text
        msg_id = queued_id(text)
        assert smtp.reply() == wire(replies.SHUTTING_DOWN)
        assert smtp.closed_by_peer()
    stored = body(spool, msg_id)
    assert b"\r\nSubject: drain\r\n" in stored
    assert stored.endswith(b"\r\n\r\nfirst half\r\nsecond half\r\n")
    assert envelope(spool, msg_id)["rcpts"] == "1"
    assert process_of(ingress).wait(timeout=10) == 0


def test_drain_timeout_bounds_a_stalled_data(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(drain_timeout="2s")
    with in_data(ingress, b"Subject: stalled\r\n\r\nand then nothing") as smtp:
        ingress.signal(signal.SIGTERM)
        started = time.monotonic()
        assert process_of(ingress).wait(timeout=15) == 0
        elapsed = time.monotonic() - started
        assert smtp.closed_by_peer()
    assert elapsed >= 1.5, f"exited after {elapsed:.1f}s, before drain_timeout"
    assert "event=stopped left=1" in ingress.log()
    assert spool_keys(spool) == []  # the unfinished message was never accepted


def test_new_connections_after_sigterm_are_not_served(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(drain_timeout="20s")
    with in_data(ingress, b"Subject: keeps the node draining\r\n\r\n") as smtp:
        ingress.signal(signal.SIGTERM)
        wait_until(lambda: draining(ingress), timeout=10)
        for _ in range(5):
            assert refuses_new_sessions(ingress)
        smtp.send(b".\r\n")
        assert smtp.reply()[0] == 250
    assert process_of(ingress).wait(timeout=10) == 0
    assert len(stored_ids(spool)) == 1


def test_sigkill_right_after_250_keeps_the_message(
    ingress: IngressProcess, spool: SpoolClient
) -> None:
    ids = []
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for n in range(10):
            message = b"Subject: %d\r\n\r\nmessage %d\r\n" % (n, n)
            code, text = smtp.transaction(
                "s@example.test", [f"r{n}@dest.test"], message, ehlo=False
            )
            assert code == 250, text
            ids.append(queued_id(text))
        ingress.kill()  # SIGKILL at once: no drain, no chance to write anything more
    assert process_of(ingress).returncode == -signal.SIGKILL
    assert stored_ids(spool) == set(ids)
    for n, msg_id in enumerate(ids):
        assert body(spool, msg_id).endswith(b"\r\nmessage %d\r\n" % n)
        assert envelope(spool, msg_id)["jobs_left"] == "1"
        assert spool.zscore("mxf:sched:dest.test", msg_id) is not None


def test_a_session_busy_at_sigterm_is_told_421_once_idle(
    start_ingress: StartIngress, spool: SpoolClient, tmp_path: Path
) -> None:
    # A session that is checking credentials when SIGTERM comes is not idle yet; once the
    # check is answered it is idle like any other and must get its 421 then, not wait for
    # drain_timeout to cut it off.
    credentials = tmp_path / "credentials"
    credentials.write_text(f"alice:{hash_password('secret', ln=10)}\n")
    ingress = start_ingress(drain_timeout="6s", auth_file=credentials, auth_require_tls="false")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        smtp.send(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n")
        # auth_failed is logged before the one-second penalty: the session is busy now.
        wait_until(lambda: "event=auth_failed" in ingress.log(), timeout=10)
        ingress.signal(signal.SIGTERM)
        started = time.monotonic()
        assert smtp.reply() == wire(replies.AUTH_FAILED)
        try:
            after = smtp.reply()
        except Closed:
            after = None
        waited = time.monotonic() - started
    assert after == wire(replies.SHUTTING_DOWN), (
        f"after its AUTH reply the session got {after} {waited:.1f}s after SIGTERM "
        f"(drain_timeout 6s); log:\n{ingress.log()}"
    )
    assert waited < 4
    assert process_of(ingress).wait(timeout=10) == 0
