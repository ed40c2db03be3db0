"""shared/keys.py: every Redis key of the spool."""

from shared.keys import Keys


def test_default_prefix() -> None:
    keys = Keys()
    assert keys.msg("01ABC") == "mxf:msg:01ABC"
    assert keys.body("01ABC") == "mxf:body:01ABC"
    assert keys.rcpt("01ABC", "example.com") == "mxf:rcpt:01ABC:example.com"
    assert keys.job("01ABC", "example.com") == "mxf:job:01ABC:example.com"
    assert keys.sched("example.com") == "mxf:sched:example.com"
    assert keys.due == "mxf:due"
    assert keys.stats == "mxf:stats"


def test_custom_prefix() -> None:
    keys = Keys("test:")
    assert keys.msg("X") == "test:msg:X"
    assert keys.due == "test:due"
    assert keys.stats == "test:stats"


def test_keys_of_one_message_are_distinct() -> None:
    keys = Keys()
    names = [
        keys.msg("X"), keys.body("X"), keys.rcpt("X", "a.example"), keys.job("X", "a.example"),
        keys.sched("a.example"), keys.rcpt("X", "b.example"), keys.due, keys.stats,
    ]  # fmt: skip
    assert len(set(names)) == len(names)
