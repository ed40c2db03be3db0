"""The ingress side of the spool: the durable accept, and a watch on Redis's health.

The only module of the ingress that talks to Redis. :meth:`Store.accept` returns only once
the message is durable, or raises :class:`SpoolUnavailable` (451) / :class:`SpoolFull` (452)
and leaves nothing half-written.
"""

import asyncio
import logging
import os
import socket
import time
from typing import Any

import redis.asyncio
import redis.exceptions

from shared import log, metrics
from shared.errors import SpoolFull, SpoolUnavailable
from shared.keys import Keys
from shared.redis_conn import info_int
from shared.settings import Settings
from shared.spool import Envelope, accept_call, discard_call, heartbeat_call, script

logger = logging.getLogger("mxfleet.ingress.store")

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class SpoolHealth:
    """What the last look at Redis said: reachable, durable, room below the high-water mark."""

    def __init__(self) -> None:
        self.reachable = False
        self.durable = False
        self.room = True
        self.problem = "not checked yet"

    @property
    def ready(self) -> bool:
        return self.reachable and self.durable and self.room

    def judge(self, persistence: dict[str, Any], memory: dict[str, Any], s: Settings) -> None:
        self.reachable = True
        problems = []
        if s.require_aof and info_int(persistence, "aof_enabled") != 1:
            problems.append("AOF is off (appendonly no): a Redis crash would lose mail")
        if str(persistence.get("aof_last_write_status", "ok")) != "ok":
            problems.append("AOF writes are failing")
        policy = str(memory.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            problems.append(f"maxmemory-policy is {policy}, not noeviction: Redis may evict mail")
        self.durable = not problems
        maxmemory = info_int(memory, "maxmemory")
        used = info_int(memory, "used_memory")
        self.room = maxmemory == 0 or used < s.redis_high_water * maxmemory
        if not self.room:
            problems.append(f"memory {used} above high-water mark of maxmemory {maxmemory}")
        self.problem = "; ".join(problems)


class Store:
    """Durable accepts into the spool, plus the health watch that gates them."""

    def __init__(self, client: "redis.asyncio.Redis", settings: Settings) -> None:
        self._client = client
        self._settings = settings
        self._keys = Keys(settings.redis_key_prefix)
        self._accept = client.register_script(script("accept"))
        self._discard = client.register_script(script("discard"))
        self._heartbeat = client.register_script(script("heartbeat"))
        self._member = f"ingress:{socket.gethostname()}:{os.getpid()}"
        self._started_ms = int(time.time() * 1000)
        self.health = SpoolHealth()

    async def check(self) -> SpoolHealth:
        """Look at Redis once (INFO persistence and memory) and update :attr:`health`."""
        health = self.health
        before = (health.ready, health.problem)
        try:
            persistence = await self._client.info("persistence")
            memory = await self._client.info("memory")
            health.judge(persistence, memory, self._settings)
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            health.reachable, health.problem = False, f"unreachable: {exc}"
        metrics.INGRESS_SPOOL_READY.set(1 if health.ready else 0)
        if (health.ready, health.problem) != before:
            level = logging.INFO if health.ready else logging.ERROR
            log.event(logger, "spool_health", level, ready=health.ready, problem=health.problem)
        return health

    async def watch(self, interval: float = 1.0) -> None:
        """Check the spool's health forever, and say this process is alive (a background
        task)."""
        while True:
            health = await self.check()
            if health.reachable:
                await self.beat()
            await asyncio.sleep(interval)

    async def beat(self) -> None:
        """A heartbeat for ``mxfleet status``; a failure only waits for the next one."""
        host, pid = self._member.split(":")[1:]
        fields: dict[str, str | int] = {
            "role": "ingress", "host": host, "pid": pid, "started_ms": self._started_ms,
            "ready": int(self.health.ready),
        }  # fmt: skip
        keys, args = heartbeat_call(self._keys, self._member, fields)
        try:
            await self._heartbeat(keys=keys, args=args)
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            log.event(logger, "heartbeat_failed", logging.DEBUG, error=exc)

    async def accept(self, msg_id: str, envelope: Envelope, body: bytes) -> None:
        """Store the message and its jobs durably, or raise SpoolUnavailable/SpoolFull."""
        health = self.health
        if health.reachable and not health.room:
            raise SpoolFull(health.problem)
        if health.reachable and not health.durable:
            raise SpoolUnavailable(health.problem)
        keys, args = accept_call(self._keys, msg_id, envelope, body)
        started = time.perf_counter()
        try:
            if self._settings.redis_wait_replicas:
                await self._accept_replicated(msg_id, envelope, keys, args)
            else:
                await self._accept(keys=keys, args=args)
        except redis.exceptions.OutOfMemoryError as exc:
            raise SpoolFull(str(exc)) from exc
        except redis.exceptions.ResponseError as exc:
            raise SpoolUnavailable(str(exc)) from exc
        except redis.exceptions.TimeoutError as exc:
            # The script may have run: take it back if no worker has it yet.
            self._discard_later(msg_id, envelope)
            raise SpoolUnavailable(f"timeout: {exc}") from exc
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            raise SpoolUnavailable(str(exc)) from exc
        metrics.INGRESS_ENQUEUE_SECONDS.observe(time.perf_counter() - started)

    async def _accept_replicated(
        self, msg_id: str, envelope: Envelope, keys: list[str], args: list[Any]
    ) -> None:
        # WAIT counts only the writes made on its own connection: one pipeline, one connection.
        wanted = self._settings.redis_wait_replicas
        timeout_ms = int(self._settings.redis_wait_timeout * 1000)
        async with self._client.pipeline(transaction=False) as pipe:
            await self._accept(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", wanted, timeout_ms)
            _, acked = await pipe.execute()
        if int(acked) < wanted:
            await self.discard(msg_id, envelope)
            raise SpoolUnavailable(f"only {acked} of {wanted} replicas confirmed the write")

    async def discard(self, msg_id: str, envelope: Envelope) -> bool:
        """Take back a message no worker holds yet; True when it was removed."""
        keys, args = discard_call(self._keys, msg_id, list(envelope.recipients))
        try:
            return bool(await self._discard(keys=keys, args=args))
        except redis.exceptions.RedisError as exc:
            log.event(logger, "discard_failed", logging.WARNING, id=msg_id, error=exc)
            return False

    def _discard_later(self, msg_id: str, envelope: Envelope) -> None:
        task = asyncio.get_running_loop().create_task(self.discard(msg_id, envelope))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def close(self) -> None:
        await self._client.aclose()


_background: set[asyncio.Task[bool]] = set()
