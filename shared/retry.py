"""The retry schedule of deferred jobs (pure): exponential backoff with jitter, and expiry.

The n-th retry waits ``base * 2**(n-1)``, capped at ``cap``, scaled by a random factor in
[0.5, 1.0] so that jobs deferred together do not come back together ("equal jitter").
A job older than ``max_age`` is not retried: it expires and bounces.
"""

import random


def backoff(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after ``attempts`` failed attempts (attempts >= 1)."""
    exponent = min(max(attempts, 1) - 1, 62)
    delay: float = min(cap, base * float(2**exponent))
    factor = (rng or random).uniform(0.5, 1.0)
    return max(0.0, delay * factor)


def expired(received_ms: int, now_ms: int, max_age: float) -> bool:
    """True when a message received at ``received_ms`` is past ``max_age`` seconds."""
    return now_ms - received_ms >= max_age * 1000
