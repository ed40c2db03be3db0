"""The webhook forwarder's consumer group on the events stream: created at ``$`` or
``--since``, its figures (pending, lag, trimmed), the adoption of dead consumers' pending
entries, reads and acknowledgements (redis-py's replies typed here)."""

import os
from collections.abc import Callable
from typing import Any

import redis

from workers import events_cli
from workers.events_cli import Entry
from workers.store import text

CLAIM_IDLE_MS = 60_000  # a consumer silent this long with entries pending is taken as dead
_PAGE = 1000


def dead_here(consumer: str, host: str, alive: Callable[[int], bool]) -> bool:
    """A ``host:pid`` consumer of this host whose process is gone."""
    name, _, pid = consumer.rpartition(":")
    return name == host and pid.isdigit() and int(pid) != os.getpid() and not alive(int(pid))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class Group:
    """The forwarder's consumer group on the events stream (redis-py's replies typed here)."""

    def __init__(self, client: "redis.Redis", key: str, name: str, consumer: str) -> None:
        self.client, self.key, self.name, self.consumer = client, key, name, consumer

    def create(self, since: str | None) -> bool:
        """Create the group (and the stream) at ``$`` or from ``since``; False if it exists."""
        start = "$"
        if since is not None:
            seconds, micros = self.client.time()
            start = events_cli.id_before(
                events_cli.since_id(since, seconds * 1000 + micros // 1000)
            )
        try:
            self.client.xgroup_create(self.key, self.name, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            raise
        return True

    def figures(self) -> dict[str, object]:
        """pending, lag, last delivered id, and events trimmed before the group read them."""
        groups: list[dict[str, Any]] = self.client.xinfo_groups(self.key)
        mine = next(g for g in groups if text(g["name"]) == self.name)
        stream: dict[str, Any] = self.client.xinfo_stream(self.key)
        # Redis 7 counts: entries added to the stream, read by the group (None: unknown).
        read, added, lag = mine.get("entries-read"), stream.get("entries-added"), mine.get("lag")
        unknown = read is None or added is None
        return {
            "pending": mine["pending"], "lag": "unknown" if lag is None else lag,
            "last_delivered": text(mine["last-delivered-id"]),
            "trimmed_unread": "unknown" if unknown else max(0, added - stream["length"] - read),
        }  # fmt: skip

    def adopt(self, host: str) -> int:
        """Claim the pending entries of this host's dead consumers (and forget those), then
        every entry pending for over ``CLAIM_IDLE_MS``, whoever holds it."""
        moved, cursor = 0, "0-0"
        consumers: list[dict[str, Any]] = self.client.xinfo_consumers(self.key, self.name)
        for owner in (text(c["name"]) for c in consumers):
            if dead_here(owner, host, pid_alive):
                moved += self._take_all(owner)
        while True:
            reply: list[Any] = self.client.xautoclaim(
                self.key, self.name, self.consumer, CLAIM_IDLE_MS, start_id=cursor, count=_PAGE
            )
            moved, cursor = moved + len(reply[1]), text(reply[0])
            if cursor == "0-0":
                return moved

    def _take_all(self, owner: str) -> int:
        moved = 0
        while rows := self.client.xpending_range(self.key, self.name, "-", "+", _PAGE, owner):
            ids: list[Any] = [row["message_id"] for row in rows]
            self.client.xclaim(self.key, self.name, self.consumer, 0, ids, justid=True)
            moved += len(ids)
        self.client.xgroup_delconsumer(self.key, self.name, owner)
        return moved

    def read(self, cursor: str, count: int, block: int | None) -> list[Entry]:
        """``>``: new entries (waiting up to ``block`` ms); ``0``: our pending ones."""
        streams: dict[Any, Any] = {self.key: cursor}
        reply: Any = self.client.xreadgroup(self.name, self.consumer, streams, count, block)
        return [events_cli.decode_entry(raw) for _, entries in reply or [] for raw in entries]

    def ack(self, ids: list[str]) -> None:
        self.client.xack(self.key, self.name, *ids)
