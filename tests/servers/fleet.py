"""mxfleet as real processes (ingress, dispatchers, workers) around one Redis, one DNS
server and SMTP sinks on 127.0.0.N: the end-to-end rig."""

import os
import re
import signal
import smtplib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from shared.embedded import free_port
from tests.servers.dns_server import DnsServer
from tests.servers.rawsmtp import RawSMTP
from tests.servers.redis_server import RedisServer
from tests.servers.smtp_sink import Behaviour, SmtpSink
from tests.servers.spool_client import SpoolClient
from tests.servers.wait import wait_until

_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


@dataclass
class Role:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(10)

    def metrics_port(self) -> int | None:
        """The port of its /metrics endpoint, from its start-up log line."""
        found = re.search(r"event=(?:started|listening) .*metrics=\S*:(\d+)", self.log.read_text())
        return int(found.group(1)) if found else None

    def stop(self, timeout: float = 30.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


@dataclass
class Fleet:
    """Start roles with :meth:`start`; ``settings`` apply to every role started after."""

    redis: RedisServer
    dns: DnsServer
    delivery_port: int
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    roles: list[Role] = field(default_factory=list)
    sinks: dict[str, SmtpSink] = field(default_factory=dict)
    smtp_port: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. SSL_CERT_FILE

    def env(self, **extra: str) -> dict[str, str]:
        env = {key: os.environ[key] for key in _KEEP if key in os.environ}
        env.update(
            {
                "MXFLEET_REDIS_URL": self.redis.url,
                "MXFLEET_METRICS_LISTEN": "127.0.0.1:0",
                "MXFLEET_HOSTNAME": "mx.fleet.test",
                "MXFLEET_DNS_SERVERS": self.dns.address,
                "MXFLEET_DELIVERY_PORT": str(self.delivery_port),
                "MXFLEET_ALLOW_PRIVATE_MX": "true",
                "MXFLEET_RELAY_NETWORKS": "127.0.0.0/8",
                "MXFLEET_RETRY_BASE": "1s",
                "MXFLEET_RETRY_CAP": "2s",
                "MXFLEET_LEASE_TIME": "10s",
                "MXFLEET_TICKET_BUDGET": "5s",
                "MXFLEET_CONNECT_TIMEOUT": "2s",
            }
        )
        env.update({f"MXFLEET_{k.upper()}": v for k, v in {**self.settings, **extra}.items()})
        env.update(self.extra_env)
        return env

    def config(self, toml: str) -> Path:
        """Write the TOML configuration file every role started after this reads."""
        path = self.workdir / "mxfleet.toml"
        path.write_text(toml, "utf-8")
        self.settings["config"] = str(path)
        return path

    def start(self, role: str, **settings: str) -> Role:
        extra = dict(settings)
        if role == "ingress":
            self.smtp_port = self.smtp_port or free_port()
            extra.setdefault("listen", f"127.0.0.1:{self.smtp_port}")
        log = self.workdir / f"{role}{len(self.roles)}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "shared.cli", role],
                env=self.env(**extra),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started = Role(role, process, log)
        self.roles.append(started)
        if role == "ingress":
            wait_until(lambda: self._greets(started), timeout=20)
        return started

    def _greets(self, role: Role) -> bool:
        if not role.alive():
            raise AssertionError(f"{role.name} exited:\n{role.log.read_text()}")
        try:
            with RawSMTP("127.0.0.1", self.smtp_port, timeout=2) as smtp:
                return smtp.greeting is not None and smtp.greeting[0] == 220
        except OSError:
            return False

    def up(self, *, dispatchers: int = 1, workers: int = 1, **settings: str) -> "Fleet":
        """One ingress, and dispatchers and workers (one each by default)."""
        self.settings.update(settings)
        self.start("ingress")
        for _ in range(dispatchers):
            self.start("dispatcher")
        for _ in range(workers):
            self.start("worker")
        return self

    def sink(self, domain: str, host: str, behaviour: Behaviour | None = None,
             *, preference: int = 10) -> SmtpSink:  # fmt: skip
        """An SMTP sink on ``host`` as the MX of ``domain``."""
        sink = SmtpSink(host, self.delivery_port, behaviour).start()
        self.sinks[host] = sink
        name = f"mx{len(self.sinks)}.{domain}"
        self.dns.add_mx(domain, [(preference, name)])
        self.dns.add_a(name, host)
        return sink

    def send(
        self, sender: str, recipients: list[str], body: bytes, options: tuple[str, ...] = ()
    ) -> str:
        """Send through the ingress; its reply (with the queue id)."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
            smtp.ehlo("client.test")
            code, _ = smtp.noop()
            assert code == 250
            smtp.sendmail(sender, recipients, body, mail_options=list(options))
            _, reply = smtp.noop()
        return str(reply)

    def client(self) -> SpoolClient:
        return self.redis.client()

    def spool_empty(self) -> bool:
        """No message, job, lease or due domain left: only the cluster's counters, its
        events stream, the leader lock, heartbeats, the dispatcher's domain map, shaping
        state (which expires) and the suppression list stay."""
        client = self.client()
        kept = (b"mxf:stats", b"mxf:events", b"mxf:leader", b"mxf:adapted", b"mxf:nodes",
                b"mxf:dest", b"mxf:suppressed")  # fmt: skip
        expiring = (b"mxf:gcra:", b"mxf:adapt:", b"mxf:throttled:", b"mxf:stats:", b"mxf:node:",
                    b"mxf:supp:")  # fmt: skip
        leftovers = [
            key for key in client.keys("mxf:*") if key not in kept and not key.startswith(expiring)
        ]
        return not leftovers

    def logs(self) -> str:
        return "\n".join(f"== {role.name}\n{role.log.read_text()[-4000:]}" for role in self.roles)

    def kill(self) -> None:
        """The end of a test: SIGKILL every role (a graceful stop is a test of its own and
        costs a second or two per worker), then stop the sinks."""
        for role in self.roles:
            role.kill()
        for sink in self.sinks.values():
            sink.stop()

    def stop(self) -> None:
        """SIGTERM every role at once (each drains on its own), then wait for them all."""
        for role in self.roles:
            if role.alive():
                role.process.send_signal(signal.SIGTERM)
        for role in reversed(self.roles):
            role.stop(timeout=20)
        for sink in self.sinks.values():
            sink.stop()


_ID = re.compile(rb"with E?SMTP\w* id ([0-9A-Z]{26})")


def queue_ids(sink: SmtpSink) -> list[str]:
    """The mxfleet queue id of every message the sink accepted (from our Received field)."""
    ids = []
    for message in list(sink.messages):
        match = _ID.search(message.data)
        assert match is not None, message.data[:300]
        ids.append(match.group(1).decode())
    return ids


def send(fleet: Fleet, count: int, domain: str) -> set[str]:
    """``count`` messages over one session; their queue ids (each must get a 250)."""
    accepted: set[str] = set()
    with RawSMTP("127.0.0.1", fleet.smtp_port, timeout=60) as smtp:
        assert smtp.cmd("EHLO client.test")[0] == 250
        for n in range(count):
            body = b"Subject: %d\r\n\r\nmessage %d\r\n" % (n, n)
            code, text = smtp.transaction(
                "sender@example.test", [f"r{n}@{domain}"], body, ehlo=False
            )
            assert code == 250, (code, text)
            accepted.add(text.rsplit(" ", 1)[1])
    return accepted


def delivered_to(sinks: list[SmtpSink]) -> Callable[[], int]:
    return lambda: sum(len(sink.messages) for sink in sinks)
