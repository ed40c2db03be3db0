"""Parsing of the units operators write in settings: durations and sizes.

Durations are written ``"30s"``, ``"10m"``, ``"5d"`` (or a bare number of seconds);
sizes ``"25MiB"``, ``"10MB"``, ``"512KiB"`` (or a bare number of bytes).
"""

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]i?b?|b)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
}


def parse_duration(value: object) -> float:
    """Seconds from ``"30s"``-style text or a number; ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("a duration such as '30s', '10m' or '5d' is required")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    else:
        raise ValueError(f"{value!r} is not a duration such as '30s', '10m' or '5d'")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{value!r} is not a finite, non-negative duration")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``"25MiB"``-style text or an integer; ValueError on anything else."""
    if isinstance(value, bool):
        raise ValueError("a size such as '25MiB' is required")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)):
        size = int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]
    else:
        raise ValueError(f"{value!r} is not a size such as '25MiB', '10MB' or 1048576")
    if size < 0:
        raise ValueError("a size cannot be negative")
    return size
