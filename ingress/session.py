"""One SMTP session: an asyncio protocol that owns the RFC 5321 state machine.

Lines are read from a buffer, so pipelined commands (RFC 2920) are answered in order with
one write per batch. Commands that must wait (the durable accept, AUTH, STARTTLS, a RCPT's
look at the suppression list) set ``_busy``; reading resumes when they finish. Timeouts
are deadlines that the server's sweeper checks (:meth:`Session.expired`), so a client that
trickles bytes never extends its deadline (slowloris).
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, cast

from ingress import policy, proxy, suppression, tls_auth
from ingress.commands import CommandError, MailParams, parse_mail, parse_rcpt, split_command
from ingress.data import DataReader, Received
from ingress.handler import Transaction
from ingress.sasl import AuthExchange
from ingress.state import State
from shared import log, metrics, replies
from shared.message import Mailbox
from shared.replies import Reply

if TYPE_CHECKING:
    from ingress.server import Node

logger = logging.getLogger("mxfleet.ingress.session")

_READ_PAUSE = 256 * 1024  # stop reading while this much is buffered and we are busy
# RFC 5321 §4.5.3.2.5 times each block of data, not each byte: the data deadline moves on
# only when another block this big has arrived, so a client trickling bytes cannot hold a
# session past data_timeout (a sender keeping ~220 B/s under the default 5 m never notices).
_DATA_BLOCK = 64 * 1024


class Session(asyncio.Protocol):
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.settings = node.settings
        self.transport: asyncio.Transport | None = None
        self.state = State.COMMAND
        self.client_ip = ""
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._busy = False
        self._paused = False
        self._write_paused = False
        self._counted_ip = False
        self.deadline = 0.0
        self._session_deadline = 0.0
        self.helo = ""
        self.esmtp = False
        self.tls = False
        self.auth_user = ""
        self.may_relay = False
        self._errors = 0
        self._auth_failures = 0
        self._auth: AuthExchange | None = None
        self._data: DataReader | None = None
        self._data_since = 0  # bytes of data since the data deadline last moved
        self._skip_line = False
        self._eof = False  # the client half-closed: close once idle
        self._reset()

    # --- connection lifecycle -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        node = self.node
        peer = transport.get_extra_info("peername")
        self.client_ip = policy.client_address(peer[0] if peer else "")
        now = node.loop.time()
        self._session_deadline = now + self.settings.session_timeout
        if not node.admit(self):
            return
        if policy.in_networks(self.client_ip, self.settings.proxy_protocol_networks):
            self.state = State.PROXY
            self.deadline = now + min(self.settings.command_timeout, 30.0)
            return
        self._greet()

    def _greet(self) -> None:
        if not self.node.limits.acquire_ip(self.client_ip):
            metrics.INGRESS_SESSIONS_REFUSED.labels("ip_limit").inc()
            self.close_with(replies.TOO_MANY_SESSIONS_IP)
            return
        self._counted_ip = True
        self.may_relay = policy.in_networks(self.client_ip, self.settings.relay_networks)
        self.state = State.COMMAND
        self.deadline = self.node.loop.time() + self.settings.command_timeout
        self._send(self.node.greeting)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = State.CLOSED
        if self._counted_ip:
            self._counted_ip = False
            self.node.limits.release_ip(self.client_ip)
        self.node.forget(self)

    def close_with(self, reply: Reply) -> None:
        """Send ``reply`` (a 421 or 221) and close once it is written."""
        if self.state is State.CLOSED or self.transport is None:
            return
        self.state = State.CLOSED
        self._out.append(reply.encode())
        self._flush()
        self.transport.close()

    def expired(self, now: float) -> bool:
        """Called by the sweeper: close the session if a deadline passed."""
        if self.state is State.CLOSED or self._busy:
            return False
        if now < self.deadline and now < self._session_deadline:
            return False
        metrics.INGRESS_SESSION_ERRORS.labels("timeout").inc()
        log.event(logger, "timeout", client=self.client_ip, state=self.state.value)
        self.close_with(replies.TIMEOUT)
        return True

    def drain(self) -> None:
        """SIGTERM: idle sessions are told 421 now; DATA in progress finishes first."""
        if self.state in (State.COMMAND, State.AUTH, State.PROXY) and not self._busy:
            self.close_with(replies.SHUTTING_DOWN)

    # --- reading --------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        self._buf += data
        if self._busy:
            if len(self._buf) > _READ_PAUSE and self.transport and not self._paused:
                self._paused = True
                self.transport.pause_reading()
            return
        self._process()

    def pause_writing(self) -> None:
        # The client does not read its replies (pipelined junk): stop reading its commands.
        self._write_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.transport is not None and not self._paused:
            self.transport.resume_reading()

    def eof_received(self) -> bool | None:
        # The client sends no more (a half-close, often right behind a pipelined QUIT), but
        # what it sent is still owed its replies: an end of data left unanswered would make
        # it send the message again (RFC 5321 §6.1). Idle, every reply is written: close.
        self._eof = True
        return True if self._busy else None  # busy: _resume closes once all is answered

    def _process(self) -> None:
        while not self._busy and self.state is not State.CLOSED and self._buf:
            if self.state is State.DATA:
                self._feed_data()
            elif self.state is State.PROXY:
                if not self._read_proxy():
                    break
            elif not self._read_line():
                break
        self._flush()

    def _read_line(self) -> bool:
        buf = self._buf
        if self._skip_line:
            # The rest of an overlong line: drop it up to and including its end.
            end = buf.find(b"\n")
            del buf[: end + 1 if end >= 0 else len(buf)]
            self._skip_line = end < 0
            return end >= 0
        end = buf.find(b"\n", 0, self.settings.max_line_length)
        if end < 0:
            if len(buf) < self.settings.max_line_length:
                return False
            # RFC 5321 §4.5.3.1.4: refuse the line, then skip to its end.
            self._skip_line = True
            self._error(replies.LINE_TOO_LONG)
            return True
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        self.deadline = self.node.loop.time() + self.settings.command_timeout
        if self.state is State.AUTH:
            tls_auth.auth_line(self, line)
        else:
            self._command(line)
        return True

    def _read_proxy(self) -> bool:
        try:
            header = proxy.parse(bytes(self._buf[: proxy.V2_MAX]))
        except proxy.ProxyError as exc:
            log.event(logger, "proxy_refused", logging.WARNING, peer=self.client_ip, error=exc)
            self.state = State.CLOSED
            if self.transport:
                self.transport.close()
            return False
        if header is None:
            return False
        del self._buf[: header.length]
        if header.client is not None:
            self.client_ip = policy.client_address(header.client[0])
        self._greet()
        return True

    # --- commands -------------------------------------------------------------------------
    def _command(self, line: bytes) -> None:
        try:
            verb, arg = split_command(line)
            method = _COMMANDS.get(verb)
            if method is None:
                raise CommandError(replies.UNKNOWN_COMMAND)
            reply = method(self, arg)
        except CommandError as exc:
            self._error(exc.reply)
            return
        if reply is not None:
            self._send(reply)

    def _error(self, reply: Reply) -> None:
        self._errors += 1
        if self._errors >= self.settings.max_bad_commands:
            metrics.INGRESS_SESSION_ERRORS.labels("too_many_errors").inc()
            self.close_with(replies.TOO_MANY_ERRORS)
        else:
            self._send(reply)

    def _send(self, reply: Reply | bytes) -> None:
        self._out.append(reply if isinstance(reply, bytes) else reply.encode())

    def _flush(self) -> None:
        if self._out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self._out) if len(self._out) > 1 else self._out[0])
        self._out.clear()

    def _reset(self) -> None:
        self.sender: Mailbox | None = None
        self.has_sender = False
        self.params = MailParams()
        self.recipients: list[Mailbox] = []
        self.suppressed: list[Mailbox] = []  # accepted but dropped (suppression = "drop")

    def _helo(self, arg: str, *, esmtp: bool) -> Reply | bytes:
        if not policy.valid_helo(arg):
            raise CommandError(replies.SYNTAX_ERROR.with_text("Syntax: EHLO hostname"))
        self._reset()
        self.helo, self.esmtp = arg, esmtp
        if not esmtp:
            return replies.OK.with_text(self.settings.hostname)
        return self.node.ehlo_reply(tls=self.tls, authenticated=bool(self.auth_user))

    def cmd_helo(self, arg: str) -> Reply | bytes:
        return self._helo(arg, esmtp=False)

    def cmd_ehlo(self, arg: str) -> Reply | bytes:
        return self._helo(arg, esmtp=True)

    def cmd_mail(self, arg: str) -> Reply:
        if not self.helo:
            return replies.NEED_HELO
        if self.has_sender:
            return replies.NESTED_MAIL
        sender, params = parse_mail(arg, esmtp=self.esmtp)
        refusal = policy.size_refusal(params.size, self.settings.max_message_size)
        if refusal is not None:
            return refusal
        self.sender, self.params, self.has_sender = sender, params, True
        return replies.SENDER_OK

    def cmd_rcpt(self, arg: str) -> Reply | None:
        if not self.has_sender:
            return replies.NEED_MAIL
        if not self.may_relay:
            metrics.INGRESS_RECIPIENTS.labels("relay_denied").inc()
            log.event(logger, "relay_denied", client=self.client_ip, rcpt=arg[:300])
            return replies.RELAY_DENIED
        if len(self.recipients) + len(self.suppressed) >= self.settings.max_recipients:
            metrics.INGRESS_RECIPIENTS.labels("too_many").inc()
            return replies.TOO_MANY_RECIPIENTS
        try:
            rcpt = parse_rcpt(arg, utf8=self.params.smtputf8)
        except CommandError:
            metrics.INGRESS_RECIPIENTS.labels("bad_address").inc()
            raise
        if self.settings.suppression != "off":  # a look at the list in Redis, then the reply
            self._run(suppression.rcpt(self, rcpt))
            return None
        self.recipients.append(rcpt)
        metrics.INGRESS_RECIPIENTS.labels("accepted").inc()
        return replies.RECIPIENT_OK

    def cmd_data(self, arg: str) -> Reply:
        if arg:
            raise CommandError(replies.SYNTAX_ERROR.with_text("Syntax: DATA"))
        if not self.has_sender:
            return replies.NEED_MAIL
        if not self.recipients and not self.suppressed:
            return replies.NEED_RCPT
        health = self.node.store.health
        if health.reachable and not health.room:
            return replies.SPOOL_FULL
        self.state = State.DATA
        self.deadline = self.node.loop.time() + self.settings.data_timeout
        self._data_since = 0
        s = self.settings
        self._data = DataReader(s.max_message_size, s.max_line_length, s.bare_newlines)
        return replies.START_DATA

    def cmd_rset(self, arg: str) -> Reply:
        self._reset()
        return replies.RESET_OK

    def cmd_noop(self, arg: str) -> Reply:
        return replies.NOOP_OK

    def cmd_quit(self, arg: str) -> None:
        self.close_with(replies.BYE)

    def cmd_vrfy(self, arg: str) -> Reply:
        return replies.VRFY_CANNOT

    def cmd_expn(self, arg: str) -> Reply:
        return replies.NOT_IMPLEMENTED

    def cmd_help(self, arg: str) -> Reply:
        return replies.HELP

    # --- DATA -----------------------------------------------------------------------------
    def _feed_data(self) -> None:
        assert self._data is not None
        chunk = bytes(self._buf)
        del self._buf[:]
        self._data_since += len(chunk)
        if self._data_since >= _DATA_BLOCK:
            self._data_since = 0
            self.deadline = self.node.loop.time() + self.settings.data_timeout
        received = self._data.feed(chunk)
        if received is None:
            return
        self._buf += self._data.leftover
        self._data = None
        self.state = State.COMMAND
        self.deadline = self.node.loop.time() + self.settings.command_timeout
        if received.error is not None:
            metrics.INGRESS_MESSAGES.labels(_ERROR_RESULT.get(received.error, "refused")).inc()
            self._reset()
            self._send(received.error)
            return
        self._run(self._accept(received))

    async def _accept(self, received: Received) -> None:
        tx = Transaction(
            client_ip=self.client_ip,
            helo=self.helo,
            esmtp=self.esmtp,
            tls=self.tls,
            auth_user=self.auth_user,
            sender=self.sender,
            recipients=self.recipients,
            smtputf8=self.params.smtputf8,
            suppressed=self.suppressed,
        )
        self._reset()
        reply = await self.node.handler.accept(tx, received.body)
        self._send(reply)

    def _run(self, work: Coroutine[object, object, None]) -> None:
        """Run a coroutine of this session; reading resumes when it ends."""
        self._busy = True
        task = self.node.loop.create_task(work)
        self.node.tasks.add(task)
        task.add_done_callback(self._resume)

    def _resume(self, task: "asyncio.Task[None]") -> None:
        self.node.tasks.discard(task)
        self._busy = False
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("event=session_error client=%s", self.client_ip, exc_info=exc)
            self.close_with(replies.SPOOL_UNAVAILABLE.with_text("Internal error, try again"))
            return
        if self.state is State.CLOSED:
            return
        if self.node.draining and self.state is not State.DATA:
            # SIGTERM came while we were busy: now idle, the session is told to go.
            self.close_with(replies.SHUTTING_DOWN)
            return
        if self._paused and self.transport is not None:
            self._paused = False
            if not self._write_paused:
                self.transport.resume_reading()
        self._process()
        if self._eof and not self._busy:
            self._close_after_eof()

    def _close_after_eof(self) -> None:
        """The client half-closed and every reply it is owed is written: close."""
        if self.state is not State.CLOSED and self.transport is not None:
            self.state = State.CLOSED
            self.transport.close()


_ERROR_RESULT = {
    replies.MESSAGE_TOO_BIG: "too_big",
    replies.BARE_NEWLINE: "bare_newline",
    replies.LINE_TOO_LONG_DATA: "line_too_long",
}

_COMMANDS = {
    "HELO": Session.cmd_helo,
    "EHLO": Session.cmd_ehlo,
    "MAIL": Session.cmd_mail,
    "RCPT": Session.cmd_rcpt,
    "DATA": Session.cmd_data,
    "RSET": Session.cmd_rset,
    "NOOP": Session.cmd_noop,
    "QUIT": Session.cmd_quit,
    "VRFY": Session.cmd_vrfy,
    "EXPN": Session.cmd_expn,
    "HELP": Session.cmd_help,
    "STARTTLS": tls_auth.starttls,
    "AUTH": tls_auth.auth,
}
