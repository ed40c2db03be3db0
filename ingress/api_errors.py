"""What the HTTP API answers when a message is not accepted (pure).

Every error is one JSON object ``{"error": {"message": ..., "field": ..., "smtp": ...}}``:
``field`` names the part of the request at fault (``to[2]``, ``headers.Subject``) when
one is; ``smtp`` is the SMTP reply the same message would have got from an SMTP client
(code, enhanced status of RFC 3463, text) when the refusal is one.

SMTP replies map to HTTP status codes (RFC 9110 §15) by what the client should do:

- ``2xx`` → accepted (``201``, the queue id);
- ``4xx`` (451 4.3.0 spool unavailable, 452 4.3.1 spool full, 421 shutting down) →
  ``503`` with ``Retry-After``: try again later, as an SMTP client would;
- ``552 5.3.4`` message too big → ``413``;
- any other ``5xx`` (554 5.4.6 loop, 550 5.5.2 bare newline, ...) → ``422``: the request
  was understood and the message refused; sending it again is refused again.
"""

from dataclasses import dataclass
from typing import Any

from shared import replies
from shared.replies import Reply

# Seconds a client should wait before it tries again (Retry-After, RFC 9110 §10.2.3): the
# ingress looks at Redis every second, a full spool needs delivery to make room.
RETRY_AFTER = {replies.SPOOL_FULL.status: 30}
DEFAULT_RETRY_AFTER = 5


@dataclass(frozen=True, slots=True)
class ApiError:
    status: int
    message: str
    field: str | None = None
    reply: Reply | None = None

    @property
    def retry_after(self) -> int | None:
        if self.status != 503:
            return None
        status = self.reply.status if self.reply is not None else ""
        return RETRY_AFTER.get(status, DEFAULT_RETRY_AFTER)

    def detail(self) -> dict[str, Any]:
        """The object under ``"error"``."""
        detail: dict[str, Any] = {"message": self.message}
        if self.field is not None:
            detail["field"] = self.field
        if self.reply is not None:
            reply = self.reply
            detail["smtp"] = {"code": reply.code, "status": reply.status, "text": reply.text}
        return detail

    def body(self) -> dict[str, Any]:
        return {"error": self.detail()}


def invalid(field: str | None, message: str) -> ApiError:
    """400: the request is not what the API takes."""
    return ApiError(400, message, field)


def from_reply(reply: Reply, field: str | None = None) -> ApiError:
    """The error for an SMTP refusal (not for a 2xx)."""
    if reply.is_transient:
        return ApiError(503, reply.text, field, reply)
    if reply == replies.MESSAGE_TOO_BIG:
        return ApiError(413, reply.text, field, reply)
    return ApiError(422, reply.text, field, reply)


def queue_id(reply: Reply) -> str | None:
    """The queue id of an accept's ``250 2.0.0 Ok: queued as <id>``; None for a refusal."""
    if reply.code != 250 or " queued as " not in reply.text:
        return None
    return reply.text.rsplit(" ", 1)[1]
