"""Every limit holds and answers with the right reply (invariant 7)."""

import socket
import time

from shared import replies
from shared.replies import Reply
from tests.conftest import StartIngress
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import spool_keys
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until


def reply_of(reply: Reply) -> tuple[int, str]:
    return reply.code, f"{reply.status} {reply.text}" if reply.status else reply.text


def test_size_is_advertised_and_refused_at_mail(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(max_message_size="10KiB")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert "SIZE 10240" in smtp.cmd("EHLO c.test")[1].splitlines()
        assert smtp.cmd("MAIL FROM:<s@example.test> SIZE=10241") == reply_of(
            replies.MESSAGE_TOO_BIG
        )
        assert smtp.cmd("MAIL FROM:<s@example.test> SIZE=10240")[0] == 250


def test_size_is_enforced_in_data_without_buffering(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(max_message_size="10KiB")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO c.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        line = b"x" * 998 + b"\r\n"
        for _ in range(2000):  # 2 MB against a 10 KiB limit
            smtp.send(line)
        assert smtp.cmd(b".") == reply_of(replies.MESSAGE_TOO_BIG)
        # The session goes on: the next transaction works.
        code, _ = smtp.transaction("s@example.test", ["r@dest.test"], b"small", ehlo=False)
        assert code == 250
    assert len(spool.keys("mxf:body:*")) == 1


def test_too_many_recipients(start_ingress: StartIngress, spool: SpoolClient) -> None:
    ingress = start_ingress(max_recipients=100)
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO c.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        for n in range(100):
            assert smtp.cmd(f"RCPT TO:<r{n}@dest.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r100@dest.test>") == reply_of(replies.TOO_MANY_RECIPIENTS)
        assert smtp.cmd("DATA")[0] == 354
        code, text = smtp.cmd(b"x\r\n.")
    assert code == 250
    assert spool.scard(f"mxf:rcpt:{text.rsplit(' ', 1)[1]}:dest.test") == 100


def test_sessions_per_ip_are_capped_while_others_are_served(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(max_sessions_per_ip=3)
    held = [RawSMTP(ingress.host, ingress.port, source="127.0.0.3") for _ in range(3)]
    try:
        for _ in range(3):
            with RawSMTP(
                ingress.host, ingress.port, source="127.0.0.3", read_greeting=False
            ) as extra:
                assert extra.reply() == reply_of(replies.TOO_MANY_SESSIONS_IP)
                assert extra.closed_by_peer()
        with RawSMTP(ingress.host, ingress.port, source="127.0.0.4") as other:
            assert other.cmd("NOOP")[0] == 250
    finally:
        for smtp in held:
            smtp.close()

    # Slots are given back when sessions end.
    def fresh_session_ok() -> bool:
        with RawSMTP(ingress.host, ingress.port, source="127.0.0.3", read_greeting=False) as again:
            return again.reply()[0] == 220

    wait_until(fresh_session_ok, timeout=10)


def test_sessions_per_node_are_capped(start_ingress: StartIngress, spool: SpoolClient) -> None:
    ingress = start_ingress(max_sessions=2)
    held = [RawSMTP(ingress.host, ingress.port, source=f"127.0.0.{n}") for n in (5, 6)]
    try:
        with RawSMTP(ingress.host, ingress.port, source="127.0.0.7", read_greeting=False) as extra:
            assert extra.reply() == reply_of(replies.TOO_MANY_SESSIONS)
    finally:
        for smtp in held:
            smtp.close()


def test_overlong_command_line(ingress: IngressProcess) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd(b"NOOP " + b"x" * 5000) == reply_of(replies.LINE_TOO_LONG)
        assert smtp.cmd("NOOP")[0] == 250  # the rest of the long line was skipped


def test_overlong_data_line(start_ingress: StartIngress, spool: SpoolClient) -> None:
    ingress = start_ingress(max_line_length=1000)
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], b"a" * 999 + b"\r\n")
    assert (code, text) == reply_of(replies.LINE_TOO_LONG_DATA)
    assert spool_keys(spool) == []


def test_bad_commands_end_the_session(start_ingress: StartIngress) -> None:
    ingress = start_ingress(max_bad_commands=3)
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("FOO") == reply_of(replies.UNKNOWN_COMMAND)
        assert smtp.cmd("MAIL FROM:<<<")[0] == 503  # sequence errors don't count
        assert smtp.cmd("BAR")[0] == 500
        assert smtp.cmd("BAZ") == reply_of(replies.TOO_MANY_ERRORS)
        assert smtp.closed_by_peer()


def test_idle_client_times_out(start_ingress: StartIngress) -> None:
    ingress = start_ingress(command_timeout="1s")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        started = time.monotonic()
        assert smtp.reply() == reply_of(replies.TIMEOUT)
        assert smtp.closed_by_peer()
        assert time.monotonic() - started < 5


def test_trickling_client_does_not_extend_its_deadline(start_ingress: StartIngress) -> None:
    """Slowloris: a byte every 0.3 s keeps the socket busy but the command never ends."""
    ingress = start_ingress(command_timeout="1500ms")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        started = time.monotonic()
        smtp.sock.settimeout(0.3)
        closed = False
        while time.monotonic() - started < 8:
            try:
                smtp.send(b"N")
            except OSError:
                closed = True
                break
            try:
                data = smtp.sock.recv(1024)
            except TimeoutError:
                continue
            assert data.startswith(b"421 4.4.2") or data == b""
            closed = True
            break
        assert closed
        assert time.monotonic() - started < 6


def test_slow_data_times_out_and_frees_the_slot(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(data_timeout="1s", max_sessions_per_ip=1, relay_networks="127.0.0.0/8")
    with RawSMTP(ingress.host, ingress.port, source="127.0.0.8") as smtp:
        assert smtp.cmd("EHLO c.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        smtp.send(b"Subject: half a message\r\n")
        assert smtp.reply() == reply_of(replies.TIMEOUT)
    with RawSMTP(ingress.host, ingress.port, source="127.0.0.8") as again:
        assert again.greeting is not None
        assert again.greeting[0] == 220
    assert spool_keys(spool) == []


def test_mail_loop_is_refused(start_ingress: StartIngress, spool: SpoolClient) -> None:
    ingress = start_ingress(max_received_headers=10)
    looped = b"".join(b"Received: from hop%d by hop%d; date\r\n" % (n, n) for n in range(10))
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], looped + b"\r\nbody")
        assert (code, text) == reply_of(replies.LOOP_DETECTED)
        nine = b"".join(looped.splitlines(keepends=True)[:9])
        code, _ = smtp.transaction(
            "s@example.test", ["r@dest.test"], nine + b"\r\nbody", ehlo=False
        )
        assert code == 250
    assert len(spool.keys("mxf:body:*")) == 1


def test_half_open_connection_is_released(start_ingress: StartIngress) -> None:
    ingress = start_ingress(max_sessions_per_ip=1)
    sock = socket.create_connection((ingress.host, ingress.port), source_address=("127.0.0.9", 0))
    sock.recv(100)
    sock.close()

    def admitted() -> bool:
        with RawSMTP(ingress.host, ingress.port, source="127.0.0.9", read_greeting=False) as smtp:
            return smtp.reply()[0] == 220

    wait_until(admitted, timeout=10)


def test_client_that_never_reads_its_replies_is_not_buffered(ingress: IngressProcess) -> None:
    """Pipelined commands from a client that reads nothing: the server stops reading too."""
    with RawSMTP(ingress.host, ingress.port) as smtp:
        smtp.sock.settimeout(3)
        chunk = b"NOOP\r\n" * 10_000
        sent = 0
        try:
            for _ in range(500):  # up to 30 MB of commands, ~30 MB of replies unread
                smtp.sock.sendall(chunk)
                sent += len(chunk)
        except TimeoutError:
            pass
        assert sent < 500 * len(chunk), "the server kept reading while its replies piled up"
    with RawSMTP(ingress.host, ingress.port) as other:
        assert other.cmd("NOOP")[0] == 250
