"""The ingress's DKIM signer: each accepted message signed once at the end of DATA (or of
an API request), counted, and never refused for it (see ``shared/dkim_sign.py``)."""

import asyncio
import logging

from shared import log, metrics
from shared.dkim_keys import DkimKey
from shared.dkim_sign import Signer, load_keys
from shared.message import Mailbox
from shared.settings import Settings

logger = logging.getLogger("mxfleet.ingress")

# Bigger messages are signed in the loop's default executor: hashing releases the GIL and
# the body goes through in slices, so the loop is not held for the whole message.
EXECUTOR_BYTES = 64 * 1024


class IngressSigner(Signer):
    def signed(self, key: DkimKey) -> None:
        metrics.INGRESS_DKIM_SIGNATURES.labels(key.algorithm).inc()

    async def signatures(self, message: bytes, sender: Mailbox | None, queue_id: str) -> bytes:
        """The fields to prepend to ``message`` (b"" unsigned); never raises for bad mail:
        what cannot be signed is stored unsigned, counted and logged."""
        if not self.ring:
            return b""
        if len(message) < EXECUTOR_BYTES:
            fields, result, error = self.sign_or_not(message, sender)
        else:
            loop = asyncio.get_running_loop()
            fields, result, error = await loop.run_in_executor(
                None, self.sign_or_not, message, sender
            )
        if error is not None:
            log.event(logger, "dkim_failed", logging.WARNING, id=queue_id, error=error)
        metrics.INGRESS_DKIM_MESSAGES.labels(result).inc()
        return fields


def load_signer(settings: Settings) -> IngressSigner:
    """The node's signer, its keys read once before the processes fork."""
    return IngressSigner(load_keys(settings, logger))
