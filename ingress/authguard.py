"""The cluster-wide guard against password guessing over SMTP AUTH.

Ingress nodes are stateless and many, and a guesser whose session ends simply reconnects,
so failures are counted per client in Redis (``{p}authfail:{client}``, see
:mod:`shared.keys`), where every session of every node sees them:

- each failure costs the client ``auth_failure_delay * min(failures, 5)`` before its 535;
- from ``max_auth_failures_per_ip`` failures on, AUTH is refused at once with ``454 4.7.0``
  and the credentials are not looked at (a right guess fails too) until
  ``auth_failure_window`` has passed since the client's last failure;
- when Redis cannot say how many failures a client has, AUTH fails closed (``454 4.7.0``).

A client is its IPv4 address, or the /64 of its IPv6 address (one host commonly holds a
whole /64 and could otherwise try from a fresh address each time).
"""

import ipaddress
import logging

from ingress.store import Store
from shared import log, metrics, replies
from shared.errors import SpoolUnavailable
from shared.replies import Reply
from shared.settings import Settings

logger = logging.getLogger("mxfleet.ingress.session")

_DELAY_STEPS = 5  # the delay stops growing after this many failures


def client_key(ip: str) -> str:
    """What failures are counted by: the IPv4 address, or the IPv6 address's /64."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def failure_delay(settings: Settings, failures: int) -> float:
    """Seconds a client waits for the reply to its ``failures``-th failure in the window."""
    return settings.auth_failure_delay * min(max(failures, 1), _DELAY_STEPS)


async def refusal(store: Store, settings: Settings, ip: str) -> Reply | None:
    """The reply that refuses AUTH to ``ip`` before any credentials are checked, or None."""
    try:
        failures = await store.auth_failures(client_key(ip))
    except SpoolUnavailable as exc:
        metrics.INGRESS_AUTH_REFUSED.labels("unavailable").inc()
        log.event(logger, "auth_tempfail", logging.WARNING, client=ip, error=exc)
        return replies.AUTH_TEMPFAIL
    if failures < settings.max_auth_failures_per_ip:
        return None
    metrics.INGRESS_AUTH_REFUSED.labels("locked").inc()
    log.event(logger, "auth_locked", logging.WARNING, client=ip, failures=failures)
    return replies.AUTH_LOCKED


async def count_failure(store: Store, ip: str, session_failures: int) -> int:
    """Count a failure of ``ip`` cluster-wide and return its failures in the window (the
    session's own count when Redis cannot count: the delay still grows)."""
    try:
        return await store.count_auth_failure(client_key(ip))
    except SpoolUnavailable as exc:
        log.event(logger, "auth_count_failed", logging.WARNING, client=ip, error=exc)
        return session_failures
