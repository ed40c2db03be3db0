"""Message rates as operators write them (pure): ``"600/m"``, ``"20/s"``, ``"5000/h"``,
``"100/10m"``; with a burst, how many may leave back to back.

A rate is enforced by GCRA (the generic cell rate algorithm, as in ATM traffic shaping and
KumoMTA's throttles): messages are spaced ``period / limit`` apart on average and at most
``burst`` of them may go at once. The default burst is a tenth of a second's worth of the
rate, at least 1: a smooth flow that does not cost one Redis call per message at high rates.
"""

import math
import re
from dataclasses import dataclass

from shared.units import parse_duration

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(\d*(?:\.\d+)?\s*(?:ms|s|m|h|d))\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` messages per ``period`` seconds."""

    limit: float
    period: float

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    @property
    def interval_ms(self) -> float:
        """The GCRA emission interval: milliseconds between two messages on average."""
        return self.period * 1000 / self.limit

    def default_burst(self) -> int:
        return max(1, math.floor(self.per_second / 10))

    def __str__(self) -> str:
        for unit, seconds in (("s", 1), ("m", 60), ("h", 3600), ("d", 86400)):
            if self.period == seconds:
                return f"{self.limit:g}/{unit}"
        return f"{self.limit:g}/{self.period:g}s"


def parse_rate(value: object) -> Rate:
    """``"600/m"`` → Rate(600, 60); ValueError naming the expected form otherwise."""
    if isinstance(value, Rate):
        return value
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a rate such as '600/m', '20/s' or '100/10m'")
    limit = float(match.group(1))
    unit = match.group(2).replace(" ", "")
    period = parse_duration(unit if unit[0].isdigit() else f"1{unit}")
    if limit <= 0 or period <= 0 or not math.isfinite(limit / period):
        raise ValueError(f"{value!r}: the limit and the period must be positive")
    if limit / period > 1_000_000:
        raise ValueError(f"{value!r}: more than a million messages a second is not a limit")
    return Rate(limit, period)
