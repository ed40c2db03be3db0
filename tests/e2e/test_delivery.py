"""SMTP in, SMTP out: mxfleet as real processes delivering to sinks found through DNS."""

import email
import email.policy

from shared.replies import Reply
from tests.servers.fleet import Fleet
from tests.servers.smtp_sink import Behaviour
from tests.servers.wait import wait_until

BODY = b"Subject: e2e\r\nFrom: <sender@example.test>\r\n\r\nhello\r\n.starts with a dot\r\n"


def test_one_message_to_three_domains_makes_three_deliveries(fleet: Fleet) -> None:
    sinks = [fleet.sink(f"d{n}.test", f"127.0.0.{n + 2}") for n in range(3)]
    fleet.up()
    fleet.send("sender@example.test", ["a@d0.test", "b@d1.test", "c@d2.test", "d@d0.test"], BODY)
    wait_until(lambda: all(sink.messages for sink in sinks), timeout=30)
    first = sinks[0].messages[0]
    assert sorted(first.rcpt_tos) == ["a@d0.test", "d@d0.test"]  # one transaction
    assert first.mail_from == "sender@example.test"
    assert first.data.endswith(b"\r\n\r\nhello\r\n.starts with a dot\r\n")
    assert first.data.startswith(b"Received: from client.test")
    assert [len(sink.messages) for sink in sinks] == [1, 1, 1]
    wait_until(fleet.spool_empty, timeout=20)
    events = fleet.redis.client().xrange("mxf:events")
    assert len(events) == 3  # one per attempt, one attempt per domain
    fields = next(f for _, f in events if f[b"domain"] == b"d0.test")
    assert fields[b"verdict"] == b"delivered"
    assert fields[b"mx"] == b"mx1.d0.test"
    assert fields[b"rcpts"] == b"a@d0.test,d@d0.test"
    assert fields[b"reply"].startswith(b"250 ")
    assert int(fields[b"duration_ms"]) >= 0


def test_fifty_recipients_in_one_transaction(fleet: Fleet) -> None:
    sink = fleet.sink("many.test", "127.0.0.2")
    fleet.up()
    rcpts = [f"r{n}@many.test" for n in range(50)]
    fleet.send("sender@example.test", rcpts, BODY)
    wait_until(lambda: sink.messages, timeout=30)
    assert len(sink.messages) == 1
    assert sorted(sink.messages[0].rcpt_tos) == sorted(rcpts)
    assert sink.messages[0].pipelined


def test_many_messages_reuse_connections(fleet: Fleet) -> None:
    sink = fleet.sink("bulk.test", "127.0.0.2")
    fleet.up()
    for n in range(40):
        fleet.send("sender@example.test", [f"r{n}@bulk.test"], BODY)
    wait_until(lambda: len(sink.messages) == 40, timeout=60)
    assert sink.connections < 40
    wait_until(fleet.spool_empty, timeout=20)


def test_reject_bounces_to_the_sender(fleet: Fleet) -> None:
    refusal = Reply(550, "5.1.1", "No such user here")
    dest = fleet.sink("dest.test", "127.0.0.2", Behaviour(rcpt_default=refusal))
    home = fleet.sink("example.test", "127.0.0.3")
    fleet.up()
    fleet.send("sender@example.test", ["nobody@dest.test"], BODY)
    wait_until(lambda: home.messages, timeout=30)
    dsn = home.messages[0]
    assert dsn.mail_from == ""
    assert dsn.rcpt_tos == ("sender@example.test",)
    parsed = email.message_from_bytes(dsn.data, policy=email.policy.default)
    assert parsed.get_content_type() == "multipart/report"
    status = dsn.data.decode()
    assert "Status: 5.1.1" in status
    assert "Final-Recipient: rfc822; nobody@dest.test" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 No such user here" in status
    assert not dest.messages
    wait_until(fleet.spool_empty, timeout=20)


def test_tempfail_twice_then_delivered(fleet: Fleet) -> None:
    sink = fleet.sink("slow.test", "127.0.0.2", Behaviour(tempfail_first=2))
    fleet.up()
    fleet.send("sender@example.test", ["r@slow.test"], BODY)
    wait_until(lambda: sink.messages, timeout=60)
    assert len(sink.transactions) == 3
    assert fleet.client().hget("mxf:stats", "deferred") == b"2"
    wait_until(fleet.spool_empty, timeout=20)


def test_null_mx_and_nxdomain_bounce(fleet: Fleet) -> None:
    home = fleet.sink("example.test", "127.0.0.3")
    fleet.dns.add_null_mx("nullmx.test")
    fleet.up()
    fleet.send("sender@example.test", ["a@nullmx.test"], BODY)
    fleet.send("sender@example.test", ["b@nxdomain.test"], BODY)
    wait_until(lambda: len(home.messages) == 2, timeout=30)
    texts = sorted(message.data.decode() for message in home.messages)
    assert any("Status: 5.1.10" in text for text in texts)
    assert any("Status: 5.1.2" in text for text in texts)
    assert all("Remote-MTA" not in text for text in texts)


