"""Typed construction of Redis clients from the settings (redis-py returns ``Any``).

``redis://`` and ``rediss://`` URLs connect directly; ``unix://`` to a socket;
``sentinel://`` (:mod:`shared.redis_url`) asks the sentinels for the primary, again after
every connection failure, so a failover is followed without a restart.
"""

from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared.redis_url import parse_sentinel
from shared.settings import Settings


def _url(settings: Settings) -> str:
    if settings.redis_url is None:
        raise ValueError("MXFLEET_REDIS_URL is not set")
    return settings.redis_url


def _options(settings: Settings) -> dict[str, Any]:
    # No silent retries: a timed-out accept script may have run, and the caller decides
    # (451 and take it back) instead of redis-py running it a second time.
    return {
        "socket_timeout": settings.redis_timeout,
        "socket_connect_timeout": min(settings.redis_timeout, 2.0),
        "health_check_interval": 0,
    }


def async_client(settings: Settings, *, max_connections: int = 64) -> "redis.asyncio.Redis":
    """An asyncio client for the spool; bytes in, bytes out.

    The pool blocks (up to ``redis_timeout``) when all its connections are busy instead of
    failing at once, so a burst of sessions queues for a connection.
    """
    url = _url(settings)
    if url.startswith("sentinel://"):
        target = parse_sentinel(url)
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(target.sentinels), socket_timeout=min(settings.redis_timeout, 2.0)
        )
        client: redis.asyncio.Redis = sentinel.master_for(
            target.service, db=target.db, password=target.password,
            retry=AsyncRetry(NoBackoff(), 0), **_options(settings),
        )  # fmt: skip
        return client
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        _url(settings),
        max_connections=max_connections,
        timeout=settings.redis_timeout,
        retry=AsyncRetry(NoBackoff(), 0),
        **_options(settings),
    )
    return redis.asyncio.Redis(connection_pool=pool)


def sync_client(settings: Settings) -> "redis.Redis":
    """A blocking client (CLI, tests, workers)."""
    url = _url(settings)
    if url.startswith("sentinel://"):
        target = parse_sentinel(url)
        sentinel = redis.sentinel.Sentinel(
            list(target.sentinels), socket_timeout=min(settings.redis_timeout, 2.0)
        )
        client: redis.Redis = sentinel.master_for(
            target.service, db=target.db, password=target.password,
            retry=Retry(NoBackoff(), 0), **_options(settings),
        )  # fmt: skip
        return client
    return redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **_options(settings))


def info_int(info: dict[str, Any], field: str, default: int = 0) -> int:
    """One integer field of ``INFO``'s answer, ``default`` when absent."""
    value = info.get(field, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
