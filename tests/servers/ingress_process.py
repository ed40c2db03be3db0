"""The ingress as a real process (``python -m shared.cli ingress``) for integration tests."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from shared.embedded import free_port
from tests.servers.wait import wait_until

# What a child keeps from our environment: never MXFLEET_* (each test sets its own).
_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


class IngressProcess:
    def __init__(self, settings: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.host = "127.0.0.1"
        self.env = {key: os.environ[key] for key in _KEEP if key in os.environ}
        self.env.update(
            {
                "MXFLEET_LISTEN": f"{self.host}:{self.port}",
                "MXFLEET_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}",
                "MXFLEET_HOSTNAME": "mx.test",
            }
        )
        self.env.update({f"MXFLEET_{key.upper()}": value for key, value in settings.items()})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> "IngressProcess":
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "ingress"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._listening, timeout)
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"ingress exited with {self.process.returncode}:\n{self.log()}")
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as sock:
                return sock.recv(4).startswith(b"220")
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode
