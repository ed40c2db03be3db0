"""STARTTLS (RFC 3207) and SMTP AUTH (RFC 4954) against a real ingress process.

AUTH is offered only inside TLS (unless ``auth_require_tls = false``); an authenticated
client may relay from anywhere; failures cost the client and end the session; nothing a
client pipelines behind STARTTLS survives the handshake (CVE-2011-0411).
"""

import base64
import smtplib
import ssl
import time
from pathlib import Path

import pytest

from shared import replies
from shared.passwords import hash_password
from tests.conftest import StartIngress
from tests.servers.certs import Certificates, make_certificates
from tests.servers.httpprobe import metric
from tests.servers.ingress_process import IngressProcess
from tests.servers.rawsmtp import RawSMTP
from tests.servers.smtpcheck import body, envelope, queued_id, spool_keys, wire
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

USER, PASSWORD = "alice", "correct horse battery staple"
OUTSIDER = "127.0.0.2"  # not in the test relay_networks (127.0.0.1/32)
MESSAGE = b"Subject: auth\r\n\r\nsent by an authenticated client\r\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def plain(user: str, password: str) -> str:
    return b64(b"\0" + user.encode() + b"\0" + password.encode())


def ehlo_keywords(text: str) -> list[str]:
    """The EHLO reply's extension lines (the first line is the host name)."""
    return text.splitlines()[1:]


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "tls")


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "credentials"
    path.write_text(f"# test accounts\n{USER}:{hash_password(PASSWORD, ln=10)}\n")
    return path


@pytest.fixture
def tls_ingress(
    start_ingress: StartIngress, spool: SpoolClient, certs: Certificates, auth_file: Path
) -> IngressProcess:
    return start_ingress(
        tls_cert=certs.cert, tls_key=certs.key, auth_file=auth_file, max_auth_failures=2
    )


def tls_session(ingress: IngressProcess, certs: Certificates, source: str = OUTSIDER) -> RawSMTP:
    """A raw session that said EHLO, STARTTLS, handshook and said EHLO again."""
    smtp = RawSMTP(ingress.host, ingress.port, source=source)
    assert smtp.cmd("EHLO client.test")[0] == 250
    assert smtp.cmd("STARTTLS") == wire(replies.READY_TLS)
    smtp.starttls(certs.client_context(), server_hostname="mx.test")
    assert smtp.cmd("EHLO client.test")[0] == 250
    return smtp


def test_before_tls_starttls_is_offered_and_auth_is_not(
    tls_ingress: IngressProcess, spool: SpoolClient
) -> None:
    with RawSMTP(tls_ingress.host, tls_ingress.port, source=OUTSIDER) as smtp:
        code, text = smtp.cmd("EHLO client.test")
        assert code == 250
        keywords = ehlo_keywords(text)
        assert "STARTTLS" in keywords
        assert not [word for word in keywords if word.startswith("AUTH")], keywords
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_NEEDS_TLS)
        assert smtp.cmd("AUTH LOGIN") == wire(replies.AUTH_NEEDS_TLS)
        # The refusal did not authenticate anything: the outsider still may not relay.
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
    assert spool_keys(spool) == []


