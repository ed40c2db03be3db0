"""The suppression list learns from real bounces: a destination's 550 5.1.1 puts the
recipient on the list for the sender's domain (a later RCPT to it is refused), while 552
5.2.2 (mailbox full) and 452 4.2.2 do not; the sender still gets its DSN."""

from shared import replies
from shared.replies import Reply
from tests.servers.fleet import Fleet
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtp_sink import Behaviour
from tests.servers.smtpcheck import wire
from tests.servers.wait import wait_until
from workers.events_cli import event_object
from workers.store import text

BODY = b"Subject: news\r\nFrom: <news@shop.test>\r\n\r\nhello\r\n"
REFUSALS = {
    "hard@dest.test": Reply(550, "5.1.1", "No such user here"),
    "full@dest.test": Reply(552, "5.2.2", "Mailbox full"),
    "busy@dest.test": Reply(452, "4.2.2", "Over quota, try again later"),
}


def test_a_hard_bounce_suppresses_a_soft_one_does_not(fleet: Fleet) -> None:
    dest = fleet.sink("dest.test", "127.0.0.2", Behaviour(rcpt_replies=REFUSALS))
    home = fleet.sink("shop.test", "127.0.0.3")  # the sender's domain: the DSN goes there
    fleet.up()
    rcpts = ["hard@dest.test", "full@dest.test", "busy@dest.test", "ok@dest.test"]
    fleet.send("news@shop.test", rcpts, BODY)
    client = fleet.client()
    wait_until(lambda: client.exists("mxf:supp:shop.test:hard@dest.test"), timeout=20)
    wait_until(lambda: home.messages, timeout=20)
    dsn = home.messages[0].data.decode()
    assert "Final-Recipient: rfc822; hard@dest.test" in dsn
    assert "Final-Recipient: rfc822; full@dest.test" in dsn
    assert [m.rcpt_tos for m in dest.messages] == [("ok@dest.test",)]
    assert sorted(text(key) for key in client.keys("mxf:supp:*")) == [
        "mxf:supp:shop.test:hard@dest.test"
    ]
    entry = client.get("mxf:supp:shop.test:hard@dest.test") or b""
    assert entry.startswith(b"bounce\t")
    assert entry.endswith(b"\t\t550 5.1.1 No such user here")  # as given: the key's address
    assert 0 < client.pttl("mxf:supp:shop.test:hard@dest.test") <= 30 * 86400 * 1000
    attempts = [event_object(text(i), {text(k): text(v) for k, v in f.items()})
                for i, f in client.xrange("mxf:events")]  # fmt: skip
    (learnt,) = [event for event in attempts if "suppressed" in event]
    assert learnt["suppressed"] == ["hard@dest.test"]
    assert learnt["verdict"] == "delivered+deferred+bounced"

    with RawSMTP("127.0.0.1", fleet.smtp_port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<other@shop.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<hard@dest.test>") == wire(replies.SUPPRESSED)
        assert smtp.cmd("RCPT TO:<Hard@Dest.test>") == wire(replies.SUPPRESSED)
        for soft in ("full@dest.test", "busy@dest.test"):
            assert smtp.cmd(f"RCPT TO:<{soft}>") == wire(replies.RECIPIENT_OK)
        assert smtp.cmd("RSET")[0] == 250
        # The entry is the sender domain's: another sender's mail still goes.
        assert smtp.cmd("MAIL FROM:<news@elsewhere.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<hard@dest.test>") == wire(replies.RECIPIENT_OK)
