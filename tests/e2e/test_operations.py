"""``mxfleet queue`` and ``mxfleet status`` against a queue built by real traffic: an
ingress, a dispatcher and a worker deliver to sinks, one of which defers everything."""

import json
import smtplib
import subprocess
import sys
from functools import partial

import pytest

from shared.replies import Reply
from tests.servers.fleet import Fleet
from tests.servers.httpprobe import try_get
from tests.servers.smtp_sink import Behaviour, SmtpSink
from tests.servers.wait import wait_until

BODY = b"Subject: ops\r\nFrom: <sender@example.test>\r\n\r\nhello\r\n"
LATER = Reply(451, "4.7.1", "Greylisted, come back in an hour")


def cli(fleet: Fleet, *args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
        env=fleet.env(), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def send(fleet: Fleet, recipients: list[str]) -> str:
    """One message through the ingress; its queue id (from the reply to the final dot)."""
    with smtplib.SMTP("127.0.0.1", fleet.smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        assert smtp.mail("sender@example.test")[0] == 250
        for rcpt in recipients:
            assert smtp.rcpt(rcpt)[0] == 250
        code, reply = smtp.data(BODY)
    assert code == 250
    return reply.decode().rsplit(" ", 1)[-1]


Stuck = tuple[Fleet, SmtpSink, SmtpSink, list[str]]


@pytest.fixture
def stuck(fleet: Fleet) -> Stuck:
    """Three messages for stuck.test (every attempt deferred, next try in an hour), one for
    fine.test (delivered)."""
    stuck_sink = fleet.sink("stuck.test", "127.0.0.2", Behaviour(rcpt_default=LATER))
    fine = fleet.sink("fine.test", "127.0.0.3")
    home = fleet.sink("example.test", "127.0.0.4")
    fleet.up(retry_base="1h", retry_cap="2h")
    ids = [send(fleet, [f"u{n}@stuck.test", f"v{n}@stuck.test"]) for n in range(3)]
    send(fleet, ["a@fine.test"])
    fine.wait_for(1, timeout=30)
    wait_until(lambda: _attempts(fleet, ids) == 3, timeout=30)
    return fleet, stuck_sink, home, ids


def _attempts(fleet: Fleet, ids: list[str]) -> int:
    client = fleet.client()
    return sum(int(client.hget(f"mxf:job:{i}:stuck.test", "attempts") or 0) for i in ids)


def test_status_reports_processes_backlog_and_the_last_minute(
    stuck: Stuck,
) -> None:
    fleet, _, _, _ids = stuck
    wait_until(lambda: "dispatcher  1 live" in cli(fleet, "status").stdout, timeout=15)
    result = cli(fleet, "status")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ingress     1 live" in result.stdout
    assert "(leader)" in result.stdout
    assert "worker      1 live" in result.stdout
    assert "AOF on" in result.stdout
    document = json.loads(cli(fleet, "status", "--json").stdout)
    assert document["last_minute"]["accepted"] == 4
    assert document["last_minute"]["delivered"] == 1
    assert document["last_minute"]["deferred"] == 6  # two recipients, three messages
    assert document["backlog"]["messages"] == 3
    assert sorted(p["role"] for p in document["processes"]) == ["dispatcher", "ingress", "worker"]
    assert document["warnings"] == []


def test_status_warns_when_aof_is_off(stuck: Stuck) -> None:
    fleet, _, _, _ = stuck
    fleet.client().config_set("appendonly", "no")
    result = cli(fleet, "status")
    fleet.client().config_set("appendonly", "yes")
    assert result.returncode == 1
    assert "WARNING     Redis runs without AOF" in result.stdout


def test_ls_lists_the_stuck_domain(stuck: Stuck) -> None:
    fleet, _, _, _ = stuck
    result = cli(fleet, "queue", "ls")
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith("stuck.test"))
    assert line.split()[1:4] == ["3", "0", "0"]  # scheduled, due now, in flight
    assert " in " in line  # the next try is later
    (row,) = json.loads(cli(fleet, "queue", "ls", "--json").stdout)
    assert (row["domain"], row["scheduled"], row["destination"]) == (
        "stuck.test",
        3,
        "mx1.stuck.test",
    )
    assert row["next_due_s"] > 600  # deferred for about an hour


def test_show_explains_why_a_message_is_stuck(
    stuck: Stuck,
) -> None:
    fleet, _, _, ids = stuck
    result = cli(fleet, "queue", "show", ids[0])
    assert result.returncode == 0, result.stderr
    assert "stuck.test: scheduled" in result.stdout
    assert "attempts  1" in result.stdout
    assert "last reply  451 4.7.1 Greylisted, come back in an hour" in result.stdout
    assert "pending   u0@stuck.test" in result.stdout
    assert "deferred  mx1.stuck.test" in result.stdout  # the event of the attempt
    document = json.loads(cli(fleet, "queue", "show", ids[0], "--json").stdout)
    assert document["jobs"][0]["pending"] == ["u0@stuck.test", "v0@stuck.test"]
    missing = cli(fleet, "queue", "show", "01NOSUCHMESSAGE00000000000")
    assert missing.returncode == 2
    assert "no message" in missing.stderr


def test_flush_and_retry_make_deferred_mail_due_now(
    stuck: Stuck,
) -> None:
    fleet, _, _, ids = stuck
    result = cli(fleet, "queue", "retry", ids[0])
    assert result.returncode == 0, result.stderr
    wait_until(lambda: _attempts(fleet, ids) == 4, timeout=20)  # tried again at once
    result = cli(fleet, "queue", "flush", "stuck.test")
    assert "jobs due now" in result.stdout
    wait_until(lambda: _attempts(fleet, ids) == 7, timeout=20)
    assert cli(fleet, "queue", "flush", "nowhere.test").returncode == 2


def test_pause_holds_a_destination_and_resume_releases_it(
    stuck: Stuck,
) -> None:
    fleet, sink, _, ids = stuck
    assert "paused" in cli(fleet, "queue", "pause", "stuck.test").stdout
    cli(fleet, "queue", "flush", "stuck.test")
    (row,) = json.loads(cli(fleet, "queue", "ls", "--json").stdout)
    assert row["paused"]
    assert row["due"] == 3
    before = _attempts(fleet, ids)
    wait_until(lambda: fleet.client().zscore("mxf:due", "stuck.test") is not None, timeout=5)
    sink.behaviour = Behaviour()  # would accept now, but the destination is paused
    with pytest.raises(AssertionError):
        wait_until(lambda: _attempts(fleet, ids) > before, timeout=2)
    assert "resumed" in cli(fleet, "queue", "resume", "stuck.test").stdout
    wait_until(lambda: len(sink.messages) == 3, timeout=20)
    wait_until(fleet.spool_empty, timeout=20)


def test_bounce_returns_a_message_and_delete_removes_one(
    stuck: Stuck,
) -> None:
    fleet, _, home, ids = stuck
    result = cli(fleet, "queue", "bounce", ids[0])
    assert result.returncode == 0, result.stderr
    assert "for 2 recipients" in result.stdout
    (dsn,) = home.wait_for(1, timeout=30)
    assert dsn.rcpt_tos == ("sender@example.test",)
    assert b"Returned to the sender by the mail administrator" in dsn.data
    assert cli(fleet, "queue", "delete", ids[1]).returncode == 0
    client = fleet.client()
    assert not client.exists(f"mxf:msg:{ids[0]}", f"mxf:msg:{ids[1]}")
    verdicts = [
        f[b"verdict"] for _, f in client.xrange("mxf:events") if f[b"id"].decode() in ids[:2]
    ]
    assert b"bounced" in verdicts
    assert b"deleted" in verdicts
    assert cli(fleet, "queue", "delete", ids[1]).returncode == 2  # gone already


def test_purge_needs_yes_then_empties_the_destination(
    stuck: Stuck,
) -> None:
    fleet, _, home, _ids = stuck
    refused = cli(fleet, "queue", "purge", "stuck.test")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    result = cli(fleet, "queue", "purge", "stuck.test", "--yes")
    assert "purged 3 jobs" in result.stdout
    wait_until(fleet.spool_empty, timeout=20)
    assert not home.messages  # no DSN for a purge


def test_events_prints_the_attempts_of_real_traffic(stuck: Stuck) -> None:
    fleet, _, _, ids = stuck
    result = cli(fleet, "events", "--count", "10")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    deferred = [e for e in events if e["domain"] == "stuck.test"]
    assert sorted(e["id"] for e in deferred) == sorted(ids)
    assert all(e["verdict"] == "deferred" and e["attempt"] == 1 for e in deferred)
    assert deferred[0]["reply"] == "451 4.7.1 Greylisted, come back in an hour"
    (fine,) = [e for e in events if e["domain"] == "fine.test"]
    assert (fine["verdict"], fine["rcpts"]) == ("delivered", ["a@fine.test"])


def test_every_role_serves_health_readiness_and_metrics(fleet: Fleet) -> None:
    fleet.up()
    ports: dict[str, int] = {}
    for role in fleet.roles:
        port = wait_until(role.metrics_port, timeout=15)
        assert port is not None
        ports[role.name] = port
    assert sorted(ports) == ["dispatcher", "ingress", "worker"]
    for name, port in ports.items():
        assert try_get(port, "/healthz") == (200, "ok\n"), name
        wait_until(partial(_status_is, port, 200), timeout=10)
        answer = try_get(port, "/metrics")
        assert answer is not None
        assert "mxfleet_" in answer[1], name
    fleet.redis.kill()  # readiness follows Redis; liveness does not
    for name, port in ports.items():
        wait_until(partial(_status_is, port, 503), timeout=15)
        assert try_get(port, "/healthz") == (200, "ok\n"), name


def _status_is(port: int, status: int) -> bool:
    answer = try_get(port, "/readyz")
    return answer is not None and answer[0] == status
