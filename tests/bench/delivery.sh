#!/usr/bin/env bash
# delivery.sh - end-to-end delivery benchmark: smtp-source -> relay -> smtp-sink "MX hosts"
# of 10 destination domains, mxfleet (1 ingress, 1 dispatcher, 1 worker, its own Redis)
# side by side with Postfix, in one run, targets interleaved.
#
# Usage: tests/bench/delivery.sh [--quick] [RESULTS_FILE]
#   --quick   REPS=1, COUNT=2000 (unless set in the environment): checks the setup only.
# Environment:
#   REPS=3                 repetitions; the target order rotates every repetition
#   VARIANTS="base rtt20"  base: sinks on 127.0.0.10-19, each relay's default limits;
#                          rtt20: sinks in a network namespace behind a veth pair with
#                          RTT_MS round trip, at most RTT_MAX_CONN connections per domain
#   TARGETS="mxfleet postfix"
#   COUNT=20000 SIZE=1024 SESSIONS=20 DOMAINS=10   messages in all (COUNT/DOMAINS per
#                          domain, one smtp-source per domain with SESSIONS/DOMAINS sessions)
#   RTT_MS=20  RTT_MAX_CONN=4
#   RTT_WORKER_CONCURRENCY=40   mxfleet worker threads in rtt20 (>= DOMAINS*RTT_MAX_CONN,
#                          so that mxfleet can hold as many connections as Postfix)
#   TIMEOUT=600            limit in seconds for one measurement
#   SINK_PORT=2601  MXF_LISTEN=127.0.0.1:2541  NS_NET=10.201.0 (the namespace's /24)
#   MXF_BIN=$REPO/.venv/bin/mxfleet   MXF_ENV="KEY=VALUE ..." extra settings, every role
#   PYSPY=/path/to/py-spy  sample the mxfleet worker and dispatcher during each mxfleet
#                          measurement (py-spy record --format raw: collapsed stacks in
#                          RESULTS.prof/); marks the line profiled=1 (py-spy costs CPU);
#                          PYSPY_ARGS="--rate 100 --nonblocking --idle --threads" (--gil:
#                          only the thread holding the GIL)
#   DRAIN=1                hold delivery until every message is accepted, then release it
#                          and count delivered msg/s from the first to the last delivery
#                          (delivery capacity without the ingress competing for the CPU).
#                          mxfleet: every connection slot of the 10 domains is taken in Redis
#                          until the release; Postfix: defer_transports = benchsmtp, then
#                          postqueue -f. Lines say mode=drain (default mode=e2e)
#   KEEP_TMP=1             keep the run's folder (logs of every process)
# Output: one key=value line per measurement in RESULTS_FILE (default
# /tmp/mxfleet-bench/delivery-DATE.txt), then the summary (tests/bench/delivery_summary.py).
# Exit status 1 if any measurement failed.
# Needs root, Debian (apt), Postfix (the peers' setup-postfix.sh), redis-server, ip, and for
# rtt20 iptables + gcc + libnetfilter-queue-dev (this kernel has no netem: a small NFQUEUE
# program, nfq_delay.c, holds the namespace's packets RTT_MS/2 in each direction).
# Everything stays on this machine: loopback and the namespace's NS_NET.0/24.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
PEERS="$(cd "$REPO/../shared/peers" 2>/dev/null && pwd)" \
    || { echo "peers folder not found at $REPO/../shared/peers" >&2; exit 2; }
PY="$REPO/.venv/bin/python"
QUICK=0
OUT=""
for arg in "$@"; do
    case "$arg" in
      --quick) QUICK=1 ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      -*) echo "unknown option $arg" >&2; exit 2 ;;
      *) OUT="$arg" ;;
    esac
