"""The HTTP endpoint every mxfleet process serves for Kubernetes and Prometheus.

``/metrics`` (Prometheus text format), ``/healthz`` (the process is alive) and ``/readyz``
(it can do its work: the callback decides). A small threaded server, so it answers even
while the process's own event loop or pool is busy.
"""

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Readiness = Callable[[], tuple[bool, str]]


def _handler(ready: Readiness) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mxfleet"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._answer(200, b"ok\n")
            elif path == "/readyz":
                ok, why = ready()
                self._answer(
                    200 if ok else 503, (why or ("ready" if ok else "not ready")).encode() + b"\n"
                )
            else:
                self._answer(404, b"not found\n")

        def _answer(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- stdlib signature
            return  # scrapes and probes are not events

    return Handler


class HealthServer:
    """Serves the three endpoints from a daemon thread until :meth:`close`."""

    def __init__(self, host: str, port: int, ready: Readiness) -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(ready))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        # close() waits for serve_forever to notice, up to one poll interval (0.5 s by default,
        # which every stop of every process would pay).
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="mxfleet-http", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
