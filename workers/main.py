"""``mxfleet worker``: one Celery worker process (threads pool) that runs tickets."""

import logging

from celery.signals import worker_shutting_down

from shared import log, metrics  # registered now: /metrics lists them before the first ticket
from shared.dkim_keys import DkimKeyError
from shared.httpd import HealthServer
from shared.settings import Settings
from workers.app import QUEUE, make_app
from workers.context import install
from workers.heartbeat import Heartbeat

logger = logging.getLogger("mxfleet.worker")


def main(settings: Settings) -> int:
    try:
        context = install(settings)  # reads the DKIM keys for DSNs: a bad key stops it here
    except DkimKeyError as exc:
        log.event(logger, "dkim_keys_invalid", logging.ERROR, error=exc)
        return 2
    metrics.DELIVERY_TICKETS.labels("done")  # the series exist (at 0) from the start
    app = make_app(settings)

    def ready() -> tuple[bool, str]:
        try:
            context.store.client.ping()
        except Exception as exc:  # noqa: BLE001 -- readiness reports any failure
            return False, f"redis: {exc}"
        return True, "ready"

    host, port = settings.metrics_address
    health = HealthServer(host, port, ready)
    log.event(
        logger, "started", metrics=f"{host}:{health.port}", threads=settings.worker_concurrency
    )
    argv = [
        "worker",
        "--pool=threads",
        f"--concurrency={settings.worker_concurrency}",
        f"--queues={QUEUE}",
        f"--loglevel={settings.log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    # SIGTERM starts Celery's warm shutdown, which waits for running tickets: make them
    # finish the message in progress and give the rest back, instead of the whole budget.
    worker_shutting_down.connect(lambda **_: context.stopping.set(), weak=False)
    heartbeat = Heartbeat(
        context.store, "worker", threads=settings.worker_concurrency, metrics=health.port
    ).start()
    try:
        app.worker_main(argv)
    finally:
        heartbeat.stop()
        health.close()
    return 0
