"""Session counts per node and per client address, shared by a node's ingress processes.

The table lives in shared memory made before the processes fork, so the limits hold for
the node as a whole, not per process. Each process counts in its own row and a check sums
the rows; when a process dies (even by SIGKILL) the supervisor clears its row, so the
sessions that died with it stop counting. Addresses are counted in 65,536 buckets by a
stable hash; two addresses in one bucket share their cap (a rare collision only makes the
limit stricter for them, never looser).
"""

import ipaddress
import multiprocessing
import zlib

_BUCKETS = 1 << 16
_ROW = _BUCKETS + 1  # the buckets, then the process's total


def _bucket(ip: str) -> int:
    try:
        packed = ipaddress.ip_address(ip).packed
    except ValueError:
        packed = ip.encode()
    return zlib.crc32(packed) & (_BUCKETS - 1)


class SessionTable:
    """Counts open sessions; ``acquire_*`` refuse over the limits, ``release_*`` give back.

    Call :meth:`use_row` in each process (after fork) before counting.
    """

    def __init__(self, max_sessions: int, max_per_ip: int, processes: int = 1) -> None:
        ctx = multiprocessing.get_context("fork")
        self._lock = ctx.Lock()
        self._cells = ctx.RawArray("i", _ROW * processes)
        self._rows = processes
        self._row = 0
        self.max_sessions = max_sessions
        self.max_per_ip = max_per_ip

    def use_row(self, index: int) -> None:
        self._row = index

    def clear_row(self, index: int) -> None:
        """Forget every session of process ``index`` (it died)."""
        with self._lock:
            start = index * _ROW
            self._cells[start : start + _ROW] = [0] * _ROW

    def _sum(self, offset: int) -> int:
        return sum(self._cells[row * _ROW + offset] for row in range(self._rows))

    def _acquire(self, offset: int, limit: int) -> bool:
        with self._lock:
            if self._sum(offset) >= limit:
                return False
            self._cells[self._row * _ROW + offset] += 1
            return True

    def _release(self, offset: int) -> None:
        with self._lock:
            cell = self._row * _ROW + offset
            self._cells[cell] = max(0, self._cells[cell] - 1)

    def acquire_node(self) -> bool:
        return self._acquire(_BUCKETS, self.max_sessions)

    def release_node(self) -> None:
        self._release(_BUCKETS)

    def acquire_ip(self, ip: str) -> bool:
        return self._acquire(_bucket(ip), self.max_per_ip)

    def release_ip(self, ip: str) -> None:
        self._release(_bucket(ip))

    @property
    def total(self) -> int:
        with self._lock:
            return self._sum(_BUCKETS)

    def count(self, ip: str) -> int:
        with self._lock:
            return self._sum(_bucket(ip))
