"""The ingress side of the spool: the durable accept, a watch on Redis's health, and the
cluster-wide count of failed AUTH per client.

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
from redis.typing import EncodableT, FieldT

from shared import log, metrics
from shared.errors import SpoolFull, SpoolUnavailable
from shared.keys import Keys
from shared.redis_conn import info_int
from shared.settings import Settings
from shared.spool import Envelope, accept_call, discard_call, heartbeat_call, script

logger = logging.getLogger("mxfleet.ingress.store")

_UNAVAILABLE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
TAKE_BACK_PATIENCE = 60.0  # seconds to keep trying to take back a message whose 451 went out


def footprint(size: int) -> int:
    """What storing a message of ``size`` bytes adds to Redis's used_memory, over-estimated
    a little: the body in jemalloc's size classes plus the envelope, job and schedule
    entries (deploy/README.md measured 100 KiB → ~116 KB, 1 KiB → ~2.4 KB)."""
    return size * 5 // 4 + 2048


class SpoolHealth:
    """What the last look at Redis said: reachable, durable, room below the high-water mark."""

    def __init__(self) -> None:
        self.reachable = False
        self.durable = False
        self.room = True
        self.problem = "not checked yet"
        self.used = 0  # used_memory at the last look
        self.mark = 0.0  # the high-water mark in bytes; 0 when Redis has no maxmemory

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
        self.used = info_int(memory, "used_memory")
        self.mark = s.redis_high_water * maxmemory
        self.room = self.fits(0)
        if not self.room:
            problems.append(f"memory {self.used} above high-water mark of maxmemory {maxmemory}")
        self.problem = "; ".join(problems)

    def fits(self, more: int) -> bool:
        """Whether ``more`` bytes on top of the last reading stay below the high-water mark."""
        return not self.mark or self.used + more < self.mark


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
        self._looking = asyncio.Lock()  # one look at Redis at a time
        self._looks = 0
        self._landed = 0  # footprint of the accepts stored since the last look began
        self._pending = 0  # footprint of the accepts in flight

    async def check(self) -> SpoolHealth:
        """Look at Redis once (INFO persistence and memory) and update :attr:`health`."""
        async with self._looking:
            await self._look()
        return self.health

    async def _look_again(self) -> None:
        """A fresh look, unless another one ended while this one waited for its turn."""
        looks = self._looks
        async with self._looking:
            if self._looks == looks:
                await self._look()

    async def _look(self) -> None:
        health = self.health
        before = (health.ready, health.problem)
        landed = self._landed
        try:
            persistence = await self._client.info("persistence")
            memory = await self._client.info("memory")
            health.judge(persistence, memory, self._settings)
            self._landed -= landed  # counted in used_memory now
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            health.reachable, health.problem = False, f"unreachable: {exc}"
        self._looks += 1
        metrics.INGRESS_SPOOL_READY.set(1 if health.ready else 0)
        if (health.ready, health.problem) != before:
            level = logging.INFO if health.ready else logging.ERROR
            log.event(logger, "spool_health", level, ready=health.ready, problem=health.problem)

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
        await self._need_room()
        health = self.health
        if health.reachable and not health.durable:
            raise SpoolUnavailable(health.problem)
        keys, args = accept_call(self._keys, msg_id, envelope, body)
        cost = footprint(len(body))
        self._pending += cost
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
        except _UNAVAILABLE as exc:
            # The connection broke: maybe before the script was sent, maybe after it ran
            # and its write reached the AOF (Redis killed before its reply went out). The
            # client is told 451 and sends the message again, so take this copy back.
            self._discard_later(msg_id, envelope)
            raise SpoolUnavailable(str(exc)) from exc
        except redis.exceptions.RedisError as exc:
            raise SpoolUnavailable(str(exc)) from exc
        finally:
            self._pending -= cost
        self._landed += cost
        metrics.INGRESS_ENQUEUE_SECONDS.observe(time.perf_counter() - started)

    async def _need_room(self) -> None:
        """SpoolFull unless used_memory, plus what this node stored since it last looked
        and has in flight, is below the high-water mark.

        The watch looks once a second, and one node fills 40 MB of Redis with 100 KiB
        messages in under a second: judged by the last look alone, Redis itself would
        refuse the accepts (OOM) before the ingress does. So the node counts its own
        accepts since the look, and when they reach the mark it looks again before
        refusing. Other nodes' accepts show at their next look: the room above the mark is
        for those and for the delivery path. Redis above maxmemory refuses the delivery
        path's writes too (claims, the Celery broker's), and then nothing drains the spool.
        """
        health = self.health
        if not health.reachable or health.fits(self._landed + self._pending):
            return
        if health.room:  # the last look had room; what was stored since may have filled it
            await self._look_again()
            if not health.reachable or health.fits(self._landed + self._pending):
                return
        if health.room:
            since = self._landed + self._pending
            raise SpoolFull(f"memory {health.used} and {since} stored since at the high-water mark")
        raise SpoolFull(health.problem)

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
        keys, args = discard_call(self._keys, msg_id, list(envelope.recipients), envelope.priority)
        try:
            return bool(await self._discard(keys=keys, args=args))
        except redis.exceptions.RedisError as exc:
            log.event(logger, "discard_failed", logging.WARNING, id=msg_id, error=exc)
            return False

    async def auth_failures(self, client: str) -> int:
        """Failed AUTH attempts of ``client`` in its window, cluster-wide; SpoolUnavailable
        when Redis cannot say."""
        try:
            count = await self._client.get(self._keys.authfail(client))
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            raise SpoolUnavailable(str(exc)) from exc
        return int(count or 0)

    async def count_auth_failure(self, client: str) -> int:
        """Count one more failed AUTH of ``client`` and restart its window; the new count.

        INCR and PEXPIRE in one MULTI, so a counter never lives without its expiry.
        """
        key = self._keys.authfail(client)
        window_ms = max(1, int(self._settings.auth_failure_window * 1000))
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, window_ms)
                count, _ = await pipe.execute()
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            raise SpoolUnavailable(str(exc)) from exc
        return int(count)

    async def count_existing(self, keys: list[str]) -> int:
        """How many of ``keys`` exist (one EXISTS: the suppression check at RCPT);
        SpoolUnavailable when Redis cannot say."""
        try:
            return int(await self._client.exists(*keys))
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            raise SpoolUnavailable(str(exc)) from exc

    async def add_events(self, events: list[dict[str, str]]) -> None:
        """Append entries to the events stream (one round trip); SpoolUnavailable if not."""
        maxlen = self._settings.events_maxlen
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for fields in events:
                    entry: dict[FieldT, EncodableT] = {k: v for k, v in fields.items()}
                    pipe.xadd(self._keys.events, entry, maxlen=maxlen, approximate=True)
                await pipe.execute()
        except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
            raise SpoolUnavailable(str(exc)) from exc

    def _discard_later(self, msg_id: str, envelope: Envelope) -> None:
        task = asyncio.get_running_loop().create_task(self._take_back(msg_id, envelope))
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def _take_back(self, msg_id: str, envelope: Envelope) -> bool:
        """:meth:`discard` as soon as Redis answers again (a restart takes seconds), for
        up to TAKE_BACK_PATIENCE: the sooner, the less likely a worker has it already."""
        keys, args = discard_call(self._keys, msg_id, list(envelope.recipients), envelope.priority)
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + TAKE_BACK_PATIENCE, 0.05
        while True:
            try:
                taken = bool(await self._discard(keys=keys, args=args))
            except (*_UNAVAILABLE, redis.exceptions.RedisError) as exc:
                if loop.time() + pause > deadline:
                    log.event(logger, "discard_failed", logging.WARNING, id=msg_id, error=exc)
                    return False
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            if taken:
                log.event(logger, "taken_back", id=msg_id)
            return taken

    async def close(self) -> None:
        await self._client.aclose()


_background: set[asyncio.Task[bool]] = set()
