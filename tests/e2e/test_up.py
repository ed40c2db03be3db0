"""``mxfleet up``: a whole single-node cluster from one command, stopped by Ctrl-C.

With no ``MXFLEET_REDIS_URL`` it starts an embedded Redis (AOF under ``--data-dir``) and
the roles (the ingress among them); a message sent over SMTP lands in that Redis and in its
AOF; SIGINT stops every process it started and it exits 0.
"""

import os
import re
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from shared.embedded import free_port
from tests.servers.httpprobe import try_get
from tests.servers.ports import free_ports
from tests.servers.rawsmtp import RawSMTP
from tests.servers.redis_server import require_redis_server
from tests.servers.smtpcheck import queued_id
from tests.servers.wait import wait_until

_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")
_EMBEDDED = re.compile(r"embedded Redis redis://127\.0\.0\.1:(\d+)/0")


@dataclass
class Up:
    process: "subprocess.Popen[bytes]"
    output: Path
    data_dir: Path
    smtp_port: int
    metrics_port: int

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def redis_port(self) -> int:
        match = _EMBEDDED.search(self.text())
        return int(match.group(1)) if match else 0

    def children(self) -> dict[int, str]:
        """The pids of the processes ``up`` started, with their command lines."""
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        commands = {}
        for pid in map(int, found.stdout.split()):
            try:
                commands[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue  # gone meanwhile
        return {pid: command.decode(errors="replace") for pid, command in commands.items()}


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            return sock.recv(4).startswith(b"220")
    except OSError:
        return False


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")  # a zombie no longer runs; its parent reaps it


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    require_redis_server()
    # `up` gives process i the metrics port + i: take a run of ports no client socket holds.
    smtp_port, metrics_port = free_port(), free_ports(4)
    env = {key: os.environ[key] for key in _KEEP if key in os.environ}
    env.update(
        {
            "MXFLEET_LISTEN": f"127.0.0.1:{smtp_port}",
            "MXFLEET_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
            "MXFLEET_DRAIN_TIMEOUT": "10s",
        }
    )
    output = tmp_path / "up.log"
    data_dir = tmp_path / "var"
    with output.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "up", "--data-dir", str(data_dir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal would give it
        )
    cluster = Up(process, output, data_dir, smtp_port, metrics_port)
    try:
        wait_until(lambda: process.poll() is not None or answers(smtp_port), timeout=30)
        assert process.poll() is None, cluster.text()
        yield cluster
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # only the group this test started
            process.wait(10)


def send_and_find(up: Up) -> bytes:
    """Send one message over SMTP; return its stored body, read from the embedded Redis."""
    port = up.redis_port()
    assert port, up.text()
    marker = os.urandom(8).hex().encode()
    with smtplib.SMTP("127.0.0.1", up.smtp_port, timeout=10) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("me@example.test")[0] == 250
        assert smtp.rcpt("you@example.org")[0] == 250
        code, reply = smtp.data(b"Subject: hi\r\n\r\nhello " + marker + b"\r\n")
    assert code == 250, reply
    msg_id = queued_id(reply.decode())
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        stored = client.get(f"mxf:body:{msg_id}")
        assert client.config_get("appendonly") == {"appendonly": "yes"}
    finally:
        client.close()
    assert isinstance(stored, bytes)
    assert stored.endswith(b"\r\n\r\nhello " + marker + b"\r\n")
    return marker


def aof_files(up: Up) -> list[Path]:
    return sorted((up.data_dir / "redis").rglob("*.aof"))


def stop_and_check(up: Up, *, whole_group: bool) -> None:
    redis_port = up.redis_port()
    children = up.children()
    assert any("redis-server" in command for command in children.values()), children
    assert any("shared.cli ingress" in command for command in children.values()), children
    if whole_group:
        os.killpg(up.process.pid, signal.SIGINT)  # Ctrl-C in a terminal
    else:
        up.process.send_signal(signal.SIGINT)
    assert up.process.wait(timeout=30) == 0, up.text()
    wait_until(lambda: all(gone(pid) for pid in children), timeout=10)
    assert refuses(redis_port)
    assert refuses(up.smtp_port)


def roles_serving(up: Up) -> bool:
    """Every role process ``up`` started answers ``/healthz`` (process i on metrics port + i)."""
    roles = [pid for pid, command in up.children().items() if "shared.cli" in command]
    return bool(roles) and all(
        try_get(up.metrics_port + index, "/healthz") == (200, "ok\n") for index in range(len(roles))
    )


@pytest.mark.parametrize("whole_group", [False, True], ids=["sigint", "ctrl-c-group"])
def test_up_accepts_mail_into_an_embedded_redis_and_stops_cleanly(
    up: Up, whole_group: bool
) -> None:
    assert wait_until(lambda: try_get(up.metrics_port, "/readyz") == (200, "ready\n"), timeout=15)
    marker = send_and_find(up)
    assert aof_files(up), list(up.data_dir.rglob("*"))
    wait_until(lambda: roles_serving(up), timeout=30)  # Ctrl-C once the cluster is up
    stop_and_check(up, whole_group=whole_group)
    # Redis wrote (and at shutdown fsynced) the message into its AOF under --data-dir.
    assert any(marker in path.read_bytes() for path in aof_files(up))


def test_ctrl_c_lets_a_message_in_progress_finish(up: Up) -> None:
    # Ctrl-C reaches every process of the terminal's group. The ingress drains and lets a
    # DATA in progress finish; the spool must still be there to take that message, so the
    # embedded Redis may stop only after the roles (as `up` itself orders it).
    assert wait_until(lambda: try_get(up.metrics_port, "/readyz") == (200, "ready\n"), timeout=15)
    wait_until(lambda: roles_serving(up), timeout=30)
    redis_port = up.redis_port()
    with RawSMTP("127.0.0.1", up.smtp_port, timeout=20) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<me@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<you@example.org>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        smtp.send(b"Subject: in flight\r\n\r\nstarted before Ctrl-C\r\n")
        os.killpg(up.process.pid, signal.SIGINT)
        wait_until(lambda: try_get(up.metrics_port, "/readyz") == (503, "draining\n"), timeout=10)
        # A bounded look (2 s, well inside drain_timeout) for the failure: the spool going
        # away while the ingress still drains. Without the failure this look just times out.
        try:
            wait_until(lambda: refuses(redis_port), timeout=2)
            spool_gone = True
        except AssertionError:
            spool_gone = False
        smtp.send(b"finished after Ctrl-C\r\n.\r\n")
        code, text = smtp.reply()
    assert not spool_gone, f"the embedded Redis stopped while the ingress drained; DATA got {code}"
    assert code == 250, f"{code} {text}"
    assert up.process.wait(timeout=30) == 0, up.text()
    assert any(b"finished after Ctrl-C" in path.read_bytes() for path in aof_files(up))
