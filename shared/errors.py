"""The exception tree; every failure carries the SMTP reply that reports it.

```
MxfleetError
 ├── TemporaryFailure (4xx: try again later)
 │    ├── SpoolUnavailable    Redis unreachable, slow, erroring, not durable → 451 4.3.0
 │    └── SpoolFull           Redis memory above the high-water mark        → 452 4.3.1
 └── PermanentFailure (5xx: do not retry)
```
"""

from shared import replies
from shared.replies import Reply


class MxfleetError(Exception):
    reply: Reply = replies.SPOOL_UNAVAILABLE

    def __init__(self, detail: str = "", reply: Reply | None = None) -> None:
        super().__init__(detail or (reply or self.reply).text)
        if reply is not None:
            self.reply = reply


class TemporaryFailure(MxfleetError):
    pass


class PermanentFailure(MxfleetError):
    pass


class SpoolUnavailable(TemporaryFailure):
    reply = replies.SPOOL_UNAVAILABLE


class SpoolFull(TemporaryFailure):
    reply = replies.SPOOL_FULL
