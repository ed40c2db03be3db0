"""SMTP sinks on 127.0.0.N: the destination MX hosts of delivery tests.

Owns a small ESMTP server (RFC 5321) that runs in the test process (one asyncio loop in a
thread per sink), answers as its :class:`Behaviour` says and records every transaction that
reaches the end of DATA as a :class:`Transaction`. Several sinks share one port number on
different loopback addresses, since mxfleet's delivery port is a single setting; a "down"
MX host is an address from :func:`tests.servers.ports.free_port_on` where no sink was
started (connection refused).

Not aiosmtpd, because a sink must misbehave where aiosmtpd has no hook: a delay before
every reply, 421-and-close after K messages, knowing which connection carried which
message and whether the client pipelined, and the body exactly as received.

Wire rules: commands end at LF (CR optional); DATA ends only at CRLF.CRLF (RFC 5321
§4.1.1.4), a leading dot is removed from each line (§4.5.2) and every other byte is kept,
bare LFs included. MAIL parameters are accepted only for advertised extensions (else 555,
§4.1.1.11); a non-ASCII address needs MAIL ... SMTPUTF8 (else 553 5.6.7, RFC 6531 §3.5).
Anything pipelined behind STARTTLS is discarded (RFC 3207 §4.2, CVE-2011-0411).

SMTP AUTH (RFC 4954) when ``Behaviour.auth`` names users: the sink wants TLS first, so
``auth`` implies STARTTLS (offered, and certificates made, even without ``starttls``) and
``AUTH PLAIN LOGIN`` is advertised and accepted only once TLS is active (else 538 5.7.11;
``auth_cleartext`` lifts that, as a misconfigured server would; ``auth_mechanisms`` narrows
or changes what is advertised, only PLAIN and LOGIN work). PLAIN (RFC 4616) takes an
initial response or a 334 continuation, LOGIN asks "Username:" then "Password:"; success is
235 2.7.0, a wrong user or password 535 5.7.8, ``*`` 501 5.7.0, a second AUTH 503, and MAIL
before a successful AUTH 530 5.7.0; without ``auth``, AUTH gets 502. STARTTLS forgets an AUTH
made before it (RFC 3207 §4.2).

Pipelining detection is best effort: a transaction counts as pipelined when, as the sink
answers MAIL or a RCPT, the client's next command has already arrived. A pipelining
client on loopback is seen; one whose commands straggle in separate packets may not be.

Records (``messages``, ``transactions``, ``transactions_per_connection``, ``connections``,
``auth_attempts``, ``open_connections``, ``max_open_connections``) are updated by the sink's
thread only; read their length or read them after ``wait_until``. A transaction's
``received_at`` is ``time.monotonic()`` when its final dot arrived (before any ``delay``).
``behaviour`` may be replaced while the sink runs; each decision reads the current one.
"""

import asyncio
import base64
import binascii
import contextlib
import re
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from shared import replies
from shared.replies import Reply
from tests.servers.certs import Certificates, make_certificates
from tests.servers.wait import wait_until

