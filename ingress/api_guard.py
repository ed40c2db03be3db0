"""Bounds on the HTTP API's connections, which aiohttp does not set by itself: how many
may be open at once, and how long a connection may take to deliver a whole request.

aiohttp closes a connection idle for its keep-alive time, but a client that trickles the
bytes of a request line, its header fields or its body keeps the connection for as long
as it likes (slowloris), and nothing caps how many it opens. :class:`Guard` wraps each
connection's protocol (aiohttp's ``RequestHandler``):

- over ``api_max_connections`` open in this process, a new connection is answered
  ``503`` and closed before anything is read;
- a connection has ``api_request_timeout`` to deliver a request, from when it opened or
  its last response was sent until the handler has the whole body (the API calls
  :meth:`Guard.arm` when a request is awaited, :meth:`Guard.disarm` once it is in); past it, the
  connection is closed (a handler at work, once it has the body, is never cut).

It also keeps the client address a PROXY header gave a connection (:mod:`ingress.api_proxy`),
for :meth:`ingress.api.Api.client_ip`.
"""

import asyncio
from collections.abc import Callable
from typing import Any, cast

from shared import metrics

_BUSY_BODY = b'{"error": {"message": "too many connections, try again later"}}'
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: application/json\r\nRetry-After: 5\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


class Guard:
    """The open connections of one process's API listener, and their deadlines."""

    def __init__(self, max_connections: int, request_timeout: float) -> None:
        self.max_connections = max_connections
        self.request_timeout = request_timeout
        self.open = 0
        self._timers: dict[object, asyncio.TimerHandle] = {}
        self.proxied: dict[object, str] = {}  # transport → client of its PROXY header

    def factory(
        self, inner: Callable[[], Any], client: str | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` around aiohttp's; ``client``: the
        address of the connection's PROXY header (:mod:`ingress.api_proxy`)."""
        return lambda: _Guarded(self, inner(), client)

    def client_of(self, transport: object) -> str | None:
        """The client address a PROXY header gave ``transport``'s connection, if any."""
        return self.proxied.get(transport)

    # --- deadlines, keyed by the connection's transport ---------------------------------
    def arm(self, transport: asyncio.BaseTransport) -> None:
        """A new request is awaited on ``transport``: it has request_timeout to arrive."""
        self.disarm(transport)
        loop = asyncio.get_running_loop()
        self._timers[transport] = loop.call_later(self.request_timeout, _cut, transport)

    def disarm(self, transport: object) -> None:
        timer = self._timers.pop(transport, None)
        if timer is not None:
            timer.cancel()


def _cut(transport: asyncio.BaseTransport) -> None:
    metrics.INGRESS_API_CUT.labels("request_timeout").inc()
    transport.close()


class _Guarded(asyncio.Protocol):
    def __init__(self, guard: Guard, inner: Any, client: str | None) -> None:
        self._guard = guard
        self._inner = inner
        self._client = client
        self._counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._guard.open >= self._guard.max_connections:
            metrics.INGRESS_API_CUT.labels("too_many").inc()
            # uvloop's transports are not registered as asyncio.WriteTransport: no isinstance
            cast(asyncio.Transport, transport).write(_BUSY)
            transport.close()
            return
        self._guard.open += 1
        self._counted = True
        self._transport = transport
        if self._client is not None:
            self._guard.proxied[transport] = self._client
        self._guard.arm(transport)
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._counted:
            return
        self._guard.open -= 1
        self._guard.disarm(self._transport)
        self._guard.proxied.pop(self._transport, None)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._counted:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._counted else None

    def pause_writing(self) -> None:
        if self._counted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._counted:
            self._inner.resume_writing()
