"""Session counts per node and per client address, shared by a node's ingress processes.

The table lives in shared memory made before the processes fork, so the limits hold for
the node as a whole, not per process. Addresses are counted in 65,536 buckets by a stable
hash; two addresses in one bucket share their cap (a rare collision only makes the limit
stricter for them, never looser).
"""

import ipaddress
import multiprocessing
import zlib
from typing import Literal

_BUCKETS = 1 << 16
Refusal = Literal["node_limit", "ip_limit"] | None


def _bucket(ip: str) -> int:
    try:
        packed = ipaddress.ip_address(ip).packed
    except ValueError:
        packed = ip.encode()
    return zlib.crc32(packed) & (_BUCKETS - 1)


class SessionTable:
    """Counts open sessions; ``acquire`` refuses over the limits, ``release`` gives back."""

    def __init__(self, max_sessions: int, max_per_ip: int) -> None:
        ctx = multiprocessing.get_context("fork")
        self._lock = ctx.Lock()
        self._per_ip = ctx.RawArray("i", _BUCKETS)
        self._total = ctx.RawArray("i", 1)  # one cell: the node's open sessions
        self.max_sessions = max_sessions
        self.max_per_ip = max_per_ip

    def acquire_node(self) -> bool:
        with self._lock:
            if self._total[0] >= self.max_sessions:
                return False
            self._total[0] += 1
            return True

    def release_node(self) -> None:
        with self._lock:
            self._total[0] = max(0, self._total[0] - 1)

    def acquire_ip(self, ip: str) -> bool:
        bucket = _bucket(ip)
        with self._lock:
            if self._per_ip[bucket] >= self.max_per_ip:
                return False
            self._per_ip[bucket] += 1
            return True

    def release_ip(self, ip: str) -> None:
        bucket = _bucket(ip)
        with self._lock:
            self._per_ip[bucket] = max(0, self._per_ip[bucket] - 1)

    @property
    def total(self) -> int:
        return int(self._total[0])

    def count(self, ip: str) -> int:
        return int(self._per_ip[_bucket(ip)])
