"""delivery_measure.py - one end-to-end delivery measurement for delivery.sh.

Sends COUNT messages through a relay with Postfix's ``smtp-source`` (one process per
destination domain, run in parallel: ``-t rcpt@d{i}.SUFFIX``), waits until the
``smtp-sink`` processes standing in for the destination MX hosts have counted all of them,
and prints one line of ``key=value`` pairs:

- ``accept_s``/``accept_mps``: until every smtp-source exited (all messages accepted);
- ``e2e_s``/``e2e_mps``: from the start of the clients until the sinks had COUNT more;
- ``cpu_s``, ``cpu_ms_per_msg``, ``cpu_by_root``: user+system CPU (children included) of
  the process trees given with ``--pids``, from the start until the relay settled (sinks
  complete and, for mxfleet, every completion recorded / for Postfix, the queue empty);
- ``peak_rss_mb``/``peak_pss_mb`` of those trees;
- ``lat_p50``/``lat_p99``/``lat_max``/``lat_n`` (seconds): accept to delivery.
  mxfleet (``--redis-port``): exact, per message, from the ``mxf:events`` stream: the entry
  id (Redis clock when the attempt was recorded, right after the sink's 250) minus the
  millisecond time in the queue id (taken at end of DATA, just before the accept script);
  ``hist_p50``/``hist_p99`` are interpolated from the worker's
  ``mxfleet_delivery_latency_seconds`` buckets (``--metrics``), as Prometheus'
  histogram_quantile does. Postfix (``--postfix-log``): ``delay=`` of this run's
  ``status=sent`` lines (arrival in the queue to delivery, 10 ms resolution).
- mxfleet: ``redis_cmds_per_msg`` (INFO commandstats calls, commands run inside Lua
  scripts included, INFO itself excluded, after CONFIG RESETSTAT at the start),
  ``redis_evalsha_per_msg`` (script runs), ``redis_top`` (the five most called commands).

Uses the peers' benchmon.py (``--peers``) for the process-tree CPU/memory sampling.
Exit status 0 when every client succeeded and the sinks got everything in time.
"""

import argparse
import bisect
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import cast

SESS = re.compile(rb"sess=(\d+)")
CROCKFORD = {c: i for i, c in enumerate("0123456789ABCDEFGHJKMNPQRSTVWXYZ")}
SENT = re.compile(r"to=<[^>]*@(d\d+\.[^>]+)>.*?delay=([0-9.]+),.*status=sent")


def queue_id_ms(queue_id: str) -> int:
    value = 0
    for ch in queue_id:
        value = value * 32 + CROCKFORD[ch]
    return value >> 80


