"""Structured logs: one ``key=value`` line per event, carrying the message id when there is one.

log.event(logger, "accepted", id=msg_id, sender=..., rcpts=3)
→ 2026-11-29T08:00:00Z info ingress event=accepted id=01J... sender=a@b.c rcpts=3
"""

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789@._-:/+<>[]")


def _value(value: object) -> str:
    text = str(value)
    if text and all(char in _SAFE for char in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def format_fields(**fields: Any) -> str:
    return " ".join(f"{key}={_value(value)}" for key, value in fields.items())


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        line = f"{stamp} {record.levelname.lower()} {record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup(level: str = "info") -> None:
    """Configure the root logger once per process (stderr, one line per event)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event as ``event=<name> key=value ...`` if the level is enabled."""
    if logger.isEnabledFor(level):
        logger.log(level, "event=%s %s", name, format_fields(**fields))


def record(
    logger: logging.Logger, name: str, fields: Mapping[str, Any], level: int = logging.INFO
) -> None:
    """:func:`event` for fields already gathered in a mapping."""
    if logger.isEnabledFor(level):
        logger.log(level, "event=%s %s", name, format_fields(**fields))
