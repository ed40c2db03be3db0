"""Which destination a due domain belongs to, for the dispatcher, without blocking it.

A destination (:mod:`shared.policies`) may depend on the domain's MX hosts (site rollup,
``mx`` patterns), which takes DNS queries. The dispatcher's loop must not wait on DNS, so
:meth:`DestinationMap.lookup` answers from a cache and, on a miss, starts the lookup in a
small thread pool and answers None: the domain stays due and is served on a later pass.
Answers are kept ``TTL`` seconds (a failed lookup ``FAILED_TTL``: the domain is its own
destination meanwhile, and its ticket's own lookup decides what happens to its mail).
"""

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from shared.errors import PermanentFailure, TemporaryFailure
from shared.policies import Destination, Policies
from workers.mx import MxResolver

TTL = 300.0
FAILED_TTL = 30.0
MAX_ENTRIES = 100_000


class DestinationMap:
    def __init__(
        self, policies: Policies, resolver: MxResolver, *, threads: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.policies = policies
        self.resolver = resolver
        self._clock = clock
        self._cache: dict[str, tuple[float, Destination]] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="mx-lookup")

    def lookup(self, domain: str) -> Destination | None:
        """The domain's destination, or None while its MX lookup runs."""
        if not self.policies.needs_mx(domain):
            return self.policies.destination(domain, None)
        now = self._clock()
        with self._lock:
            entry = self._cache.get(domain)
            if entry is not None and entry[0] > now:
                return entry[1]
            if domain not in self._pending:
                self._pending.add(domain)
                self._pool.submit(self._resolve, domain)
        return entry[1] if entry is not None else None  # a stale answer beats none

    def resolve(self, domain: str) -> Destination:
        """The domain's destination, looked up now (blocking; for the CLI and tests)."""
        if not self.policies.needs_mx(domain):
            return self.policies.destination(domain, None)
        return self._lookup(domain)[0]

    def _lookup(self, domain: str) -> tuple[Destination, float]:
        try:
            hosts = sorted({target.host for target in self.resolver.route(domain)})
        except (PermanentFailure, TemporaryFailure):
            return self.policies.destination(domain, None), FAILED_TTL
        return self.policies.destination(domain, hosts), TTL

    def _resolve(self, domain: str) -> None:
        try:
            destination, ttl = self._lookup(domain)
            with self._lock:
                if len(self._cache) >= MAX_ENTRIES:
                    self._cache.clear()
                self._cache[domain] = (self._clock() + ttl, destination)
        finally:
            with self._lock:
                self._pending.discard(domain)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