def quantile(sorted_vals: list[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    k = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def hist_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus histogram_quantile: linear inside the bucket holding rank q*count."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    i = bisect.bisect_left([c for _, c in buckets], rank)
    le, count = buckets[i]
    if math.isinf(le):
        return buckets[i - 1][0] if i > 0 else None
    lo_le, lo_count = (0.0, 0.0) if i == 0 else buckets[i - 1]
    if count == lo_count:
        return le
    return lo_le + (le - lo_le) * (rank - lo_count) / (count - lo_count)


def worker_histogram(url: str) -> list[tuple[float, float]]:
    if not url.startswith("http://127."):
        raise ValueError(f"not a loopback http URL: {url}")
    text = urllib.request.urlopen(url, timeout=5).read().decode()  # noqa: S310 -- checked
    out = []
    for m in re.finditer(
        r'^mxfleet_delivery_latency_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M
    ):
        out.append((float(m.group(1)), float(m.group(2))))
    return sorted(out)


def sink_sessions(path: str) -> int:
    """Sessions an smtp-sink -c has counted (the last ``sess=N`` of its output)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 256))
            found = SESS.findall(f.read())
            return int(found[-1]) if found else 0
    except OSError:
        return 0


def established_to(port: int) -> int:
    """TCP connections of this network namespace in ESTABLISHED state to ``port``."""
    want = f":{port:04X}"
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split(None, 4)
                    if fields[3] == "01" and fields[2].endswith(want):
                        n += 1
        except OSError:
            pass
    return n


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fmt(x: float | None, digits: int = 3) -> str:
    return "NA" if x is None else f"{x:.{digits}f}"


def main() -> int:  # noqa: C901 -- one linear procedure
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True, help="HOST:PORT of the relay's SMTP")
    ap.add_argument("--count", type=int, required=True, help="messages in all")
    ap.add_argument("--domains", type=int, default=10)
    ap.add_argument("--suffix", default="bench.test")
    ap.add_argument("--sessions", type=int, default=20, help="client sessions in all")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--sink-outs", required=True, help="smtp-sink -c output files, spaces")
    ap.add_argument("--pids", default="", help="process-tree roots to measure")
    ap.add_argument("--sink-port", type=int, help="count connections to it (peak_conns)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--settle", type=float, default=15, help="max wait after the sinks")
    ap.add_argument("--redis-port", type=int, help="mxfleet's Redis (commandstats, events)")
    ap.add_argument("--metrics", help="the mxfleet worker's /metrics URL")
    ap.add_argument("--postfix-log", help="Postfix's maillog_file (latency from delay=)")
    ap.add_argument("--peers", required=True, help="folder of the peers' benchmon.py")
    ap.add_argument("--errors", help="file to append client errors to")
    ap.add_argument(
        "--drain",
        action="store_true",
        help="hold delivery until every message is accepted, then release it",
    )
    ap.add_argument("--hold-cmd", help="drain, Postfix: shell command that holds delivery")
    ap.add_argument("--release-cmd", help="drain, Postfix: shell command that releases it")
    a = ap.parse_args()
    sys.path.insert(0, a.peers)
    import benchmon  # type: ignore[import-not-found]  # the peers' helper

    sinks = a.sink_outs.split()
    roots = [int(p) for p in a.pids.split()]
    per_dom = a.count // a.domains
    count = per_dom * a.domains
    sess = max(1, a.sessions // a.domains)

    def sink_total() -> int:
        return sum(benchmon.sink_count(path) for path in sinks)

    def snapshot() -> tuple[dict[int, int], int, set[int]]:
        tab = benchmon.proc_table()
        tr = benchmon.trees(tab, roots)
        cpu = {r: sum(tab[p][1] for p in ps) for r, ps in tr.items()}
        rss = sum(tab[p][2] for ps in tr.values() for p in ps) * benchmon.PAGE
        return cpu, rss, set().union(*tr.values()) if tr else set()

    rds = None
    if a.redis_port:
        import redis

        rds = redis.Redis(host="127.0.0.1", port=a.redis_port)
        rds.config_resetstat()
    log_offset = os.path.getsize(a.postfix_log) if a.postfix_log else 0

    domains = [f"d{i}.{a.suffix}" for i in range(a.domains)]
    if a.drain:
        if rds is not None:  # every connection slot taken: the dispatcher says 'full'
            for dom in domains:
                rds.zadd(f"mxf:conn:{dom}", {f"bench-hold-{k}": 2**50 for k in range(1000)})
        elif a.hold_cmd:
            # delivery.sh's own command line (postconf/postfix)
            subprocess.run(a.hold_cmd, shell=True, check=True, stdout=subprocess.DEVNULL)  # noqa: S602

    def release() -> None:
        if rds is not None:
            pipe = rds.pipeline(transaction=False)
            for dom in domains:
                pipe.delete(f"mxf:conn:{dom}")
                pipe.zadd("mxf:due", {dom: 0})
            pipe.execute()
        elif a.release_cmd:
            subprocess.run(a.release_cmd, shell=True, check=True, stdout=subprocess.DEVNULL)  # noqa: S602

    base = sink_total()
    sess0 = sum(sink_sessions(path) for path in sinks)
    peak_conns = 0
    next_conns = 0.0
    cpu0, rss, allp = snapshot()
    peak_rss, peak_pss = rss, benchmon.pss_kb(allp) * 1024
    t0 = time.time()
    clients = []
    client_out = []
    for i in range(a.domains):
        argv = [
            "timeout",
            str(int(a.timeout)),
            "smtp-source",
            "-s",
            str(sess),
            "-m",
            str(per_dom),
            "-l",
            str(a.size),
            "-M",
            "client.test",
            "-f",
            "a@example.test",
            "-t",
            f"rcpt@d{i}.{a.suffix}",
            a.target,
        ]
        out_f = tempfile.TemporaryFile()  # noqa: SIM115 -- read (on failure) after the loop
        clients.append(subprocess.Popen(argv, stdout=out_f, stderr=subprocess.STDOUT))
        client_out.append(out_f)
    t_accept = t_sink = t_release = t_first = None
    cpu_release: dict[int, int] = {}
    timed_out = False
    died: list[int] = []
    next_mem = time.time() + 1.0
    got = held = 0
    while True:
        now = time.time()
        if t_accept is None and all(c.poll() is not None for c in clients):
            t_accept = now
        got = sink_total() - base
        if a.drain and t_accept is not None and t_release is None:
            cpu_release, _, _ = snapshot()
            held = got
            t_release = time.time()
            release()
        if t_first is None and got > (held if a.drain else 0):
            t_first = now
        if t_sink is None and got >= count:
            t_sink = now
        if t_accept is not None and t_sink is not None:
            break
        if now - t0 > a.timeout:
            timed_out = True
            break
        gone = [r for r in roots if not alive(r)]
        if gone:  # a relay process died (or was killed by someone else): stop now
            died = gone
            break
        if a.sink_port and now >= next_conns:
            peak_conns = max(peak_conns, established_to(a.sink_port))
            next_conns = now + 0.25
        if now >= next_mem:
            _, rss, allp = snapshot()
            peak_rss = max(peak_rss, rss)
            peak_pss = max(peak_pss, benchmon.pss_kb(allp) * 1024)
            next_mem = now + 1.0
        time.sleep(0.02)
    for c in clients:
        if c.poll() is None:
            c.kill()
        c.wait()
    client_rc = max((c.returncode for c in clients), default=0)
    if client_rc and a.errors:
        with open(a.errors, "a") as f:
            for i, c in enumerate(clients):
                if c.returncode:
                    client_out[i].seek(0)
                    text = client_out[i].read().decode(errors="replace")
                    f.write(f"smtp-source d{i} rc={c.returncode}: {text[-500:]}\n")
    # settle: the relay finishes its bookkeeping for the last messages
    t_settled = time.time()
    while not timed_out and not died and time.time() - t_sink < a.settle:  # type: ignore[operator]
        if rds is not None:
            if int(rds.hget("mxf:stats", "delivered") or 0) >= count:
                break
        elif a.postfix_log:
            spool = "/var/spool/postfix"
            n = sum(
                len(files)
                for d in ("incoming", "active", "deferred")
                for _, _, files in os.walk(f"{spool}/{d}")
            )
            if n == 0:
                break
        else:
            break
        time.sleep(0.05)
    t_settled = time.time()
    cpu1, rss, allp = snapshot()
    peak_rss = max(peak_rss, rss)
    cpu = {r: (cpu1.get(r, 0) - cpu0.get(r, 0)) / benchmon.CLK for r in roots}
    cpu_s = sum(cpu.values())

    out = [
        f"count={count}",
        f"domains={a.domains}",
        f"sessions={sess * a.domains}",
        f"size={a.size}",
        f"client_rc={client_rc}",
    ]
    rc = 1 if client_rc or timed_out or died else 0
    out.append(f"rc={rc}")
    if died:
        out.append("died=" + ",".join(str(p) for p in died))
    if t_accept is not None:
        out += [f"accept_s={t_accept - t0:.3f}", f"accept_mps={count / (t_accept - t0):.1f}"]
    else:
        out += ["accept_s=TIMEOUT", "accept_mps=NA"]
    if t_sink is not None:
        out += [f"e2e_s={t_sink - t0:.3f}", f"e2e_mps={count / (t_sink - t0):.1f}"]
    else:
        out += ["e2e_s=TIMEOUT", "e2e_mps=NA"]
    sessions = sum(sink_sessions(path) for path in sinks) - sess0
    out += [f"sink_sessions={sessions}", f"msgs_per_conn={got / max(1, sessions):.1f}"]
    if a.sink_port:
        out.append(f"peak_conns={peak_conns}")
    if a.drain:
        out.append(f"held_leak={held}")  # delivered before the release (should be 0)
        if t_release is not None and t_sink is not None and t_first is not None:
            out += [
                f"drain_s={t_sink - t_release:.3f}",
                f"first_s={t_first - t_release:.3f}",
                f"drain_mps={(got - held - 1) / max(1e-3, t_sink - t_first):.1f}",
            ]
            cpu_d = sum(cpu1.get(r, 0) - cpu_release.get(r, 0) for r in roots) / benchmon.CLK
            out.append(f"drain_cpu_ms_per_msg={1000 * cpu_d / max(1, got - held):.3f}")
        else:
            out += ["drain_s=TIMEOUT", "drain_mps=NA"]
    out += [
        f"sink_got={got}",
        f"settle_s={t_settled - (t_sink or t_settled):.2f}",
        f"cpu_s={cpu_s:.2f}",
        f"cpu_ms_per_msg={1000 * cpu_s / max(1, got):.3f}",
        "cpu_by_root=" + ",".join(f"{r}:{v:.2f}" for r, v in cpu.items()),
        f"peak_rss_mb={peak_rss / 2**20:.1f}",
        f"peak_pss_mb={peak_pss / 2**20:.1f}",
    ]

    lat: list[float] = []
    if rds is not None:
        stats = rds.info("commandstats")  # first: the reads below add commands
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        calls.pop("info", None)
        total = sum(calls.values())
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
        out += [
            f"redis_cmds={total}",
            f"redis_cmds_per_msg={total / max(1, got):.2f}",
            f"redis_evalsha_per_msg={calls.get('evalsha', 0) / max(1, got):.2f}",
            "redis_top=" + ",".join(f"{k}:{v / max(1, got):.2f}" for k, v in top),
        ]
        last = "-"
        while True:
            entries = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                rds.xrange("mxf:events", min=last, max="+", count=5000),
            )
            if last != "-":
                entries = entries[1:]
            if not entries:
                break
            for entry_id, fields in entries:
                if fields.get(b"verdict") == b"delivered":
                    done_ms = int(entry_id.split(b"-")[0])
                    lat.append((done_ms - queue_id_ms(fields[b"id"].decode())) / 1000)
            last = entries[-1][0].decode()
        raw_stats = cast(dict[bytes, bytes], rds.hgetall("mxf:stats"))
        stats_h = {k.decode(): v.decode() for k, v in raw_stats.items()}
        out += [
            f"mxf_delivered={stats_h.get('delivered', 0)}",
            f"mxf_deferred={stats_h.get('deferred', 0)}",
            f"mxf_bounced={stats_h.get('bounced', 0)}",
            f"mxf_lease_lost={stats_h.get('lease_lost', 0)}",
        ]
    if a.metrics:
        try:
            buckets = worker_histogram(a.metrics)
            out += [
                f"hist_p50={fmt(hist_quantile(buckets, 0.5))}",
                f"hist_p99={fmt(hist_quantile(buckets, 0.99))}",
            ]
        except OSError as exc:
            out.append(f"hist_error={type(exc).__name__}")
    if a.postfix_log:
        deadline = time.time() + 10  # postlogd may lag a little behind
        while True:
            lat = []
            with open(a.postfix_log, "rb") as logf:
                logf.seek(log_offset)
                for raw in logf:
                    m = SENT.search(raw.decode(errors="replace"))
                    if m and m.group(1).endswith(a.suffix):
                        lat.append(float(m.group(2)))
            if len(lat) >= got or time.time() > deadline:
                break
            time.sleep(0.5)
    lat.sort()
    out += [
        f"lat_n={len(lat)}",
        f"lat_p50={fmt(quantile(lat, 0.5))}",
        f"lat_p99={fmt(quantile(lat, 0.99))}",
        f"lat_max={fmt(lat[-1] if lat else None)}",
    ]
    print(" ".join(out), flush=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
