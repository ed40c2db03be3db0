"""shared/errors.py: the exception tree and the reply each failure carries."""

from shared import replies
from shared.errors import (
    MxfleetError,
    PermanentFailure,
    SpoolFull,
    SpoolUnavailable,
    TemporaryFailure,
)


def test_tree() -> None:
    assert issubclass(TemporaryFailure, MxfleetError)
    assert issubclass(PermanentFailure, MxfleetError)
    assert issubclass(SpoolUnavailable, TemporaryFailure)
    assert issubclass(SpoolFull, TemporaryFailure)
    assert not issubclass(SpoolFull, SpoolUnavailable)


def test_default_replies_and_messages() -> None:
    assert SpoolUnavailable().reply is replies.SPOOL_UNAVAILABLE
    assert str(SpoolUnavailable()) == replies.SPOOL_UNAVAILABLE.text
    assert SpoolFull().reply is replies.SPOOL_FULL
    assert str(SpoolFull()) == replies.SPOOL_FULL.text


def test_detail_and_reply_override() -> None:
    error = SpoolUnavailable("connection refused")
    assert str(error) == "connection refused"
    assert error.reply is replies.SPOOL_UNAVAILABLE
    custom = replies.SPOOL_UNAVAILABLE.with_text("WAIT fell short")
    overridden = SpoolUnavailable(reply=custom)
    assert overridden.reply == custom
    assert str(overridden) == "WAIT fell short"
    assert SpoolUnavailable().reply is replies.SPOOL_UNAVAILABLE  # the class is untouched