def test_after_starttls_auth_is_offered_and_starttls_is_not(
    tls_ingress: IngressProcess, certs: Certificates
) -> None:
    with RawSMTP(tls_ingress.host, tls_ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("STARTTLS") == wire(replies.READY_TLS)
        smtp.starttls(certs.client_context(), server_hostname="mx.test")
        assert isinstance(smtp.sock, ssl.SSLSocket)
        assert smtp.sock.version() in ("TLSv1.2", "TLSv1.3")
        # RFC 3207 §4.2: the session starts over; MAIL before a new EHLO is refused.
        assert smtp.cmd("MAIL FROM:<s@example.test>") == wire(replies.NEED_HELO)
        code, text = smtp.cmd("EHLO client.test")
        assert code == 250
        keywords = ehlo_keywords(text)
        assert "AUTH PLAIN LOGIN" in keywords
        assert "STARTTLS" not in keywords
        assert smtp.cmd("STARTTLS") == wire(replies.ALREADY_TLS)


def test_auth_plain_lets_an_outsider_relay(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates
) -> None:
    with smtplib.SMTP(
        tls_ingress.host, tls_ingress.port, source_address=(OUTSIDER, 0), timeout=10
    ) as smtp:
        smtp.ehlo("client.test")
        smtp.starttls(context=certs.client_context())
        smtp.ehlo("client.test")
        assert smtp.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        code, text = smtp.login(USER, PASSWORD)  # smtplib picks PLAIN
        assert (code, text.decode()) == wire(replies.AUTH_OK)
        smtp.sendmail("s@example.test", ["r@dest.test"], MESSAGE)
    (msg_key,) = [key for key in spool_keys(spool) if key.startswith("mxf:body:")]
    msg_id = msg_key.rsplit(":", 1)[1]
    stored = envelope(spool, msg_id)
    assert stored["auth"] == USER
    assert stored["client"] == OUTSIDER
    assert stored["proto"] == "ESMTPSA"
    received = f"Received: from client.test ([{OUTSIDER}])\r\n\tby mx.test with ESMTPSA id {msg_id}"
    assert body(spool, msg_id).startswith(received.encode())


def test_auth_login_lets_an_outsider_relay(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates
) -> None:
    with tls_session(tls_ingress, certs) as smtp:
        assert smtp.cmd("AUTH LOGIN") == (334, b64(b"Username:"))
        assert smtp.cmd(b64(USER.encode())) == (334, b64(b"Password:"))
        assert smtp.cmd(b64(PASSWORD.encode())) == wire(replies.AUTH_OK)
        code, text = smtp.cmd("EHLO client.test")
        assert code == 250
        assert not [word for word in ehlo_keywords(text) if word.startswith("AUTH")]
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.ALREADY_AUTH)
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MESSAGE, ehlo=False)
    assert code == 250, text
    msg_id = queued_id(text)
    stored = envelope(spool, msg_id)
    assert (stored["auth"], stored["client"], stored["proto"]) == (USER, OUTSIDER, "ESMTPSA")
    assert b"\tby mx.test with ESMTPSA id " in body(spool, msg_id)


def test_a_failed_attempt_can_be_followed_by_a_good_one(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates
) -> None:
    with tls_session(tls_ingress, certs) as smtp:
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, 'wrong')}") == wire(replies.AUTH_FAILED)
        assert smtp.cmd("MAIL FROM:<s@example.test>")[0] == 250
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
        assert smtp.cmd("RSET")[0] == 250
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_OK)
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MESSAGE, ehlo=False)
    assert code == 250, text
    assert envelope(spool, queued_id(text))["auth"] == USER


def test_bad_credentials_get_535_and_too_many_end_the_session(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates
) -> None:
    # max_auth_failures=2 in this ingress: the first failure is answered 535, the second
    # ends the session with 421.
    with tls_session(tls_ingress, certs) as smtp:
        started = time.monotonic()
        assert smtp.cmd(f"AUTH PLAIN {plain('mallory', PASSWORD)}") == wire(replies.AUTH_FAILED)
        assert time.monotonic() - started >= 0.9  # each failure costs the client a second
        assert smtp.cmd("AUTH LOGIN") == (334, b64(b"Username:"))
        assert smtp.cmd(b64(USER.encode())) == (334, b64(b"Password:"))
        assert smtp.cmd(b64(b"guess")) == wire(replies.TOO_MANY_AUTH_FAILURES)
        assert smtp.closed_by_peer(timeout=10)
    assert spool_keys(spool) == []
    assert spool.get(f"mxf:authfail:{OUTSIDER}") == b"2"  # counted for the whole cluster
    assert metric(tls_ingress.metrics_port, "mxfleet_ingress_auth_total", result="failed") == 2
    assert (
        metric(
            tls_ingress.metrics_port,
            "mxfleet_ingress_session_errors_total",
            reason="auth_failures",
        )
        == 1
    )
    assert "event=auth_failed" in tls_ingress.log()


