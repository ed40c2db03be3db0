"""Keeps a ticket's lease alive while it works (a DATA reply may take ten minutes).

A thread per ticket renews the connection slot and the leases of the jobs it holds every
third of the lease time; if a renewal finds the lease gone (the reaper judged the worker
dead), :attr:`LeaseKeeper.lost` tells the ticket to stop claiming.

A renewal can also just not happen: the process was frozen (SIGSTOP, a stalled VM) or its
host was cut off from Redis. After two thirds of the lease time without a renewal the
reaper may already have handed the jobs to another worker, so :meth:`LeaseKeeper.expired`
says so and the ticket sends nothing more: what it still holds would be delivered twice.
"""

import threading
import time

from workers.store import Job, Store


class LeaseKeeper:
    def __init__(self, store: Store, destination: str, token: str, lease_ms: int) -> None:
        self._store = store
        self._destination = destination
        self._token = token
        self._lease_ms = lease_ms
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.lost = False
        self._renewed = time.monotonic()  # the last time the lease was surely extended
        self._thread = threading.Thread(target=self._run, name=f"lease-{destination}", daemon=True)
        self._thread.start()

    def hold(self, jobs: list[Job]) -> None:
        """Keep ``jobs`` leased; their claim has just extended the ticket's lease too."""
        with self._lock:
            self._held.update(job.member for job in jobs)
            self._renewed = time.monotonic()

    def expired(self) -> bool:
        """The lease was lost, or may be: no renewal for two thirds of its time."""
        return self.lost or time.monotonic() - self._renewed > self._lease_ms / 1500

    def drop(self, job: Job) -> None:
        with self._lock:
            self._held.discard(job.member)

    def held(self) -> list[str]:
        """The ``{id}:{dom}`` members still held (claimed, not recorded)."""
        with self._lock:
            return sorted(self._held)

    def _run(self) -> None:
        interval = self._lease_ms / 3000
        while not self._stop.wait(interval):
            with self._lock:
                members = sorted(self._held)
            asked = time.monotonic()
            try:
                alive = self._store.renew(self._destination, self._token, self._lease_ms, members)
            except Exception:  # noqa: BLE001, S112 -- Redis away: the next renewal retries
                continue
            if not alive:
                self.lost = True
                return
            with self._lock:
                self._renewed = max(self._renewed, asked)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