TEMPFAIL = Reply(451, "4.3.0", "Temporary failure, try again later")
TOO_MANY_MESSAGES = Reply(421, "4.7.0", "Too many messages on this connection, closing")
TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed limit")  # RFC 1870 §6.1
NO_VALID_RECIPIENTS = Reply(554, "5.5.1", "No valid recipients")  # RFC 2920 §3.1
NEEDS_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")  # RFC 6531 §3.5
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")  # RFC 4954 §6
AUTH_SYNTAX = Reply(501, "5.5.2", "Cannot decode AUTH response")  # RFC 4954 §4
USERNAME = b"334 " + base64.b64encode(b"Username:") + b"\r\n"
PASSWORD = b"334 " + base64.b64encode(b"Password:") + b"\r\n"
MAX_LINE = 1 << 20  # a sink judges nothing, it only refuses to buffer without end
_PATH = re.compile(r"(?i)(FROM|TO):\s*<([^>]*)>\s*(.*)")


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How a sink answers; the defaults accept everything and advertise everything."""

    rcpt_replies: Mapping[str, Reply] = field(default_factory=dict)  # lower-case address →
    rcpt_default: Reply | None = None  # every other RCPT (None: 250 2.1.5)
    data_command_reply: Reply | None = None  # the DATA command, instead of 354
    data_reply: Reply | None = None  # after the final dot, instead of 250 (e.g. 554)
    tempfail_first: int = 0  # the sink's first N transactions (since start) get tempfail_reply
    tempfail_reply: Reply = TEMPFAIL
    max_messages_per_connection: int | None = None  # K: the MAIL after K gets 421 + close
    delay: float = 0.0  # seconds before every reply, the greeting included
    greeting: Reply | None = None  # instead of 220; a non-2xx greeting closes the connection
    silent: bool = False  # accept connections, never send a byte
    starttls: bool = False  # offer STARTTLS (certificates are made at start when not given)
    pipelining: bool = True
    smtputf8: bool = True
    eightbitmime: bool = True
    size: int | None = None  # advertise SIZE n and enforce it (RFC 1870)
    auth: Mapping[str, str] | None = None  # user → password: AUTH after STARTTLS, MAIL needs it
    auth_cleartext: bool = False  # with auth: also advertise and accept AUTH before TLS
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")  # advertised; PLAIN/LOGIN accepted


@dataclass(frozen=True, slots=True)
class Transaction:
    """One MAIL..end-of-DATA exchange, whatever the sink answered."""

    mail_from: str
    rcpt_tos: tuple[str, ...]  # accepted recipients, in order
    data: bytes  # as received, dot-unstuffed, without the final ".\r\n"
    ehlo: str  # the EHLO/HELO name ("" when none)
    tls: bool
    connection: int  # 1, 2, ... per sink, in accept order
    index: int  # 1, 2, ... within the connection
    pipelined: bool
    reply: Reply  # the sink's answer after the final dot
    mail_options: tuple[str, ...] = ()
    rejected_rcpts: tuple[str, ...] = ()
    peer: tuple[str, int] = ("", 0)
    auth_user: str = ""  # the user the session authenticated as ("" without AUTH)
    received_at: float = 0.0  # time.monotonic() when the final dot arrived

    @property
    def accepted(self) -> bool:
        return self.reply.code == 250


def _lines(code: int, texts: list[str]) -> bytes:
    """A multi-line reply (RFC 5321 §4.2.1): ``250-a``, ..., ``250 z``."""
    last = len(texts) - 1
    return b"".join(
        f"{code}{' ' if i == last else '-'}{text}\r\n".encode() for i, text in enumerate(texts)
    )


class _Input:
    """Buffered lines from a stream; knows whether more input is already waiting."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()
        self.pos = 0

    async def line(self) -> bytes:
        """The next line with its terminator; b"" at end of stream."""
        while (end := self.buffer.find(b"\n", self.pos)) < 0:
            if len(self.buffer) - self.pos > MAX_LINE:
                raise ConnectionError("line too long")
            chunk = await self.reader.read(65536)
            if not chunk:
                return b""
            self.buffer += chunk
        return self._take(end + 1)

    async def data(self) -> bytes | None:
        """The DATA section up to the CRLF before ".CRLF" (RFC 5321 §4.1.1.4), still stuffed.

        The section starts a line, so a CRLF is put in front of it: then one search for
        CRLF.CRLF finds the end, the empty message ".CRLF" included. None at end of stream.
        """
        self.buffer[self.pos : self.pos] = b"\r\n"
        start = self.pos
        while (end := self.buffer.find(b"\r\n.\r\n", start)) < 0:
            start = max(self.pos, len(self.buffer) - 4)
            chunk = await self.reader.read(65536)
            if not chunk:
                return None
            self.buffer += chunk
        return self._take(end + 5)[2:-3]

    def _take(self, end: int) -> bytes:
        taken = bytes(self.buffer[self.pos : end])
        self.pos = end
        if self.pos == len(self.buffer) or self.pos > MAX_LINE:
            del self.buffer[: self.pos]  # O(1) when nothing is left; amortised otherwise
            self.pos = 0
        return taken

    def pending(self) -> bool:
        return self.pos < len(self.buffer)

    def discard(self) -> None:
        self.buffer.clear()
        self.pos = 0


