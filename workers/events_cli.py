"""``mxfleet events``: the delivery events of the ``{p}events`` stream, as JSON lines.

Owns the event format (one stream entry → one JSON object, below) and the reading side:
print what the stream holds (the last ``--count``, or everything from ``--since``), or
``--follow`` it. ``--webhook`` hands over to :mod:`workers.webhook`, which posts the same
objects in batches.

One object per attempt (``complete.lua`` writes the entry)::

    {"event_id": "1764403200000-0", "time": "2025-11-29T08:00:00.000Z", "attempt": 1,
     "id": "01J...", "domain": "example.org", "rcpts": ["a@example.org"],
     "verdict": "delivered", "reply": "250 2.0.0 Ok", "mx": "mx1.example.org",
     "duration_ms": 120}

``event_id`` is the stream id, ``time`` its milliseconds (Redis's clock) in UTC, then every
field of the entry in its order: ``attempt`` and ``duration_ms`` as integers, ``rcpts`` a
list, the rest strings. An attempt whose hard bounces put recipients on the suppression list
names them in ``suppressed`` (a list). A recipient the ingress accepted but did not queue
because it is suppressed (``suppression = "drop"``) has an entry of its own, without
``attempt``: ``{"id": ..., "domain": ..., "rcpts": [...], "verdict": "suppressed",
"reply": "550 5.7.1 Recipient address is suppressed ..."}``. Redis unreachable: one line
on stderr and exit 1; ``--follow`` instead retries with backoff, one warning per outage.
"""

import argparse
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial
from types import FrameType
from typing import Any, TextIO, TypeVar

import redis

from shared import retry
from shared.keys import Keys
from shared.redis_conn import sync_client
from shared.settings import Settings
from shared.units import parse_duration
from workers.store import text

T = TypeVar("T")
Entry = tuple[str, dict[str, str]]  # stream id, fields (decoded)

_STREAM_ID = re.compile(r"^(\d+)(?:-(\d+))?$")
_INT_FIELDS = frozenset({"attempt", "duration_ms"})
_LIST_FIELDS = frozenset({"rcpts", "suppressed"})
_MAX_SEQ = 2**64 - 1
_PAGE = 1000  # entries per XREAD reply
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


# --- the event format (pure) ------------------------------------------------------------
def stream_time(event_id: str) -> str:
    """ISO 8601 UTC time (milliseconds) of a stream id's first part."""
    ms = int(event_id.split("-", 1)[0])
    moment = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=ms % 1000 * 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _field(name: str, value: str) -> object:
    if name in _LIST_FIELDS:
        return value.split(",") if value else []
    if name in _INT_FIELDS and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value  # an odd value stays visible as it is rather than failing the line


def event_object(event_id: str, fields: Mapping[str, str]) -> dict[str, object]:
    """The JSON object of one stream entry (the format in the module docstring)."""
    found: dict[str, object] = {"event_id": event_id, "time": stream_time(event_id)}
    for name, value in fields.items():
        found[name] = _field(name, value)
    return found


def decode_entry(raw: tuple[bytes, Mapping[bytes, bytes] | None]) -> Entry:
    """A redis-py stream entry; one trimmed away while pending has no fields (``{}``)."""
    event_id, fields = raw
    return text(event_id), {text(k): text(v) for k, v in (fields or {}).items()}


# --- stream ids (pure) ------------------------------------------------------------------
def since_id(text: str, now_ms: int) -> str:
    """The first stream id of ``--since``: a stream id (``ms`` or ``ms-seq``) or a duration
    with its unit (``10m``: that long before ``now_ms``). ValueError otherwise."""
    if match := _STREAM_ID.match(text.strip()):
        return f"{int(match.group(1))}-{int(match.group(2) or 0)}"
    if not re.search(r"[a-z]\s*$", text):
        raise ValueError(f"{text!r} is neither a stream id (ms-seq) nor a duration ('10m')")
    return f"{max(0, now_ms - int(parse_duration(text) * 1000))}-0"


def id_before(stream_id: str) -> str:
    """The greatest stream id below ``stream_id`` (XREAD and XGROUP start after an id)."""
    ms, seq = (int(part) for part in stream_id.split("-"))
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"


# --- stopping and waiting ---------------------------------------------------------------
class Stopped(Exception):
    """A stop was requested (SIGTERM, SIGINT) while waiting."""


