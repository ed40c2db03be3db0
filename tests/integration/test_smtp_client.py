"""workers/smtp_client.py against real SMTP servers (aiosmtpd) on 127.0.0.N.

Each test starts its own servers: an aiosmtpd ``Controller`` whose protocol records every
chunk the client's writes arrive in (so pipelining is visible: one chunk holds MAIL, the
RCPTs and DATA), with a handler that refuses, shuts down or hangs on demand; and, for
greetings aiosmtpd cannot send, a one-connection raw server.
"""

import asyncio
import datetime
import itertools
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.errors import TemporaryFailure
from shared.replies import Reply
from workers import smtp_wire
from workers.smtp_client import (
    ConnectFailed,
    ConnectionLost,
    SessionTimeout,
    SmtpClient,
    Timeouts,
    TlsFailed,
    TlsMode,
)

_HOSTS = itertools.count(60)  # 127.0.0.60, .61, …: one address per server
REFUSED = Reply(550, "5.1.1", "No such user")
QUEUED = Reply(250, "2.0.0", "Queued")
SHUTDOWN = Reply(421, "4.3.2", "Service shutting down")
BODY = b"Subject: test\r\n\r\nHello\r\n.leading dot\r\n..two\r\n.\r\nend\r\n"


def listener(host: str) -> socket.socket:
    """A listening socket on ``host``, port 0. IPPROTO_TCP explicitly: asyncio sets
    TCP_NODELAY only on sockets whose ``proto`` says TCP, and without it aiosmtpd's
    one-write-per-line replies meet delayed ACKs (40 ms per multi-line reply)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind((host, 0))
    sock.listen()
    return sock


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    content: bytes
    peer: object
    tls: bool


@dataclass
class Handler:
    """The server's decisions (aiosmtpd hooks) and what it saw."""

    pipelining: bool = True
    ehlo: bool = True
    refuse: frozenset[str] = frozenset()
    shutdown_at: str = ""
    data: Literal["accept", "drop", "hang"] = "accept"
    chunks: list[bytes] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        if not self.ehlo:
            return ["502 5.5.1 EHLO not implemented"]
        session.host_name = hostname
        if self.pipelining:
            responses.insert(1, "250-PIPELINING")  # the first line greets, the last is HELP
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address == self.shutdown_at:
            return str(SHUTDOWN)
        if address in self.refuse:
            return str(REFUSED)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data == "drop":
            assert isinstance(server.transport, asyncio.Transport)
            server.transport.abort()  # nothing more goes out, not even the reply
        elif self.data == "hang":
            await asyncio.sleep(60)  # cancelled when the controller stops
        content = envelope.original_content or b""
        self.received.append(
            Received(
                envelope.mail_from or "",
                list(envelope.rcpt_tos),
                list(envelope.mail_options),
                content,
                session.peer,
                session.ssl is not None,
            )
        )
        return str(QUEUED)

    def pipelined_chunks(self) -> list[bytes]:
        return [c for c in self.chunks if b"MAIL FROM" in c and b"RCPT TO" in c]


class RecordingSMTP(SMTP):
    def __init__(self, handler: Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self.recorder = handler

    def data_received(self, data: bytes) -> None:
        self.recorder.chunks.append(bytes(data))
        super().data_received(data)


class SinkController(Controller):
    """A Controller on an already bound socket of 127.0.0.N (port 0: no port races)."""

    def __init__(self, handler: Handler, host: str, **kwargs: Any) -> None:
        self.listener = listener(host)
        port = self.listener.getsockname()[1]
        super().__init__(handler, hostname=host, port=port, server_hostname="mx.test", **kwargs)

    def factory(self) -> RecordingSMTP:
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self.listener)


@dataclass
class Sink:
    handler: Handler
    host: str
    port: int

    def connect(self, tls: TlsMode = "off", **kwargs: Any) -> SmtpClient:
        return SmtpClient.connect(
            self.host, self.port, mx_name="mx.test", helo="relay.test", tls=tls, **kwargs
        )


