"""``/healthz``, ``/readyz`` and ``/metrics`` of an ingress process, with its own Redis."""

import smtplib

from tests.conftest import StartIngress, StartRedis
from tests.servers.httpprobe import http_get, metric, try_get
from tests.servers.ingress_process import IngressProcess
from tests.servers.wait import wait_until


def readyz(ingress: IngressProcess) -> tuple[int, str] | None:
    return try_get(ingress.metrics_port, "/readyz")


def not_ready(ingress: IngressProcess) -> str:
    """Why ``/readyz`` says 503 ("" while it says something else)."""
    answer = readyz(ingress)
    return answer[1] if answer is not None and answer[0] == 503 else ""


def test_health_readiness_and_metrics(start_ingress: StartIngress, start_redis: StartRedis) -> None:
    redis_server = start_redis()
    ingress = start_ingress(redis_url=redis_server.url)
    port = ingress.metrics_port
    assert http_get(port, "/healthz") == (200, "ok\n")
    assert wait_until(lambda: readyz(ingress) == (200, "ready\n"), timeout=10)
    assert http_get(port, "/nothing-here")[0] == 404
    assert metric(port, "mxfleet_ingress_spool_ready") == 1
    assert metric(port, "mxfleet_ingress_draining") == 0
    before = metric(port, "mxfleet_ingress_messages_total", result="accepted")

    with smtplib.SMTP(ingress.host, ingress.port, timeout=10) as smtp:
        smtp.sendmail("s@example.test", ["r@dest.test"], b"Subject: m\r\n\r\nmetrics\r\n")

    assert metric(port, "mxfleet_ingress_messages_total", result="accepted") == before + 1
    assert metric(port, "mxfleet_ingress_recipients_total", result="accepted") >= 1
    assert metric(port, "mxfleet_ingress_received_bytes_total") > len(b"Subject: m\r\n\r\n")
    assert metric(port, "mxfleet_ingress_enqueue_seconds_count") >= 1
    client = redis_server.client()
    try:
        assert len(client.keys("mxf:body:*")) == 1  # the dedicated Redis got the message
    finally:
        client.close()


def test_readyz_follows_the_spool(start_ingress: StartIngress, start_redis: StartRedis) -> None:
    redis_server = start_redis()
    ingress = start_ingress(redis_url=redis_server.url, redis_timeout="1s")
    port = ingress.metrics_port
    wait_until(lambda: readyz(ingress) == (200, "ready\n"), timeout=10)

    redis_server.stop()
    why = wait_until(lambda: not_ready(ingress), timeout=15)
    assert "unreachable" in why
    assert metric(port, "mxfleet_ingress_spool_ready") == 0
    assert http_get(port, "/healthz") == (200, "ok\n")  # alive, just not ready

    redis_server.start()
    wait_until(lambda: readyz(ingress) == (200, "ready\n"), timeout=15)
    assert metric(port, "mxfleet_ingress_spool_ready") == 1
    with smtplib.SMTP(ingress.host, ingress.port, timeout=10) as smtp:
        refused = smtp.sendmail("s@example.test", ["r@dest.test"], b"Subject: m\r\n\r\nback\r\n")
    assert refused == {}
