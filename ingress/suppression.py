"""The suppression list at RCPT, and the events of the recipients it dropped.

For a relay client, each RCPT looks for two entries in one ``EXISTS``: the recipient's
global entry and the one for the envelope sender's domain (:mod:`shared.suppression`). By
``suppression``:

- ``refuse``: a listed recipient gets ``550 5.7.1`` (:data:`shared.replies.SUPPRESSED`);
- ``drop``: it gets ``250``, is not queued, and at the end of DATA an event (verdict
  ``suppressed``) says so under the message's queue id, so the sender can see it;
- ``off``: no look at all (the RCPT is answered at once, as without the list).

When Redis cannot be asked the recipient is accepted (fail open), logged
(``event=suppression_unchecked``) and counted: the list only spares senders a bounce, while
refusing mail because Redis blinked would lose it, and the message still has to be stored
in Redis before its 250 anyway. A lookup gets :data:`LOOKUP_TIMEOUT`; while the spool's
health watch already sees Redis unreachable, it is not even tried.

:func:`rcpt` takes the :class:`ingress.session.Session` as ``s``, like
:mod:`ingress.tls_auth`; :func:`is_listed`, :func:`record_dropped` and :func:`drop_all`
need only the store, for any front end that takes recipients.
"""

import asyncio
import logging
from typing import TYPE_CHECKING

from ingress.store import Store
from shared import log, metrics, replies
from shared.errors import SpoolUnavailable
from shared.keys import Keys
from shared.message import Mailbox, new_queue_id, split_by_domain
from shared.replies import Reply
from shared.settings import Settings
from shared.suppression import lookup_keys

if TYPE_CHECKING:
    from ingress.session import Session

logger = logging.getLogger("mxfleet.ingress.session")

# A lookup is one EXISTS, well under a millisecond; one that takes longer than this finds a
# Redis in trouble, and the list is advisory: fail open rather than hold the RCPT (and every
# command pipelined behind it) for the whole redis_timeout. A cancelled lookup costs its
# connection (redis-py drops a connection whose reply was not read).
LOOKUP_TIMEOUT = 0.25


async def rcpt(s: "Session", mailbox: Mailbox) -> None:
    """Answer the RCPT of ``mailbox`` after a look at the list (``s`` is busy meanwhile, so
    pipelined commands behind it are answered in order)."""
    sender = s.sender.address if s.sender is not None else ""
    listed = await is_listed(s.node.store, s.settings, sender, mailbox, s.client_ip)
    if listed and s.settings.suppression == "refuse":
        metrics.INGRESS_SUPPRESSED.labels("refused").inc()
        log.event(logger, "rcpt_suppressed", client=s.client_ip, sender=sender or "<>",
                  rcpt=mailbox.address, action="refused")  # fmt: skip
        s._send(replies.SUPPRESSED)
        return
    if listed:
        metrics.INGRESS_SUPPRESSED.labels("dropped").inc()
        log.event(logger, "rcpt_suppressed", client=s.client_ip, sender=sender or "<>",
                  rcpt=mailbox.address, action="dropped")  # fmt: skip
        s.suppressed.append(mailbox)
    else:
        s.recipients.append(mailbox)
    metrics.INGRESS_RECIPIENTS.labels("accepted").inc()
    s._send(replies.RECIPIENT_OK)


async def is_listed(
    store: Store, settings: Settings, sender: str, mailbox: Mailbox, client: str
) -> bool:
    """Whether ``mailbox`` is suppressed for mail from ``sender`` (globally or in the
    sender's domain); False when Redis cannot say in time (fail open, counted)."""
    keys = lookup_keys(Keys(settings.redis_key_prefix), sender, mailbox)
    try:
        if not store.health.reachable:
            raise SpoolUnavailable(store.health.problem)
        async with asyncio.timeout(min(LOOKUP_TIMEOUT, settings.redis_timeout)):
            return await store.count_existing(keys) > 0
    except (SpoolUnavailable, TimeoutError) as exc:
        metrics.INGRESS_SUPPRESSION_UNCHECKED.inc()
        log.event(logger, "suppression_unchecked", logging.WARNING, client=client,
                  rcpt=mailbox.address, error=str(exc) or "no answer in time")  # fmt: skip
        return False


async def screen(
    store: Store, settings: Settings, sender: str, mailboxes: list[Mailbox], client: str
) -> list[bool]:
    """:func:`is_listed` for each of ``mailboxes`` at once (a front end that takes all the
    recipients in one go, like the HTTP API)."""
    looks = (is_listed(store, settings, sender, box, client) for box in mailboxes)
    return list(await asyncio.gather(*looks))


async def record_dropped(store: Store, queue_id: str, dropped: list[Mailbox]) -> bool:
    """One ``suppressed`` event per recipient domain of ``dropped`` under ``queue_id``;
    False when Redis could not take them (logged)."""
    groups = split_by_domain(dropped)
    events = [
        {
            "id": queue_id,
            "domain": domain,
            "rcpts": ",".join(rcpts),
            "verdict": "suppressed",
            "reply": str(replies.SUPPRESSED),
        }
        for domain, rcpts in groups.items()
    ]
    try:
        await store.add_events(events)
    except SpoolUnavailable as exc:
        log.event(logger, "suppressed_event_failed", logging.WARNING, id=queue_id, error=exc)
        return False
    log.event(logger, "dropped", id=queue_id, rcpts=sum(len(rcpts) for rcpts in groups.values()))
    return True


async def drop_all(store: Store, dropped: list[Mailbox]) -> Reply:
    """The end of DATA when every recipient was dropped: nothing is stored, the events are
    written under a queue id of its own, and the client is told 250 with that id (451
    when the events could not be written: the client tries again later)."""
    queue_id = new_queue_id()
    if not await record_dropped(store, queue_id, dropped):
        metrics.INGRESS_MESSAGES.labels("spool_unavailable").inc()
        return replies.SPOOL_UNAVAILABLE
    metrics.INGRESS_MESSAGES.labels("suppressed").inc()
    return replies.OK.with_text(f"Ok: queued as {queue_id}")
