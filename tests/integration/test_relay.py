"""Never an open relay: outsiders get 550 5.7.1 for any address trick, nothing is queued."""

import pytest

from shared import replies
from tests.conftest import StartIngress
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import spool_keys
from tests.servers.spool_client import SpoolClient

OUTSIDER = "127.0.0.2"  # the test ingress relays for 127.0.0.1/32 only

TRICKS = [
    "victim@elsewhere.test",
    "victim%elsewhere.test@mx.test",
    "elsewhere.test!victim@mx.test",
    '"victim@elsewhere.test"@mx.test',
    "@mx.test:victim@elsewhere.test",
    "@a.test,@b.test:victim@elsewhere.test",
    "victim@elsewhere.test@mx.test",
    "postmaster",
    "victim@[192.0.2.1]",
    "VICTIM@ELSEWHERE.TEST",
]


@pytest.mark.parametrize("rcpt", TRICKS)
def test_outsider_is_refused_for_every_address_trick(
    ingress: IngressProcess, spool: SpoolClient, rcpt: str
) -> None:
    with RawSMTP(ingress.host, ingress.port, source=OUTSIDER) as smtp:
        assert smtp.cmd("EHLO outsider.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<spammer@example.test>")[0] == 250
        code, text = smtp.cmd(f"RCPT TO:<{rcpt}>")
        assert (code, text) == (replies.RELAY_DENIED.code, f"5.7.1 {replies.RELAY_DENIED.text}")
        assert smtp.cmd("DATA") == (replies.NEED_RCPT.code, "5.5.1 " + replies.NEED_RCPT.text)
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
