"""The HTTP injection API of an ingress process: aiohttp in the process's own event loop.

``POST /v1/messages`` (one message), ``POST /v1/messages/batch`` (up to 1,000) and
``GET /openapi.json`` (``ingress/openapi.py``). Each message goes through the same
durable accept as an SMTP transaction (:meth:`ingress.handler.Handler.accept`: loop
check, priority class, trace fields, one Lua script, AOF or WAIT), as a client that
authenticated with its token's name, and the answer comes only once the accept returned:
a ``201`` carries a queue id that is durable (invariant 1). Refusals map as
``ingress/api_errors.py`` says.

The listener binds with SO_REUSEPORT like the SMTP one, so every process of a node
(``ingress_processes``) serves the same port; connections from ``proxy_protocol_networks``
start with a PROXY header (:mod:`ingress.api_proxy`). It is HTTPS when ``tls_cert`` is set, plain
HTTP only with ``api_allow_plaintext`` (the settings refuse anything else). On SIGTERM
:meth:`ingress.api_server.ApiServer.close` stops accepting, lets the requests in flight
finish within ``drain_timeout`` and closes idle connections; a request that still arrives
on an open connection meanwhile gets ``503``.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ingress import api_errors, policy, suppression
from ingress.api_errors import ApiError
from ingress.api_guard import Guard
from ingress.api_messages import (
    Limits,
    Rejected,
    Submission,
    batch_items,
    decode_json,
    parse_submission,
)
from ingress.api_tokens import Client, Tokens, bearer_token
from ingress.handler import Transaction
from ingress.openapi import document
from shared import log, metrics, replies

if TYPE_CHECKING:
    from ingress.server import Node

logger = logging.getLogger("mxfleet.ingress.api")

CLIENT = web.RequestKey("client", Client)
BATCH_CONCURRENCY = 16  # accepts of one batch in flight at once (Redis round trips)
KEEPALIVE_TIMEOUT = 30.0  # an idle connection is closed after this many seconds
ENDPOINTS = {"/v1/messages": "message", "/v1/messages/batch": "batch", "/openapi.json": "openapi"}
_CHALLENGE = 'Bearer realm="mxfleet"'  # RFC 6750 §3
NO_TOKEN = ApiError(401, "missing bearer token (Authorization: Bearer ...)")
UNKNOWN_TOKEN = ApiError(401, "unknown bearer token")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: ApiError) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    if error.retry_after is not None:
        response.headers["Retry-After"] = str(error.retry_after)
    if error == NO_TOKEN:  # RFC 6750 §3.1: no error code when no credentials came
        response.headers["WWW-Authenticate"] = _CHALLENGE
    elif error == UNKNOWN_TOKEN:
        response.headers["WWW-Authenticate"] = _CHALLENGE + ', error="invalid_token"'
    return response


class Api:
    """The routes and their decisions; one per process, sharing the node's Handler."""

    def __init__(self, node: "Node", tokens: Tokens) -> None:
        self.node = node
        self.tokens = tokens
        self.limits = Limits.of(node.settings)
        self.max_request = node.settings.api_max_request_size
        self.document = document(node.settings)
        self.in_flight = 0  # requests in a handler now (the drain waits for them)
        settings = node.settings
        self.connections = Guard(settings.api_max_connections, settings.api_request_timeout)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.max_request, middlewares=[self.guard])
        app.router.add_post("/v1/messages", self.post_message, expect_handler=self.expect)
        app.router.add_post("/v1/messages/batch", self.post_batch, expect_handler=self.expect)
        app.router.add_get("/openapi.json", self.get_openapi)
        app.on_response_prepare.append(_server_header)
        return app

    # --- around every request ---------------------------------------------------------
    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Authenticate /v1/ requests; turn every refusal into a JSON error; count."""
        self.in_flight += 1
        if request.method != "POST":  # nothing more to read: the request is all here
            self.connections.disarm(request.transport)
        try:
            if request.path.startswith("/v1/"):
                self.check(request)
            response = await handler(request)
        except Rejected as exc:
            response = error_response(exc.error)
            if self.node.draining:
                response.force_close()
        except web.HTTPException as exc:  # aiohttp's own: 404, 405, 413 while reading
            if exc.status < 400:
                raise
            response = error_response(ApiError(exc.status, exc.reason))
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        finally:
            self.in_flight -= 1
            if request.transport is not None:  # the next request on it has its own time
                self.connections.arm(request.transport)
        _count(request, response.status)
        return response

    def check(self, request: web.Request) -> None:
        """Bearer token, then the body's announced size and type (before it is read)."""
        token = bearer_token(request.headers.get("Authorization"))
        if token is None:
            raise Rejected(NO_TOKEN)
        client = self.tokens.client(token)
        if client is None:
            log.event(logger, "api_auth_failed", logging.WARNING, client=self.client_ip(request))
            raise Rejected(UNKNOWN_TOKEN)
        request[CLIENT] = client
        length = request.content_length
        if length is not None and length > self.max_request:
            message = f"the body is {length} bytes, more than {self.max_request}"
            raise Rejected(ApiError(413, message))
        if request.method == "POST" and request.content_type != "application/json":
            raise Rejected(ApiError(415, "the body must be application/json"))
        if self.node.draining:
            raise Rejected(api_errors.from_reply(replies.SHUTTING_DOWN))

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue`` (RFC 9110 §10.1.1): refuse before the body is sent."""
        try:
            self.check(request)
        except Rejected as exc:
            response = error_response(exc.error)
            _count(request, response.status)
            return response
        if request.headers.get("Expect", "").lower() != "100-continue":
            raise web.HTTPExpectationFailed(text="Unknown Expect: " + request.headers["Expect"])
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    # --- the endpoints ----------------------------------------------------------------
    async def get_openapi(self, request: web.Request) -> web.Response:
        return web.json_response(self.document)

    async def post_message(self, request: web.Request) -> web.Response:
        item = decode_json(await self._read(request))
        result = await self.submit(request, item)
        if isinstance(result, ApiError):
            return error_response(result)
        return web.json_response({"id": result}, status=201)

    async def post_batch(self, request: web.Request) -> web.Response:
        items = batch_items(decode_json(await self._read(request)))
        results: list[str | ApiError | None] = [None] * len(items)
        queue = iter(range(len(items)))
        stop: list[ApiError] = []  # the spool's first temporary failure ends the batch

        async def work() -> None:
            for index in queue:
                if stop:  # not tried: the spool said no a moment ago
                    metrics.INGRESS_API_MESSAGES.labels("tempfail").inc()
                    results[index] = stop[0]
                    continue
                results[index] = outcome = await self.submit(request, items[index])
                if isinstance(outcome, ApiError) and outcome.status == 503 and not stop:
                    stop.append(outcome)

        workers = min(BATCH_CONCURRENCY, len(items))
        await asyncio.gather(*(work() for _ in range(workers)))
        return _batch_response([r for r in results if r is not None])

    async def _read(self, request: web.Request) -> bytes:
        try:
            body = await request.read()
            self.connections.disarm(request.transport)  # all here: the accept has its time
            return body
        except web.HTTPRequestEntityTooLarge:
            raise Rejected(
                ApiError(413, f"the body is more than {self.max_request} bytes")
            ) from None

    # --- one message ------------------------------------------------------------------
    async def submit(self, request: web.Request, item: object) -> str | ApiError:
        """Accept one message durably: its queue id, or the error that refused it."""
        try:
            submission = parse_submission(item, self.limits)
        except Rejected as exc:
            result = "too_big" if exc.error.status == 413 else "invalid"
            if exc.error.reply is not None and exc.error.status == 422:
                result = "refused"
            metrics.INGRESS_API_MESSAGES.labels(result).inc()
            return exc.error
        tx = self.transaction(request, submission)
        refused = await self.screen(tx, submission.recipients_field)
        if refused is not None:
            return refused
        try:
            reply = await self.node.handler.accept(tx, submission.body)
        except Exception:
            # As in the SMTP session: a 4xx, never a lost answer; and the other messages of
            # a batch still get theirs, so none is sent again needlessly.
            logger.exception("event=api_error client=%s", tx.client_ip)
            reply = replies.SPOOL_UNAVAILABLE.with_text("Internal error, try again")
        queue_id = api_errors.queue_id(reply)
        if queue_id is not None:
            metrics.INGRESS_API_MESSAGES.labels("accepted").inc()
            return queue_id
        error = api_errors.from_reply(reply)
        metrics.INGRESS_API_MESSAGES.labels("tempfail" if error.status == 503 else "refused").inc()
        return error

    async def screen(self, tx: Transaction, field: str) -> ApiError | None:
        """The suppression list, as at RCPT: ``refuse`` refuses the message, naming the
        first listed recipient (the client drops it and sends again); ``drop`` leaves the
        listed ones out of the queue, with an event, as for SMTP."""
        settings = self.node.settings
        if settings.suppression == "off":
            return None
        sender = tx.sender.address if tx.sender is not None else ""
        store = self.node.store
        listed = await suppression.screen(store, settings, sender, tx.recipients, tx.client_ip)
        if not any(listed):
            return None
        action = "refused" if settings.suppression == "refuse" else "dropped"
        metrics.INGRESS_SUPPRESSED.labels(action).inc(sum(listed))
        if action == "refused":
            metrics.INGRESS_API_MESSAGES.labels("refused").inc()
            return api_errors.from_reply(replies.SUPPRESSED, f"{field}[{listed.index(True)}]")
        tx.suppressed = [box for box, out in zip(tx.recipients, listed, strict=True) if out]
        tx.recipients = [box for box, out in zip(tx.recipients, listed, strict=True) if not out]
        return None

    def client_ip(self, request: web.Request) -> str:
        """The client's address: its connection's PROXY header's, else the peer's."""
        proxied = self.connections.client_of(request.transport)
        return policy.client_address(proxied or request.remote or "")

    def transaction(self, request: web.Request, submission: Submission) -> Transaction:
        """The mail transaction of an SMTP client that authenticated as the token's name."""
        client = request[CLIENT]
        return Transaction(
            client_ip=self.client_ip(request),
            helo=client.name,
            esmtp=True,
            tls=request.secure,
            auth_user=client.name,
            sender=submission.sender,
            recipients=submission.recipients,
            smtputf8=submission.smtputf8,
            priority=submission.priority,
        )


def _batch_response(results: list[str | ApiError]) -> web.Response:
    """200 with a result per message, in order; 503 when none was accepted because the
    spool could not take them (the whole batch may be sent again)."""
    body: list[dict[str, Any]] = []
    accepted, retry_after = 0, None
    for result in results:
        if isinstance(result, str):
            accepted += 1
            body.append({"id": result})
        else:
            body.append({"error": {"status": result.status, **result.detail()}})
            retry_after = retry_after or result.retry_after
    transient = retry_after is not None
    status = 503 if transient and not accepted else 200
    response = web.json_response(
        {"accepted": accepted, "failed": len(results) - accepted, "results": body}, status=status
    )
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _count(request: web.Request, status: int) -> None:
    endpoint = ENDPOINTS.get(request.path, "other")
    metrics.INGRESS_API_REQUESTS.labels(endpoint, str(status)).inc()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "mxfleet"
