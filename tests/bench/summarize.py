#!/usr/bin/env python3
"""summarize.py - summary tables for the result lines written by ingress.sh.

Usage: python3 tests/bench/summarize.py RESULTS_FILE [--order "mxfleet aio_redis_aof postfix"]

Reads the lines starting with ``rep=`` (key=value pairs from the peers' bench.sh). For each
scenario, one row per target: median (min-max over repetitions) of accepted msg/s, of
end-to-end msg/s where measured, of server CPU ms per message and of peak PSS/RSS. Then the
ratios between targets (first/second in --order), computed within each repetition so both
figures come from the same time window, reported as median (min-max). Failed runs (rc != 0)
are counted and left out of every figure. Standard library only.
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
    return r.get("rc") == "0" and r.get("e2e_s") != "TIMEOUT"


def ratio(a: Row | None, b: Row | None, key: str) -> float | None:
    if not (a and b and ok(a) and ok(b)):
        return None
    x, y = num(a.get(key)), num(b.get(key))
    return x / y if x is not None and y else None


def scenario_table(s: str, targets: list[str], by: dict[tuple[str, str], list[Row]]) -> None:
    first = next(r for t in targets for r in by.get((s, t), []))
    print(
        f"\n### {s}: {first.get('size')} B bodies, {first.get('sessions')} sessions, "
        f"{first.get('count')} messages\n"
    )
    print(
        "| target | accepted msg/s | e2e msg/s | server CPU ms/msg | peak PSS MB "
        "| peak RSS MB | failed |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in targets:
        rs = by.get((s, t))
        if not rs:
            continue
        good = [r for r in rs if ok(r)]
        col = {
            k: [num(r.get(k)) for r in good]
            for k in ("ingress_mps", "e2e_mps", "cpu_ms_per_msg", "peak_pss_mb", "peak_rss_mb")
        }
        print(
            f"| {t} | {fmt(col['ingress_mps'])} | {fmt(col['e2e_mps'])} "
            f"| {fmt(col['cpu_ms_per_msg'], 2)} | {fmt(col['peak_pss_mb'])} "
            f"| {fmt(col['peak_rss_mb'])} | {len(rs) - len(good)}/{len(rs)} |"
        )


def ratio_table(
    s: str, pairs: list[tuple[str, str]], byrep: dict[tuple[str, str, str], Row], reps: list[str]
) -> None:
    lines = []
    for a, b in pairs:
        mps = [ratio(byrep.get((s, a, rep)), byrep.get((s, b, rep)), "ingress_mps") for rep in reps]
        cpu = [
            ratio(byrep.get((s, a, rep)), byrep.get((s, b, rep)), "cpu_ms_per_msg") for rep in reps
        ]
        if any(v is not None for v in mps + cpu):
            lines.append(f"| {a} / {b} | {fmt(mps, 2)} | {fmt(cpu, 2)} |")
    if lines:
        print("\n| ratio (same repetition) | accepted msg/s | CPU ms/msg |")
        print("|---|---|---|")
        print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument(
        "--order",
        default="mxfleet aio_redis_aof postfix",
        help="targets in the order of the ratios (first / later)",
    )
    a = ap.parse_args()
    rows = parse(a.results)
    if not rows:
        print("no result lines")
        return
    scenarios: list[str] = []
    seen: list[str] = []
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    byrep: dict[tuple[str, str, str], Row] = {}
    for r in rows:
        s, t = r["scenario"], r["label"]
        scenarios += [s] if s not in scenarios else []
        seen += [t] if t not in seen else []
        by[(s, t)].append(r)
        byrep[(s, t, r["rep"])] = r
    wanted = a.order.split()
    order = [t for t in wanted if t in seen] + [t for t in seen if t not in wanted]
    pairs = [(x, y) for i, x in enumerate(order) for y in order[i + 1 :]]
    reps = sorted({r["rep"] for r in rows}, key=int)
    print(
        f"# ingress benchmark: {a.results} ({len(reps)} repetition(s); "
        "msg/s = messages accepted by the target per second of client wall time)"
    )
    for s in scenarios:
        scenario_table(s, order, by)
        ratio_table(s, pairs, byrep, reps)


if __name__ == "__main__":
    main()