done
if [[ $QUICK -eq 1 ]]; then REPS="${REPS:-1}"; COUNT="${COUNT:-2000}"; fi
REPS="${REPS:-3}"
VARIANTS="${VARIANTS:-base rtt20}"
TARGETS="${TARGETS:-mxfleet postfix}"
COUNT="${COUNT:-20000}"
SIZE="${SIZE:-1024}"
SESSIONS="${SESSIONS:-20}"
DOMAINS="${DOMAINS:-10}"
RTT_MS="${RTT_MS:-20}"
RTT_MAX_CONN="${RTT_MAX_CONN:-4}"
RTT_WORKER_CONCURRENCY="${RTT_WORKER_CONCURRENCY:-40}"
TIMEOUT="${TIMEOUT:-600}"
SINK_PORT="${SINK_PORT:-2601}"
MXF_LISTEN="${MXF_LISTEN:-127.0.0.1:2541}"
NS_NET="${NS_NET:-10.201.0}"
MXF_BIN="${MXF_BIN:-$REPO/.venv/bin/mxfleet}"
MXF_ENV="${MXF_ENV:-}"
PYSPY="${PYSPY:-}"
PYSPY_ARGS="${PYSPY_ARGS:---rate 100 --nonblocking --idle --threads}"
KEEP_TMP="${KEEP_TMP:-0}"
DRAIN="${DRAIN:-0}"
MODE=e2e; [[ "$DRAIN" == 1 ]] && MODE=drain
NS=mxfbench                 # network namespace, veth pair mxfb0 (here) / mxfb1 (there)
NFQ_NUM=4711
SUFFIX=bench.test

log() { echo "[delivery-bench] $(date +%T) $*" >&2; }
die() { echo "delivery.sh: $*" >&2; exit 2; }

[[ $EUID -eq 0 ]] || die "needs root (Postfix configuration, network namespace)"
for v in $VARIANTS; do case "$v" in base|rtt20) ;; *) die "unknown variant $v" ;; esac; done
for t in $TARGETS; do case "$t" in mxfleet|postfix) ;; *) die "unknown target $t" ;; esac; done
case "${MXF_LISTEN%:*}" in 127.*) ;; *) die "MXF_LISTEN must be on loopback" ;; esac
[[ "$NS_NET" =~ ^(10\.[0-9]+\.[0-9]+|192\.168\.[0-9]+)$ ]] || die "NS_NET must be 10.x.y or 192.168.x"
[[ $DOMAINS -ge 1 && $DOMAINS -le 100 ]] || die "DOMAINS must be 1..100"
wanted_v() { [[ " $VARIANTS " == *" $1 "* ]]; }
wanted_t() { [[ " $TARGETS " == *" $1 "* ]]; }

mkdir -p /tmp/mxfleet-bench
exec 9> /tmp/mxfleet-bench/delivery.lock
flock -n 9 || die "another delivery.sh holds /tmp/mxfleet-bench/delivery.lock"

# ---------------------------------------------------------------- tools
install_tools() {
    local pkgs=()
    command -v smtp-source >/dev/null || pkgs+=(postfix)
    command -v redis-server >/dev/null || pkgs+=(redis-server)
    command -v ip >/dev/null || pkgs+=(iproute2)
    if wanted_v rtt20; then
        command -v iptables >/dev/null || pkgs+=(iptables)
        command -v gcc >/dev/null || pkgs+=(gcc libc6-dev)
        [[ -e /usr/include/libnetfilter_queue/libnetfilter_queue.h ]] || pkgs+=(libnetfilter-queue-dev)
    fi
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string relay.test" | debconf-set-selections
    apt-get update -q >/dev/null
    apt-get install -y -q "${pkgs[@]}" >/dev/null
}
install_tools
[[ -x "$PY" ]] || die "$PY not found (create the venv first)"
if wanted_t mxfleet; then [[ -x "$MXF_BIN" ]] || die "$MXF_BIN not found"; fi

