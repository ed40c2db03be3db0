"""Priority classes (pure): a message is ``transactional`` or ``bulk``.

The class decides nothing about *whether* or *how fast* mail goes to a destination (its
rate and connection limits hold for both); it decides *which* due mail goes first when
those limits are the bottleneck. Each domain has one schedule per class
(:meth:`shared.keys.Keys.sched`); a claim takes the due transactional jobs first and fills
the batch with bulk ones (``shared/lua/claim.lua``).

How a message gets its class is the ingress's business (:mod:`ingress.priority`); this
module is the vocabulary every side shares, the Lua scripts included (they spell the
transactional schedule ``sched:{dom}:t`` and read a job's class from its ``prio`` field).
"""

from typing import Literal, get_args

Priority = Literal["transactional", "bulk"]
TRANSACTIONAL: Priority = "transactional"
BULK: Priority = "bulk"
# In the order a claim serves them.
CLASSES: tuple[Priority, ...] = get_args(Priority)
# The suffix of a class's schedule key after ``sched:{dom}`` (bulk keeps the plain key, so
# a spool written before classes existed is read as bulk).
SCHED_SUFFIX: dict[Priority, str] = {TRANSACTIONAL: ":t", BULK: ""}


def parse(value: str) -> Priority | None:
    """The class named by ``value`` (any case, surrounding blanks ignored); None if none."""
    name = value.strip().lower()
    for cls in CLASSES:
        if name == cls:
            return cls
    return None


def from_field(value: str) -> Priority:
    """The class stored in a job or envelope field; anything else (an older spool, an empty
    field) is bulk."""
    return TRANSACTIONAL if value == TRANSACTIONAL else BULK
