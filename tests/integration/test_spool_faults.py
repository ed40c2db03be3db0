"""A 250 means durable; on any doubt the client gets 451/452 and nothing is half-written."""

import smtplib
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shared import replies
from shared.replies import Reply
from tests.conftest import StartIngress, StartRedis
from tests.servers.rawsmtp import RawSMTP
from tests.servers.redis_cutter import RedisCutter
from tests.servers.smtpcheck import spool_keys
from tests.servers.wait import wait_until

BODY = b"Subject: durable\r\n\r\nbody\r\n"


def answers_quickly(port: int) -> bool:
    probe = redis.Redis(port=port, socket_timeout=0.2, retry=Retry(NoBackoff(), 0))
    try:
        return bool(probe.ping())
    except redis.TimeoutError:
        return False
    finally:
        probe.close()


def reply_of(reply: Reply) -> tuple[int, str]:
    return reply.code, f"{reply.status} {reply.text}"


def send(port: int) -> tuple[int, str]:
    with RawSMTP("127.0.0.1", port) as smtp:
        return smtp.transaction("s@example.test", ["a@dest.test", "b@other.test"], BODY)


def test_redis_down_gives_451_then_recovers(
    start_redis: StartRedis, start_ingress: StartIngress
) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url, redis_timeout="2s")
    assert send(ingress.port)[0] == 250
    server.stop()
    assert send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE)
    server.start()
    wait_until(lambda: send(ingress.port)[0] == 250, timeout=15)
    client = server.client()
    # Exactly the two accepted messages, each whole.
    bodies = client.keys("mxf:body:*")
    assert len(bodies) == 2
    for key in bodies:
        msg_id = key.decode().rsplit(":", 1)[1]
        assert client.hget(f"mxf:msg:{msg_id}", "jobs_left") == b"2"
        assert client.scard(f"mxf:rcpt:{msg_id}:dest.test") == 1


def test_sigkill_of_redis_after_250_loses_nothing(
    start_redis: StartRedis, start_ingress: StartIngress
) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url)
    ids = []
    with smtplib.SMTP("127.0.0.1", ingress.port) as smtp:
        for n in range(20):
            smtp.sendmail("s@example.test", [f"r{n}@dest.test"], BODY)
            ids.append(smtp.noop())  # keeps the session busy between messages
    server.kill()  # no shutdown, no final fsync: like a crash
    server.start()
    client = server.client()
    assert len(client.keys("mxf:body:*")) == 20
    assert client.zcard("mxf:sched:dest.test") == 20


def test_memory_high_water_gives_452_and_recovers(
    start_redis: StartRedis, start_ingress: StartIngress
) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url, redis_high_water="0.5")
    client = server.client()
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", str(used + 1024 * 1024))  # used is above half of it
    wait_until(lambda: send(ingress.port) == reply_of(replies.SPOOL_FULL), timeout=10)
    before = sorted(spool_keys(client))
    assert send(ingress.port) == reply_of(replies.SPOOL_FULL)
    assert sorted(spool_keys(client)) == before  # a refusal writes nothing
    client.config_set("maxmemory", "0")
    wait_until(lambda: send(ingress.port)[0] == 250, timeout=10)


def test_redis_oom_refusal_gives_452(start_redis: StartRedis, start_ingress: StartIngress) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url, redis_high_water="1")
    client = server.client()
    client.config_set("maxmemory", "1")  # every write is refused with OOM
    try:
        assert send(ingress.port) == reply_of(replies.SPOOL_FULL)
    finally:
        client.config_set("maxmemory", "0")
    assert spool_keys(client) == []


def test_aof_off_gives_451(start_redis: StartRedis, start_ingress: StartIngress) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url)
    client = server.client()
    client.config_set("appendonly", "no")
    wait_until(lambda: send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE), timeout=10)
    before = sorted(spool_keys(client))
    assert send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE)
    assert sorted(spool_keys(client)) == before
    client.config_set("appendonly", "yes")
    wait_until(lambda: send(ingress.port)[0] == 250, timeout=10)


