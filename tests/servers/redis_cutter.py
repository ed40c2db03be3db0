"""A TCP proxy in front of a redis-server that can lose one reply: the connection that
carries a command holding a marker is closed once the command has reached Redis, before
the reply gets back, as when Redis dies between writing its AOF and answering.

Every other byte passes both ways unchanged. One thread accepts; each connection has a
thread that moves bytes with ``select``.
"""

import contextlib
import select
import socket
import threading
from types import TracebackType


class RedisCutter:
    def __init__(self, upstream_port: int, marker: bytes) -> None:
        self.upstream_port = upstream_port
        self.marker = marker
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        cut = False
        with client, upstream:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        upstream.sendall(data)
                        cut = cut or self.marker in data
                    elif cut:  # the reply to the marked command: lose it, with the link
                        self.cuts += 1
                        return
                    else:
                        client.sendall(data)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> "RedisCutter":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
