"""The HTTP API's listener when ``proxy_protocol_networks`` is set: a PROXY header (v1 or
v2, :mod:`ingress.proxy`) is read from the connections of those networks before HTTP, or
TLS, starts, and the address it carries is the client's.

With TLS the header comes before the handshake, in clear, and may share a segment with
the ClientHello; asyncio's TLS cannot be handed bytes already read. So this module owns
the accept loop: a connection from a listed network is *peeked* at (``MSG_PEEK``) until
its header is whole, exactly the header's bytes are read off the socket, and the socket
is then given to the event loop (``connect_accepted_socket``, TLS included) with
everything after the header still unread. Without proxy networks the API keeps the event
loop's own listener (:mod:`ingress.api_server`).

- A listed connection that sends no valid header within ``api_request_timeout``, or
  something else, is closed unanswered (``event=proxy_refused``), as on the SMTP port.
- A v2 ``LOCAL`` header (a load balancer's health check) keeps the connection's own peer.
- Connections from other networks are served as they are: a PROXY header from them is
  no HTTP and gets ``400``.
- Connections still waiting for their header count against ``api_max_connections``.
- Out of file descriptors, new connections wait in the listen backlog (accept is tried
  again ten times a second) and are served once descriptors are free.
"""

import asyncio
import errno
import logging
import socket
import ssl
from collections.abc import Callable, Iterable

from ingress import policy, proxy
from shared import log, metrics
from shared.settings import Network

logger = logging.getLogger("mxfleet.ingress.api")

# Protocol factory for one connection; the argument is the client address of its PROXY
# header (None: the connection's own peer).
Factory = Callable[[str | None], Callable[[], asyncio.Protocol]]

_ACCEPT_PAUSE = 0.1  # after accept() failed for want of descriptors or memory
_PEEK_PAUSE = 0.01  # a header still incomplete: look again after this
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_CONNECTION_ERRORS = {  # accept(2), "Error handling": the new connection's, not ours
    errno.ECONNABORTED, errno.EPROTO, errno.ENETDOWN, errno.ENOPROTOOPT, errno.EHOSTDOWN,
    errno.ENONET, errno.EHOSTUNREACH, errno.EOPNOTSUPP, errno.ENETUNREACH, errno.EPERM,
}  # fmt: skip


class ProxiedListener:
    """Accepts on ``sock`` until :meth:`close`; see the module docstring."""

    def __init__(
        self,
        sock: socket.socket,
        factory: Factory,
        tls: ssl.SSLContext | None,
        networks: Iterable[Network],
        header_timeout: float,
        max_pending: int,
    ) -> None:
        self.sock = sock
        self._factory = factory
        self._tls = tls
        self._networks = list(networks)
        self._timeout = header_timeout
        self._max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def close(self) -> None:
        """Stop accepting; connections still waiting for their header are closed."""
        self._accepting.cancel()
        for task in list(self._pending):
            task.cancel()
        self.sock.close()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self.sock)
            except OSError as exc:
                # Out of descriptors or memory: the connections wait in the backlog until
                # some are free. One connection's error (accept(2) passes those on): on to
                # the next. Anything else is logged and tried again a second later.
                if exc.errno in _RESOURCE_ERRORS:
                    await asyncio.sleep(_ACCEPT_PAUSE)
                elif exc.errno not in _CONNECTION_ERRORS:
                    log.event(logger, "api_accept_failed", logging.ERROR, error=exc)
                    await asyncio.sleep(1.0)
                continue
            if len(self._pending) >= self._max_pending:
                metrics.INGRESS_API_CUT.labels("too_many").inc()
                conn.close()
                continue
            task = loop.create_task(self._connect(conn, str(peer[0])))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    async def _connect(self, conn: socket.socket, peer: str) -> None:
        loop = asyncio.get_running_loop()
        client: str | None = None
        try:
            conn.setblocking(False)
            if policy.in_networks(policy.client_address(peer), self._networks):
                header = await self._header(conn)
                client = header.client[0] if header.client is not None else None
            await loop.connect_accepted_socket(
                self._factory(client), conn, ssl=self._tls,
                ssl_handshake_timeout=self._timeout if self._tls is not None else None,
            )  # fmt: skip
        except proxy.ProxyError as exc:
            log.event(logger, "proxy_refused", logging.WARNING, peer=peer, error=exc)
            conn.close()
        except OSError:  # the client went away, or its TLS handshake failed (SSLError)
            conn.close()
        except asyncio.CancelledError:
            conn.close()
            raise

    async def _header(self, conn: socket.socket) -> proxy.ProxyHeader:
        try:
            async with asyncio.timeout(self._timeout):
                return await read_header(conn)
        except TimeoutError:
            raise proxy.ProxyError("no PROXY header in time") from None


async def read_header(conn: socket.socket) -> proxy.ProxyHeader:
    """The PROXY header at the start of ``conn``, read off the socket, and not a byte more
    (ProxyError when it is not one, or the client closed before it was whole)."""
    loop = asyncio.get_running_loop()
    while True:
        try:  # the header is often in by the time the connection is accepted
            data = conn.recv(proxy.V2_MAX, socket.MSG_PEEK)
        except BlockingIOError:
            await _readable(loop, conn)
            continue
        if not data:
            raise proxy.ProxyError("closed before the PROXY header was whole")
        header = proxy.parse(data)
        if header is not None:
            taken = 0
            while taken < header.length:  # the bytes are in the socket's buffer already
                taken += len(conn.recv(header.length - taken))
            return header
        if len(data) >= proxy.V2_MAX:
            raise proxy.ProxyError("PROXY header too long")
        await asyncio.sleep(_PEEK_PAUSE)  # incomplete (rare): the rest is on its way


async def _readable(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    fd = conn.fileno()
    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
