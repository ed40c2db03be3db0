"""The one Celery task: a ticket. Thin: the work is in :mod:`workers.delivery`."""

from celery import shared_task

from workers.app import TICKET_TASK
from workers.context import current
from workers.delivery import run_ticket


@shared_task(name=TICKET_TASK, acks_late=True, ignore_result=True)  # type: ignore[untyped-decorator]  # celery is untyped
def deliver(domain: str, token: str, destination: str = "", policy: str = "") -> str:
    """Deliver the due jobs of ``domain`` under the lease ``token`` within the limits of
    ``destination`` (under ``policy``); returns the result."""
    return run_ticket(current(), domain, token, destination, policy)