def test_servfail_defers_until_dns_answers(fleet: Fleet) -> None:
    fleet.dns.servfail("later.test")
    fleet.up()
    fleet.send("sender@example.test", ["r@later.test"], BODY)
    wait_until(lambda: int(fleet.client().hget("mxf:stats", "deferred") or 0) >= 1, timeout=30)
    fleet.dns.clear("later.test")
    sink = fleet.sink("later.test", "127.0.0.2")
    wait_until(lambda: sink.messages, timeout=30)
    wait_until(fleet.spool_empty, timeout=20)


def test_primary_down_goes_to_secondary(fleet: Fleet) -> None:
    backup = fleet.sink("two.test", "127.0.0.3")
    fleet.dns.add_mx("two.test", [(5, "primary.two.test"), (10, "mx1.two.test")])
    fleet.dns.add_a("primary.two.test", "127.0.0.4")  # nothing listens there
    fleet.up()
    fleet.send("sender@example.test", ["r@two.test"], BODY)
    wait_until(lambda: backup.messages, timeout=30)


def test_implicit_mx(fleet: Fleet) -> None:
    sink = fleet.sink("unused.test", "127.0.0.5")
    fleet.dns.add_a("implicit.test", "127.0.0.5")
    fleet.up()
    fleet.send("sender@example.test", ["r@implicit.test"], BODY)
    wait_until(lambda: sink.messages, timeout=30)
    assert sink.messages[0].rcpt_tos == ("r@implicit.test",)


def test_421_mid_batch_the_rest_goes_on_a_new_connection(fleet: Fleet) -> None:
    sink = fleet.sink("cut.test", "127.0.0.2", Behaviour(max_messages_per_connection=3))
    fleet.up()
    for n in range(10):
        fleet.send("sender@example.test", [f"r{n}@cut.test"], BODY)
    wait_until(lambda: len(sink.messages) == 10, timeout=60)
    assert sink.connections >= 4
    wait_until(fleet.spool_empty, timeout=20)


def test_starttls_to_a_tls_sink(fleet: Fleet) -> None:
    sink = fleet.sink("tls.test", "127.0.0.2", Behaviour(starttls=True))
    fleet.up()
    fleet.send("sender@example.test", ["r@tls.test"], BODY)
    wait_until(lambda: sink.messages, timeout=30)
    assert sink.messages[0].tls


def test_smtputf8(fleet: Fleet) -> None:
    sink = fleet.sink("utf8.test", "127.0.0.2")
    nosupport = fleet.sink("ascii.test", "127.0.0.3", Behaviour(smtputf8=False))
    home = fleet.sink("example.test", "127.0.0.4")
    fleet.up()
    fleet.send("sender@example.test", ["jörg@utf8.test", "jörg@ascii.test"], BODY, ("SMTPUTF8",))
    wait_until(lambda: sink.messages and home.messages, timeout=30)
    assert sink.messages[0].rcpt_tos == ("jörg@utf8.test",)
    assert "SMTPUTF8" in [option.upper() for option in sink.messages[0].mail_options]
    assert not nosupport.messages
    assert "Status: 5.6.7" in home.messages[0].data.decode("utf-8", "replace")


def test_expiry_bounces(fleet: Fleet) -> None:
    sink = fleet.sink("never.test", "127.0.0.2", Behaviour(tempfail_first=1000))
    home = fleet.sink("example.test", "127.0.0.3")
    fleet.up(max_age="3s")
    fleet.send("sender@example.test", ["r@never.test"], BODY)
    wait_until(lambda: home.messages, timeout=60)
    text = home.messages[0].data.decode()
    assert "Action: failed" in text
    assert "Status: 4." in text  # the last temporary reply, as Postfix reports expiry
    assert not sink.messages
    wait_until(fleet.spool_empty, timeout=20)


def test_a_dsn_never_causes_another_dsn(fleet: Fleet) -> None:
    refusal = Reply(550, "5.1.1", "No such user here")
    fleet.sink("dest.test", "127.0.0.2", Behaviour(rcpt_default=refusal))
    home = fleet.sink("example.test", "127.0.0.3", Behaviour(rcpt_default=refusal))
    fleet.up()
    fleet.send("sender@example.test", ["nobody@dest.test"], BODY)
    # The original bounces; its DSN to the sender bounces too, and that ends it.
    wait_until(lambda: int(fleet.client().hget("mxf:stats", "bounced") or 0) == 2, timeout=30)
    wait_until(fleet.spool_empty, timeout=20)
    assert not home.messages
    assert fleet.client().hget("mxf:stats", "accepted") == b"2"  # the message and one DSN
