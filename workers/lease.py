"""Keeps a ticket's lease alive while it works (a DATA reply may take ten minutes).

A thread per ticket renews the connection slot and the leases of the jobs it holds every
third of the lease time; if a renewal finds the lease gone (the reaper judged the worker
dead), :attr:`LeaseKeeper.lost` tells the ticket to stop claiming.
"""

import threading

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
        self._thread = threading.Thread(target=self._run, name=f"lease-{destination}", daemon=True)
        self._thread.start()

    def hold(self, jobs: list[Job]) -> None:
        with self._lock:
            self._held.update(job.member for job in jobs)

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
            try:
                alive = self._store.renew(self._destination, self._token, self._lease_ms, members)
            except Exception:  # noqa: BLE001, S112 -- Redis away: the next renewal retries
                continue
            if not alive:
                self.lost = True
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
