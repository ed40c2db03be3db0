"""One SMTP session's connection: TCP, greeting, EHLO/HELO, STARTTLS, and all socket I/O.

:class:`workers.smtp_client.SmtpClient` adds mail transactions on top. Every byte goes
through ``_read`` (one buffered ``recv``, replies parsed by :mod:`workers.smtp_wire`) and
``_write`` (one ``sendall``); OS errors, timeouts, EOF, garbage and 421 replies become
:mod:`workers.smtp_errors` exceptions and close the connection.

STARTTLS (RFC 3207) per ``tls``: "opportunistic" (RFC 7435: encrypt when offered, no
certificate check; a failed handshake falls back to cleartext on a new connection, as
Postfix does at security level "may"), "required" (no STARTTLS or a failed handshake is
:class:`TlsFailed`), "verify" (also the chain and ``mx_name``; system CAs unless
``tls_context``), "off".

SMTP AUTH (RFC 4954) with ``auth`` credentials, after the EHLO that follows STARTTLS, by
:mod:`workers.smtp_auth`: never without TLS (the opportunistic fallback to cleartext is
skipped, there is nothing to gain from it), and every failure is a transient
:class:`ConnectFailed` (:class:`TlsFailed` for missing TLS) so that mail waits for the fix.

Timeouts (RFC 5321 §4.5.3.2) bound each wait for bytes of a reply and each ``sendall``
(the data goes in chunks of ``CHUNK`` bytes: §4.5.3.2.5 says "each TCP SEND call").
"""

import contextlib
import functools
import socket
import ssl
from dataclasses import dataclass
from typing import Literal, Self

from shared.replies import Reply
from workers import smtp_auth, smtp_wire
from workers.smtp_errors import ConnectFailed, ConnectionLost, SessionTimeout, TlsFailed

