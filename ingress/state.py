"""The states of an SMTP session (RFC 5321 §4.1.4 orders the commands within them)."""

import enum


class State(enum.Enum):
    PROXY = "proxy"
    COMMAND = "command"
    AUTH = "auth"
    DATA = "data"
    CLOSED = "closed"
