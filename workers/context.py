"""What a worker process's tickets share: settings, the spool store, the MX resolver.

Built once per process (``mxfleet worker`` sets it; under ``celery -A workers.app`` it is
built on the first ticket from the app's settings).
"""

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from shared.dkim_keys import KeyRing
from shared.dkim_sign import Signer, load_keys
from shared.policies import Policy
from shared.redis_conn import sync_client
from shared.settings import Settings, parse_nameserver
from workers.mx import MxResolver
from workers.smtp_auth import Credentials, load_credentials
from workers.store import Store


@dataclass(frozen=True)
class Context:
    settings: Settings
    store: Store
    resolver: MxResolver
    # Signs the DSNs this worker writes (From: MAILER-DAEMON@hostname) with the keys of
    # the hostname's domain or its nearest parent with keys, from ``dkim_keys_dir``.
    signer: Signer = field(default_factory=lambda: Signer(KeyRing([])))
    _credentials: dict[Path, Credentials] = field(default_factory=dict)
    # Set when the worker shuts down: tickets finish the message in progress, give back
    # the rest and end (Kubernetes' SIGTERM, Celery's warm shutdown).
    stopping: threading.Event = field(default_factory=threading.Event)

    def credentials(self, policy: Policy) -> Credentials | None:
        """The smarthost credentials of a policy (read once per process; the settings
        checked the file at start)."""
        path = policy.route_auth_file
        if path is None:
            return None
        if path not in self._credentials:
            self._credentials[path] = load_credentials(path)
        return self._credentials[path]


_lock = threading.Lock()
_context: Context | None = None


def build(settings: Settings) -> Context:
    servers = [parse_nameserver(server) for server in settings.dns_servers] or None
    return Context(
        settings=settings,
        store=Store(sync_client(settings), settings.redis_key_prefix),
        resolver=MxResolver(servers, allow_private=settings.allow_private_mx),
        signer=Signer(load_keys(settings, logging.getLogger("mxfleet.worker"))),
    )


def install(settings: Settings) -> Context:
    global _context
    with _lock:
        _context = build(settings)
        return _context


def current() -> Context:
    global _context
    with _lock:
        if _context is None:
            from workers.app import app

            _context = build(app.conf.mxfleet_settings)
        return _context
