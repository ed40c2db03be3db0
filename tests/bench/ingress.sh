#!/usr/bin/env bash
# ingress.sh - SMTP ingress benchmark: mxfleet's ingress side by side with Postfix and a
# bare aiosmtpd + Redis (AOF) baseline, in one run, targets interleaved.
#
# Usage: tests/bench/ingress.sh [--setup] [--quick] [RESULTS_FILE]
#   --setup   install and start the peers (Postfix, smtp-sink, the aiosmtpd baseline),
#             leave them running, and exit.  A normal run does the same for whatever is
#             missing and stops, at exit, only what it started itself.
#   --quick   REPS=1, COUNT_SCALE=0.1 (unless set in the environment).
# Environment:
#   REPS=3                        repetitions; target order rotates every repetition
#   SCENARIOS="s20_1k s100_1k s20_20k s100_20k"    subset of SCENARIO_DEFS below
#   TARGETS="postfix aio_redis_aof mxfleet"         subset of the targets
#   COUNT_SCALE=1                 multiply every scenario's message count (e.g. 0.1)
#   TIMEOUT=300                   limit in seconds for one measurement
#   MXF_PROCS=1                   MXFLEET_INGRESS_PROCESSES for the mxfleet ingress
#   MXF_LISTEN=127.0.0.1:2540  MXF_METRICS_LISTEN=127.0.0.1:9540
#   KEEP_PEERS=1                  leave peers this run started running at exit
#   MXF_BIN=$REPO/.venv/bin/mxfleet   the mxfleet executable to run as "MXF_BIN ingress"
# Output: one result line per measurement (key=value, from the peers' bench.sh) in
# RESULTS_FILE (default /tmp/mxfleet-bench/ingress-DATE.txt), then a summary table
# (tests/bench/summarize.py).  Exit status 1 if any requested target failed or was skipped.
# Needs root (Postfix), Debian (apt), redis-server, python3.  Loopback only.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(git -C "$HERE" rev-parse --show-toplevel 2>/dev/null || (cd "$HERE/../.." && pwd))"
PEERS="$(cd "$REPO/../shared/peers" 2>/dev/null && pwd)" \
    || { echo "peers folder not found at $REPO/../shared/peers" >&2; exit 2; }
PDIR=/tmp/peerbench              # where the peers scripts keep pid files and logs
SINK_PORT=2525
MXF_BIN="${MXF_BIN:-$REPO/.venv/bin/mxfleet}"   # override to bench another install

SETUP_ONLY=0
QUICK=0
OUT=""
for arg in "$@"; do
    case "$arg" in
      --setup) SETUP_ONLY=1 ;;
      --quick) QUICK=1 ;;
      -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      -*) echo "unknown option $arg" >&2; exit 2 ;;
      *) OUT="$arg" ;;
    esac
done
if [[ $QUICK -eq 1 ]]; then
    REPS="${REPS:-1}"
    COUNT_SCALE="${COUNT_SCALE:-0.1}"
fi
REPS="${REPS:-3}"
COUNT_SCALE="${COUNT_SCALE:-1}"
TIMEOUT="${TIMEOUT:-300}"
MXF_PROCS="${MXF_PROCS:-1}"
MXF_LISTEN="${MXF_LISTEN:-127.0.0.1:2540}"
MXF_METRICS_LISTEN="${MXF_METRICS_LISTEN:-127.0.0.1:9540}"
KEEP_PEERS="${KEEP_PEERS:-0}"

# name size sessions count
SCENARIO_DEFS="
s20_1k    1024  20  10000
s100_1k   1024  100 10000
s20_20k   20480 20  5000
s100_20k  20480 100 5000
"
SCEN_SEL="${SCENARIOS:-s20_1k s100_1k s20_20k s100_20k}"
TGT_SEL="${TARGETS:-postfix aio_redis_aof mxfleet}"

log() { echo "[ingress-bench] $*" >&2; }

