"""The SMTP listener of an ingress process, and the file descriptors its sessions need.

Every session is a file descriptor, and a common default soft RLIMIT_NOFILE (1024) is
below the default ``max_sessions`` (2000), so :func:`raise_fd_limit` raises the soft limit
to the hard one before the processes start, and says what it got.

When accept() fails for want of descriptors (EMFILE, ENFILE), libuv under uvloop closes a
spare descriptor it keeps, accepts and closes the pending connections, and carries on
(asyncio's own loop stops accepting for a second instead): the process neither crashes nor
spins. But on any accept error libuv passes up (ENFILE when even the spare cannot be
reopened, ENOBUFS, ENOMEM), uvloop closes the listening socket without a word and the
process would live on, deaf. :meth:`Listener.watch` checks the socket every second and
listens again when it is gone.
"""

import asyncio
import logging
import resource
import socket
from collections.abc import Callable
from pathlib import Path

from shared import log

logger = logging.getLogger("mxfleet.ingress")

# Descriptors a process needs besides its sessions: the Redis pool (64), the metrics
# listener, logs, and connections refused with a 421 while they are being closed.
FD_HEADROOM = 256
_NR_OPEN = Path("/proc/sys/fs/nr_open")  # the kernel's ceiling for RLIMIT_NOFILE


def _ceiling(hard: int) -> int:
    if hard != resource.RLIM_INFINITY:
        return hard
    try:
        return int(_NR_OPEN.read_text())
    except (OSError, ValueError):
        return 1 << 20  # Linux's default nr_open


def raise_fd_limit(max_sessions: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; log and return (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _ceiling(hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.event(logger, "fd_limit_unchanged", logging.WARNING, error=exc)
    log.event(logger, "fd_limit", soft=soft, hard=hard)
    needed = max_sessions + FD_HEADROOM
    if soft != resource.RLIM_INFINITY and soft < needed:
        # Past the limit, connections are dropped unanswered instead of told 421.
        log.event(logger, "fd_limit_low", logging.WARNING, soft=soft, needed=needed)
    return soft, hard


class Listener:
    """The process's listening socket (SO_REUSEPORT), listened on again if it is lost."""

    def __init__(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int, backlog: int = 1024
    ) -> None:
        self._factory = factory
        self._address = (host, port)
        self._name = f"{host}:{port}"
        self._backlog = backlog
        self._server: asyncio.Server | None = None
        self._sockets: tuple[socket.socket, ...] = ()
        self._closed = False
        self.listening = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        host, port = self._address
        self._server = await loop.create_server(
            self._factory, host, port, reuse_port=True, backlog=self._backlog
        )
        # Kept from the start: once uvloop has closed a lost listener's handle, the server
        # has no socket object left to look at.
        self._sockets = tuple(self._server.sockets)
        self.listening = True

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._sockets

    def alive(self) -> bool:
        """True while every socket of the server is still a listening one."""
        sockets = self.sockets
        if not sockets:
            return False
        try:
            return all(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for sock in sockets)
        except OSError:  # closed under us
            return False

    async def watch(self, interval: float = 1.0) -> None:
        """Listen again, once per ``interval`` at most, whenever the socket is lost."""
        while not self._closed:
            await asyncio.sleep(interval)
            if self._closed or self.alive():
                continue
            if self.listening:
                log.event(logger, "listener_lost", logging.ERROR, listen=self._name)
            self.listening = False
            self._stop()
            try:
                await self.start()
            except OSError as exc:  # out of descriptors for a new socket too: next round
                log.event(logger, "listen_failed", logging.ERROR, listen=self._name, error=exc)
                continue
            log.event(logger, "listening_again", listen=self._name)

    def close(self) -> None:
        """Stop accepting for good (the drain)."""
        self._closed = True
        self.listening = False
        self._stop()

    def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            self._sockets = ()
