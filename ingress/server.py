"""One ingress node process: the SMTP listener, its sessions, limits, TLS and the drain.

The listener binds with SO_REUSEPORT, so several processes of one node share the port
(``ingress_processes``) and the kernel spreads connections between them.
"""

import asyncio
import logging
import signal
import ssl
from typing import TYPE_CHECKING

from ingress.auth import Credentials
from ingress.dkim_sign import IngressSigner
from ingress.handler import Handler
from ingress.limits import SessionTable
from ingress.listener import Listener
from ingress.sasl import MECHANISMS
from ingress.session import Session
from ingress.store import Store
from shared import log, metrics, replies
from shared.httpd import HealthServer
from shared.redis_conn import async_client
from shared.replies import Reply
from shared.settings import Settings

if TYPE_CHECKING:
    from ingress.api_server import ApiServer

logger = logging.getLogger("mxfleet.ingress")


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context


class Node:
    """What every session of this process shares."""

    def __init__(
        self,
        settings: Settings,
        limits: SessionTable,
        store: Store,
        signer: IngressSigner | None = None,
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.store = store
        self.handler = Handler(settings, store, signer)
        self.loop = asyncio.get_running_loop()
        self.sessions: set[Session] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.tls_context = tls_context(settings)
        path = settings.auth_file
        self.credentials = Credentials.load(path) if path is not None else None
        self.draining = False
        self.listener: Listener | None = None
        self.greeting = f"220 {settings.hostname} ESMTP mxfleet\r\n".encode()
        self._ehlo = {
            (tls, auth): self._build_ehlo(tls=tls, authenticated=auth)
            for tls in (False, True)
            for auth in (False, True)
        }

    def _build_ehlo(self, *, tls: bool, authenticated: bool) -> bytes:
        s = self.settings
        lines = [
            s.hostname,
            "PIPELINING",  # RFC 2920
            f"SIZE {s.max_message_size}",  # RFC 1870
            "8BITMIME",  # RFC 6152
            "SMTPUTF8",  # RFC 6531
            "ENHANCEDSTATUSCODES",  # RFC 2034
        ]
        if self.tls_context is not None and not tls:
            lines.append("STARTTLS")  # RFC 3207
        if self.credentials is not None and not authenticated and (tls or not s.auth_require_tls):
            lines.append("AUTH " + " ".join(MECHANISMS))  # RFC 4954
        return "".join(
            f"250{'-' if i < len(lines) - 1 else ' '}{line}\r\n" for i, line in enumerate(lines)
        ).encode()

    def ehlo_reply(self, *, tls: bool, authenticated: bool) -> bytes:
        return self._ehlo[(tls, authenticated)]

    def admit(self, session: Session) -> bool:
        """Count a new session in, or refuse it with 421 (draining, node limit)."""
        metrics.INGRESS_SESSIONS.inc()
        refusal: tuple[str, Reply] | None = None
        if self.draining:
            refusal = ("draining", replies.SHUTTING_DOWN)
        elif not self.limits.acquire_node():
            refusal = ("node_limit", replies.TOO_MANY_SESSIONS)
        if refusal is not None:
            metrics.INGRESS_SESSIONS_REFUSED.labels(refusal[0]).inc()
            session.close_with(refusal[1])
            return False
        self.sessions.add(session)
        metrics.INGRESS_ACTIVE_SESSIONS.inc()
        return True

    def forget(self, session: Session) -> None:
        if session in self.sessions:
            self.sessions.discard(session)
            self.limits.release_node()
            metrics.INGRESS_ACTIVE_SESSIONS.dec()

    async def sweep(self) -> None:
        """Close sessions whose deadline passed (command, data and session timeouts)."""
        s = self.settings
        interval = max(0.05, min(1.0, s.command_timeout / 4, s.data_timeout / 4))
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for session in list(self.sessions):
                session.expired(now)

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if self.listener is not None and not self.listener.listening:
            return False, "not listening"
        health = self.store.health
        return health.ready, health.problem


async def serve(
    settings: Settings, limits: SessionTable, index: int = 0, signer: IngressSigner | None = None
) -> None:
    """Run one ingress process until SIGTERM/SIGINT, then drain and return."""
    store = Store(async_client(settings), settings)
    await store.check()
    node = Node(settings, limits, store, signer)
    host, port = settings.listen_address
    node.listener = listener = Listener(lambda: Session(node), host, port)
    await listener.start()
    api = await start_api(node) if settings.api_listen is not None else None
    mhost, mport = settings.metrics_address
    health = HealthServer(mhost, mport + index if mport else 0, node.readiness)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        node.loop.add_signal_handler(signum, stop.set)
    background = [
        node.loop.create_task(work) for work in (store.watch(), node.sweep(), listener.watch())
    ]
    log.event(logger, "listening", listen=settings.listen, metrics=f"{mhost}:{health.port}")
    await stop.wait()
    closing = api.close(settings.drain_timeout) if api is not None else None
    api_closed = node.loop.create_task(closing) if closing is not None else None
    await drain(node, listener)
    if api_closed is not None:
        await api_closed  # requests in flight answered, within drain_timeout
    for task in background:
        task.cancel()
    health.close()
    await store.close()


async def start_api(node: Node) -> "ApiServer":
    from ingress.api_server import ApiServer  # aiohttp (~0.15 s) only when the API is on

    return await ApiServer.start(node)


async def drain(node: Node, listener: Listener) -> None:
    """Stop accepting, tell idle sessions 421, let DATA in progress finish, then close."""
    node.draining = True
    metrics.INGRESS_DRAINING.set(1)
    listener.close()
    log.event(logger, "draining", sessions=len(node.sessions))
    for session in list(node.sessions):
        session.drain()
    deadline = node.loop.time() + node.settings.drain_timeout
    while (node.sessions or node.tasks) and node.loop.time() < deadline:  # noqa: ASYNC110 -- polls two sets
        await asyncio.sleep(0.05)
    for session in list(node.sessions):
        if session.transport is not None:
            session.transport.abort()
    log.event(logger, "stopped", left=len(node.sessions))
