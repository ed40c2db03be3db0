"""Never an open relay: outsiders get 550 5.7.1 for any address trick, nothing is queued."""

import pytest

from shared import replies
from tests.conftest import StartIngress
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import spool_keys
from tests.servers.spool_client import SpoolClient

OUTSIDER = "127.0.0.2"  # the test ingress relays for 127.0.0.1/32 only

# Every trick a relay check has been fooled by; mx.test is the ingress's own name. Each is
# refused at RCPT with 550 5.7.1 before its syntax is even looked at.
TRICKS = [
    "victim@elsewhere.test",
    # percent hacks (RFC 1123 §5.2.16 "%-hack"), also with our name or address on the right
    "victim%elsewhere.test@mx.test",
    "victim%elsewhere.test%other.test@mx.test",
    "victim%elsewhere.test@[127.0.0.1]",
    "victim%elsewhere.test@localhost",
    # bang paths (UUCP)
    "elsewhere.test!victim@mx.test",
    "a.test!b.test!victim@mx.test",
    "a!b!victim",
    "elsewhere.test!victim",
    # quoted local parts holding a whole address
    '"victim@elsewhere.test"@mx.test',
    '"victim%elsewhere.test"@mx.test',
    '"elsewhere.test!victim"@mx.test',
    '"victim@elsewhere.test"',
    # source routes (RFC 5321 §4.1.2 and appendix C)
    "@mx.test:victim@elsewhere.test",
    "@a.test,@b.test:victim@elsewhere.test",
    "@relay.test,@other.test:user@ext.test",
    "@[127.0.0.1]:victim@elsewhere.test",
    # two at-signs, mixed case, trailing dots
    "victim@elsewhere.test@mx.test",
    "VICTIM@ELSEWHERE.TEST",
    "victim@ElseWhere.Test",
    "victim@MX.TEST",
    "victim@elsewhere.test.",
    "victim@mx.test.",
    "victim%elsewhere.test@MX.Test.",
    # address literals (RFC 5321 §4.1.3)
    "victim@[192.0.2.1]",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    "victim@[IPv6:::ffff:127.0.0.1]",
    # local-looking recipients: postmaster (RFC 5321 §4.5.1), no domain, the null path
    "postmaster",
    "Postmaster",
    "postmaster@mx.test",
    "postmaster@elsewhere.test",
    "",
]


@pytest.mark.parametrize("rcpt", TRICKS)
def test_outsider_is_refused_for_every_address_trick(
    shared_ingress: IngressProcess, spool: SpoolClient, rcpt: str
) -> None:
    ingress = shared_ingress
    with RawSMTP(ingress.host, ingress.port, source=OUTSIDER) as smtp:
        assert smtp.cmd("EHLO outsider.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<spammer@example.test>")[0] == 250
        code, text = smtp.cmd(f"RCPT TO:<{rcpt}>")
        assert (code, text) == (replies.RELAY_DENIED.code, f"5.7.1 {replies.RELAY_DENIED.text}")
        assert smtp.cmd("DATA") == (replies.NEED_RCPT.code, "5.5.1 " + replies.NEED_RCPT.text)
    assert spool_keys(spool) == []


def test_outsider_pipelining_every_trick_and_the_data_queues_nothing(
    shared_ingress: IngressProcess, spool: SpoolClient
) -> None:
    """All the tricks in one pipelined transaction, the message right behind DATA."""
    ingress = shared_ingress
    rcpts = [f"RCPT TO:<{rcpt}>" for rcpt in ["spammer@example.test", *TRICKS]]
    # and the command's own spelling: lower case, no brackets, a space, a parameter
    rcpts += [
        "rcpt to:<victim@elsewhere.test>",
        "RCPT TO:victim@elsewhere.test",
        "RCPT TO: <victim@elsewhere.test>",
        "RCPT TO:<victim@elsewhere.test> NOTIFY=NEVER",
    ]
    batch = ["EHLO outsider.test", "MAIL FROM:<spammer@example.test>", *rcpts, "DATA"]
    with RawSMTP(ingress.host, ingress.port, source=OUTSIDER) as smtp:
        smtp.send("".join(f"{line}\r\n" for line in batch).encode())
        codes = [smtp.reply()[0] for _ in batch]
        assert codes == [250, 250] + [replies.RELAY_DENIED.code] * len(rcpts) + [503]
        # The message the client sent blindly is read as commands: refused, none stored.
        smtp.send(b"Subject: spam\r\n\r\nbuy now\r\n.\r\n")
        assert [smtp.reply()[0] for _ in range(4)] == [500] * 4
        assert smtp.cmd("NOOP")[0] == 250
    assert spool_keys(spool) == []


def test_listed_network_may_relay(ingress: IngressProcess, spool: SpoolClient) -> None:
    with RawSMTP(ingress.host, ingress.port, source="127.0.0.1") as smtp:
        code, _ = smtp.transaction("s@example.test", ["r@elsewhere.test"], b"Subject: x\r\n\r\ny")
    assert code == 250
    assert len(spool.keys("mxf:body:*")) == 1


def test_relay_networks_setting_is_honoured(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(relay_networks="127.0.0.2/32")
    with RawSMTP(ingress.host, ingress.port, source="127.0.0.1") as smtp:
        assert smtp.cmd("EHLO a.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@elsewhere.test>")[0] == 550
    with RawSMTP(ingress.host, ingress.port, source="127.0.0.2") as smtp:
        code, _ = smtp.transaction("s@example.test", ["r@elsewhere.test"], b"x")
    assert code == 250


def test_address_tricks_from_a_relay_client_go_to_the_last_domain(
    ingress: IngressProcess, spool: SpoolClient
) -> None:
    """For a client allowed to relay, `%`, `!` and quotes are only local-part characters."""
    rcpts = ["a%b.test@dest.test", "b.test!a@dest.test", '"a@b.test"@dest.test']
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, text = smtp.transaction("s@example.test", rcpts, b"x")
    assert code == 250
    msg_id = text.rsplit(" ", 1)[1]
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {r.encode() for r in rcpts}
    assert spool.keys("mxf:rcpt:*") == [f"mxf:rcpt:{msg_id}:dest.test".encode()]