loopback_only() {  # HOST:PORT
    local host="${1%:*}"
    case "$host" in
      127.*|localhost|"[::1]"|::1) ;;
      *) echo "refusing non-loopback address $1" >&2; exit 2 ;;
    esac
}
for hp in "$MXF_LISTEN" "$MXF_METRICS_LISTEN"; do loopback_only "$hp"; done

for s in $SCEN_SEL; do
    echo "$SCENARIO_DEFS" | awk -v s="$s" '$1==s{f=1} END{exit !f}' \
        || { echo "unknown scenario $s" >&2; exit 2; }
done
for t in $TGT_SEL; do
    case "$t" in postfix|aio_redis_aof|mxfleet) ;; *) echo "unknown target $t" >&2; exit 2 ;; esac
done
wanted() { [[ " $TGT_SEL " == *" $1 "* ]]; }

# ---------------------------------------------------------------- helpers
alive_pidfile() { [[ -s "$1" ]] && kill -0 "$(tr -d ' \n' < "$1")" 2>/dev/null; }
pid_of() { tr -d ' \n' < "$1"; }

port_free() {  # HOST PORT
    python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind((sys.argv[1], int(sys.argv[2])))
except OSError:
    sys.exit(1)
PY
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

smtp_greets() {  # HOST PORT: true when the server sends a 220 greeting
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

stop_pid() {  # PID [PGROUP=0|1]: TERM, wait up to 15 s, then KILL
    local pid="$1" group="${2:-0}" target="$1"
    [[ "$group" == 1 ]] && target="-$1"
    kill -TERM -- "$target" 2>/dev/null || return 0
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    log "pid $pid did not stop on TERM, sending KILL"
    kill -KILL -- "$target" 2>/dev/null || true
}

redis_reset() {  # PORT: empty the dataset and compact the AOF before a measurement
    local p="$1"
    redis-cli -h 127.0.0.1 -p "$p" flushall >/dev/null 2>&1 || return 0
    redis-cli -h 127.0.0.1 -p "$p" bgrewriteaof >/dev/null 2>&1 || true
    for _ in $(seq 1 300); do
        redis-cli -h 127.0.0.1 -p "$p" info persistence 2>/dev/null \
            | grep -q '^aof_rewrite_in_progress:0' && return 0
        sleep 0.1
    done
}

postfix_queue() {
    find /var/spool/postfix/incoming /var/spool/postfix/active /var/spool/postfix/deferred \
        /var/spool/postfix/maildrop -type f 2>/dev/null | wc -l
}
postfix_drained() {  # wait until Postfix's queue is empty (its deliveries cost CPU)
    local n=0
    for _ in $(seq 1 300); do
        n=$(postfix_queue)
        [[ "$n" -eq 0 ]] && return 0
        sleep 1
    done
    log "WARN: postfix queue not drained ($n files)"
}

# ---------------------------------------------------------------- peers
STARTED_SINK=0
STARTED_POSTFIX=0
STARTED_PY=()          # pybaseline pid files this run started
MXF_TMP=""
MXF_REDIS_PID=""
MXF_PID=""
MXF_LOG=""
MXF_REDIS_PORT=""
MXF_FAIL=""

stop_mxfleet() {
    if [[ -n "$MXF_PID" ]]; then stop_pid "$MXF_PID" 1; MXF_PID=""; fi
    if [[ -n "$MXF_REDIS_PID" ]]; then stop_pid "$MXF_REDIS_PID"; MXF_REDIS_PID=""; fi
}

cleanup() {
    local rc=$?
    set +e
    stop_mxfleet
    if [[ -n "$OUT" && -s "$MXF_LOG" ]]; then cp "$MXF_LOG" "$OUT.mxfleet.log"; fi
    if [[ -n "$MXF_TMP" ]]; then rm -rf "$MXF_TMP"; fi
    if [[ "$KEEP_PEERS" != 1 && $SETUP_ONLY -eq 0 ]]; then
        local pf
        for pf in "${STARTED_PY[@]}"; do
            if alive_pidfile "$pf"; then stop_pid "$(pid_of "$pf")"; fi
            rm -f "$pf"
        done
        if [[ $STARTED_POSTFIX -eq 1 ]]; then "$PEERS/setup-postfix.sh" stop; fi
        if [[ $STARTED_SINK -eq 1 ]]; then "$PEERS/sink.sh" "$SINK_PORT" stop >/dev/null; fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_tools() {
    local pkgs=()
    command -v smtp-source >/dev/null || pkgs+=(postfix)
    command -v redis-server >/dev/null || pkgs+=(redis-server)
    python3 -c 'import venv, ensurepip' 2>/dev/null || pkgs+=(python3-venv)
    [[ ${#pkgs[@]} -eq 0 ]] && return 0
    [[ $EUID -eq 0 ]] || { echo "need root to install ${pkgs[*]}" >&2; exit 2; }
    log "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # same answers as the peers' setup-postfix.sh, so the install does not prompt
    echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
    echo "postfix postfix/mailname string relay.test" | debconf-set-selections
    apt-get update -q
    apt-get install -y -q "${pkgs[@]}"
}

start_sink() {
    alive_pidfile "$PDIR/sink-$SINK_PORT.pid" && return 0
    "$PEERS/sink.sh" "$SINK_PORT" start >&2
    STARTED_SINK=1
}

POSTFIX_FAIL=""
start_postfix() {
    local relay
    if postfix status >/dev/null 2>&1; then
        relay="$(postconf -h relayhost)"
        if [[ "$relay" == "[127.0.0.1]:$SINK_PORT" ]]; then return 0; fi
        if [[ $SETUP_ONLY -eq 0 ]]; then
            POSTFIX_FAIL="Postfix is running with relayhost '$relay'; run '$0 --setup' to"
            POSTFIX_FAIL+=" reconfigure it as the benchmark relay to [127.0.0.1]:$SINK_PORT"
            log "$POSTFIX_FAIL"
            return 0
        fi
    else
        STARTED_POSTFIX=1
    fi
    "$PEERS/setup-postfix.sh" "$SINK_PORT" >&2
}

PY_PIDFILES=(aio-2527 aio-2528 aio-2529 aio-2530 redis-2579 redis-2578)
start_pybaseline() {
    local n before=()
    for n in "${PY_PIDFILES[@]}"; do
        alive_pidfile "$PDIR/py-$n.pid" || before+=("$PDIR/py-$n.pid")
    done
    [[ ${#before[@]} -eq 0 ]] && return 0
    "$PEERS/setup-pybaseline.sh" start >&2
    STARTED_PY=("${before[@]}")
}

setup_peers() {
    install_tools
    if wanted postfix; then start_sink; start_postfix; fi
    if wanted aio_redis_aof; then start_pybaseline; fi
}

# ---------------------------------------------------------------- mxfleet
start_mxfleet() {
    local host="${MXF_LISTEN%:*}" port="${MXF_LISTEN##*:}" mhost="${MXF_METRICS_LISTEN%:*}"
    local mport="${MXF_METRICS_LISTEN##*:}"
    if [[ ! -x "$MXF_BIN" ]]; then
        MXF_FAIL="$MXF_BIN not found (create the venv and install mxfleet into it first)"
        return 0
    fi
    port_free "$host" "$port" || { MXF_FAIL="$MXF_LISTEN is already in use"; return 0; }
    port_free "$mhost" "$mport" || { MXF_FAIL="$MXF_METRICS_LISTEN is already in use"; return 0; }
    MXF_TMP="$(mktemp -d /tmp/mxfleet-bench-run.XXXXXX)"
    MXF_LOG="$MXF_TMP/ingress.log"
    MXF_REDIS_PORT="$(free_port)"
    mkdir -p "$MXF_TMP/redis"
    setsid redis-server --bind 127.0.0.1 --port "$MXF_REDIS_PORT" --protected-mode yes \
        --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
        --dir "$MXF_TMP/redis" --daemonize no > "$MXF_TMP/redis.log" 2>&1 < /dev/null &
    MXF_REDIS_PID=$!
    for _ in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p "$MXF_REDIS_PORT" ping >/dev/null 2>&1 && break
        sleep 0.1
    done
    if ! redis-cli -h 127.0.0.1 -p "$MXF_REDIS_PORT" ping >/dev/null 2>&1; then
        MXF_FAIL="its redis-server on port $MXF_REDIS_PORT did not start: $(tail -3 "$MXF_TMP/redis.log")"
        stop_mxfleet
        return 0
    fi
    # setsid: the ingress leads its own process group, so cleanup can stop all its processes
    env MXFLEET_REDIS_URL="redis://127.0.0.1:$MXF_REDIS_PORT/0" \
        MXFLEET_LISTEN="$MXF_LISTEN" \
        MXFLEET_RELAY_NETWORKS=127.0.0.0/8 \
        MXFLEET_METRICS_LISTEN="$MXF_METRICS_LISTEN" \
        MXFLEET_HOSTNAME=bench.mxfleet.test \
        MXFLEET_INGRESS_PROCESSES="$MXF_PROCS" \
        setsid "$MXF_BIN" ingress > "$MXF_LOG" 2>&1 < /dev/null &
    MXF_PID=$!
    for _ in $(seq 1 300); do
        if ! kill -0 "$MXF_PID" 2>/dev/null; then
            wait "$MXF_PID" 2>/dev/null || true
            MXF_PID=""
            MXF_FAIL="'mxfleet ingress' exited during startup; last lines of its log:
$(tail -15 "$MXF_LOG")"
            stop_mxfleet
            return 0
        fi
        smtp_greets "$host" "$port" && { log "mxfleet ingress up (pid $MXF_PID, redis :$MXF_REDIS_PORT)"; return 0; }
        sleep 0.1
    done
    MXF_FAIL="'mxfleet ingress' gave no 220 greeting on $MXF_LISTEN within 30 s; last lines of its log:
$(tail -15 "$MXF_LOG")"
    stop_mxfleet
}

# ---------------------------------------------------------------- run
setup_peers
if [[ $SETUP_ONLY -eq 1 ]]; then
    if [[ -n "$POSTFIX_FAIL" ]]; then exit 1; fi
    log "peers ready: smtp-sink :$SINK_PORT, postfix :25, aiosmtpd+redis AOF :2530 (left running)"
    exit 0
fi

declare -A FAILED=()
TLIST=()
declare -A T_HP=() T_PIDFILES=() T_E2E=()
for t in $TGT_SEL; do
    case "$t" in
      postfix)
        if [[ -n "$POSTFIX_FAIL" ]]; then FAILED[$t]="$POSTFIX_FAIL"; continue; fi
        if ! postfix status >/dev/null 2>&1; then FAILED[$t]="postfix is not running"; continue; fi
        T_HP[$t]=127.0.0.1:25; T_PIDFILES[$t]=/var/spool/postfix/pid/master.pid; T_E2E[$t]=yes ;;
      aio_redis_aof)
        T_HP[$t]=127.0.0.1:2530; T_PIDFILES[$t]="$PDIR/py-aio-2530.pid $PDIR/py-redis-2578.pid"
        T_E2E[$t]=no ;;
      mxfleet)
        start_mxfleet
        if [[ -n "$MXF_FAIL" ]]; then
            FAILED[$t]="$MXF_FAIL"
            log "SKIPPING mxfleet: $MXF_FAIL"
            continue
        fi
        T_HP[$t]="$MXF_LISTEN"; T_PIDFILES[$t]=""; T_E2E[$t]=no ;;
    esac
    loopback_only "${T_HP[$t]}"
    TLIST+=("$t")
done

target_pids() {  # NAME: the process-tree roots to monitor, or nothing if one is gone
    local pids="" pf
    if [[ "$1" == mxfleet ]]; then
        kill -0 "$MXF_PID" 2>/dev/null && kill -0 "$MXF_REDIS_PID" 2>/dev/null || return 1
        echo "$MXF_PID $MXF_REDIS_PID"
        return 0
    fi
    for pf in ${T_PIDFILES[$1]}; do
        alive_pidfile "$pf" || return 1
        pids="$pids $(pid_of "$pf")"
    done
    echo "${pids# }"
}

mkdir -p /tmp/mxfleet-bench
OUT="${OUT:-/tmp/mxfleet-bench/ingress-$(date +%Y%m%d-%H%M%S).txt}"
{
    echo "# ingress.sh $(date -u +%FT%TZ) reps=$REPS count_scale=$COUNT_SCALE scenarios=${SCEN_SEL// /,} targets=${TGT_SEL// /,} kernel=$(uname -r) cpus=$(nproc)"
    echo "# mxfleet $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo no-commit) procs=$MXF_PROCS $("$REPO/.venv/bin/python" -c 'import importlib.metadata as m; print("version", m.version("mxfleet"))' 2>/dev/null || true)"
    echo "# postfix $(postconf -h mail_version 2>/dev/null || echo NA); $(redis-server --version | cut -d' ' -f1-3)"
    for t in "${!FAILED[@]}"; do echo "# target $t not run: ${FAILED[$t]%%$'\n'*}"; done
} >> "$OUT"
log "results: $OUT"

for rep in $(seq 1 "$REPS"); do
  for scen in $SCEN_SEL; do
    read -r _ size sess count < <(echo "$SCENARIO_DEFS" | awk -v s="$scen" '$1==s')
    count=$(awk -v c="$count" -v f="$COUNT_SCALE" -v s="$sess" \
        'BEGIN{n=int(c*f+0.5); if (n<s) n=s; print n}')
    n=${#TLIST[@]}
    for ((i = 0; i < n; i++)); do
      name="${TLIST[$(( (i + rep - 1) % n ))]}"    # rotate the order every repetition
      prefix="rep=$rep scenario=$scen"
      if ! pids="$(target_pids "$name")"; then
          FAILED[$name]="${FAILED[$name]:-process gone before rep $rep $scen}"
          echo "$prefix label=$name target=${T_HP[$name]} size=$size sessions=$sess count=$count rc=DEAD" | tee -a "$OUT"
          continue
      fi
      if wanted postfix; then postfix_drained; fi
      case "$name" in
        aio_redis_aof) redis_reset 2578 ;;
        mxfleet) redis_reset "$MXF_REDIS_PORT" ;;
      esac
      sleep 1
      envs=(LABEL="$name" MONITOR_PIDS="$pids" TIMEOUT="$TIMEOUT")
      [[ "${T_E2E[$name]}" == yes ]] && envs+=(SINK_PORT="$SINK_PORT" EXPECT="$count")
      rc=0
      res=$(env "${envs[@]}" "$PEERS/bench.sh" "${T_HP[$name]}" "$size" "$sess" "$count" 2>>"$OUT.err") || rc=$?
      [[ -n "$res" ]] || res="label=$name target=${T_HP[$name]} size=$size sessions=$sess count=$count rc=$rc"
      if [[ $rc -ne 0 ]]; then FAILED[$name]="${FAILED[$name]:-a measurement failed (see $OUT.err)}"; fi
      echo "$prefix load=$(cut -d' ' -f1 /proc/loadavg) $res" | tee -a "$OUT"
    done
  done
done

echo
python3 "$HERE/summarize.py" "$OUT" | tee "$OUT.summary.md"
echo
echo "results: $OUT  summary: $OUT.summary.md"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    for t in "${!FAILED[@]}"; do echo "FAILED $t: ${FAILED[$t]}" >&2; done
    if [[ -n "${FAILED[mxfleet]:-}" && -s "$MXF_LOG" && -z "$MXF_FAIL" ]]; then
        echo "last lines of the mxfleet ingress log:" >&2
        tail -15 "$MXF_LOG" >&2
    fi
    exit 1
fi
