"""Chaos: no accepted message is lost while nodes crash, Redis restarts and a host is cut off.

The cluster (tests/servers/cluster.py) runs 2 ingress nodes, 2 dispatchers and 3 workers,
each on a host of its own (a network namespace when the tests run as root), Redis with AOF,
and 20 destination domains. While 20,000 messages (1-5 recipients, 1-100 KiB) are sent:

- every few seconds a random worker, a random ingress node or the leading dispatcher is
  SIGKILLed and started again a second later;
- one worker host is cut off the network for 30 s;
- Redis is SIGKILLed once and started again from its AOF.

Then: every message that got 250 reached every one of its recipients' sinks with the bytes
that were sent; nothing arrived that was refused; duplicates are counted and stay under
0.5% of deliveries; no mail is left in the spool. ``--soak`` runs ten times the messages.
"""

import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.servers.cluster import Cluster, Node
from tests.servers.mail_load import Load
from tests.servers.netns import Network, namespaces_available
from tests.servers.redis_server import require_redis_server
from tests.servers.wait import wait_until

MESSAGES = int(os.environ.get("CHAOS_MESSAGES", "20000"))  # a smaller run for a quick look
SOAK_FACTOR = 10
PARTITION_SECONDS = 30.0
KILL_EVERY = (3.0, 6.0)  # seconds between two kills
# Budget to get every message accepted: 40-60 s on a quiet 2-core machine, 120-180 s when
# its CPU is three times as dear per message (seen); the run stays within 5 minutes.
SEND_SECONDS = 260.0
DRAIN_SECONDS = 120.0  # budget to deliver the rest once all are accepted


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    require_redis_server()
    net = Network(use_namespaces=namespaces_available())
    rig = Cluster(net, tmp_path)
    try:
        rig.start_base()
        yield rig
    finally:
        rig.stop()
        net.close()


@dataclass
class Chaos:
    """The fault schedule, run in a thread while the load runs."""

    cluster: Cluster
    load: Load
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    done: threading.Event = field(default_factory=threading.Event)
    kills: Counter[str] = field(default_factory=Counter)
    journal: list[str] = field(default_factory=list)
    redis_restarts: int = 0
    partitions: int = 0
    timers: list[threading.Timer] = field(default_factory=list)

    def note(self, text: str) -> None:
        self.journal.append(f"{time.strftime('%H:%M:%S')} {text}")

    def run(self) -> None:
        """Faults until told to stop, and at least one of each kind."""
        kinds = ["worker", "ingress", "leader"]
        turn = 0
        while not (self.done.wait(self.rng.uniform(*KILL_EVERY)) and self.complete()):
            # One partition and one Redis restart per 20,000 accepted messages, at 10% and
            # 50% of each lot; SIGKILLs of the other kinds, in turn, in between.
            lot, progress = divmod(self.load.accepted / MESSAGES, 1)
            if self.partitions < lot + (progress >= 0.1):
                self.partition()
            elif self.redis_restarts < lot + (progress >= 0.5):
                self.restart_redis()
            else:
                self.kill(kinds[turn % len(kinds)])
                turn += 1

    def complete(self) -> bool:
        return (
            all(self.kills[kind] for kind in ("worker", "ingress", "leader"))
            and self.partitions > 0
            and self.redis_restarts > 0
        )

    def kill(self, kind: str) -> None:
        leader = kind == "leader"
        node = self.cluster.leader() if leader else self.cluster.random(kind, self.rng)
        if node is None or not node.alive():
            return
        node.kill()
        self.kills[kind] += 1
        self.note(f"SIGKILL {node.name} ({kind})")
        time.sleep(1.0)
        node.start()

    def partition(self) -> None:
        worker = self.cluster.of("worker")[self.partitions % len(self.cluster.of("worker"))]
        self.partitions += 1
        self.note(f"cut {worker.name}'s host off for {PARTITION_SECONDS:.0f} s")
        self.cluster.net.cut(worker.host)
        timer = threading.Timer(PARTITION_SECONDS, self._heal, args=(worker,))
        self.timers.append(timer)
        timer.start()

    def _heal(self, worker: Node) -> None:
        self.cluster.net.heal(worker.host)
        self.note(f"healed {worker.name}'s host")

    def restart_redis(self) -> None:
        self.redis_restarts += 1
        started = time.monotonic()
        self.cluster.restart_redis()
        self.note(f"SIGKILL redis; back after {time.monotonic() - started:.1f} s")


@dataclass
class Verdict:
    """What reached the sinks, against the ledger."""

    domain_of: dict[str, str]  # sink address -> the domain it is the MX of
    copies: Counter[tuple[str, str]] = field(default_factory=Counter)  # (id, rcpt) -> copies
    first: dict[tuple[str, str], float] = field(default_factory=dict)  # (id, rcpt) -> time
    unexpected: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    misrouted: list[str] = field(default_factory=list)
    unknown_arrived: int = 0  # arrivals of attempts whose client saw no reply
    lost: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def arrival(self, load: Load, line: str) -> None:
        stamp, address, chaos_id, digest, rcpts = line.split(" ", 4)
        attempt = load.ledger.get(chaos_id)
        if attempt is None or attempt.outcome == "refused":
            self.unexpected.append(f"{chaos_id} ({attempt.reply if attempt else 'never sent'})")
            return
        self.unknown_arrived += attempt.outcome == "unknown"
        if digest != attempt.digest:
            self.corrupt.append(chaos_id)
        for rcpt in rcpts.split(","):
            if rcpt not in attempt.recipients or not rcpt.endswith("@" + self.domain_of[address]):
                self.misrouted.append(f"{chaos_id} {rcpt} via {address}")
            self.copies[(chaos_id, rcpt)] += 1
            self.first.setdefault((chaos_id, rcpt), float(stamp))

    def account(self, load: Load) -> None:
        """Every recipient of every accepted attempt arrived (else it is lost)."""
        for chaos_id, attempt in load.ledger.items():
            if attempt.outcome != "accepted":
                continue
            for rcpt in attempt.recipients:
                arrived = self.first.get((chaos_id, rcpt))
                if arrived is None:
                    self.lost.append(f"{chaos_id} {rcpt}")
                else:
                    self.latencies.append(arrived - attempt.accepted_at)

    @property
    def deliveries(self) -> int:
        return len(self.copies)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.copies.values())