class _Session:
    """One connection: the SMTP state machine; decisions come from the sink's behaviour."""

    def __init__(
        self, sink: "SmtpSink", reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.sink, self.input, self.writer = sink, _Input(reader), writer
        self.number = sink.connections
        peer = writer.get_extra_info("peername")
        self.peer: tuple[str, int] = (str(peer[0]), int(peer[1])) if peer else ("", 0)
        self.ehlo, self.tls, self.count = "", False, 0
        self.handlers: dict[str, Callable[[str], Awaitable[bool]]] = {
            "EHLO": self.on_ehlo,
            "HELO": self.on_helo,
            "MAIL": self.on_mail,
            "RCPT": self.on_rcpt,
            "DATA": self.on_data,
            "RSET": self.on_rset,
            "NOOP": self.on_noop,
            "QUIT": self.on_quit,
            "STARTTLS": self.on_starttls,
            "AUTH": self.on_auth,
        }
        self.auth_user = ""
        self.reset()

    def reset(self) -> None:
        self.mail_from: str | None = None
        self.options: tuple[str, ...] = ()
        self.smtputf8 = False
        self.rcpts: list[str] = []
        self.rejected: list[str] = []
        self.pipelined = False

    async def send(self, reply: Reply | bytes) -> None:
        if self.sink.behaviour.delay:
            await asyncio.sleep(self.sink.behaviour.delay)
        self.writer.write(reply if isinstance(reply, bytes) else reply.encode())
        await self.writer.drain()

    async def run(self) -> None:
        behaviour = self.sink.behaviour
        if behaviour.silent:
            while await self.input.reader.read(65536):
                pass
            return
        greeting = behaviour.greeting or Reply(220, "", f"{self.sink.hostname} ESMTP test sink")
        await self.send(greeting)
        if greeting.code // 100 != 2:
            return
        while line := await self.input.line():
            verb, _, arg = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
            handler = self.handlers.get(verb.upper())
            if handler is None:
                await self.send(replies.UNKNOWN_COMMAND)
            elif not await handler(arg.strip()):
                return

    async def on_ehlo(self, name: str) -> bool:
        behaviour, tls = self.sink.behaviour, self.sink.tls_context
        extensions = [
            (behaviour.pipelining, "PIPELINING"),
            (behaviour.size is not None, f"SIZE {behaviour.size}"),
            (behaviour.eightbitmime, "8BITMIME"),
            (behaviour.smtputf8, "SMTPUTF8"),
            (self.sink.offers_starttls and tls is not None and not self.tls, "STARTTLS"),
            (self.auth_offered(), " ".join(("AUTH", *behaviour.auth_mechanisms))),
            (True, "ENHANCEDSTATUSCODES"),
        ]
        lines = [self.sink.hostname] + [text for on, text in extensions if on]
        return await self.greet(name, _lines(250, lines))

    async def on_helo(self, name: str) -> bool:
        return await self.greet(name, Reply(250, "", self.sink.hostname).encode())

    async def greet(self, name: str, reply: bytes) -> bool:
        if not name:  # RFC 5321 §4.1.1.1: EHLO and HELO name the client
            await self.send(replies.SYNTAX_ERROR)
            return True
        self.ehlo = name
        self.reset()
        await self.send(reply)
        return True

    async def on_mail(self, arg: str) -> bool:
        limit = self.sink.behaviour.max_messages_per_connection
        if limit is not None and self.count >= limit:
            await self.send(TOO_MANY_MESSAGES)
            return False
        match = _PATH.fullmatch(arg)
        options = tuple(match.group(3).split()) if match else ()
        if not self.ehlo:
            refusal: Reply | None = replies.NEED_HELO
        elif self.mail_from is not None:
            refusal = replies.NESTED_MAIL
        elif self.sink.behaviour.auth is not None and not self.auth_user:
            refusal = AUTH_REQUIRED
        elif match is None or match.group(1).upper() != "FROM":
            refusal = replies.SYNTAX_ERROR
        else:
            refusal = self.mail_refusal(match.group(2), options)
        if refusal is None and match is not None:
            self.mail_from, self.options = match.group(2), options
            self.smtputf8 = "SMTPUTF8" in (option.upper() for option in options)
            self.pipelined = self.input.pending()
        await self.send(refusal or replies.SENDER_OK)
        return True

    def mail_refusal(self, address: str, options: tuple[str, ...]) -> Reply | None:
        behaviour = self.sink.behaviour
        allowed = {
            "SIZE": behaviour.size is not None,
            "BODY": behaviour.eightbitmime,
            "SMTPUTF8": behaviour.smtputf8,
        }
        for option in options:
            key, _, value = option.upper().partition("=")
            if not allowed.get(key) or (key == "SIZE" and not value.isdigit()):
                return replies.BAD_PARAMETER
            if key == "SIZE" and int(value) > (behaviour.size or 0):
                return TOO_BIG
        if not address.isascii() and "SMTPUTF8" not in (o.upper() for o in options):
            return NEEDS_SMTPUTF8
        return None

    async def on_rcpt(self, arg: str) -> bool:
        match = _PATH.fullmatch(arg)
        behaviour = self.sink.behaviour
        if self.mail_from is None:
            reply = replies.NEED_MAIL
        elif match is None or match.group(1).upper() != "TO":
            reply = replies.SYNTAX_ERROR
        elif match.group(3):  # no extension offered here adds RCPT parameters
            reply = replies.BAD_PARAMETER
        elif not match.group(2).isascii() and not self.smtputf8:
            reply = NEEDS_SMTPUTF8
        else:
            address = match.group(2)
            default = behaviour.rcpt_default or replies.RECIPIENT_OK
            reply = behaviour.rcpt_replies.get(address.lower(), default)
            (self.rcpts if reply.code // 100 == 2 else self.rejected).append(address)
            self.pipelined |= self.input.pending()
        await self.send(reply)
        return True

    async def on_data(self, arg: str) -> bool:
        behaviour = self.sink.behaviour
        if self.mail_from is None:
            refusal: Reply | None = replies.NEED_MAIL
        elif not self.rcpts:
            refusal = NO_VALID_RECIPIENTS
        else:
            refusal = behaviour.data_command_reply
        if refusal is not None:
            await self.send(refusal)
            self.reset()
            return True
        await self.send(replies.START_DATA)
        received = await self.read_data(behaviour.size)
        if received is None:
            return False
        arrived = time.monotonic()
        self.count += 1
        await self.send(self.sink._record(self, *received, arrived))
        self.reset()
        return True

    async def read_data(self, limit: int | None) -> tuple[bytes, bool] | None:
        """(the message, unstuffed (§4.5.2); over ``limit``); None at end of stream.

        Past ``limit`` the message is not kept (RFC 1870 §6.2 lets the server drop it).
        """
        stuffed = await self.input.data()
        if stuffed is None:
            return None
        data = (b"\n" + stuffed).replace(b"\n.", b"\n")[1:]
        too_big = limit is not None and len(data) > limit
        return (b"" if too_big else data), too_big

    async def on_rset(self, arg: str) -> bool:
        self.reset()
        await self.send(replies.RESET_OK)
        return True

    async def on_noop(self, arg: str) -> bool:
        await self.send(replies.NOOP_OK)
        return True

    async def on_quit(self, arg: str) -> bool:
        await self.send(replies.BYE)
        return False

    async def on_starttls(self, arg: str) -> bool:
        context = self.sink.tls_context
        if not self.sink.offers_starttls or context is None or self.tls:
            await self.send(replies.ALREADY_TLS if self.tls else replies.NOT_IMPLEMENTED)
            return True
        await self.send(replies.READY_TLS)
        self.input.discard()  # RFC 3207 §4.2: nothing said before TLS counts after it
        await self.writer.start_tls(context)
        self.tls, self.ehlo = True, ""  # the client must EHLO again (RFC 3207 §4.2)
        self.auth_user = ""
        self.reset()
        return True

    def auth_offered(self) -> bool:
        behaviour = self.sink.behaviour
        return behaviour.auth is not None and (self.tls or behaviour.auth_cleartext)

    async def on_auth(self, arg: str) -> bool:
        """RFC 4954 §4: the state checks, then the exchange (:meth:`sasl`)."""
        self.sink.auth_attempts += 1
        behaviour = self.sink.behaviour
        mechanism, _, initial = arg.partition(" ")
        if behaviour.auth is None:
            refusal: Reply | None = replies.NOT_IMPLEMENTED
        elif not self.auth_offered():
            refusal = replies.AUTH_NEEDS_TLS
        elif not self.ehlo:
            refusal = replies.NEED_HELO
        elif self.auth_user:
            refusal = replies.ALREADY_AUTH
        elif self.mail_from is not None:  # §4: not during a mail transaction
            refusal = replies.BAD_SEQUENCE
        elif mechanism.upper() not in {"PLAIN", "LOGIN"} & set(behaviour.auth_mechanisms):
            refusal = replies.AUTH_MECHANISM
        else:
            refusal = None
        if refusal is not None:
            await self.send(refusal)
            return True
        outcome = await self.sasl(mechanism.upper(), initial.strip())
        if outcome is None:
            return False
        await self.send(outcome)
        return True

    async def sasl(self, mechanism: str, initial: str) -> Reply | None:
        """The exchange's last reply (235, 535 or 501); None at end of stream."""
        answers: list[str] = []
        wanted = 1 if mechanism == "PLAIN" else 2
        challenges = [b"334 \r\n"] if mechanism == "PLAIN" else [USERNAME, PASSWORD]
        if initial:
            answers.append("" if initial == "=" else initial)  # §4: "=" is an empty response
        while len(answers) < wanted:
            await self.send(challenges[len(answers)])
            line = await self.input.line()
            if not line:
                return None
            answers.append(line.decode("ascii", "replace").strip())
            if answers[-1] == "*":
                return replies.AUTH_CANCELLED  # §4: the client cancelled
        try:
            decoded = [base64.b64decode(a, validate=True).decode() for a in answers]
        except (binascii.Error, UnicodeDecodeError):
            return AUTH_SYNTAX
        if mechanism == "PLAIN":  # RFC 4616 §2: [authzid] NUL authcid NUL passwd
            authzid, _, rest = decoded[0].partition("\0")
            user, _, password = rest.partition("\0")
            if authzid not in ("", user):
                return replies.AUTH_FAILED
        else:
            user, password = decoded
        users = self.sink.behaviour.auth or {}
        if not user or users.get(user) != password:
            return replies.AUTH_FAILED
        self.auth_user = user
        return replies.AUTH_OK


class SmtpSink:
    """``SmtpSink("127.0.0.2", port, Behaviour(...)).start()``; ``stop()`` when done."""

    def __init__(
        self,
        host: str = "127.0.0.2",
        port: int = 0,
        behaviour: Behaviour | None = None,
        *,
        hostname: str = "sink.test",
        certificates: Certificates | None = None,
    ) -> None:
        self.host, self.port, self.hostname = host, port, hostname
        self.behaviour = behaviour or Behaviour()
        self.certificates = certificates
        self.tls_context: ssl.SSLContext | None = None
        self.messages: list[Transaction] = []  # the accepted transactions (250 after the dot)
        self.transactions: list[Transaction] = []  # every transaction, whatever the answer
        self.transactions_per_connection: dict[int, int] = {}  # connection → transactions
        self.connections = 0  # TCP connections accepted
        self.open_connections = 0  # connections open now
        self.max_open_connections = 0  # the most open at once since start
        self.auth_attempts = 0  # AUTH commands received, whatever the answer
        self._tempfailed = 0
        self._tempdir: Path | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> "SmtpSink":
        if self.certificates is None and self.offers_starttls:
            self._tempdir = Path(tempfile.mkdtemp(prefix="mxfleet-sink-"))
            self.certificates = make_certificates(
                self._tempdir, names=(self.hostname, "localhost"), addresses=(self.host,)
            )
        if self.certificates is not None:
            self.tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self.tls_context.load_cert_chain(self.certificates.cert, self.certificates.key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="smtp-sink")
        self._thread.daemon = True
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def offers_starttls(self) -> bool:
        """``starttls``, or ``auth``: the sink wants TLS before AUTH."""
        return self.behaviour.starttls or self.behaviour.auth is not None

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._connected, self.host, self.port, reuse_address=True, backlog=256
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        self.open_connections += 1
        self.max_open_connections = max(self.max_open_connections, self.open_connections)
        try:
            await _Session(self, reader, writer).run()
        except OSError:  # reset, TLS handshake failure, line too long: the client's problem
            pass
        except asyncio.CancelledError:  # the sink stops; ending normally spares asyncio's
            pass  # stream callback (3.11) a traceback from task.exception()
        finally:
            self.open_connections -= 1
            writer.close()
            # Still in _tasks while closing, so that stop() cancels and awaits this wait too
            # (a task left pending when the loop stops is destroyed with an error log).
            with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1)
            self._tasks.discard(task)

    def _record(self, session: _Session, data: bytes, too_big: bool, received_at: float) -> Reply:
        """Decide the answer to a complete message and record the transaction."""
        behaviour = self.behaviour
        reply = replies.OK.with_text(f"OK queued as {session.number}.{session.count}")
        if too_big:
            reply = TOO_BIG
        elif self._tempfailed < behaviour.tempfail_first:
            self._tempfailed += 1
            reply = behaviour.tempfail_reply
        elif behaviour.data_reply is not None:
            reply = behaviour.data_reply
        assert session.mail_from is not None
        transaction = Transaction(
            mail_from=session.mail_from,
            rcpt_tos=tuple(session.rcpts),
            data=data,
            ehlo=session.ehlo,
            tls=session.tls,
            connection=session.number,
            index=session.count,
            pipelined=session.pipelined,
            reply=reply,
            mail_options=session.options,
            rejected_rcpts=tuple(session.rejected),
            peer=session.peer,
            auth_user=session.auth_user,
            received_at=received_at,
        )
        self.transactions.append(transaction)
        if transaction.accepted:
            self.messages.append(transaction)
        per_connection = self.transactions_per_connection
        per_connection[session.number] = per_connection.get(session.number, 0) + 1
        return reply

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Transaction]:
        """:attr:`messages` (the live list) once it holds at least ``count``."""
        wait_until(lambda: len(self.messages) >= count, timeout)
        return self.messages

    def stop(self) -> None:
        """Close the listener and every connection; remove certificates the sink made."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            with contextlib.suppress(RuntimeError, TimeoutError):
                asyncio.run_coroutine_threadsafe(self._close(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()
        self._loop = self._thread = None
        if self._tempdir is not None:
            shutil.rmtree(self._tempdir, ignore_errors=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> "SmtpSink":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
