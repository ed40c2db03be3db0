#!/usr/bin/env python3
"""delivery_summary.py - summary tables for the result lines written by delivery.sh.

Usage: python3 tests/bench/delivery_summary.py RESULTS_FILE [--ref postfix]

Reads the lines starting with ``rep=`` (key=value pairs from delivery_measure.py). For each
variant, one row per target: median (min-max over repetitions) of delivered msg/s (first
message sent → the sinks have them all), accepted msg/s, latency p50/p99 (accept to
delivery, seconds), CPU ms per delivered message (every process of the relay, mxfleet's
Redis included), Redis commands per message (mxfleet). Then the ratios target / --ref for
delivered msg/s and CPU ms/msg, computed within each repetition (same time window), as
median (min-max). Failed runs (rc != 0) are counted and left out. Standard library only.
"""

import argparse
import statistics
from collections import defaultdict

Row = dict[str, str]


def parse(path: str) -> list[Row]:
    rows = []
    with open(path) as f:
        for line in f:
            if line.startswith("rep="):
                rows.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return rows


def num(x: str | None) -> float | None:
    try:
        return float(x) if x is not None else None
    except ValueError:
        return None


def fmt(vals: list[float | None], digits: int = 0) -> str:
    got = [v for v in vals if v is not None]
    if not got:
        return "n/a"
    med = f"{statistics.median(got):.{digits}f}"
    if len(got) == 1:
        return med
    return f"{med} ({min(got):.{digits}f}-{max(got):.{digits}f})"


def ok(r: Row) -> bool:
    return r.get("rc") == "0"


COLUMNS = (
    "e2e_mps",
    "accept_mps",
    "lat_p50",
    "lat_p99",
    "cpu_ms_per_msg",
    "redis_cmds_per_msg",
    "sink_sessions",
    "peak_conns",
)


def variant_table(v: str, targets: list[str], by: dict[tuple[str, str], list[Row]]) -> None:
    print(
        "| target | delivered msg/s | accepted msg/s | latency p50 s | latency p99 s "
        "| CPU ms/msg | Redis cmds/msg | connections opened | peak connections | failed |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in targets:
        rs = by.get((v, t))
        if not rs:
            continue
        good = [r for r in rs if ok(r)]
        col = {k: [num(r.get(k)) for r in good] for k in COLUMNS}
        print(
            f"| {t} | {fmt(col['e2e_mps'])} | {fmt(col['accept_mps'])} "
            f"| {fmt(col['lat_p50'], 2)} | {fmt(col['lat_p99'], 2)} "
            f"| {fmt(col['cpu_ms_per_msg'], 2)} | {fmt(col['redis_cmds_per_msg'], 1)} "
            f"| {fmt(col['sink_sessions'])} | {fmt(col['peak_conns'])} "
            f"| {len(rs) - len(good)}/{len(rs)} |"
        )


def ratio_table(
    v: str,
    targets: list[str],
    byrep: dict[tuple[str, str, str], Row],
    reps: list[str],
    ref: str,
) -> None:
    lines = []
    for t in targets:
        if t == ref:
            continue
        mps: list[float | None] = []
        cpu: list[float | None] = []
        for rep in reps:
            x, y = byrep.get((v, t, rep)), byrep.get((v, ref, rep))
            if not (x and y and ok(x) and ok(y)):
                continue
            for key, acc in (("e2e_mps", mps), ("cpu_ms_per_msg", cpu)):
                p, q = num(x.get(key)), num(y.get(key))
                acc.append(p / q if p is not None and q else None)
        if mps or cpu:
            lines.append(f"| {t} / {ref} | {fmt(mps, 2)} | {fmt(cpu, 2)} |")
    if lines:
        print("\n| ratio (same repetition) | delivered msg/s | CPU ms/msg |")
        print("|---|---|---|")
        print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--ref", default="postfix")
    a = ap.parse_args()
    rows = parse(a.results)
    if not rows:
        print("no result lines")
        return
    variants: list[str] = []
    targets: list[str] = []
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    byrep: dict[tuple[str, str, str], Row] = {}
    for r in rows:
        if r.get("mode") == "drain":  # delivery capacity: first to last delivery
            r["variant"] += " (drain)"
            r["e2e_mps"] = r.get("drain_mps", "NA")
        v, t = r["variant"], r["label"]
        variants += [v] if v not in variants else []
        targets += [t] if t not in targets else []
        by[(v, t)].append(r)
        byrep[(v, t, r["rep"])] = r
    reps = sorted({r["rep"] for r in rows}, key=int)
    first = rows[0]
    print(
        f"# delivery benchmark: {a.results} ({len(reps)} repetition(s); "
        f"{first.get('count')} messages of {first.get('size')} B to {first.get('domains')} "
        f"domains, {first.get('sessions')} client sessions)\n"
    )
    print(
        "delivered msg/s: from the first message sent until the sinks counted all (drain: "
        "from the first to the last delivery, delivery held until all were accepted); "
        "latency: accept to delivery (mxfleet: exact per message from the events stream; "
        "Postfix: its log's delay=); CPU: every process of the relay (mxfleet: ingress, "
        "dispatcher, worker and Redis; Postfix: the master's process tree); connections: "
        "SMTP sessions the sinks counted, and the most relay-to-sink connections open at once "
        "(sampled every 0.25 s)."
    )
    for v in variants:
        print(f"\n### {v}\n")
        variant_table(v, targets, by)
        ratio_table(v, targets, byrep, reps, a.ref)


if __name__ == "__main__":
    main()
