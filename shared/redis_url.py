"""The spool's Redis URL (pure): ``redis://``, ``rediss://`` and ``unix://`` connect
directly; ``sentinel://`` names Redis Sentinels that say which server is the primary.

``sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/SERVICE[/DB]``: the sentinels (26379 is
their usual port), the name of the monitored primary (``sentinel monitor SERVICE ...``),
and the database (0 by default). The password is the data servers' (``requirepass``);
the sentinels themselves are asked without one.
"""

from dataclasses import dataclass
from urllib.parse import unquote

SCHEMES = ("redis://", "rediss://", "unix://", "sentinel://")


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    password: str | None = None


def check_url(url: str) -> str:
    """``url`` if it is one mxfleet can use; ValueError saying what is wrong."""
    if not url.startswith(SCHEMES):
        raise ValueError(f"{url!r}: the scheme must be one of {', '.join(SCHEMES)}")
    if url.startswith("sentinel://"):
        parse_sentinel(url)
    return url


def parse_sentinel(url: str) -> SentinelTarget:
    """The parts of a ``sentinel://`` URL; ValueError naming the expected form."""
    form = "sentinel://[:password@]host:port[,host:port...]/service[/db]"
    rest = url.removeprefix("sentinel://")
    password = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1]) if ":" in auth else unquote(auth)
    hosts, _, path = rest.partition("/")
    service, _, db = path.partition("/")
    sentinels = []
    for item in hosts.split(","):
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r}: {item!r} is not host:port ({form})")
        sentinels.append((host, int(port)))
    if not service:
        raise ValueError(f"{url!r}: no service name ({form})")
    if db and not db.isdigit():
        raise ValueError(f"{url!r}: the database must be a number ({form})")
    return SentinelTarget(tuple(sentinels), service, int(db or 0), password or None)


def celery_broker(url: str) -> tuple[str, dict[str, str]]:
    """Kombu's form of the URL, and the transport options it needs (``master_name``)."""
    if not url.startswith("sentinel://"):
        return url, {}
    target = parse_sentinel(url)
    auth = f":{target.password}@" if target.password else ""
    broker = ";".join(f"sentinel://{auth}{h}:{p}/{target.db}" for h, p in target.sentinels)
    return broker, {"master_name": target.service}
