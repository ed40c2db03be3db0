"""The HTTP API's listener in an ingress process: started after the SMTP listener (in the
same event loop, with SO_REUSEPORT), closed in the drain (:mod:`ingress.api` has the routes).
With ``proxy_protocol_networks`` set it is :class:`ingress.api_proxy.ProxiedListener`,
otherwise the event loop's own.
"""

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ingress.api import KEEPALIVE_TIMEOUT, Api
from ingress.api_proxy import ProxiedListener
from ingress.api_tokens import Tokens, TokensError
from shared import log

if TYPE_CHECKING:
    from ingress.server import Node

logger = logging.getLogger("mxfleet.ingress.api")

_BACKLOG = 1024


class ApiServer:
    """The API's listener in this process: started after the SMTP listener, closed in the
    drain."""

    def __init__(
        self, api: Api, runner: web.AppRunner, port: int, stop: Callable[[], None]
    ) -> None:
        self._api = api
        self._runner = runner
        self.port = port
        self._stop_accepting = stop

    @classmethod
    async def start(cls, node: "Node") -> "ApiServer":
        settings = node.settings
        assert settings.api_tokens_file is not None  # the settings refuse api_listen without
        try:
            tokens = Tokens.load(settings.api_tokens_file)
        except TokensError as exc:  # as for bad settings: say why and stop, status 2
            log.event(logger, "api_tokens_invalid", logging.ERROR, error=exc)
            raise SystemExit(2) from None
        api = Api(node, tokens)
        runner = web.AppRunner(
            api.app(),
            access_log=None,  # accepted messages are logged by the handler
            shutdown_timeout=1.0,  # what is left once close() has waited for the requests
            keepalive_timeout=KEEPALIVE_TIMEOUT,
        )
        await runner.setup()
        host, port = settings.api_address
        # Not aiohttp's TCPSite: each connection's protocol goes through the API's Guard
        # (a cap on connections, a deadline for each request: ingress/api_guard.py).
        handler = runner.server
        assert handler is not None
        if settings.proxy_protocol_networks:
            listener = ProxiedListener(
                _listening_socket(host, port),
                lambda client: api.connections.factory(handler, client),
                node.tls_context, settings.proxy_protocol_networks,
                header_timeout=settings.api_request_timeout,
                max_pending=settings.api_max_connections,
            )  # fmt: skip
            started = cls(api, runner, listener.port, listener.close)
        else:
            server = await asyncio.get_running_loop().create_server(
                api.connections.factory(handler), host, port, ssl=node.tls_context,
                reuse_port=True, backlog=_BACKLOG,
            )  # fmt: skip
            bound = int(server.sockets[0].getsockname()[1])
            started = cls(api, runner, bound, server.close)
        scheme = "https" if node.tls_context is not None else "http"
        log.event(logger, "api_listening", listen=f"{scheme}://{host}:{started.port}",
                  tokens=len(tokens), max_connections=settings.api_max_connections)  # fmt: skip
        return started

    async def close(self, grace: float) -> None:
        """Stop accepting; let the requests in flight finish (within ``grace`` seconds), then
        close every connection.

        aiohttp's own graceful shutdown stops reading from every connection first, so a
        request whose body is still on its way could never finish: the listener is closed
        here, and the runner cleaned up only once no request is left in a handler.
        Meanwhile a new request on an open connection gets 503 and ``Connection: close``.
        """
        self._stop_accepting()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._api.in_flight and loop.time() < deadline:  # noqa: ASYNC110 -- a counter
            await asyncio.sleep(0.05)
        log.event(logger, "api_stopped", left=self._api.in_flight)
        await self._runner.cleanup()


def _listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP listener on ``host:port`` with SO_REUSEPORT (IPv6 for ``::``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=_BACKLOG, reuse_port=True)
    sock.setblocking(False)
    return sock
