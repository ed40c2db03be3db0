"""Heartbeats of the workers' side: each process says every second or two that it is alive
(``mxf:nodes``), so ``mxfleet status`` can list the live ingress, dispatcher and worker
processes, and the leading dispatcher can export how many there are."""

import logging
import os
import socket
import threading
import time

from shared import log
from shared.spool import HEARTBEAT_TTL_MS
from workers.store import Store, text

logger = logging.getLogger("mxfleet.heartbeat")

INTERVAL = 2.0
FRESH_MS = HEARTBEAT_TTL_MS  # a process unseen longer is counted as gone
FORGET_MS = 3_600_000  # dead processes leave the list after an hour


def member(role: str) -> str:
    return f"{role}:{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """Beats for one process: :meth:`beat` by hand, or a daemon thread from :meth:`start`
    until :meth:`stop` (which also removes the process from the list)."""

    def __init__(self, store: Store, role: str, **fields: str | int) -> None:
        self.store = store
        self.member = member(role)
        host, pid = self.member.split(":")[1:]
        self.fields: dict[str, str | int] = {
            "role": role, "host": host, "pid": pid, "started_ms": int(time.time() * 1000),
            **fields,
        }  # fmt: skip
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Heartbeat":
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> None:
        try:
            self.store.heartbeat(self.member, self.fields)
        except Exception as exc:  # noqa: BLE001 -- Redis away: the next beat retries
            log.event(logger, "heartbeat_failed", logging.DEBUG, error=exc)

    def _run(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(INTERVAL):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.client.zrem(self.store.keys.nodes, self.member)
            self.store.client.delete(self.store.keys.node(self.member))
        except Exception as exc:  # noqa: BLE001 -- leaving without a goodbye is fine
            log.event(logger, "heartbeat_stop_failed", logging.DEBUG, error=exc)


def live_counts(store: Store) -> dict[str, int]:
    """Processes per role whose heartbeat is fresh; forgets the long dead."""
    client, keys = store.client, store.keys
    now_ms = store.now_ms()
    client.zremrangebyscore(keys.nodes, "-inf", now_ms - FORGET_MS)
    counts = {"ingress": 0, "dispatcher": 0, "worker": 0}
    for raw in client.zrangebyscore(keys.nodes, now_ms - FRESH_MS, "+inf"):
        role = text(raw).split(":", 1)[0]
        counts[role] = counts.get(role, 0) + 1
    return counts
