"""STARTTLS (RFC 3207) and AUTH (RFC 4954) for the session, kept apart from the core dialogue.

Functions of a :class:`ingress.session.Session`, which calls them with itself as ``s``.
"""

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ingress.commands import CommandError
from ingress.sasl import AuthExchange
from ingress.state import State
from shared import log, metrics, replies
from shared.replies import Reply

if TYPE_CHECKING:
    from ingress.session import Session

logger = logging.getLogger("mxfleet.ingress.session")


def starttls(s: "Session", arg: str) -> Reply | None:
    if s.node.tls_context is None:
        return replies.NOT_IMPLEMENTED
    if s.tls:
        return replies.ALREADY_TLS
    if arg:
        raise CommandError(replies.SYNTAX_ERROR.with_text("Syntax: STARTTLS"))
    # RFC 3207 §4.2 / CVE-2011-0411: nothing pipelined before the handshake counts.
    del s._buf[:]
    s._send(replies.READY_TLS)
    s._flush()
    s._run(_start_tls(s, s.node.tls_context))
    return None


async def _start_tls(s: "Session", context: ssl.SSLContext) -> None:
    assert s.transport is not None
    try:
        transport = await s.node.loop.start_tls(
            s.transport, s, context, server_side=True, ssl_handshake_timeout=30.0
        )
    except (TimeoutError, OSError, ssl.SSLError, ConnectionError) as exc:
        metrics.INGRESS_TLS.labels("failed").inc()
        log.event(logger, "tls_failed", client=s.client_ip, error=exc)
        s.state = State.CLOSED
        s.transport.abort()
        return
    metrics.INGRESS_TLS.labels("ok").inc()
    if transport is None:
        s.state = State.CLOSED
        return
    s.transport = transport
    # RFC 3207 §4.2: the client must start again with EHLO.
    s.tls, s.helo, s.esmtp = True, "", False
    s._reset()


def auth(s: "Session", arg: str) -> Reply | None:
    node = s.node
    if node.credentials is None or not s.esmtp:
        return replies.NOT_IMPLEMENTED
    if not s.tls and s.settings.auth_require_tls:
        return replies.AUTH_NEEDS_TLS
    if s.auth_user:
        return replies.ALREADY_AUTH
    if s.has_sender:
        return replies.BAD_SEQUENCE
    exchange, challenge = AuthExchange.start(arg)
    s._auth = exchange
    return _auth_step(s, challenge)


def auth_line(s: "Session", line: bytes) -> None:
    assert s._auth is not None
    challenge = s._auth.respond(line.rstrip(b"\r\n"))
    _send_auth(s, _auth_step(s, challenge))


def _send_auth(s: "Session", reply: Reply | None) -> None:
    if reply is not None:
        s._send(reply)


def _auth_step(s: "Session", challenge: Reply | bytes | None) -> Reply | None:
    """Send the next challenge, or check the credentials once all are in."""
    assert s._auth is not None
    if isinstance(challenge, bytes):
        s.state = State.AUTH
        s._send(challenge)
        return None
    s.state = State.COMMAND
    if challenge is not None:  # a refusal (syntax, cancel)
        s._auth = None
        return challenge
    user, password = s._auth.user, s._auth.password
    s._auth = None
    s._run(_verify(s, user, password))
    return None


async def _verify(s: "Session", user: str, password: str) -> None:
    credentials = s.node.credentials
    assert credentials is not None
    ok = await s.node.loop.run_in_executor(None, credentials.verify, user, password)
    if ok:
        metrics.INGRESS_AUTH.labels("ok").inc()
        log.event(logger, "auth_ok", client=s.client_ip, user=user)
        s.auth_user, s.may_relay = user, True
        s._send(replies.AUTH_OK)
        return
    metrics.INGRESS_AUTH.labels("failed").inc()
    log.event(logger, "auth_failed", logging.WARNING, client=s.client_ip, user=user[:100])
    s._auth_failures += 1
    # Slow down guessing: each failure costs the client a second, then the session.
    await asyncio.sleep(1.0)
    if s._auth_failures >= s.settings.max_auth_failures:
        metrics.INGRESS_SESSION_ERRORS.labels("auth_failures").inc()
        s.close_with(replies.TOO_MANY_AUTH_FAILURES)
        return
    s._send(replies.AUTH_FAILED)