def test_eviction_policy_gives_451(start_redis: StartRedis, start_ingress: StartIngress) -> None:
    server = start_redis()
    ingress = start_ingress(redis_url=server.url)
    client = server.client()
    client.config_set("maxmemory-policy", "allkeys-lru")
    wait_until(lambda: send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE), timeout=10)
    before = sorted(spool_keys(client))
    assert send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE)
    assert sorted(spool_keys(client)) == before


def test_wait_for_replicas(start_redis: StartRedis, start_ingress: StartIngress) -> None:
    primary = start_redis()
    ingress = start_ingress(
        redis_url=primary.url, redis_wait_replicas="1", redis_wait_timeout="300ms"
    )
    # No replica: the write is not confirmed, so it is taken back and the client told 451.
    assert send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE)
    client = primary.client()
    assert client.keys("mxf:msg:*") == []
    assert client.keys("mxf:body:*") == []
    assert client.zcard("mxf:sched:dest.test") == 0
    replica = start_redis("--replicaof", "127.0.0.1", str(primary.port))
    wait_until(
        lambda: client.info("replication").get("slave0", {}).get("state") == "online", timeout=15
    )
    # "online" comes before the replica's first acknowledgement of an offset: until then a
    # WAIT may time out (451, the copy taken back), so the client tries again, as it would.
    accepted = wait_until(lambda: _accepted(send(ingress.port)), timeout=10)
    assert accepted is not None
    msg_id = accepted[1].rsplit(" ", 1)[1]
    assert replica.client().exists(f"mxf:body:{msg_id}") == 1
    assert len(client.keys("mxf:body:*")) == 1  # every copy refused was taken back


def _accepted(reply: tuple[int, str]) -> tuple[int, str] | None:
    assert reply[0] in (250, 451), reply
    return reply if reply[0] == 250 else None


def test_slow_redis_gives_451_and_leaves_nothing(
    start_redis: StartRedis, start_ingress: StartIngress
) -> None:
    server = start_redis("--enable-debug-command", "yes")
    ingress = start_ingress(redis_url=server.url, redis_timeout="1s")
    client = server.client()
    sleeper = redis.Redis(port=server.port, socket_timeout=10)
    thread = threading.Thread(target=sleeper.execute_command, args=("DEBUG", "SLEEP", "3"))
    thread.start()
    try:
        wait_until(lambda: not answers_quickly(server.port), timeout=5)  # the sleep began
        assert send(ingress.port) == reply_of(replies.SPOOL_UNAVAILABLE)
    finally:
        thread.join()
    # The accept script ran after the sleep; the ingress took it back.
    wait_until(lambda: client.keys("mxf:body:*") == [], timeout=10)
    assert client.keys("mxf:msg:*") == []
    assert client.zcard("mxf:sched:dest.test") == 0


def test_a_451_after_the_script_ran_takes_the_message_back(
    start_redis: StartRedis, start_ingress: StartIngress
) -> None:
    """Redis ran the accept (and wrote its AOF) but its reply was lost with the connection:
    the client is told 451 and will send the message again, so the node takes this copy
    back; otherwise it would be delivered twice, once for a message the client saw refused."""
    server = start_redis()
    with RedisCutter(server.port, marker=b"CUT-THIS-ONE") as cutter:
        ingress = start_ingress(redis_url=f"redis://127.0.0.1:{cutter.port}/0")
        assert send(ingress.port)[0] == 250  # the script is loaded: the next call runs it
        client = server.client()
        client.flushall()
        with RawSMTP("127.0.0.1", ingress.port) as smtp:
            body = b"Subject: lost reply\r\n\r\nCUT-THIS-ONE\r\n"
            code, text = smtp.transaction("s@example.test", ["a@dest.test"], body)
        assert (code, text) == reply_of(replies.SPOOL_UNAVAILABLE)
        assert cutter.cuts == 1
        wait_until(lambda: not client.keys("mxf:msg:*"), timeout=10)  # taken back, whole
        parts = ("mxf:body:*", "mxf:job:*", "mxf:rcpt:*")
        assert [key for pattern in parts for key in client.keys(pattern)] == []
        assert client.zcard("mxf:queue") == client.zcard("mxf:sched:dest.test") == 0
        assert send(ingress.port)[0] == 250  # and the node goes on
