"""Malformed commands and addresses get 5xx replies, never a traceback or a hang."""

import pytest

from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import spool_keys
from tests.servers.spool_client import SpoolClient

BAD_MAIL = [
    "MAIL FROM:<",
    "MAIL FROM:<a@b.test",
    "MAIL FROM:<<>>",
    "MAIL FROM:a@b.test",
    "MAIL FROM:<a@b.test> SIZE=abc",
    "MAIL FROM:<a@b.test> BODY=9BIT",
    "MAIL FROM:<a@b.test> RET=FULL",
    "MAIL FROM:<a@b.test>junk",
    "MAIL FROM:<a b@c.test>",
    "MAIL FROM:<a@b..test>",
    "MAIL TO:<a@b.test>",
    "MAIL",
    "MAIL FROM:<ü@b.test>",
]
BAD_RCPT = [
    "RCPT TO:<",
    "RCPT TO:<>",
    "RCPT TO:<a@b.test> NOTIFY=NEVER",
    "RCPT TO:<a>",
    "RCPT TO:<@x.test:a@b.test>",
    "RCPT TO:<a@[127.0.0.1]>",
    "RCPT TO:<" + "a" * 65 + "@b.test>",
    "RCPT TO:<a@" + "b" * 300 + ".test>",
    "RCPT TO:<ü@b.test>",
    "RCPT FROM:<a@b.test>",
]


@pytest.mark.parametrize("line", BAD_MAIL)
def test_malformed_mail_from(ingress: IngressProcess, line: str) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        code, text = smtp.cmd(line)
        assert 500 <= code < 600, (code, text)
        assert text[:1] == "5"
        assert "Error" not in text
        assert "Traceback" not in text
        assert smtp.cmd("MAIL FROM:<ok@example.test>")[0] == 250  # the session survived


@pytest.mark.parametrize("line", BAD_RCPT)
def test_malformed_rcpt_to(ingress: IngressProcess, line: str) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<ok@example.test>")[0] == 250
        code, text = smtp.cmd(line)
        assert 500 <= code < 600, (code, text)
        assert smtp.cmd("RCPT TO:<fine@dest.test>")[0] == 250


@pytest.mark.parametrize(
    "line",
    [
        b"\xff\xfe\x00binary",
        b"EHLO",
        b"HELO two words",
        b"EHLO \x01ctl",
        b"DATA now",
        b"STARTTLS",
        b"AUTH PLAIN",
    ],
)
def test_junk_commands_get_5xx(ingress: IngressProcess, line: bytes) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        code, _ = smtp.cmd(line)
        assert 500 <= code < 600
        assert smtp.cmd("NOOP")[0] == 250
    assert "Traceback" not in ingress.log()


def test_sequence_errors(ingress: IngressProcess) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("MAIL FROM:<a@b.test>")[0] == 503  # no EHLO yet
        assert smtp.cmd("RCPT TO:<a@b.test>")[0] == 503
        assert smtp.cmd("DATA")[0] == 503
        assert smtp.cmd("EHLO c.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<a@b.test>")[0] == 250
        assert smtp.cmd("MAIL FROM:<a@b.test>")[0] == 503
        assert smtp.cmd("DATA")[0] == 503
        assert smtp.cmd("RSET")[0] == 250
        assert smtp.cmd("RCPT TO:<a@b.test>")[0] == 503
        assert smtp.cmd("VRFY someone")[0] == 252
        assert smtp.cmd("QUIT")[0] == 221
        assert smtp.closed_by_peer()


def test_disconnect_mid_data_stores_nothing(ingress: IngressProcess, spool: SpoolClient) -> None:
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("EHLO c.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<a@b.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>")[0] == 250
        assert smtp.cmd("DATA")[0] == 354
        smtp.send(b"Subject: cut\r\n\r\nhalf")
    with RawSMTP(ingress.host, ingress.port) as smtp:
        assert smtp.cmd("NOOP")[0] == 250
    assert spool_keys(spool) == []
