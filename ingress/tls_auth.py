"""STARTTLS (RFC 3207) and AUTH (RFC 4954) for the session, kept apart from the core dialogue.

Functions of a :class:`ingress.session.Session`, which calls them with itself as ``s``.
"""

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING

from ingress import authguard
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
    s._run(_begin(s, arg))
    return None


async def _begin(s: "Session", arg: str) -> None:
    """Refuse at once a client over its failure limit; else start the SASL exchange."""
    refused = await authguard.refusal(s.node.store, s.settings, s.client_ip)
    if refused is not None:
        s._send(refused)
        return
    exchange, challenge = AuthExchange.start(arg)
    s._auth = exchange
    credentials = _auth_step(s, challenge)
    if credentials is not None:  # an initial response carried them (RFC 4954 §4)
        await _check(s, *credentials)


def auth_line(s: "Session", line: bytes) -> None:
    assert s._auth is not None
    credentials = _auth_step(s, s._auth.respond(line.rstrip(b"\r\n")))
    if credentials is not None:
        s._run(_verify(s, *credentials))


def _auth_step(s: "Session", challenge: Reply | bytes | None) -> tuple[str, str] | None:
    """Send the next challenge or a refusal (syntax, cancel); the credentials once all are in."""
    assert s._auth is not None
    if isinstance(challenge, bytes):
        s.state = State.AUTH
        s._send(challenge)
        return None
    s.state = State.COMMAND
    exchange, s._auth = s._auth, None
    if challenge is not None:
        s._send(challenge)
        return None
    return exchange.user, exchange.password


async def _verify(s: "Session", user: str, password: str) -> None:
    """Credentials that took several lines: other sessions of the client may have taken it
    over its limit meanwhile, so look again before checking them."""
    refused = await authguard.refusal(s.node.store, s.settings, s.client_ip)
    if refused is not None:
        s._send(refused)
        return
    await _check(s, user, password)


async def _check(s: "Session", user: str, password: str) -> None:
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
    # Slow down guessing: the more failures the client has anywhere in the cluster, the
    # longer it waits (authguard); too many in this session end it.
    failures = await authguard.count_failure(s.node.store, s.client_ip, s._auth_failures)
    await asyncio.sleep(authguard.failure_delay(s.settings, failures))
    if s._auth_failures >= s.settings.max_auth_failures:
        metrics.INGRESS_SESSION_ERRORS.labels("auth_failures").inc()
        s.close_with(replies.TOO_MANY_AUTH_FAILURES)
        return
    s._send(replies.AUTH_FAILED)
