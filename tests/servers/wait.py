"""Waiting in tests: poll a predicate until it holds or a deadline passes (never fixed sleeps)."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02) -> T:
    """Return the first truthy value of ``predicate()``; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T = predicate()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {predicate}")
        time.sleep(interval)
        last = predicate()
    return last