class Stopper:
    """SIGTERM and SIGINT set a flag that the loops check between bounded waits."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> "Stopper":
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def sleep(self, seconds: float) -> None:
        """Sleep in short slices (a handler cannot wake a sleep); Stopped when asked to."""
        deadline = time.monotonic() + seconds
        while not self.requested and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))
        if self.requested:
            raise Stopped


class Patient:
    """Calls Redis through outages: backoff between tries (0.5 s doubling to ``cap``, with
    jitter), ``notify(True, error)`` once when an outage starts, ``notify(False, "")`` when
    it ends. ``outages`` counts them, so a caller can tell that a call was retried."""

    def __init__(self, stopper: Stopper, notify: Callable[[bool, str], None], cap: float) -> None:
        self.stopper = stopper
        self.notify = notify
        self.cap = cap
        self.outages = 0
        self._down = False

    def call(self, fn: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                result = fn()
            except REDIS_DOWN as exc:
                failures += 1
                if not self._down:
                    self._down, self.outages = True, self.outages + 1
                    self.notify(True, one_line(exc))
                self.stopper.sleep(retry.backoff(failures, 0.5, self.cap))
                continue
            if self._down:
                self._down = False
                self.notify(False, "")
            return result


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def block_ms(settings: Settings) -> int:
    """XREAD BLOCK time: short enough to notice a stop, below the socket timeout."""
    return max(1, int(min(1.0, settings.redis_timeout / 2) * 1000))


# --- reading the stream -----------------------------------------------------------------
class EventStream:
    """The ``{p}events`` stream, read without a consumer group (redis-py's replies typed)."""

    def __init__(self, client: "redis.Redis", key: str) -> None:
        self.client, self.key = client, key

    def now_ms(self) -> int:
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def last(self, count: int) -> list[Entry]:
        """The newest ``count`` entries, oldest first."""
        found: Any = self.client.xrevrange(self.key, "+", "-", count=count) if count else []
        return [decode_entry(raw) for raw in reversed(found)]

    def after(self, cursor: str, count: int, block: int | None) -> list[Entry]:
        """Up to ``count`` entries after ``cursor``; ``block``: wait (ms) for the first."""
        reply: Any = self.client.xread({self.key: cursor}, count=count, block=block)
        return [decode_entry(raw) for _, entries in reply or [] for raw in entries]


def _write(entries: list[Entry], out: TextIO, *, flush: bool) -> None:
    for event_id, fields in entries:
        out.write(json.dumps(event_object(event_id, fields)) + "\n")
        if flush:
            out.flush()


def print_events(stream: EventStream, since: str | None, count: int | None, out: TextIO) -> None:
    """Without ``since`` the newest ``count`` (100); with it, all from there (or ``count``)."""
    if since is None:
        _write(stream.last(100 if count is None else count), out, flush=False)
        return
    cursor, left = id_before(since_id(since, stream.now_ms())), count
    while left is None or left > 0:
        page = stream.after(cursor, _PAGE if left is None else min(_PAGE, left), None)
        if not page:
            return
        _write(page, out, flush=False)
        cursor, left = page[-1][0], None if left is None else left - len(page)


def _follow_start(stream: EventStream, since: str | None, count: int | None, out: TextIO) -> str:
    """Print the backlog (the newest ``count``, 100 by default) and return the cursor."""
    if since is not None:
        return id_before(since_id(since, stream.now_ms()))
    backlog = stream.last(100 if count is None else count)
    _write(backlog, out, flush=True)
    newest = backlog or stream.last(1)
    return newest[-1][0] if newest else "0-0"


def follow(stream: EventStream, args: argparse.Namespace, wait_ms: int, out: TextIO) -> int:
    """Print new entries as they arrive until SIGTERM or SIGINT (then exit 0)."""
    stopper = Stopper().install()
    patient = Patient(stopper, _warn_outage, cap=10.0)
    try:
        cursor = patient.call(lambda: _follow_start(stream, args.since, args.count, out))
        while not stopper.requested:
            entries = patient.call(partial(stream.after, cursor, _PAGE, wait_ms))
            _write(entries, out, flush=True)
            cursor = entries[-1][0] if entries else cursor
    except Stopped:
        pass
    return 0


def _warn_outage(down: bool, error: str) -> None:
    if down:
        _say(f"Redis unreachable ({error}); retrying")
    else:
        _say("Redis reachable again")


def _say(message: str) -> None:
    print(f"mxfleet events: {message}", file=sys.stderr, flush=True)


# --- the command ------------------------------------------------------------------------
def arg_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser raising ValueError (its message becomes the error)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _since(text: str) -> str:
    since_id(text, 0)  # ValueError when it is neither
    return text


def _count(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a count (0 or more)")
    return int(text)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since", type=arg_type(_since), metavar="ID|DURATION",
        help="start at this stream id (ms or ms-seq) or this long ago ('10m', '2h')",
    )  # fmt: skip
    parser.add_argument(
        "--count", type=arg_type(_count), metavar="N",
        help="how many of the newest events (default 100); with --since, at most N",
    )  # fmt: skip
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    from workers.webhook import configure_webhook  # here: webhook builds on this module

    configure_webhook(parser)


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.webhook is not None:
        if args.follow or args.count is not None:
            _say("--webhook does not go with --follow or --count")
            return 2
        from workers.webhook import forward

        return forward(settings, args)
    try:
        client = sync_client(settings)
    except ValueError as exc:  # no redis_url
        _say(one_line(exc))
        return 2
    stream = EventStream(client, Keys(settings.redis_key_prefix).events)
    try:
        if args.follow:
            return follow(stream, args, block_ms(settings), sys.stdout)
        print_events(stream, args.since, args.count, sys.stdout)
        sys.stdout.flush()
    except REDIS_DOWN as exc:
        _say(f"Redis unreachable: {one_line(exc)}")
        return 1
    except redis.RedisError as exc:
        _say(f"Redis error: {one_line(exc)}")
        return 1
    except BrokenPipeError:  # `mxfleet events | head`: the reader is gone, so are we
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