TlsMode = Literal["opportunistic", "required", "verify", "off"]
CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; RFC 5321 §4.5.3.2 minimums by default (tests shrink them)."""

    connect: float = 30.0  # not in the RFC
    greeting: float = 300.0  # §4.5.3.2.1 initial 220
    command: float = 300.0  # EHLO/HELO/STARTTLS/AUTH/RSET: the server's 5 min (§4.5.3.2.7)
    mail: float = 300.0  # §4.5.3.2.2
    rcpt: float = 300.0  # §4.5.3.2.3
    data_init: float = 120.0  # §4.5.3.2.4
    data_block: float = 180.0  # §4.5.3.2.5
    data_final: float = 600.0  # §4.5.3.2.6; shorter causes duplicate deliveries (§6.1)
    quit: float = 10.0  # best effort, not in the RFC


class _PlaintextFallback(Exception):
    """Opportunistic STARTTLS handshake failed; the connection is unusable (RFC 7435)."""


@functools.cache
def _default_context(verify: bool) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # RFC 7435 §3: encrypt, do not authenticate
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class SmtpConnection:
    """An established SMTP session (greeting and EHLO done); build it with :meth:`connect`.

    Observability: ``mx_name``, ``address``, ``port``, ``greeting``, ``extensions``,
    ``esmtp``, ``tls_version`` (None in cleartext), ``auth_mechanism`` (None without AUTH),
    ``transactions`` (MAIL commands sent), ``delivered`` (transactions whose data got a
    2xx), ``closed``.
    """

    def __init__(
        self, sock: socket.socket, *, address: str, port: int, mx_name: str, timeouts: Timeouts
    ) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._timeout: float | None = None
        self._established = False
        self._needs_rset = False
        self.address, self.port, self.mx_name, self.timeouts = address, port, mx_name, timeouts
        self.greeting: Reply | None = None
        self.extensions = smtp_wire.Extensions()
        self.esmtp = False
        self.tls_version: str | None = None
        self.auth_mechanism: smtp_auth.Mechanism | None = None
        self._ehlo_reply: Reply | None = None
        self.transactions = 0
        self.delivered = 0
        self.closed = False

    @classmethod
    def connect(
        cls,
        address: str,
        port: int,
        *,
        mx_name: str,
        helo: str,
        tls: TlsMode = "opportunistic",
        timeouts: Timeouts = Timeouts(),  # frozen: sharing is safe
        source: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        auth: smtp_auth.Credentials | None = None,
    ) -> Self:
        """Connect, read the greeting, EHLO (HELO on 5xx), STARTTLS per ``tls``, EHLO again,
        then AUTH with ``auth`` when given.

        Raises :class:`ConnectFailed` (:class:`TlsFailed` for an unmet TLS policy, or for
        ``auth`` without TLS). ``tls_context`` replaces the built-in context (e.g. one
        trusting a test CA).
        """
        try:
            return cls._open(address, port, mx_name, helo, tls, timeouts, source, tls_context, auth)
        except _PlaintextFallback as exc:
            if auth is not None:  # cleartext could not authenticate: say why now
                reply = smtp_auth.NEEDS_TLS
                reply = reply.with_text(f"{reply.text} (TLS handshake failed: {exc.__cause__})")
                raise TlsFailed(f"{mx_name}[{address}]:{port}: {reply}", reply) from exc
            return cls._open(address, port, mx_name, helo, "off", timeouts, source, None, None)

    @classmethod
    def _open(
        cls,
        address: str,
        port: int,
        mx_name: str,
        helo: str,
        tls: TlsMode,
        timeouts: Timeouts,
        source: str | None,
        tls_context: ssl.SSLContext | None,
        auth: smtp_auth.Credentials | None,
    ) -> Self:
        where = f"{mx_name}[{address}]:{port}"
        try:
            sock = socket.create_connection(
                (address, port), timeouts.connect, (source, 0) if source else None
            )
        except OSError as exc:
            raise ConnectFailed(f"{where}: {exc}", smtp_wire.CONNECT_FAILED) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = cls(sock, address=address, port=port, mx_name=mx_name, timeouts=timeouts)
        try:
            client._start(helo, tls, tls_context, auth)
        except BaseException:
            client._shutdown()
            raise
        client._established = True
        return client

    def _start(
        self,
        helo: str,
        tls: TlsMode,
        tls_context: ssl.SSLContext | None,
        auth: smtp_auth.Credentials | None,
    ) -> None:
        self.greeting = self._read(self.timeouts.greeting)
        if self.greeting.code != 220:
            self._send_quietly(b"QUIT\r\n")  # §3.1: after a 554 greeting the client QUITs
            raise self._failure(self.greeting)
        self._hello(helo)
        if tls != "off":
            self._starttls(helo, tls, tls_context)
        if auth is not None:
            self._authenticate(auth, tls)

    def _hello(self, helo: str) -> None:
        reply = self._command(f"EHLO {helo}\r\n".encode("ascii"), self.timeouts.command)
        if reply.code == 250:
            self.esmtp, self.extensions = True, smtp_wire.parse_ehlo(reply)
            self._ehlo_reply = reply
            return
        if reply.is_permanent:  # §3.2: a server that refuses EHLO may still speak HELO
            reply = self._command(f"HELO {helo}\r\n".encode("ascii"), self.timeouts.command)
            if reply.code == 250:
                self.esmtp, self.extensions = False, smtp_wire.Extensions()
                self._ehlo_reply = None
                return
        raise self._failure(reply)

    def _starttls(self, helo: str, tls: TlsMode, context: ssl.SSLContext | None) -> None:
        if not self.extensions.starttls:
            if tls == "opportunistic":
                return
            raise self._failure(smtp_wire.TLS_NOT_OFFERED, TlsFailed)
        reply = self._command(b"STARTTLS\r\n", self.timeouts.command)
        if reply.code != 220:
            if tls == "opportunistic":  # RFC 3207 §4: the session goes on in cleartext
                return
            raise self._failure(reply, TlsFailed)
        # Bytes that came after the 220 in cleartext are an injection (CVE-2011-0411 family).
        self._buffer.clear()
        context = context or _default_context(tls == "verify")
        hostname = self.mx_name.rstrip(".") or None
        try:
            tls_sock = context.wrap_socket(self._sock, server_hostname=hostname)
        except (ssl.SSLError, OSError) as exc:
            if tls == "opportunistic":
                raise _PlaintextFallback from exc
            verified = isinstance(exc, ssl.SSLCertVerificationError)
            reply = smtp_wire.TLS_NOT_VERIFIED if verified else smtp_wire.TLS_FAILED
            raise self._failure(reply.with_text(f"{reply.text}: {exc}"), TlsFailed) from exc
        self._sock, self.tls_version = tls_sock, tls_sock.version()
        self._hello(helo)  # RFC 3207 §4.2: forget the cleartext EHLO, ask again

    def _authenticate(self, credentials: smtp_auth.Credentials, tls: TlsMode) -> None:
        """RFC 4954 with the EHLO reply in force; PLAIN and LOGIN only ever over TLS."""
        if not self.tls_active:
            why = "tls is off" if tls == "off" else "the server offers no STARTTLS"
            if tls != "off" and self.extensions.starttls:  # opportunistic, refused (RFC 3207 §4)
                why = "the server refused STARTTLS"
            reply = smtp_auth.NEEDS_TLS.with_text(f"{smtp_auth.NEEDS_TLS.text} ({why})")
            self._send_quietly(b"QUIT\r\n")
            raise self._failure(reply, TlsFailed)
        try:
            self.auth_mechanism = smtp_auth.authenticate(
                lambda line: self._command(line, self.timeouts.command),
                self._ehlo_reply,
                credentials,
            )
        except smtp_auth.AuthFailed as exc:
            self._send_quietly(b"QUIT\r\n")  # the session is fine, only useless to us
            raise self._failure(exc.reply) from None

    def close(self) -> None:
        """QUIT (best effort, RFC 5321 §4.1.1.10) and close; safe to call twice."""
        if self.closed:
            return
        with contextlib.suppress(ConnectionLost):  # closed already by _failure
            self._command(b"QUIT\r\n", self.timeouts.quit)
        self._shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        tls = self.tls_version or "cleartext"
        return f"<{type(self).__name__} {self._where()} {tls} transactions={self.transactions}>"

    @property
    def tls_active(self) -> bool:
        return self.tls_version is not None

    # I/O: every byte in or out goes through these; OS errors become ConnectionLost.

    def _command(self, line: bytes, timeout: float) -> Reply:
        self._write(line, timeout)
        return self._read(timeout)

    def _read(self, timeout: float) -> Reply:
        """The next reply; a 421 (§3.8), EOF, timeout or garbage raise and close."""
        while True:
            try:
                parsed = smtp_wire.parse_reply(self._buffer) if self._buffer else None
            except smtp_wire.ReplyError as exc:
                raise self._failure(smtp_wire.PROTOCOL_ERROR.with_text(str(exc))) from exc
            if parsed is not None:
                reply, end = parsed
                del self._buffer[:end]
                if reply.code == 421:
                    raise self._failure(reply)
                return reply
            self._set_timeout(timeout)
            try:
                chunk = self._sock.recv(65536)
            except OSError as exc:
                raise self._os_failure(exc) from exc
            if not chunk:
                raise self._failure(smtp_wire.CONNECTION_DROPPED)
            self._buffer += chunk

    def _write(self, data: bytes, timeout: float) -> None:
        self._set_timeout(timeout)
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise self._os_failure(exc) from exc

    def _set_timeout(self, timeout: float) -> None:
        if timeout != self._timeout:  # settimeout costs a syscall (ioctl FIONBIO)
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def _send_quietly(self, data: bytes) -> None:
        with contextlib.suppress(OSError):  # best effort: the session is being abandoned
            self._sock.sendall(data)

    def _os_failure(self, exc: OSError) -> ConnectionLost:
        if isinstance(exc, TimeoutError):
            return self._failure(smtp_wire.TIMED_OUT, SessionTimeout)
        return self._failure(smtp_wire.CONNECTION_DROPPED.with_text(f"Connection lost: {exc}"))

    def _failure(self, reply: Reply, kind: type[ConnectionLost] = ConnectionLost) -> ConnectionLost:
        """Close, and build the exception; before the session is up it is a ConnectFailed."""
        self._shutdown()
        if not self._established and not issubclass(kind, ConnectFailed):
            kind = ConnectFailed
        return kind(f"{self._where()}: {reply}", reply)

    def _shutdown(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):  # nothing left to do with such a socket
            self._sock.close()

    def _where(self) -> str:
        return f"{self.mx_name}[{self.address}]:{self.port}"
