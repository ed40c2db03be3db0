"""Which bounces put a recipient on the suppression list (pure).

A *hard* bounce says the mailbox itself does not exist or cannot be addressed, so every
later message to it would bounce too: a permanent reply (5yz, RFC 5321 §4.2.1) whose
enhanced code (RFC 3463 §3.2, "Addressing status") is one of

- ``5.1.0`` other address status, ``5.1.1`` bad destination mailbox address,
- ``5.1.2`` bad destination system address (also ours for a domain that does not exist),
- ``5.1.3`` bad destination mailbox address syntax,
- ``5.1.6`` destination mailbox has moved, no forwarding address,
- ``5.1.10`` recipient address has null MX (RFC 7505 §4.2; ours for a null MX domain).

Everything else is *soft* and suppresses nothing: 4yz (the recipient may work tomorrow),
``5.2.x`` (mailbox full or disabled: RFC 3463 §3.3, the owner may fix it), ``5.7.x``
(policy: often about the sender or the content, not the recipient), ``5.1.7``/``5.1.8``
(about the *sender's* address), ``5.3.x``/``5.4.x``/``5.5.x``/``5.6.x`` (system, routing,
protocol, content), and a recipient bounced because its message expired (its last reply
is a 4yz).

A reply without an enhanced code (the SMTP client gives it ``5.0.0``, RFC 3463 §3.1) is
hard only when it is a plain ``550`` whose text says, in so many words, that the user is
unknown ("user unknown", "unknown user", "no such user", "no such mailbox", "recipient
unknown", "unknown recipient", "mailbox not found"). Conservative on purpose: a bare
``550`` is also how many servers refuse spam or a blocked sender, and suppressing a good
address costs the sender mail it wanted delivered, while missing a bad one costs one more
bounce.
"""

import re
from collections.abc import Mapping

from shared.replies import Reply

HARD_STATUSES = frozenset({"5.1.0", "5.1.1", "5.1.2", "5.1.3", "5.1.6", "5.1.10"})
_UNKNOWN_USER = re.compile(
    r"\b(?:user\s+unknown|unknown\s+user|no\s+such\s+(?:user|mailbox)|recipient\s+unknown"
    r"|unknown\s+recipient|mailbox\s+not\s+found)\b",
    re.IGNORECASE,
)


def is_hard_bounce(reply: Reply) -> bool:
    """Whether ``reply`` to a recipient says its mailbox will never take mail."""
    if not 500 <= reply.code < 600:
        return False
    if reply.status in HARD_STATUSES:
        return True
    if reply.status in ("", "5.0.0"):
        return reply.code == 550 and _UNKNOWN_USER.search(reply.text) is not None
    return False


def hard_bounces(replies: Mapping[str, Reply], bounced: list[str]) -> dict[str, Reply]:
    """The ``bounced`` recipients whose reply is a hard bounce, with that reply."""
    return {
        rcpt: replies[rcpt] for rcpt in bounced if rcpt in replies and is_hard_bounce(replies[rcpt])
    }