StartSink = Callable[..., Sink]


@pytest.fixture
def start_sink() -> Iterator[StartSink]:
    """Start aiosmtpd sinks: ``start_sink(Handler(...), **SMTP keyword arguments)``."""
    controllers: list[SinkController] = []

    def start(handler: Handler | None = None, **kwargs: Any) -> Sink:
        handler = handler or Handler()
        controller = SinkController(handler, f"127.0.0.{next(_HOSTS)}", **kwargs)
        controller.start()
        controllers.append(controller)
        return Sink(handler, controller.hostname, controller.port)

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for mx.test (EC P-256, valid for a day)."""
    directory = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("mx.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    paths = Certificate(directory / "cert.pem", directory / "key.pem")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class RawServer:
    """One connection: send ``greeting``, record what the client sends until it closes."""

    def __init__(self, greeting: bytes) -> None:
        self.listener = listener(f"127.0.0.{next(_HOSTS)}")
        self.host, self.port = self.listener.getsockname()[:2]
        self.greeting = greeting
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            connection.settimeout(10)
            connection.sendall(self.greeting)
            while chunk := connection.recv(4096):
                self.received += chunk

    def stop(self) -> None:
        self.thread.join(10)
        self.listener.close()


# Deliveries


def test_delivery_with_mixed_recipients_in_one_transaction(start_sink: StartSink) -> None:
    sink = start_sink(Handler(refuse=frozenset({"bad@b.test"})))
    with sink.connect() as client:
        delivery = client.send("s@a.test", ["r1@b.test", "bad@b.test", "r2@b.test"], BODY)
        assert delivery.final == QUEUED
        assert delivery.replies == {"r1@b.test": QUEUED, "bad@b.test": REFUSED, "r2@b.test": QUEUED}
        assert delivery.accepted == ["r1@b.test", "r2@b.test"]
        assert (client.transactions, client.delivered, client.tls_active) == (1, 1, False)
        assert client.extensions.pipelining
        assert client.esmtp
    [received] = sink.handler.received
    assert received.mail_from == "s@a.test"
    assert received.rcpt_tos == ["r1@b.test", "r2@b.test"]
    assert received.content == BODY  # dot-stuffed on the wire, intact on arrival
    assert f"SIZE={len(BODY)}" in received.mail_options
    assert sink.handler.chunks[-1] == b"QUIT\r\n"


def test_pipelining_sends_the_envelope_in_one_write(start_sink: StartSink) -> None:
    sink = start_sink(Handler(pipelining=True))
    with sink.connect() as client:
        client.send("s@a.test", ["r1@b.test", "r2@b.test"], BODY)
    [chunk] = sink.handler.pipelined_chunks()
    assert chunk.startswith(b"MAIL FROM:<s@a.test>")
    assert chunk.count(b"RCPT TO:") == 2
    assert chunk.endswith(b"DATA\r\n")


def test_no_pipelining_when_not_advertised(start_sink: StartSink) -> None:
    sink = start_sink(Handler(pipelining=False))
    with sink.connect() as client:
        delivery = client.send("s@a.test", ["r1@b.test", "r2@b.test"], BODY)
        assert delivery.accepted == ["r1@b.test", "r2@b.test"]
    assert sink.handler.pipelined_chunks() == []
    commands = [c for c in sink.handler.chunks if c.split(b":")[0] in (b"MAIL FROM", b"RCPT TO")]
    assert len(commands) == 3
    assert b"DATA\r\n" in sink.handler.chunks


def test_connection_reuse_for_several_messages(start_sink: StartSink) -> None:
    sink = start_sink()
    with sink.connect() as client:
        for number in range(5):
            body = b"Subject: %d\r\n\r\nbody\r\n" % number
            assert client.send("s@a.test", [f"r{number}@b.test"], body).final == QUEUED
        assert (client.transactions, client.delivered) == (5, 5)
    received = sink.handler.received
    assert [r.rcpt_tos for r in received] == [[f"r{n}@b.test"] for n in range(5)]
    assert len({r.peer for r in received}) == 1
    assert not any(b"RSET" in chunk for chunk in sink.handler.chunks)


@pytest.mark.parametrize("pipelining", [True, False])
def test_rset_after_a_failed_transaction(start_sink: StartSink, pipelining: bool) -> None:
    sink = start_sink(Handler(pipelining=pipelining, refuse=frozenset({"x@b.test", "y@b.test"})))
    with sink.connect() as client:
        failed = client.send("s@a.test", ["x@b.test", "y@b.test"], BODY)
        assert failed.replies == {"x@b.test": REFUSED, "y@b.test": REFUSED}
        # pipelined: the server's reply to DATA; serial: DATA is never sent (RFC 5321 §3.3)
        assert failed.final.code in ((503, 554) if pipelining else (554,))
        assert client.send("s@a.test", ["ok@b.test"], BODY).final == QUEUED
    rsets = [chunk for chunk in sink.handler.chunks if b"RSET\r\n" in chunk]
    assert len(rsets) == 1
    assert rsets[0].startswith(b"RSET\r\nMAIL FROM") == pipelining  # RFC 2920 §3.1
    assert [r.rcpt_tos for r in sink.handler.received] == [["ok@b.test"]]


def test_helo_when_ehlo_is_refused(start_sink: StartSink) -> None:
    sink = start_sink(Handler(ehlo=False))
    with sink.connect() as client:
        assert not client.esmtp
        assert client.extensions == smtp_wire.Extensions()
        assert client.send("s@a.test", ["r@b.test"], BODY).final == QUEUED
    assert sink.handler.received[0].mail_options == []  # no SIZE without EHLO


def test_8bit_body_declared_when_offered(start_sink: StartSink) -> None:
    sink = start_sink()
    body = "Subject: é\r\n\r\nçà\r\n".encode()
    with sink.connect() as client:
        assert client.send("s@a.test", ["r@b.test"], body).final == QUEUED
    assert "BODY=8BITMIME" in sink.handler.received[0].mail_options
    assert sink.handler.received[0].content == body


# Decided without a transaction


def test_smtputf8_message_to_a_server_without_smtputf8(start_sink: StartSink) -> None:
    sink = start_sink(enable_SMTPUTF8=False)
    with sink.connect() as client:
        assert not client.extensions.smtputf8
        delivery = client.send("s@a.test", ["r@b.test"], BODY, smtputf8=True)
        assert delivery.replies == {"r@b.test": smtp_wire.NEED_SMTPUTF8}
        assert delivery.final.status == "5.6.7"
        delivery = client.send("s@a.test", ["rü@b.test"], BODY)  # a non-ASCII address
        assert delivery.final == smtp_wire.NEED_SMTPUTF8
        assert client.transactions == 0
    assert not any(b"MAIL" in chunk for chunk in sink.handler.chunks)


def test_smtputf8_message_to_a_server_with_smtputf8(start_sink: StartSink) -> None:
    sink = start_sink(enable_SMTPUTF8=True)
    with sink.connect() as client:
        assert client.send("sé@a.test", ["rü@b.test"], BODY).final == QUEUED
    assert "SMTPUTF8" in sink.handler.received[0].mail_options
    assert sink.handler.received[0].rcpt_tos == ["rü@b.test"]


def test_size_exceeded_is_refused_without_sending(start_sink: StartSink) -> None:
    sink = start_sink(data_size_limit=100)
    with sink.connect() as client:
        assert client.extensions.size == 100
        delivery = client.send("s@a.test", ["r1@b.test", "r2@b.test"], b"x" * 99 + b"\r\n")
        assert delivery.replies == dict.fromkeys(
            ["r1@b.test", "r2@b.test"], smtp_wire.MESSAGE_TOO_BIG
        )
        assert (delivery.final.code, delivery.final.status) == (552, "5.3.4")
        assert client.send("s@a.test", ["r1@b.test"], BODY).final == QUEUED
    assert [r.content for r in sink.handler.received] == [BODY]


def test_address_with_line_break_is_never_sent(start_sink: StartSink) -> None:
    sink = start_sink()
    evil = "x@b.test>\r\nRCPT TO:<victim@c.test"
    with sink.connect() as client:
        delivery = client.send("s@a.test", [evil, "r@b.test"], BODY)
        assert delivery.replies == {evil: smtp_wire.BAD_RECIPIENT, "r@b.test": QUEUED}
    assert sink.handler.received[0].rcpt_tos == ["r@b.test"]


# STARTTLS (RFC 3207, RFC 7435)


def test_opportunistic_tls_does_not_verify(start_sink: StartSink, certificate: Certificate) -> None:
    sink = start_sink(tls_context=certificate.server_context())
    with sink.connect(tls="opportunistic") as client:
        assert client.tls_active
        assert client.tls_version in ("TLSv1.2", "TLSv1.3")
        assert client.extensions.pipelining
        assert not client.extensions.starttls
        assert client.send("s@a.test", ["r@b.test"], BODY).final == QUEUED
    assert sink.handler.received[0].tls
    assert len(sink.handler.pipelined_chunks()) == 1  # recorded after decryption


def test_opportunistic_without_starttls_stays_in_cleartext(start_sink: StartSink) -> None:
    sink = start_sink()
    with sink.connect(tls="opportunistic") as client:
        assert not client.tls_active
        assert client.send("s@a.test", ["r@b.test"], BODY).final == QUEUED


def test_opportunistic_falls_back_to_cleartext_when_the_handshake_fails(
    start_sink: StartSink, certificate: Certificate
) -> None:
    server_context = certificate.server_context()
    server_context.minimum_version = ssl.TLSVersion.TLSv1_3
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname, client_context.verify_mode = False, ssl.CERT_NONE
    client_context.maximum_version = ssl.TLSVersion.TLSv1_2
    sink = start_sink(tls_context=server_context)
    with sink.connect(tls="opportunistic", tls_context=client_context) as client:
        assert not client.tls_active
        assert client.send("s@a.test", ["r@b.test"], BODY).final == QUEUED
    assert not sink.handler.received[0].tls


def test_required_tls_not_offered_is_a_temporary_failure(start_sink: StartSink) -> None:
    sink = start_sink()
    with pytest.raises(TlsFailed) as caught:
        sink.connect(tls="required")
    assert isinstance(caught.value, TemporaryFailure)
    assert caught.value.reply == smtp_wire.TLS_NOT_OFFERED


def test_verify_fails_on_a_self_signed_certificate(
    start_sink: StartSink, certificate: Certificate
) -> None:
    sink = start_sink(tls_context=certificate.server_context())
    with pytest.raises(TlsFailed) as caught:
        sink.connect(tls="verify")
    assert (caught.value.reply.code, caught.value.reply.status) == (421, "4.7.5")
    assert "certificate" in caught.value.reply.text


def test_verify_checks_chain_and_mx_name(start_sink: StartSink, certificate: Certificate) -> None:
    sink = start_sink(tls_context=certificate.server_context())
    trusting = ssl.create_default_context(cafile=str(certificate.cert))
    with sink.connect(tls="verify", tls_context=trusting) as client:
        assert client.tls_active
        assert client.send("s@a.test", ["r@b.test"], BODY).final == QUEUED
    with pytest.raises(TlsFailed):
        SmtpClient.connect(
            sink.host,
            sink.port,
            mx_name="other.test",
            helo="relay.test",
            tls="verify",
            tls_context=trusting,
        )


# Connection-level failures


def test_421_mid_session_names_the_recipients_without_verdict(start_sink: StartSink) -> None:
    handler = Handler(refuse=frozenset({"bad@b.test"}), shutdown_at="stop@b.test")
    sink = start_sink(handler)
    client = sink.connect()
    recipients = ["r1@b.test", "bad@b.test", "stop@b.test", "r2@b.test"]
    with pytest.raises(ConnectionLost) as caught:
        client.send("s@a.test", recipients, BODY)
    assert caught.value.reply == SHUTDOWN
    assert caught.value.pending == ("r1@b.test", "stop@b.test", "r2@b.test")
    assert caught.value.replies == {"bad@b.test": REFUSED}
    assert not caught.value.maybe_delivered
    assert client.closed
    with pytest.raises(ConnectionLost) as again:
        client.send("s@a.test", ["r3@b.test"], BODY)
    assert again.value.pending == ("r3@b.test",)


def test_server_closing_the_connection_mid_data(start_sink: StartSink) -> None:
    sink = start_sink(Handler(data="drop"))
    client = sink.connect()
    with pytest.raises(ConnectionLost) as caught:
        client.send("s@a.test", ["r1@b.test", "r2@b.test"], BODY)
    assert caught.value.reply.status == "4.4.2"
    assert caught.value.pending == ("r1@b.test", "r2@b.test")
    assert caught.value.maybe_delivered  # RFC 5321 §6.1: the message may have arrived
    assert client.closed


def test_timeout_on_the_final_data_reply(start_sink: StartSink) -> None:
    sink = start_sink(Handler(data="hang"))
    client = sink.connect(timeouts=Timeouts(data_final=0.3))
    with pytest.raises(SessionTimeout) as caught:
        client.send("s@a.test", ["r@b.test"], BODY)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.reply == smtp_wire.TIMED_OUT
    assert (caught.value.pending, caught.value.maybe_delivered) == (("r@b.test",), True)


def test_connect_refused() -> None:
    with socket.create_server((f"127.0.0.{next(_HOSTS)}", 0)) as placeholder:
        host, port = placeholder.getsockname()[:2]
    with pytest.raises(ConnectFailed) as caught:
        SmtpClient.connect(host, port, mx_name="mx.test", helo="relay.test")
    assert caught.value.reply.status == "4.4.1"


@pytest.mark.parametrize(
    ("greeting", "reply"),
    [
        (b"554 5.3.2 No SMTP service here\r\n", Reply(554, "5.3.2", "No SMTP service here")),
        (
            b"421-4.7.0 Too busy\r\n421 4.7.0 try later\r\n",
            Reply(421, "4.7.0", "Too busy\ntry later"),
        ),
        (b"HTTP/1.1 400 Bad Request\r\n", None),
    ],
)
def test_bad_greeting_raises_connect_failed(greeting: bytes, reply: Reply | None) -> None:
    server = RawServer(greeting)
    with pytest.raises(ConnectFailed) as caught:
        SmtpClient.connect(server.host, server.port, mx_name="mx.test", helo="relay.test")
    server.stop()
    assert isinstance(caught.value, TemporaryFailure)  # try the next MX (RFC 5321 §5.1)
    if reply is None:
        assert caught.value.reply.status == smtp_wire.PROTOCOL_ERROR.status
    else:
        assert caught.value.reply == reply
    if greeting.startswith(b"554"):
        assert server.received == b"QUIT\r\n"  # RFC 5321 §3.1


def test_greeting_timeout() -> None:
    server = RawServer(b"")
    with pytest.raises(ConnectFailed) as caught:
        SmtpClient.connect(
            server.host,
            server.port,
            mx_name="mx.test",
            helo="relay.test",
            timeouts=Timeouts(greeting=0.2),
        )
    server.stop()
    assert caught.value.reply == smtp_wire.TIMED_OUT