# ---------------------------------------------------------------- helpers
port_free() {  # HOST PORT
    python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
smtp_greets() {  # HOST PORT
    python3 - "$1" "$2" <<'PY'
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.settimeout(5)
        line = s.makefile("rb").readline()
        s.sendall(b"QUIT\r\n")
except OSError:
    sys.exit(1)
sys.exit(0 if line.startswith(b"220") else 1)
PY
}
stop_pid() {  # PID [GROUP=0|1]: TERM, up to 15 s, then KILL
    local pid="$1" target="$1"
    [[ "${2:-0}" == 1 ]] && target="-$1"
    kill -TERM -- "$target" 2>/dev/null || return 0
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "pid $pid did not stop on TERM, sending KILL"
    kill -KILL -- "$target" 2>/dev/null || true
}
postfix_queue() {
    find /var/spool/postfix/incoming /var/spool/postfix/active /var/spool/postfix/deferred \
        /var/spool/postfix/maildrop -type f 2>/dev/null | wc -l
}
postfix_drained() {
    local n=0
    for _ in $(seq 1 120); do
        n=$(postfix_queue)
        [[ "$n" -eq 0 ]] && return 0
        sleep 1
    done
    log "WARN: postfix queue not drained ($n files)"
}

# ---------------------------------------------------------------- state + cleanup
TMP="$(mktemp -d /tmp/mxfleet-bench/delivery-run.XXXXXX)"
REDIS_PID=""; REDIS_PORT=""
declare -A DNS_PID=() DNS_ADDR=()
SINK_PIDS=()
NS_MADE=0; NFQ_PID=""
PF_TOUCHED=0; PF_PREV_TM=""; PF_STARTED=0; PF_VARIANT=""
ROLE_PIDS=()                 # ingress dispatcher worker (process-group leaders)
PROF_PIDS=()

stop_roles() {
    local p
    for p in "${PROF_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PROF_PIDS=()
    for p in "${ROLE_PIDS[@]}"; do stop_pid "$p" 1; done
    ROLE_PIDS=()
}

restore_postfix() {
    [[ $PF_TOUCHED -eq 1 ]] || return 0
    postconf -X benchsmtp_destination_concurrency_limit 2>/dev/null || true
    [[ "$DRAIN" == 1 ]] && postconf -X defer_transports
    if [[ -n "$PF_PREV_TM" ]]; then postconf -e "transport_maps = $PF_PREV_TM"
    else postconf -X transport_maps; fi
    postconf -MX benchsmtp/unix 2>/dev/null || true
    if [[ $PF_STARTED -eq 1 ]]; then "$PEERS/setup-postfix.sh" stop >/dev/null 2>&1
    else postfix reload >/dev/null 2>&1 || true; fi
    PF_TOUCHED=0
    log "postfix configuration restored"
}

cleanup() {
    local rc=$? p
    set +e
    trap - EXIT INT TERM
    stop_roles
    restore_postfix
    for p in "${DNS_PID[@]}"; do stop_pid "$p"; done
    for p in "${SINK_PIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [[ -n "$NFQ_PID" ]]; then stop_pid "$NFQ_PID"; fi
    if [[ $NS_MADE -eq 1 ]]; then
        for p in $(ip netns pids "$NS" 2>/dev/null); do kill "$p" 2>/dev/null; done
        sleep 0.3
        for p in $(ip netns pids "$NS" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
        ip netns del "$NS" 2>/dev/null          # takes the veth pair with it
        ip link del mxfb0 2>/dev/null
    fi
    if [[ -n "$REDIS_PID" ]]; then stop_pid "$REDIS_PID"; fi
    if [[ -n "$OUT" && -d "$TMP/logs" ]]; then mkdir -p "$OUT.logs" && cp -r "$TMP"/logs/. "$OUT.logs/" 2>/dev/null; fi
    if [[ "$KEEP_TMP" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$TMP/logs"

# ---------------------------------------------------------------- redis, DNS, sinks
start_redis() {
    REDIS_PORT="$(free_port)"
    mkdir -p "$TMP/redis"
    setsid redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
        --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
        --dir "$TMP/redis" --daemonize no > "$TMP/logs/redis.log" 2>&1 < /dev/null &
    REDIS_PID=$!
    for _ in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "redis-server did not start: $(tail -3 "$TMP/logs/redis.log")"
}
redis_reset() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" flushall >/dev/null
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" bgrewriteaof >/dev/null 2>&1 || true
    for _ in $(seq 1 300); do
        redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info persistence \
            | grep -q '^aof_rewrite_in_progress:0' && return 0
        sleep 0.1
    done
}

start_dns() {  # VARIANT FIRST_IP
    local v="$1" first="$2" pf="$TMP/dns-$1.addr"
    "$PY" "$HERE/dns_serve.py" --first-ip "$first" --domains "$DOMAINS" --suffix "$SUFFIX" \
        --port-file "$pf" > "$TMP/logs/dns-$v.log" 2>&1 < /dev/null &
    DNS_PID[$v]=$!
    for _ in $(seq 1 100); do
        [[ -s "$pf" ]] && { DNS_ADDR[$v]="$(cat "$pf")"; return 0; }
        kill -0 "${DNS_PID[$v]}" 2>/dev/null || break
        sleep 0.1
    done
    die "DNS launcher ($v) did not start: $(tail -5 "$TMP/logs/dns-$v.log")"
}

SINK_OUTS_base=""; SINK_OUTS_rtt20=""
start_sinks() {  # VARIANT NET FIRST_HOST_NUMBER [NETNS]
    local v="$1" net="$2" n0="$3" netns="${4:-}" i addr out outs=""
    for ((i = 0; i < DOMAINS; i++)); do
        addr="$net.$((n0 + i))"
        out="$TMP/sink-$v-$i.out"
        if [[ -n "$netns" ]]; then
            ip netns exec "$netns" smtp-sink -c -m 1024 -u nobody -h "sink$i.test" \
                "$addr:$SINK_PORT" 1024 > "$out" 2>&1 < /dev/null &
        else
            port_free "$addr" "$SINK_PORT" || die "$addr:$SINK_PORT is in use"
            smtp-sink -c -m 1024 -u nobody -h "sink$i.test" "$addr:$SINK_PORT" 1024 \
                > "$out" 2>&1 < /dev/null &
        fi
        SINK_PIDS+=($!)
        outs="$outs $out"
    done
    sleep 0.3
    for ((i = 0; i < DOMAINS; i++)); do
        smtp_greets "$net.$((n0 + i))" "$SINK_PORT" \
            || die "smtp-sink on $net.$((n0 + i)):$SINK_PORT does not answer: $(cat "$TMP/sink-$v-$i.out")"
    done
    printf -v "SINK_OUTS_$v" '%s' "${outs# }"
}

setup_namespace() {
    ip netns list | grep -qw "$NS" && die "network namespace $NS exists (a stale run? 'ip netns del $NS')"
    ip link show mxfb0 >/dev/null 2>&1 && die "interface mxfb0 exists ('ip link del mxfb0')"
    ip -4 addr show | grep -q "inet $NS_NET\." && die "$NS_NET.0/24 is in use on this machine"
    ip netns add "$NS"
    NS_MADE=1
    ip link add mxfb0 type veth peer name mxfb1
    ip link set mxfb1 netns "$NS"
    ip addr add "$NS_NET.1/24" dev mxfb0
    ip link set mxfb0 up
    ip -n "$NS" link set lo up
    ip -n "$NS" addr add "$NS_NET.2/24" dev mxfb1
    local i
    for ((i = 0; i < DOMAINS; i++)); do ip -n "$NS" addr add "$NS_NET.$((10 + i))/24" dev mxfb1; done
    ip -n "$NS" link set mxfb1 up
    # every IPv4 packet crossing the namespace's end of the veth waits RTT_MS/2, each way
    gcc -O2 -o "$TMP/nfq_delay" "$HERE/nfq_delay.c" -lnetfilter_queue -lnfnetlink
    ip netns exec "$NS" iptables -t mangle -A PREROUTING -i mxfb1 -j NFQUEUE --queue-num "$NFQ_NUM"
    ip netns exec "$NS" iptables -t mangle -A OUTPUT -o mxfb1 -j NFQUEUE --queue-num "$NFQ_NUM"
    local half
    half="$(awk -v r="$RTT_MS" 'BEGIN{printf "%g", r/2}')"
    ip netns exec "$NS" "$TMP/nfq_delay" "$NFQ_NUM" "$half" "$TMP/nfq.ready" \
        > "$TMP/logs/nfq_delay.log" 2>&1 < /dev/null &
    NFQ_PID=$!
    for _ in $(seq 1 50); do [[ -s "$TMP/nfq.ready" ]] && break; sleep 0.1; done
    [[ -s "$TMP/nfq.ready" ]] || die "nfq_delay did not start: $(cat "$TMP/logs/nfq_delay.log")"
}

rtt_check() {  # median TCP connect time to the first rtt20 sink, ms
    python3 - "$NS_NET.10" "$SINK_PORT" <<'PY'
import socket, statistics, sys, time
ts = []
for _ in range(5):
    t = time.perf_counter()
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        ts.append((time.perf_counter() - t) * 1000)
        s.makefile("rb").readline()
        s.sendall(b"QUIT\r\n")
print(f"{statistics.median(ts):.1f}")
PY
}

# ---------------------------------------------------------------- postfix
PF_FAIL=""
setup_postfix() {
    if ! postfix status >/dev/null 2>&1; then
        log "starting Postfix with the peers' setup-postfix.sh"
        "$PEERS/setup-postfix.sh" 2525 >&2
        PF_STARTED=1
    fi
    postfix status >/dev/null 2>&1 || { PF_FAIL="postfix does not run"; return 0; }
    if [[ "$(postconf -h inet_interfaces)" != loopback-only || "$(postconf -h mynetworks)" != *127.0.0.0/8* ]]; then
        PF_FAIL="postfix is not the peers' loopback relay (run $PEERS/setup-postfix.sh)"
        return 0
    fi
    if [[ "$DRAIN" == 1 && -n "$(postconf -nh defer_transports)" ]]; then
        PF_FAIL="DRAIN=1 needs defer_transports unset (it is '$(postconf -nh defer_transports)')"
        return 0
    fi
    PF_PREV_TM="$(postconf -nh transport_maps 2>/dev/null || true)"
    [[ "$PF_PREV_TM" == *delivery-run* ]] && PF_PREV_TM=""    # left by a killed run
    PF_TOUCHED=1
    # a transport of its own, so the limits below apply to the benchmark's mail only
    postconf -M benchsmtp/unix="benchsmtp unix - - y - - smtp"
    local v net i
    for v in base rtt20; do
        net=127.0.0; [[ $v == rtt20 ]] && net="$NS_NET"
        : > "$TMP/transport-$v"
        for ((i = 0; i < DOMAINS; i++)); do
            echo "d$i.$SUFFIX benchsmtp:[$net.$((10 + i))]:$SINK_PORT" >> "$TMP/transport-$v"
        done
    done
}
postfix_variant() {  # VARIANT: transport map and concurrency for it, reload if changed
    [[ "$PF_VARIANT" == "$1" ]] && return 0
    local tm="texthash:$TMP/transport-$1"
    [[ -n "$PF_PREV_TM" ]] && tm="$tm, $PF_PREV_TM"
    postconf -e "transport_maps = $tm"
    if [[ $1 == rtt20 ]]; then
        postconf -e "benchsmtp_destination_concurrency_limit = $RTT_MAX_CONN"
    else
        postconf -X benchsmtp_destination_concurrency_limit
    fi
    postfix reload >/dev/null 2>&1
    sleep 2
    PF_VARIANT="$1"
}

# ---------------------------------------------------------------- mxfleet
MXF_FAIL=""
start_roles() {  # VARIANT TAG
    local v="$1" tag="$2" role mport host="${MXF_LISTEN%:*}" port="${MXF_LISTEN##*:}"
    local envs=(MXFLEET_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" MXFLEET_LISTEN="$MXF_LISTEN"
        MXFLEET_HOSTNAME=bench.mxfleet.test MXFLEET_RELAY_NETWORKS=127.0.0.0/8
        MXFLEET_DNS_SERVERS="${DNS_ADDR[$v]}" MXFLEET_DELIVERY_PORT="$SINK_PORT"
        MXFLEET_ALLOW_PRIVATE_MX=true)
    if [[ $v == rtt20 ]]; then
        envs+=(MXFLEET_MAX_CONNECTIONS="$RTT_MAX_CONN" MXFLEET_WORKER_CONCURRENCY="$RTT_WORKER_CONCURRENCY")
    fi
    # shellcheck disable=SC2206  # MXF_ENV is a list of KEY=VALUE words
    envs+=($MXF_ENV)
    port_free "$host" "$port" || { MXF_FAIL="$MXF_LISTEN is in use"; return 1; }
    ROLE_PIDS=()
    METRICS_WORKER=""
    for role in ingress dispatcher worker; do
        mport="$(free_port)"
        [[ $role == worker ]] && METRICS_WORKER="http://127.0.0.1:$mport/metrics"
        env "${envs[@]}" MXFLEET_METRICS_LISTEN="127.0.0.1:$mport" \
            setsid "$MXF_BIN" "$role" > "$TMP/logs/$tag-$role.log" 2>&1 < /dev/null &
        ROLE_PIDS+=($!)
    done
    local ok=0 names=(ingress dispatcher worker) i
    for _ in $(seq 1 600); do
        for i in 0 1 2; do
            if ! kill -0 "${ROLE_PIDS[$i]}" 2>/dev/null; then
                role="${names[$i]}"
                MXF_FAIL="mxfleet $role exited at start: $(tail -5 "$TMP/logs/$tag-$role.log")"
                stop_roles
                return 1
            fi
        done
        if grep -q "ready\." "$TMP/logs/$tag-worker.log" 2>/dev/null && smtp_greets "$host" "$port"; then
            ok=1; break
        fi
        sleep 0.1
    done
    if [[ $ok -eq 0 ]]; then
        MXF_FAIL="mxfleet did not come up in 60 s (worker ready + ingress 220)"
        stop_roles
        return 1
    fi
    sleep 1   # the dispatcher's first rounds, the worker's consumer
}

# ---------------------------------------------------------------- setup
log "run folder $TMP"
if wanted_t mxfleet; then start_redis; fi
if wanted_v base; then
    wanted_t mxfleet && start_dns base 127.0.0.10
    start_sinks base 127.0.0 10
fi
RTT_CHECK=NA
if wanted_v rtt20; then
    setup_namespace
    wanted_t mxfleet && start_dns rtt20 "$NS_NET.10"
    start_sinks rtt20 "$NS_NET" 10 "$NS"
    RTT_CHECK="$(rtt_check)"
    log "rtt20: TCP connect to $NS_NET.10 takes ${RTT_CHECK} ms (one round trip)"
fi
if wanted_t postfix; then setup_postfix; [[ -z "$PF_FAIL" ]] || log "postfix skipped: $PF_FAIL"; fi

OUT="${OUT:-/tmp/mxfleet-bench/delivery-$(date +%Y%m%d-%H%M%S).txt}"
PROF_DIR="$OUT.prof"
[[ -n "$PYSPY" ]] && mkdir -p "$PROF_DIR"
{
    echo "# delivery.sh $(date -u +%FT%TZ) reps=$REPS variants=${VARIANTS// /,} targets=${TARGETS// /,} count=$COUNT size=$SIZE sessions=$SESSIONS domains=$DOMAINS kernel=$(uname -r) cpus=$(nproc)"
    echo "# mxfleet $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo no-commit) mxf_env='$MXF_ENV'; postfix $(postconf -h mail_version 2>/dev/null || echo NA); $(redis-server --version | cut -d' ' -f1-3)"
    echo "# mode=$MODE; rtt20: rtt_ms=$RTT_MS (measured TCP connect ${RTT_CHECK} ms) max_conn=$RTT_MAX_CONN worker_concurrency=$RTT_WORKER_CONCURRENCY; base: each relay's defaults"
    [[ -n "$PF_FAIL" ]] && echo "# postfix not run: $PF_FAIL"
} >> "$OUT"
log "results: $OUT"

TLIST=()
for t in $TARGETS; do
    [[ $t == postfix && -n "$PF_FAIL" ]] && continue
    TLIST+=("$t")
done
FAILED=0
[[ -n "$PF_FAIL" ]] && FAILED=1

measure() {  # REP VARIANT TARGET
    local rep="$1" v="$2" t="$3" prefix sinks target pids extra=() res rc=0 tag
    prefix="rep=$rep variant=$v mode=$MODE label=$t"
    tag="r$rep-$v-$t"
    sinks="SINK_OUTS_$v"; sinks="${!sinks}"
    if [[ $t == mxfleet ]]; then
        redis_reset
        if ! start_roles "$v" "$tag"; then
            echo "$prefix rc=START ($MXF_FAIL)" | tee -a "$OUT"
            FAILED=1; return 0
        fi
        target="$MXF_LISTEN"
        pids="${ROLE_PIDS[*]} $REDIS_PID"
        extra=(--redis-port "$REDIS_PORT" --metrics "$METRICS_WORKER")
        if [[ -n "$PYSPY" ]]; then
            # shellcheck disable=SC2086  # PYSPY_ARGS is a list of options
            "$PYSPY" record --pid "${ROLE_PIDS[2]}" $PYSPY_ARGS --format raw \
                -o "$PROF_DIR/$tag-worker.txt" --duration "$TIMEOUT" >/dev/null 2>&1 &
            PROF_PIDS+=($!)
            # shellcheck disable=SC2086
            "$PYSPY" record --pid "${ROLE_PIDS[1]}" $PYSPY_ARGS --format raw \
                -o "$PROF_DIR/$tag-dispatcher.txt" --duration "$TIMEOUT" >/dev/null 2>&1 &
            PROF_PIDS+=($!)
            prefix="$prefix profiled=1"
            sleep 1
        fi
    else
        postfix_drained
        postfix_variant "$v"
        target=127.0.0.1:25
        pids="$(tr -d ' \n' < /var/spool/postfix/pid/master.pid)"
        extra=(--postfix-log "$(postconf -h maillog_file)")
        if [[ "$DRAIN" == 1 ]]; then
            extra+=(--hold-cmd "postconf -e 'defer_transports = benchsmtp' && postfix reload && sleep 2"
                    --release-cmd "postconf -X defer_transports && postfix reload && postqueue -f")
        fi
    fi
    [[ "$DRAIN" == 1 ]] && extra+=(--drain)
    sleep 1
    res="$("$PY" "$HERE/delivery_measure.py" --target "$target" --count "$COUNT" \
        --domains "$DOMAINS" --suffix "$SUFFIX" --sessions "$SESSIONS" --size "$SIZE" \
        --sink-outs "$sinks" --sink-port "$SINK_PORT" --pids "$pids" --timeout "$TIMEOUT" --peers "$PEERS" \
        --errors "$OUT.err" "${extra[@]}" 2>>"$OUT.err")" || rc=$?
    [[ -n "$res" ]] || res="rc=$rc"
    [[ $rc -eq 0 ]] || FAILED=1
    echo "$prefix load=$(cut -d' ' -f1 /proc/loadavg) $res" | tee -a "$OUT"
    if [[ $t == mxfleet ]]; then
        if [[ -n "$PYSPY" ]]; then
            local p; for p in "${PROF_PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
        fi
        stop_roles
        gzip -f "$TMP/logs/$tag"-*.log 2>/dev/null || true
    fi
}

for rep in $(seq 1 "$REPS"); do
    for v in $VARIANTS; do
        n=${#TLIST[@]}
        for ((i = 0; i < n; i++)); do
            measure "$rep" "$v" "${TLIST[$(( (i + rep - 1) % n ))]}"
        done
    done
done

echo
"$PY" "$HERE/delivery_summary.py" "$OUT" | tee "$OUT.summary.md"
echo
echo "results: $OUT  summary: $OUT.summary.md  logs: $OUT.logs/"
exit $FAILED
