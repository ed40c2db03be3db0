"""SMTP AUTH (RFC 4954) in workers/smtp_connection.py against the test sink on 127.0.0.N.

The sink (tests/servers/smtp_sink.py) offers STARTTLS with its own test CA and advertises
AUTH only after it; the client trusts that CA through ``tls_context``. Every failure must be
a *transient* ConnectFailed (mail waits for the operator), and no credentials may leave
the client without TLS: ``sink.auth_attempts`` counts every AUTH command that arrived.
"""

import itertools
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.errors import TemporaryFailure
from tests.servers.smtp_sink import Behaviour, SmtpSink
from workers import smtp_auth
from workers.smtp_auth import Credentials
from workers.smtp_client import ConnectFailed, SmtpClient, Timeouts, TlsFailed, TlsMode

_HOSTS = itertools.count(120)  # 127.0.0.120, .121, …: one address per sink
USERS = {"relay@example.test": "pa:ss wörd"}
GOOD = Credentials("relay@example.test", "pa:ss wörd")
WRONG = Credentials("relay@example.test", "hunter2")
TIMEOUTS = Timeouts(*[5.0] * 9)
BODY = b"Subject: relayed\r\n\r\nthrough the smarthost\r\n"
StartSink = Callable[[Behaviour], SmtpSink]


@pytest.fixture
def start_sink() -> Iterator[StartSink]:
    sinks: list[SmtpSink] = []

    def start(behaviour: Behaviour) -> SmtpSink:
        sinks.append(SmtpSink(f"127.0.0.{next(_HOSTS)}", 0, behaviour).start())
        return sinks[-1]

    yield start
    for sink in sinks:
        sink.stop()


def connect(
    sink: SmtpSink, auth: Credentials, tls: TlsMode = "verify", **kwargs: Any
) -> SmtpClient:
    """SmtpClient.connect to ``sink`` (named sink.test in its certificate), trusting its CA."""
    if sink.certificates is not None:
        kwargs.setdefault("tls_context", sink.certificates.client_context())
    return SmtpClient.connect(
        sink.host,
        sink.port,
        mx_name="sink.test",
        helo="relay.test",
        tls=tls,
        timeouts=TIMEOUTS,
        auth=auth,
        **kwargs,
    )


def refusal(sink: SmtpSink, auth: Credentials, **kwargs: Any) -> ConnectFailed:
    with pytest.raises(ConnectFailed) as caught:
        connect(sink, auth, **kwargs)
    exc = caught.value
    assert isinstance(exc, TemporaryFailure)
    assert exc.reply.is_transient
    assert exc.reply.status.startswith("4.7.")
    assert auth.password not in str(exc)
    assert auth.password not in exc.reply.text
    return exc


# Authenticated


@pytest.mark.parametrize("tls", ["verify", "required", "opportunistic"])
def test_plain_then_a_delivery_that_records_the_user(start_sink: StartSink, tls: TlsMode) -> None:
    sink = start_sink(Behaviour(auth=USERS))
    with connect(sink, GOOD, tls) as client:
        assert client.tls_active
        assert client.auth_mechanism == "PLAIN"
        delivery = client.send("s@a.test", ["r@b.test"], BODY)
        assert delivery.final.code == 250
    [message] = sink.wait_for(1)
    assert message.auth_user == "relay@example.test"
    assert message.tls
    assert message.data == BODY
    assert sink.auth_attempts == 1


def test_login_when_only_login_is_offered(start_sink: StartSink) -> None:
    sink = start_sink(Behaviour(auth=USERS, auth_mechanisms=("LOGIN",)))
    with connect(sink, GOOD) as client:
        assert client.auth_mechanism == "LOGIN"
        assert client.send("s@a.test", ["r@b.test"], BODY).final.code == 250
    assert sink.wait_for(1)[0].auth_user == "relay@example.test"
    assert sink.auth_attempts == 1


def test_without_auth_the_sink_refuses_mail(start_sink: StartSink) -> None:
    """The sink's side of the contract: the client above got through only thanks to AUTH."""
    sink = start_sink(Behaviour(auth=USERS))
    assert sink.certificates is not None
    with SmtpClient.connect(
        sink.host,
        sink.port,
        mx_name="sink.test",
        helo="relay.test",
        tls="verify",
        timeouts=TIMEOUTS,
        tls_context=sink.certificates.client_context(),
    ) as client:
        assert client.auth_mechanism is None
        delivery = client.send("s@a.test", ["r@b.test"], BODY)
        assert (delivery.final.code, delivery.final.status) == (530, "5.7.0")
    assert sink.messages == []


# Refused: transient (4.7.x), the session closed, nothing delivered


@pytest.mark.parametrize("mechanisms", [("PLAIN", "LOGIN"), ("LOGIN",)])
def test_wrong_password_is_transient(start_sink: StartSink, mechanisms: tuple[str, ...]) -> None:
    sink = start_sink(Behaviour(auth=USERS, auth_mechanisms=mechanisms))
    exc = refusal(sink, WRONG)
    assert not isinstance(exc, TlsFailed)
    assert (exc.reply.code, exc.reply.status) == (421, "4.7.8")
    assert "535 5.7.8 Authentication credentials invalid" in exc.reply.text
    assert sink.auth_attempts == 1
    assert sink.transactions == []


def test_server_without_auth_is_transient(start_sink: StartSink) -> None:
    sink = start_sink(Behaviour(starttls=True))
    exc = refusal(sink, GOOD)
    assert exc.reply == smtp_auth.NOT_OFFERED
    assert sink.auth_attempts == 0


def test_no_usable_mechanism_is_transient(start_sink: StartSink) -> None:
    sink = start_sink(Behaviour(auth=USERS, auth_mechanisms=("CRAM-MD5",)))
    exc = refusal(sink, GOOD)
    assert exc.reply.text.endswith("server offers CRAM-MD5")
    assert sink.auth_attempts == 0


# Never without TLS


def test_no_starttls_offered_no_credentials_sent(start_sink: StartSink) -> None:
    sink = start_sink(Behaviour())
    exc = refusal(sink, GOOD, tls="opportunistic")
    assert isinstance(exc, TlsFailed)
    assert exc.reply.status == "4.7.10"
    assert "the server offers no STARTTLS" in exc.reply.text
    assert sink.auth_attempts == 0


def test_auth_offered_in_cleartext_is_not_used_without_tls(start_sink: StartSink) -> None:
    """A server that offers AUTH before TLS (misconfigured, or a MITM that stripped
    STARTTLS) gets no credentials: the client checks TLS, not the server's offer."""
    sink = start_sink(Behaviour(auth=USERS, auth_cleartext=True))
    exc = refusal(sink, GOOD, tls="off")
    assert isinstance(exc, TlsFailed)
    assert exc.reply.status == "4.7.10"
    assert "tls is off" in exc.reply.text
    assert sink.auth_attempts == 0


def test_failed_handshake_does_not_fall_back_to_cleartext(start_sink: StartSink) -> None:
    """Opportunistic TLS retries in cleartext after a failed handshake (RFC 7435); with
    credentials that retry could only fail, so the client says why at once."""
    sink = start_sink(Behaviour(auth=USERS, auth_cleartext=True))
    untrusting = ssl.create_default_context()  # system CAs: the sink's test CA is unknown
    exc = refusal(sink, GOOD, tls="opportunistic", tls_context=untrusting)
    assert isinstance(exc, TlsFailed)
    assert exc.reply.status == "4.7.10"
    assert "TLS handshake failed" in exc.reply.text
    assert sink.connections == 1
    assert sink.auth_attempts == 0
