"""The spool's Lua scripts and the exact KEYS/ARGV each one takes (pure: no I/O here).

Every change that touches several keys is one script (see ``shared/lua/*.lua``, each with
its key schema at the top); the callers in ``ingress`` and ``workers`` only run them.
"""

from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from shared.keys import Keys


@cache
def script(name: str) -> str:
    """The text of ``shared/lua/<name>.lua``."""
    return resources.files("shared").joinpath("lua", f"{name}.lua").read_text("utf-8")


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the ingress learnt in the SMTP dialogue, stored beside the message."""

    sender: str  # "" is the null reverse-path <>
    recipients: dict[str, list[str]]  # destination domain → addresses (see split_by_domain)
    client: str = ""
    helo: str = ""
    auth: str = ""
    proto: str = "ESMTP"
    smtputf8: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def recipient_count(self) -> int:
        return sum(len(rcpts) for rcpts in self.recipients.values())

    def fields(self, size: int) -> list[str | int]:
        pairs: list[str | int] = [
            "from", self.sender,
            "rcpts", self.recipient_count,
            "domains", ",".join(self.recipients),
            "size", size,
            "client", self.client,
            "helo", self.helo,
            "auth", self.auth,
            "proto", self.proto,
            "smtputf8", int(self.smtputf8),
        ]  # fmt: skip
        for name, value in self.extra.items():
            pairs += [name, value]
        return pairs


Call = tuple[list[str], list[str | int | bytes]]


def accept_call(keys: Keys, msg_id: str, envelope: Envelope, body: bytes) -> Call:
    """KEYS and ARGV of ``accept.lua`` for one message."""
    names = [keys.msg(msg_id), keys.body(msg_id), keys.due, keys.stats]
    fields = envelope.fields(len(body))
    args: list[str | int | bytes] = [msg_id, body, len(fields) // 2, *fields]
    for domain, rcpts in envelope.recipients.items():
        names += [keys.rcpt(msg_id, domain), keys.job(msg_id, domain), keys.sched(domain)]
        args += [domain, len(rcpts), *rcpts]
    return names, args


def discard_call(keys: Keys, msg_id: str, domains: list[str]) -> Call:
    """KEYS and ARGV of ``discard.lua`` for one message."""
    names = [keys.msg(msg_id), keys.body(msg_id), keys.stats]
    for domain in domains:
        names += [keys.rcpt(msg_id, domain), keys.job(msg_id, domain), keys.sched(domain)]
    return names, [msg_id]
