"""What tests compare SMTP replies and spooled messages with (the replies are values)."""

from shared.replies import Reply
from tests.servers.spool_client import SpoolClient


def wire(reply: Reply) -> tuple[int, str]:
    """``reply`` as :meth:`RawSMTP.reply` returns it: (code, text after the code)."""
    return reply.code, str(reply)[4:]


def queued_id(text: str) -> str:
    """The queue id of a ``250 2.0.0 Ok: queued as <id>`` reply text."""
    assert "queued as " in text, text
    return text.rsplit(" ", 1)[1]


def envelope(spool: SpoolClient, msg_id: str) -> dict[str, str]:
    """The stored envelope of ``msg_id`` (empty when it is not in the spool)."""
    raw = spool.hgetall(f"mxf:msg:{msg_id}")
    return {key.decode(): value.decode() for key, value in raw.items()}


def body(spool: SpoolClient, msg_id: str) -> bytes:
    """The stored message of ``msg_id``; AssertionError when it is not in the spool."""
    stored = spool.get(f"mxf:body:{msg_id}")
    assert stored is not None, f"no body for {msg_id}"
    return stored


def spool_keys(spool: SpoolClient) -> list[str]:
    """Every key of the spool (prefix ``mxf:``), sorted; the processes' heartbeats and the
    failed-AUTH counters left out."""
    return sorted(
        key.decode()
        for key in spool.keys("mxf:*")
        if key != b"mxf:nodes" and not key.startswith((b"mxf:node:", b"mxf:authfail:"))
    )


def stored_ids(spool: SpoolClient) -> set[str]:
    """The queue ids of every message body in the spool."""
    return {key.rsplit(":", 1)[1] for key in spool_keys(spool) if key.startswith("mxf:body:")}
