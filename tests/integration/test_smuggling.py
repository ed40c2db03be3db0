"""SMTP smuggling (CVE-2023-51764 family): no payload can end DATA early or add a message."""

import pytest

from shared import replies
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import spool_keys
from tests.servers.spool_client import SpoolClient

SMUGGLED = (
    b"MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled body\r\n"
)

# Each separator is what some server takes for the end of data (SEC Consult's list).
SEPARATORS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\n..\n",
]


@pytest.mark.parametrize("separator", SEPARATORS, ids=repr)
def test_smuggling_payload_is_one_refused_message(
    ingress: IngressProcess, spool: SpoolClient, separator: bytes
) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        smtp.send(b"MAIL FROM:<user@example.test>\r\nRCPT TO:<friend@dest.test>\r\nDATA\r\n")
        assert [smtp.reply()[0] for _ in range(3)] == [250, 250, 354]
        smtp.send(b"Subject: first\r\n\r\nfirst body" + separator + SMUGGLED + b"\r\n.\r\n")
        code, text = smtp.reply()
        if b"\x00" in separator:
            # No bare CR/LF: it is one ordinary message, with the payload as its text.
            assert code == 250, text
        else:
            assert (code, text) == (replies.BARE_NEWLINE.code, f"5.5.2 {replies.BARE_NEWLINE.text}")
        # The smuggled commands were data, never commands: the session is at the start.
        assert smtp.cmd("RCPT TO:<x@dest.test>")[0] == 503
    bodies = [spool.get(key) for key in spool.keys("mxf:body:*")]
    assert len(bodies) == (1 if b"\x00" in separator else 0)
    for body in bodies:
        assert body is not None
        # SMUGGLED ends with CRLF and the terminator adds one: an empty last line.
        assert body.endswith(b"\r\n\r\nfirst body" + separator + SMUGGLED + b"\r\n")


def test_bare_lf_line_ending_everywhere_is_refused(
    ingress: IngressProcess, spool: SpoolClient
) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        smtp.send(b"Subject: unix\n\nline\n.\n")
        smtp.send(b"\r\n.\r\n")
        assert smtp.reply()[0] == replies.BARE_NEWLINE.code
    assert spool_keys(spool) == []


def test_crlf_message_after_a_refused_one_is_stored_intact(
    ingress: IngressProcess, spool: SpoolClient
) -> None:
    good = b"Subject: good\r\n\r\nline one\r\nline two\r\n"
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, _ = smtp.transaction("s@example.test", ["r@dest.test"], b"bad\n.\nstill data")
        assert code == replies.BARE_NEWLINE.code
        code, _ = smtp.transaction("s@example.test", ["r@dest.test"], good, ehlo=False)
        assert code == 250
    (key,) = spool.keys("mxf:body:*")
    stored = spool.get(key)
    assert stored is not None
    assert b"\r\nSubject: good\r\n" in stored
    assert stored.endswith(b"\r\n\r\nline one\r\nline two\r\n")
