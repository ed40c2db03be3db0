"""``mxfleet status``: is the cluster healthy? Redis (reachable, durable, memory), the live
processes (heartbeats) and which dispatcher leads, the backlog, and what happened in the
last minute. Exit code 0 when all is well, 1 with a warning (AOF off, eviction on, memory
near the high-water mark, no leader, no live worker) or when Redis cannot be reached.
"""

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from shared.redis_conn import info_int, sync_client
from shared.settings import Settings
from workers import queue_ops, shaping
from workers.heartbeat import FRESH_MS
from workers.store import Store, policy_backlog, queue_figures, text

WINDOW_BUCKETS = 6  # 10 s buckets: the last minute
COUNTERS = ("accepted", "delivered", "deferred", "bounced")


@dataclass
class Status:
    redis: dict[str, Any] = field(default_factory=dict)
    processes: list[dict[str, str]] = field(default_factory=list)
    leader: str = ""
    backlog: dict[str, Any] = field(default_factory=dict)
    last_minute: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    store = Store(sync_client(settings), settings.redis_key_prefix)
    try:
        status = collect(store, settings)
    except Exception as exc:  # noqa: BLE001 -- any failure to reach Redis is the answer
        print(f"mxfleet status: Redis unreachable: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(status), indent=2), file=out)
    else:
        _print(status, out)
    return 1 if status.warnings else 0


def collect(store: Store, settings: Settings) -> Status:
    client, keys = store.client, store.keys
    status = Status()
    server, persistence, memory = (
        client.info("server"),
        client.info("persistence"),
        client.info("memory"),
    )
    used, limit = info_int(memory, "used_memory"), info_int(memory, "maxmemory")
    eviction = str(memory.get("maxmemory_policy", "?"))
    status.redis = {
        "version": server.get("redis_version", "?"),
        "aof": info_int(persistence, "aof_enabled") == 1,
        "aof_last_write": str(persistence.get("aof_last_write_status", "?")),
        "maxmemory_policy": eviction, "used_memory": used, "maxmemory": limit,
        "high_water": settings.redis_high_water,
    }  # fmt: skip
    if not status.redis["aof"]:
        status.warnings.append(
            "Redis runs without AOF (appendonly no): a crash loses accepted mail"
        )
    if eviction != "noeviction":
        status.warnings.append(f"maxmemory-policy is {eviction}: Redis may evict queued mail")
    if limit and used >= 0.8 * settings.redis_high_water * limit:
        status.warnings.append(
            f"Redis memory {used / limit:.0%} of maxmemory: the ingress answers 452 at "
            f"{settings.redis_high_water:.0%}"
        )
    _processes(store, status)
    figures = queue_figures(store)
    status.backlog = {
        "messages": int(client.zcard(keys.queue)), "jobs": figures.jobs,
        "in_flight": figures.inflight, "due_domains": figures.due_domains,
        "transactional": sum(row.transactional for row in policy_backlog(store)),
        "oldest_age_s": round(figures.oldest_age_s, 1), "paused": shaping.paused(store),
        "backoff": {b.destination: round(b.factor, 2)
                    for b in shaping.backoffs(store, settings.policies)},
    }  # fmt: skip
    status.last_minute = _last_minute(store)
    return status


def _processes(store: Store, status: Status) -> None:
    client, keys = store.client, store.keys
    now_ms = store.now_ms()
    leader = client.get(keys.leader)
    status.leader = text(leader)
    for raw in client.zrangebyscore(keys.nodes, now_ms - FRESH_MS, "+inf"):
        member = text(raw)
        info = {text(k): text(v) for k, v in client.hgetall(keys.node(member)).items()}
        info.setdefault("role", member.split(":", 1)[0])
        info["member"] = member
        info["seen_s_ago"] = f"{(now_ms - int(info.get('seen_ms', now_ms))) / 1000:.1f}"
        status.processes.append(info)
    roles = {p["role"] for p in status.processes}
    if not status.leader:
        status.warnings.append("no dispatcher leads: nothing is being delivered")
    for role in ("ingress", "dispatcher", "worker"):
        if role not in roles:
            status.warnings.append(
                f"no live {role} process (no heartbeat for {FRESH_MS // 1000} s)"
            )


def _last_minute(store: Store) -> dict[str, int]:
    current = store.now_ms() // 10_000
    pipe = store.client.pipeline(transaction=False)
    for bucket in range(current - WINDOW_BUCKETS + 1, current + 1):
        pipe.hgetall(store.keys.stats_bucket(bucket * 10_000))
    totals = dict.fromkeys(COUNTERS, 0)
    for counters in pipe.execute():
        for name in COUNTERS:
            totals[name] += int(counters.get(name.encode(), 0))
    return totals


def _print(status: Status, out: TextIO) -> None:
    r = status.redis
    memory = f"{r['used_memory'] / 2**20:.1f} MiB"
    if r["maxmemory"]:
        memory += f" of {r['maxmemory'] / 2**20:.0f} MiB ({r['used_memory'] / r['maxmemory']:.0%}; "
        memory += f"452 above {r['high_water']:.0%})"
    else:
        memory += " (no maxmemory: set one, or Redis grows until the machine swaps)"
    aof = f"AOF {'on' if r['aof'] else 'OFF'} (last write {r['aof_last_write']})"
    print(f"redis       {r['version']}  {aof}  eviction {r['maxmemory_policy']}", file=out)
    print(f"memory      {memory}", file=out)
    by_role: dict[str, list[dict[str, str]]] = {}
    for process in status.processes:
        by_role.setdefault(process["role"], []).append(process)
    for role in ("ingress", "dispatcher", "worker"):
        found = by_role.get(role, [])
        names = ", ".join(
            f"{p.get('host', '?')}:{p.get('pid', '?')}{' (leader)' * (p.get('leader') == '1')}"
            for p in found
        )
        print(f"{role:<11} {len(found)} live  {names}", file=out)
    print(f"leader      {status.leader or '(none)'}", file=out)
    b = status.backlog
    oldest = queue_ops.age(b["oldest_age_s"])
    print(f"backlog     {b['messages']} messages, {b['jobs']} jobs ({b['in_flight']} in flight, "
          f"{b['transactional']} transactional scheduled), {b['due_domains']} domains due, "
          f"oldest {oldest}", file=out)  # fmt: skip
    if b["paused"]:
        print(f"paused      {', '.join(b['paused'])}", file=out)
    for destination, factor in b["backoff"].items():
        print(f"backoff     {destination} at {factor:.0%} of its limits", file=out)
    m = status.last_minute
    print("last minute " + ", ".join(f"{name} {m[name]}" for name in COUNTERS), file=out)
    for warning in status.warnings:
        print(f"WARNING     {warning}", file=out)
