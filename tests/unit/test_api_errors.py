"""ingress/api_errors.py: SMTP replies as HTTP answers."""

import pytest

from ingress.api_errors import ApiError, from_reply, invalid, queue_id
from shared import replies
from shared.replies import Reply


@pytest.mark.parametrize(
    ("reply", "status", "retry_after"),
    [
        (replies.SPOOL_UNAVAILABLE, 503, 5),
        (replies.SPOOL_FULL, 503, 30),
        (replies.SHUTTING_DOWN, 503, 5),
        (replies.MESSAGE_TOO_BIG, 413, None),
        (replies.LINE_TOO_LONG_DATA, 422, None),  # 552 5.3.4 too, but not the size
        (replies.LOOP_DETECTED, 422, None),
        (replies.BARE_NEWLINE, 422, None),
        (Reply(550, "5.7.1", "whatever a policy says"), 422, None),
    ],
)
def test_replies_map_to_statuses(reply: Reply, status: int, retry_after: int | None) -> None:
    error = from_reply(reply, "raw")
    assert (error.status, error.retry_after, error.field) == (status, retry_after, "raw")
    assert error.body() == {
        "error": {
            "message": reply.text,
            "field": "raw",
            "smtp": {"code": reply.code, "status": reply.status, "text": reply.text},
        }
    }


def test_validation_errors_carry_no_reply() -> None:
    assert invalid("to[2]", "bad").body() == {"error": {"message": "bad", "field": "to[2]"}}
    assert ApiError(401, "who?").body() == {"error": {"message": "who?"}}
    assert ApiError(503, "later").retry_after == 5


def test_queue_id_of_an_accept() -> None:
    assert queue_id(replies.OK.with_text("Ok: queued as 01ABC")) == "01ABC"
    assert queue_id(replies.OK) is None
    assert queue_id(replies.SPOOL_UNAVAILABLE) is None