@pytest.mark.parametrize("use_tls", [False, True], ids=["plain", "tls"])
def test_unauthenticated_outsider_may_not_relay(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates, use_tls: bool
) -> None:
    smtp = (
        tls_session(tls_ingress, certs)
        if use_tls
        else RawSMTP(tls_ingress.host, tls_ingress.port, source=OUTSIDER)
    )
    with smtp:
        if not use_tls:
            assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("MAIL FROM:<s@example.test>") == wire(replies.SENDER_OK)
        assert smtp.cmd("RCPT TO:<r@dest.test>") == wire(replies.RELAY_DENIED)
        assert smtp.cmd("RCPT TO:<r%dest.test@mx.test>") == wire(replies.RELAY_DENIED)
        assert smtp.cmd("DATA") == wire(replies.NEED_RCPT)
    assert spool_keys(spool) == []


def test_commands_pipelined_behind_starttls_are_discarded(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates
) -> None:
    with RawSMTP(tls_ingress.host, tls_ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        # One packet: STARTTLS and, in clear text behind it, a whole injected transaction.
        smtp.send(
            b"STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<evil@example.test>\r\n"
            b"RCPT TO:<victim@dest.test>\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n"
        )
        assert smtp.reply() == wire(replies.READY_TLS)
        smtp.starttls(certs.client_context(), server_hostname="mx.test")
        # Had the injected EHLO and MAIL run (before or after the handshake), NOOP would not
        # get the first reply and MAIL would be "nested" rather than "send EHLO first".
        assert smtp.cmd("NOOP") == wire(replies.NOOP_OK)
        assert smtp.cmd("MAIL FROM:<s@example.test>") == wire(replies.NEED_HELO)
        assert smtp.cmd("QUIT") == wire(replies.BYE)
        assert smtp.closed_by_peer()
        assert smtp._buf == b"", "replies to injected commands"
    assert spool_keys(spool) == []


def test_auth_without_tls_when_allowed(
    start_ingress: StartIngress, spool: SpoolClient, auth_file: Path
) -> None:
    ingress = start_ingress(auth_file=auth_file, auth_require_tls="false")
    with RawSMTP(ingress.host, ingress.port, source=OUTSIDER) as smtp:
        code, text = smtp.cmd("EHLO client.test")
        assert code == 250
        keywords = ehlo_keywords(text)
        assert "AUTH PLAIN LOGIN" in keywords
        assert "STARTTLS" not in keywords  # no certificate configured
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_OK)
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MESSAGE, ehlo=False)
    assert code == 250, text
    msg_id = queued_id(text)
    assert envelope(spool, msg_id)["proto"] == "ESMTPA"
    assert b"\tby mx.test with ESMTPA id " in body(spool, msg_id)


def test_a_failed_tls_handshake_leaves_the_server_serving(
    tls_ingress: IngressProcess, spool: SpoolClient, certs: Certificates
) -> None:
    with RawSMTP(tls_ingress.host, tls_ingress.port) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        assert smtp.cmd("STARTTLS") == wire(replies.READY_TLS)
        smtp.send(b"this is not a TLS ClientHello\r\n" * 4)
        assert smtp.closed_by_peer(timeout=10)
    wait_until(lambda: "event=tls_failed" in tls_ingress.log(), timeout=10)
    assert tls_ingress.process is not None
    assert tls_ingress.process.poll() is None
    # The next client gets the whole service, TLS included.
    with tls_session(tls_ingress, certs) as smtp:
        assert smtp.cmd(f"AUTH PLAIN {plain(USER, PASSWORD)}") == wire(replies.AUTH_OK)
        code, text = smtp.transaction("s@example.test", ["r@dest.test"], MESSAGE, ehlo=False)
    assert code == 250, text
    assert envelope(spool, queued_id(text))["auth"] == USER
    port = tls_ingress.metrics_port
    assert metric(port, "mxfleet_ingress_tls_handshakes_total", result="failed") == 1
    assert metric(port, "mxfleet_ingress_tls_handshakes_total", result="ok") == 1