def judge(load: Load, cluster: Cluster) -> Verdict:
    addresses = cluster.mx_host.addresses
    verdict = Verdict({address: cluster.domain(i) for i, address in enumerate(addresses)})
    for line in cluster.sink_log.read_text().splitlines():
        verdict.arrival(load, line)
    verdict.account(load)
    return verdict


class Arrived:
    """Accepted recipient deliveries seen so far (reads the sink's log incrementally)."""

    def __init__(self, load: Load, cluster: Cluster) -> None:
        self.load, self.path, self.offset = load, cluster.sink_log, 0
        self.seen: set[tuple[str, str]] = set()
        self.wanted = sum(
            len(a.recipients) for a in load.ledger.values() if a.outcome == "accepted"
        )

    def count(self) -> int:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        chunk = chunk[: chunk.rfind(b"\n") + 1]
        self.offset += len(chunk)
        for line in chunk.decode().splitlines():
            _, _, chaos_id, _, rcpts = line.split(" ", 4)
            attempt = self.load.ledger.get(chaos_id)
            if attempt is not None and attempt.outcome == "accepted":
                self.seen.update((chaos_id, rcpt) for rcpt in rcpts.split(","))
        return len(self.seen)

    def fraction(self, part: float) -> bool:
        return self.count() >= part * self.wanted


def report(
    cluster: Cluster, load: Load, chaos: Chaos, verdict: Verdict, sent_in: float, total: float
) -> str:
    outcomes = load.outcomes()
    latencies = sorted(verdict.latencies)
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else 0.0
    share = 100 * verdict.duplicates / max(1, verdict.deliveries)
    lines = [
        f"chaos on {'network namespaces' if cluster.net.namespaced else 'loopback'}: "
        f"accepted {load.accepted} messages in {sent_in:.0f} s "
        f"(attempts {sum(outcomes.values())}: {outcomes})",
        f"recipient deliveries {verdict.deliveries}, lost {len(verdict.lost)}, "
        f"duplicates {verdict.duplicates} ({share:.3f}%), deliveries of attempts whose "
        f"client saw no reply {verdict.unknown_arrived}",
        f"latency accept -> sink p99 {p99:.1f} s, slowest {max(latencies, default=0):.1f} s; "
        f"whole run {total:.0f} s; SIGKILLs {dict(chaos.kills)}, Redis restarts "
        f"{chaos.redis_restarts}, partitions {chaos.partitions}",
        *chaos.journal,
    ]
    lines += [
        f"duplicate x{count}: {key}" for key, count in verdict.copies.most_common(5) if count > 1
    ]
    return "\n" + "\n".join(lines)


@pytest.mark.timeout(SEND_SECONDS + DRAIN_SECONDS + 200)
def test_no_accepted_message_is_lost_under_chaos(
    cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    soak = bool(request.config.getoption("--soak"))
    count = MESSAGES * (SOAK_FACTOR if soak else 1)
    cluster.up(ingress=2, dispatchers=2, workers=3)
    domains = [cluster.domain(i) for i in range(cluster.domains)]
    load = Load(count, domains, lambda: [cluster.listen(n) for n in cluster.of("ingress")])
    chaos = Chaos(cluster, load)
    chaos_thread = threading.Thread(target=chaos.run, daemon=True)
    started = time.monotonic()
    chaos_thread.start()
    load.run(senders=8, deadline=started + SEND_SECONDS * (SOAK_FACTOR if soak else 1))
    sent_in = time.monotonic() - started
    assert load.accepted == count, (load.accepted, load.outcomes(), chaos.journal)
    # The faults go on while the backlog is delivered, until most of it has arrived.
    arrived = Arrived(load, cluster)
    with contextlib.suppress(AssertionError):
        wait_until(lambda: arrived.fraction(0.9), timeout=DRAIN_SECONDS, interval=0.5)
    chaos.done.set()
    chaos_thread.join(60)
    for timer in chaos.timers:
        timer.join()
    for node in cluster.nodes:  # everything runs again for the end of the drain
        if not node.alive():
            node.start()
    try:
        wait_until(lambda: arrived.fraction(1.0), timeout=DRAIN_SECONDS, interval=0.5)
        wait_until(lambda: not cluster.spool_leftovers(), timeout=60, interval=0.5)
    except AssertionError:
        pass  # the verdict below says what is missing
    for node in cluster.nodes:  # quiet: a late copy from a healed node counts too
        node.stop()
    verdict = judge(load, cluster)
    print(report(cluster, load, chaos, verdict, sent_in, time.monotonic() - started))
    leftovers = cluster.spool_leftovers()
    problems = {
        "lost": verdict.lost[:20],
        "arrived but refused or never sent": verdict.unexpected[:20],
        "corrupt": verdict.corrupt[:20],
        "misrouted": verdict.misrouted[:20],
        "spool leftovers": leftovers[:20],
    }
    assert not any(problems.values()), (problems, cluster.logs()[-20000:])
    assert verdict.duplicates <= 0.005 * verdict.deliveries
    assert chaos.complete()
