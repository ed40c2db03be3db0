"""SMTP smuggling (CVE-2023-51764 family): no payload can end DATA early or add a message.

Only <CRLF>.<CRLF> ends the data. By default (``bare_newlines = "normalize"``) every bare CR
and bare LF inside it becomes CRLF, so a smuggling payload is one message whose text holds
the would-be commands; ``bare_newlines = "reject"`` refuses such a message instead.
"""

import pytest

from shared import replies
from tests.conftest import StartIngress
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import body, envelope, queued_id, spool_keys, wire
from tests.servers.spool_client import SpoolClient

SMUGGLED = (
    b"MAIL FROM:<admin@bank.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nsmuggled body\r\n"
)

# Each separator is what some server takes for the end of data: SEC Consult's scanner
# (smtp_smuggling_scanner.py, inbound and outbound lists) and other published variants;
# beside each, what it is in the stored message (bare CR/LF normalised, then the quoting
# dot of a line undone; a lone "." line stays text).
SEPARATORS = [
    (b"\n.\n", b"\r\n.\r\n"),
    (b"\n.\r", b"\r\n.\r\n"),
    (b"\r.\n", b"\r\n.\r\n"),
    (b"\r.\r", b"\r\n.\r\n"),
    (b"\n.\r\n", b"\r\n.\r\n"),
    (b"\r.\r\n", b"\r\n.\r\n"),
    (b"\r\n.\n", b"\r\n.\r\n"),
    (b"\r\n.\r", b"\r\n.\r\n"),
    (b"\r\n.\r\r\n", b"\r\n.\r\n\r\n"),
    (b"\r\r\n.\r\r\n", b"\r\n\r\n.\r\n\r\n"),
    (b"\n\n.\r\n", b"\r\n\r\n.\r\n"),
    (b"\n..\n", b"\r\n.\r\n"),
    (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n"),
    (b"\r\n.\x00\r\n", b"\r\n\x00\r\n"),  # a CRLF line ".\x00": its quoting dot goes
]


def send_payload(smtp: RawSMTP, separator: bytes) -> tuple[int, str]:
    """One transaction whose data hides a second one behind ``separator``."""
    smtp.send(b"MAIL FROM:<user@example.test>\r\nRCPT TO:<friend@dest.test>\r\nDATA\r\n")
    assert [smtp.reply()[0] for _ in range(3)] == [250, 250, 354]
    smtp.send(b"Subject: first\r\n\r\nfirst body" + separator + SMUGGLED + b"\r\n.\r\n")
    return smtp.reply()


@pytest.mark.parametrize(("separator", "stored"), SEPARATORS, ids=[repr(s) for s, _ in SEPARATORS])
def test_smuggling_payload_is_one_message_holding_the_commands_as_text(
    shared_ingress: IngressProcess, spool: SpoolClient, separator: bytes, stored: bytes
) -> None:
    with RawSMTP(shared_ingress.host, shared_ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        code, text = send_payload(smtp, separator)
        assert code == 250, text
        # The smuggled commands were data, never commands: the session is at the start.
        assert smtp.cmd("RCPT TO:<x@dest.test>") == wire(replies.NEED_MAIL)
    msg_id = queued_id(text)
    keys = spool_keys(spool)
    assert [key for key in keys if key.startswith("mxf:body:")] == [f"mxf:body:{msg_id}"]
    assert [key for key in keys if key.startswith("mxf:msg:")] == [f"mxf:msg:{msg_id}"]
    # SMUGGLED ends with CRLF and the terminator adds one: an empty last line.
    message = body(spool, msg_id)
    assert message.endswith(b"\r\n\r\nfirst body" + stored + SMUGGLED + b"\r\n")
    assert message.count(b"\n") == message.count(b"\r\n") == message.count(b"\r")
    # Nothing of the smuggled envelope became an envelope or a job.
    assert envelope(spool, msg_id)["from"] == "user@example.test"
    assert envelope(spool, msg_id)["domains"] == "dest.test"
    assert [key for key in keys if key.startswith(("mxf:rcpt:", "mxf:job:"))] == [
        f"mxf:job:{msg_id}:dest.test",
        f"mxf:rcpt:{msg_id}:dest.test",
    ]
    assert spool.smembers(f"mxf:rcpt:{msg_id}:dest.test") == {b"friend@dest.test"}
    assert not any("bank.test" in key for key in keys)


def test_lines_ended_by_lf_alone_are_stored_with_crlf(
    shared_ingress: IngressProcess, spool: SpoolClient
) -> None:
    with RawSMTP(shared_ingress.host, shared_ingress.port) as smtp:
        assert smtp.cmd("EHLO legacy.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        smtp.send(b"Subject: unix\n\nline one\n..dotted\nline two\n")
        code, text = smtp.cmd(b"\r\n.")
        assert code == 250, text
    message = body(spool, queued_id(text))
    assert b"\r\nSubject: unix\r\n" in message
    assert message.endswith(b"\r\n\r\nline one\r\n.dotted\r\nline two\r\n\r\n")


def test_reject_setting_refuses_every_bare_newline(
    start_ingress: StartIngress, spool: SpoolClient
) -> None:
    ingress = start_ingress(bare_newlines="reject")
    refused = [separator for separator, _ in SEPARATORS if b"\x00" not in separator]
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for separator in refused:
            assert send_payload(smtp, separator) == wire(replies.BARE_NEWLINE), separator
            assert smtp.cmd("RCPT TO:<x@dest.test>") == wire(replies.NEED_MAIL)
        assert spool_keys(spool) == []
        # The session goes on, and the next message (CRLF only) is stored intact.
        good = b"Subject: good\r\n\r\nline one\r\nline two\r\n"
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], good, ehlo=False)
        assert code == 250, text
    stored = body(spool, queued_id(text))
    assert b"\r\nSubject: good\r\n" in stored
    assert stored.endswith(b"\r\n\r\nline one\r\nline two\r\n")
