"""The Celery application: carries tickets only, with the settings DESIGN.md requires.

``celery -A workers.app worker`` finds ``app`` here; it is built on first access from the
environment (the one place of ``workers`` that reads settings itself, because Celery's
command line imports this module). ``mxfleet worker`` builds it from its own settings.
"""

from typing import Any

from celery import Celery

from shared.redis_url import celery_broker
from shared.settings import Settings, load_settings

TICKET_TASK = "mxfleet.deliver"
QUEUE = "mxfleet.tickets"


def make_app(settings: Settings) -> Celery:
    """A Celery app for ``settings``: at-least-once tickets, no results, no ETA, threads."""
    if settings.redis_url is None:
        raise ValueError("MXFLEET_REDIS_URL is not set")
    longest_ticket = settings.ticket_budget + settings.data_reply_timeout + settings.lease_time
    broker, transport = celery_broker(settings.redis_url)  # sentinel:// → Kombu's form
    app = Celery("mxfleet", broker=broker, include=["workers.tasks"])
    app.conf.update(
        # A ticket is acknowledged when it ends; a worker that dies gives it back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=QUEUE,
        task_serializer="json",
        accept_content=["json"],
        # Reconnect to Redis forever (the default gives up after 100 tries).
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_channel_error_retry=True,
        # Redelivery of an unacknowledged ticket only after the longest a ticket can take.
        broker_transport_options={
            "visibility_timeout": int(max(3600, 2 * longest_ticket)),
            **transport,
        },
        worker_pool="threads",
        worker_concurrency=settings.worker_concurrency,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
    )
    app.conf.mxfleet_settings = settings
    return app


def __getattr__(name: str) -> Any:
    # PEP 562: `celery -A workers.app` asks for `app`; build it only then.
    if name == "app":
        app = make_app(load_settings())
        globals()["app"] = app
        return app
    raise AttributeError(name)
