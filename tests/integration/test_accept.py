"""A 250 means the message is in the spool: body byte-exact, one job per domain."""

import smtplib

from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.spool_client import SpoolClient


def queued_id(text: str) -> str:
    assert "queued as " in text, text
    return text.rsplit(" ", 1)[1]


def test_accepted_message_is_in_the_spool(ingress: IngressProcess, spool: SpoolClient) -> None:
    body = (
        b"Subject: hi\r\nMessage-ID: <m1@client.test>\r\n"
        b"Date: Sun, 29 Nov 2026 08:00:00 +0000\r\n\r\nhello\r\n"
    )
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, text = smtp.transaction(
            "sender@example.test",
            ["a@Dest.Test", "b@dest.test", "c@other.test"],
            body,
        )
    assert code == 250
    assert text.startswith("2.0.0 ")
    msg_id = queued_id(text)
    stored = spool.get(f"mxf:body:{msg_id}")
    assert stored is not None
    received, _, rest = stored.partition(b"Subject: hi")
    assert received.startswith(
        b"Received: from client.test ([127.0.0.1])\r\n\tby mx.test with ESMTP id " + msg_id.encode()
    )
    assert b"Subject: hi" + rest == body  # the client's bytes, untouched
    envelope = spool.hgetall(f"mxf:msg:{msg_id}")
    assert envelope[b"from"] == b"sender@example.test"
    assert envelope[b"rcpts"] == b"3"
    assert envelope[b"jobs_left"] == b"2"
    assert envelope[b"client"] == b"127.0.0.1"
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {b"a@Dest.Test", b"b@dest.test"}
    assert spool.smembers(f"mxf:rcpt:{msg_id}:other.test") == {b"c@other.test"}
    for domain in ("dest.test", "other.test"):
        assert spool.zscore(f"mxf:sched:{domain}", msg_id) is not None
        assert spool.hget(f"mxf:job:{msg_id}:{domain}", "attempts") == b"0"
    assert set(spool.zrange("mxf:due", 0, -1)) == {b"dest.test", b"other.test"}


def test_dot_stuffing_is_undone_and_headers_added(
    ingress: IngressProcess, spool: SpoolClient
) -> None:
    with smtplib.SMTP(ingress.host, ingress.port) as smtp:
        smtp.ehlo("client.test")
        smtp.sendmail(
            "s@example.test", ["r@dest.test"], b"no header line\r\n.leading dot\r\n..\r\n"
        )
        assert smtp.noop()[0] == 250
    (key,) = spool.keys("mxf:body:*")
    stored = spool.get(key)
    assert stored is not None
    msg_id = key.decode().rsplit(":", 1)[1]
    assert stored.endswith(b"\r\n\r\nno header line\r\n.leading dot\r\n..\r\n")
    assert f"Message-ID: <{msg_id}@mx.test>\r\n".encode() in stored
    assert b"\r\nDate: " in stored
    assert b"\tfor <r@dest.test>;" in stored


def test_idn_recipients_are_grouped_by_a_label(ingress: IngressProcess, spool: SpoolClient) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test> SMTPUTF8")[0] == 250
        assert smtp.cmd("RCPT TO:<ü@Bücher.Test>".encode())[0] == 250
        assert smtp.cmd("RCPT TO:<x@xn--bcher-kva.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        code, text = smtp.cmd(b"Subject: utf8\r\n\r\nbody\r\n.")
    assert code == 250, text
    msg_id = queued_id(text)
    members = spool.smembers(f"mxf:rcpt:{msg_id}:xn--bcher-kva.test")
    assert members == {"ü@Bücher.Test".encode(), b"x@xn--bcher-kva.test"}
    assert spool.hget(f"mxf:msg:{msg_id}", "smtputf8") == b"1"
    assert b"with UTF8SMTP id" in (spool.get(f"mxf:body:{msg_id}") or b"")


def test_null_sender_and_duplicate_recipients(ingress: IngressProcess, spool: SpoolClient) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@DEST.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        code, text = smtp.cmd(b"Subject: bounce\r\n\r\nx\r\n.")
    assert code == 250
    msg_id = queued_id(text)
    assert spool.hget(f"mxf:msg:{msg_id}", "from") == b""
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {b"r@dest.test"}


def test_pipelined_client_gets_every_reply_in_order(
    ingress: IngressProcess, spool: SpoolClient
) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        _, text = smtp.cmd("EHLO client.test")
        assert "PIPELINING" in text.splitlines()
        # RFC 2920: one write with two whole transactions and QUIT.
        batch = b""
        for n in range(2):
            batch += b"MAIL FROM:<s@example.test>\r\nRCPT TO:<r%d@dest.test>\r\n" % n
            batch += b"RCPT TO:<nobody@invalid..address>\r\nDATA\r\n"
            batch += b"Subject: %d\r\n\r\nbody %d\r\n.\r\n" % (n, n)
        smtp.send(batch + b"QUIT\r\n")
        codes = [smtp.reply()[0] for _ in range(11)]
    assert codes == [250, 250, 501, 354, 250] * 2 + [221]
    assert len(spool.keys("mxf:body:*")) == 2


def test_many_messages_on_one_connection(ingress: IngressProcess, spool: SpoolClient) -> None:
    with smtplib.SMTP(ingress.host, ingress.port) as smtp:
        for n in range(50):
            smtp.sendmail(
                "s@example.test", [f"r{n}@d{n % 5}.test"], b"Subject: x\r\n\r\n" + b"y" * n
            )
    assert len(spool.keys("mxf:body:*")) == 50
    assert spool.zcard("mxf:due") == 5
    assert spool.hget("mxf:stats", "accepted") == b"50"
