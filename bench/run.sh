#!/usr/bin/env bash
# bench/run.sh — portico side by side with HAProxy, nginx and no proxy at all.
#
# Everything runs on loopback (127.0.0.1 only). The proxy under test is
# pinned to CPU 0; the load generators (wrk, h2load), the demo backend and
# the helpers are pinned to CPU 1, so the proxy's CPU time is its own.
#
# Phases (see bench/README.md for how to read the results):
#   1. start the backend and every system of the selected scenarios;
#   2. memory: RSS at start, then RSS growth per idle keep-alive connection
#      with 5,000 idle connections (one python helper);
#   3. calibrate: HAProxy's capacity at wrk -c32; the open-loop rate used
#      later is half of it;
#   4. rounds: A B C D … A B C D …; each run measures CPU per request,
#      requests/s and upstream reuse (wrk -c32), latency at one connection
#      (h2load -c1) and at the fixed open-loop rate (h2load --rps);
#   5. syscalls per request: strace -c -f attached during a short wrk run
#      (which syscalls, with errors), then perf stat counting the same
#      syscalls' tracepoints at full speed (strace slows the proxy so much
#      that epoll_wait batching, hence the count, changes);
#   6. bench/lib/report.py writes bench/results/latest.md and latency.png.
#
#   7. (issue 12) the build before the request-path refactor (c4f27d1,
#      built once into build-old/) runs as two more systems, portico-before
#      and portico-gw-before; a route with ext_auth runs beside nginx's
#      auth_request; and the suspension section holds 10,000 requests in a
#      fault delay and reads the gateway's RSS (see bench/README.md).
#
#   8. (issue 14, bench/lib/balance.sh) the slow-target row: three targets,
#      one 20 ms slow, 16 connections at a fixed rate through portico
#      p2c_ewma / least_conn / round_robin, HAProxy leastconn and nginx
#      least_conn (p50, p99, the slow target's share, CPU per request); and
#      the breaker-cost row: a route with a closed circuit breaker and
#      retries against the plain route, one gateway (see bench/README.md).
#
#   9. (issue 15, bench/lib/auth.sh) what verifying a caller costs: jwt
#      RS256 and ES256 with a repeated token (cache hit) and unique tokens
#      (cold) beside HAProxy's jwt_verify, the plain route and `openssl
#      speed`; key_auth with 1,000 consumers against the plain route.
#
#  10. (issue 16, bench/lib/ratelimit.sh) what a rate limit costs: a route
#      with a local rate_limit that never trips against the plain route,
#      beside HAProxy's stick-table http_req_rate tracking; and a cluster
#      limit on a loopback redis-server (added latency at half the plain
#      route's capacity, Redis round trips per decision).
#
#  11. (issue 17, bench/lib/observability.sh) what observing a route costs:
#      metrics + JSON access log on vs off on the plain route, beside
#      HAProxy's httplog + PROMEX; a /metrics scrape with 1,000 routes (its
#      time, and a route's p99 with and without scrapes).
#
#  12. (issue 18, bench/lib/tls.sh) TLS termination and HTTP/2 beside
#      HAProxy and nginx on the same ECDSA P-256 certificate and ciphers:
#      HTTPS/1.1 kept alive (wrk -c32: CPU per request), new full TLS
#      handshakes (h2load, one fresh client per connection: handshakes/s
#      and CPU per handshake), h2 with 100 streams per connection (h2load
#      -c4 -m100: requests/s). Portico's rows are skipped while the build
#      refuses `tls` / `http2`.
#
#  13. (issues 19 and 20, bench/lib/edge19.sh) what the edge filters cost:
#      a cache hit beside nginx proxy_cache and HAProxy's cache (CPU per
#      hit, the backend must see none), a route with `cors` and one with
#      JSON body transforms against the plain route, and an `aggregate`
#      fan-out of 3 (CPU per client request, p99). Portico's rows are
#      skipped while the build refuses their feature.
#
# Usage: bench/run.sh [--quick] [--rounds N]
#                     [--scenarios plain,gateway,before,ext_auth,suspend,balance,auth,ratelimit,observability,tls,edge19]
#                     [--spin] [--keep-tmp]
#   --spin  during the wrk -c32 runs only, keep both CPUs out of idle with
#           SCHED_IDLE busy loops, so that waking a halted vCPU (costly in
#           a VM) does not enter CPU/request; see bench/README.md, "Two
#           regimes".
# Environment: PORTICO_BENCH_PORT_BASE (default 23180; 48 ports from there),
#              PORTICO_BUILD (default build; relative to the repository or
#                absolute),
#              BENCH_ONLY=before|ext_auth|suspend|balance|auth|ratelimit|tracing|observability|tls|edge19|… one section only (its
#                systems plus the references it is judged against; no
#                idle-memory phase); the report goes to
#                bench/results/latest-<section>.md, latest.md is left alone,
#              PORTICO_OLD_COMMIT (default c4f27d1), PORTICO_OLD_DIR (default
#                build-old/<commit>): the "before" build's worktree.
#              PORTICO_BENCH_AUTH_DIR (default <build>/bench-auth): the auth
#                section's keys and tokens, made once and reused;
#              PORTICO_BENCH_AUTH_AA=1: the auth section's jwt and key_auth
#                routes without their filters (an A/A run of the method).
set -euo pipefail

# ---------------------------------------------------------------- settings

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH_DIR/.." && pwd)
BUILD=${PORTICO_BUILD:-build}
case $BUILD in /*) BUILD_DIR=$BUILD ;; *) BUILD_DIR=$ROOT/$BUILD ;; esac
PORTICO_BIN=$BUILD_DIR/portico
BACKEND_BIN=$BUILD_DIR/demo_backend
FLOOR_BIN=$BUILD_DIR/floor_fwd
PY=/usr/bin/python3
LIB=$BENCH_DIR/lib
CONF=$BENCH_DIR/conf
RESULTS=$BENCH_DIR/results

PORT_BASE=${PORTICO_BENCH_PORT_BASE:-23180}
BACKEND_PORT=$PORT_BASE
AUTH_PORT=$((PORT_BASE + 12))    # the ext_auth rows' auth service
SUSPEND_PORT=$((PORT_BASE + 13)) # the suspension section's gateway
OLD_COMMIT=${PORTICO_OLD_COMMIT:-c4f27d1}
OLD_DIR=${PORTICO_OLD_DIR:-$ROOT/build-old/$OLD_COMMIT}
OLD_BIN=$OLD_DIR/build/portico
PROXY_CPU=0
LOAD_CPU=1

ROUNDS=5
QUICK=0
SCENARIOS="plain,gateway,before,ext_auth,suspend,balance,auth,ratelimit,observability,tls,edge19"
ONLY=${BENCH_ONLY:-}
KEEP_TMP=0
SPIN=0
SPIN_PID0=""
SPIN_PIDS=()
# Durations (seconds) of one run's parts; --quick shortens them.
D_LOAD=5          # wrk -t1 -c32: CPU/request, requests/s, reuse
D_C1=2            # h2load -c1 closed loop: unloaded latency
D_RATE=4          # h2load -c16 --rps: latency at a fixed offered rate
D_STRACE=3        # strace window in a wrk -c32 run: syscall counts only
D_PERF=3          # wrk -c32 under perf stat: syscall counts at full speed
IDLE_CONNS=5000   # idle keep-alive connections for the memory test
SUSPEND_N=10000   # requests held at once in the fault delay (suspension section)
SUSPEND_DELAY=10s # their delay: covers opening, the RSS reads and the latency probe
D_PROBE=3         # h2load -c1 on the plain route, without and during the suspension
SUSPEND=0         # the suspension section runs (scenario "suspend")
BALANCE=0         # issue 14's section runs (scenario "balance", bench/lib/balance.sh)
IDENTITY=0        # issue 15's section runs (scenario "auth", bench/lib/auth.sh)
RATELIMIT=0       # issue 16's section runs (scenario "ratelimit", bench/lib/ratelimit.sh)
TRACING=0         # issue 17's tracing row runs (scenario "tracing", bench/lib/tracing.sh)
OBSERVABILITY=0   # issue 17's section runs (scenario "observability", bench/lib/observability.sh)
TLS_SECTION=0     # issue 18's section runs (scenario "tls", bench/lib/tls.sh)
EDGE19=0          # issues 19 and 20's section runs (scenario "edge19", bench/lib/edge19.sh)
RATE_CONNS=16     # h2load connections for the fixed-rate run
SKIP_S=0.2        # h2load samples dropped at the start of each run

# Prints the comment block at the top of this file.
usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS=$2; shift ;;
    --scenarios) SCENARIOS=$2; shift ;;
    --keep-tmp) KEEP_TMP=1 ;;
    --spin) SPIN=1 ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown argument: $1" >&2; usage 2 ;;
    esac
    shift
done
[ -z "$ONLY" ] || SCENARIOS=$ONLY
if [ "$QUICK" = 1 ]; then
    # ~2 minutes: fewer rounds, shorter runs. Good for "did I break it?",
    # not for the closing numbers of an issue.
    [ "$ROUNDS" = 5 ] && ROUNDS=3
    D_LOAD=2 D_C1=1 D_RATE=2 D_STRACE=1 D_PERF=2
fi
# shellcheck source-path=SCRIPTDIR source=lib/balance.sh
. "$BENCH_DIR/lib/balance.sh"
[ "$QUICK" = 0 ] || balance_quick
# shellcheck source-path=SCRIPTDIR source=lib/auth.sh
. "$BENCH_DIR/lib/auth.sh"
[ "$QUICK" = 0 ] || id_quick
# shellcheck source-path=SCRIPTDIR source=lib/ratelimit.sh
. "$BENCH_DIR/lib/ratelimit.sh"
# shellcheck source-path=SCRIPTDIR source=lib/tracing.sh
. "$BENCH_DIR/lib/tracing.sh"
[ "$QUICK" = 0 ] || tr_quick
[ "$QUICK" = 0 ] || rl_quick
# shellcheck source-path=SCRIPTDIR source=lib/observability.sh
. "$BENCH_DIR/lib/observability.sh"
[ "$QUICK" = 0 ] || ob_quick
# shellcheck source-path=SCRIPTDIR source=lib/tls.sh
. "$BENCH_DIR/lib/tls.sh"
[ "$QUICK" = 0 ] || tls_quick
# shellcheck source-path=SCRIPTDIR source=lib/edge19.sh
. "$BENCH_DIR/lib/edge19.sh"
[ "$QUICK" = 0 ] || edge19_quick

# ---------------------------------------------------------------- utilities

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[bench] FATAL: %s\n' "$*" >&2; exit 1; }

# Every process we start is recorded here and killed on exit, however we
# exit (error, Ctrl-C, normal end). Only these PIDs are ever signalled.
STARTED=()
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM HUP
    for pid in "${STARTED[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true # a stopped spinner must run to die
    done
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for pid in "${STARTED[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ $alive = 0 ] && break
        sleep 0.2
    done
    for pid in "${STARTED[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ -n "${TMP:-}" ] && [ -d "$TMP" ]; then
        if [ "$KEEP_TMP" = 1 ] || [ $rc != 0 ]; then
            log "configs and logs kept in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 129' HUP

# Fails unless nothing listens on 127.0.0.1:PORT (or any address:PORT).
# portico binds with SO_REUSEPORT, so a second instance on a busy port
# starts "fine" and silently shares the traffic: we must check first.
require_port_free() {
    local port=$1
    if [ -n "$(ss -Hltn "sport = :$port")" ]; then
        die "port $port is already in use: $(ss -Hltnp "sport = :$port" | head -3 | tr -s ' ')
       (set PORTICO_BENCH_PORT_BASE to a free range of 48 ports)"
    fi
}

# The only listener on PORT must be PID (guards against a port shared
# through SO_REUSEPORT with a process we did not start).
require_sole_listener() {
    local port=$1 pid=$2 line
    while read -r line; do
        case $line in
        *"pid=$pid,"*) ;;
        *) die "port $port is also served by another process: $line" ;;
        esac
    done < <(ss -Hltnp "sport = :$port")
}

# user+system CPU of a whole process (all threads), in clock ticks.
# Fields 14 and 15 of /proc/PID/stat; the command name (field 2) may
# contain spaces, so count from the last ')'.
cpu_ticks() {
    local stat
    stat=$(<"/proc/$1/stat")
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo $((${12} + ${13}))
}

# Resident set size of a process, in kB: all of it (VmRSS, the default),
# or only its anonymous part (RssAnon: heap and stacks, without the mapped
# binary and shared libraries).
rss_kb() { # pid [field]
    awk -v f="${2:-VmRSS}:" '$1 == f { print $2 }' "/proc/$1/status"
}

# Busy and steal ticks of one CPU from /proc/stat: prints "busy steal".
# busy = user + nice + system + irq + softirq: the kernel charges part of
# a process's own time (loopback packet processing in its context) to
# softirq here, while the process's utime+stime includes it.
cpu_busy() { # cpu number
    awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8, $9 }' /proc/stat
}

# --spin: resume (on) or pause (off) the idle-class busy loops. They only
# run during the wrk -c32 runs: in the latency runs they would delay
# wake-ups (a SCHED_IDLE task is not always preempted at once in a VM),
# and under strace they starve the tracer.
spin() { # on|off
    [ ${#SPIN_PIDS[@]} -gt 0 ] || return 0
    kill "$([ "$1" = on ] && echo -CONT || echo -STOP)" "${SPIN_PIDS[@]}"
}

# Wall-clock microseconds (bash's own clock, no fork).
now_us() {
    local t=${EPOCHREALTIME/./}
    echo "${t#0}"
}

# The demo backend's counters: prints "accepts requests".
backend_stats() {
    curl -s --max-time 2 "http://127.0.0.1:$BACKEND_PORT/__stats" |
        $PY -c 'import json,sys; d=json.load(sys.stdin); print(d["accepts"], d["requests"])'
}
# Requests the backend has answered (curl only, no python start-up).
backend_requests() {
    local body
    body=$(curl -s --max-time 2 "http://127.0.0.1:$BACKEND_PORT/__stats")
    [[ $body =~ \"requests\":([0-9]+) ]] && echo "${BASH_REMATCH[1]}"
}
backend_reset() {
    curl -s --max-time 2 -X POST "http://127.0.0.1:$BACKEND_PORT/__stats/reset" >/dev/null
}

# One measurement: append "round system metric value" to results.tsv.
record() {
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/results.tsv"
}

# Floating-point arithmetic for the few places that need it.
calc() { awk "BEGIN { printf \"%.${2:-3}f\", $1 }"; }

# Pulls numbers out of wrk's text output: "REQUESTS RPS ERRORS", where
# ERRORS counts socket errors, timeouts and non-2xx/3xx responses.
parse_wrk() {
    awk '
        / requests in / { req = $1 }
        /^Requests\/sec:/ { rps = $2 }
        /Socket errors:/ { gsub(/,/, ""); err += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx responses:/ { err += $NF }
        END { printf "%d %.0f %d\n", req, rps, err }' "$1"
}

# -------------------------------------------------------- systems registry
#
# A "system" is one thing wrk can be pointed at: the backend itself
# (direct) or a proxy with a given config. Scenarios register systems;
# the rounds then visit every registered system in registration order.
#
#   SYS_LIST            names, in round order
#   SYS_SCENARIO[name]  scenario it belongs to (for the report)
#   SYS_PORT[name]      its port on 127.0.0.1
#   SYS_START[name]     function that writes its config and starts it
#   SYS_PID[name]       PID whose CPU/RSS is measured (set by start)
#   SYS_KIND[name]      "direct" (no process of its own), "proxy", or "floor"
#                       (a bare forwarder: measured like a proxy for CPU,
#                       latency and syscalls; no memory or reuse figures)
#   SYS_LABEL[name]     human name for the report
SYS_LIST=()
declare -A SYS_SCENARIO SYS_PORT SYS_START SYS_PID SYS_KIND SYS_LABEL

add_system() { # name scenario port-offset kind start-function label
    local name=$1
    [ -n "${SYS_PORT[$name]:-}" ] && return 0 # already registered
    SYS_LIST+=("$name")
    SYS_SCENARIO[$name]=$2
    SYS_PORT[$name]=$((PORT_BASE + $3))
    SYS_KIND[$name]=$4
    SYS_START[$name]=$5
    SYS_LABEL[$name]=$6
}

# True for systems with a process of their own whose CPU and syscalls are
# measured: the proxies and the floor.
has_process() { # name
    [ "${SYS_KIND[$1]}" = proxy ] || [ "${SYS_KIND[$1]}" = floor ]
}

# Starts a command in the background pinned to CPU, logs to FILE, records
# its PID in STARTED and in the global LAST_PID. taskset execs the command,
# so $! is the command's own PID.
spawn() { # cpu logfile command...
    local cpu=$1 out=$2
    shift 2
    taskset -c "$cpu" "$@" >"$out" 2>&1 &
    LAST_PID=$!
    STARTED+=("$LAST_PID")
}

# Waits for a process we started to exit and forgets it, so that cleanup
# never signals a PID the system may have handed to someone else since.
reap() { # pid
    local pid=$1 i
    wait "$pid" 2>/dev/null || true
    for i in "${!STARTED[@]}"; do
        [ "${STARTED[$i]}" = "$pid" ] && unset "STARTED[$i]"
    done
    return 0
}

# Waits until http://127.0.0.1:PORT/tiny answers {"ok":true}; fails loudly
# (with the log) if the process dies or it takes more than 10 s.
wait_ready() { # name pid port logfile
    local name=$1 pid=$2 port=$3 logf=$4 body
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            die "$name exited during start-up; its log ($logf):
$(tail -20 "$logf")"
        fi
        body=$(curl -s --max-time 1 "http://127.0.0.1:$port/tiny" || true)
        if [ "$body" = '{"ok":true}' ]; then
            require_sole_listener "$port" "$pid"
            return 0
        fi
        sleep 0.1
    done
    die "$name did not answer GET /tiny on 127.0.0.1:$port within 10 s (last body: '$body'); log:
$(tail -20 "$logf")"
}

# Generated configs must point at loopback only.
require_loopback_only() { # config file
    local bad
    bad=$(grep -oE '\b([0-9]{1,3}\.){3}[0-9]{1,3}\b' "$1" | grep -vx '127.0.0.1' || true)
    [ -z "$bad" ] || die "$1 names a non-loopback address: $bad"
}

start_backend() {
    require_port_free "$BACKEND_PORT"
    spawn $LOAD_CPU "$TMP/backend.log" "$BACKEND_BIN" --listen "127.0.0.1:$BACKEND_PORT" \
        --name bench --threads 1 --quiet
    BACKEND_PID=$LAST_PID
    wait_ready backend "$BACKEND_PID" "$BACKEND_PORT" "$TMP/backend.log"
}

# "direct": wrk straight at the backend; nothing else to start.
start_direct() {
    SYS_PID[direct]=$BACKEND_PID
}

start_portico() { # name template [io-backend [binary]]
    local name=$1 tpl=$2 port=${SYS_PORT[$1]} cfg=$TMP/$1.yaml bin=${4:-$PORTICO_BIN}
    local vars=(PORT="$port" BACKEND_PORT="$BACKEND_PORT" DIR="$TMP" IO_BACKEND="${3:-epoll}"
        AUTH_PORT="$AUTH_PORT")
    if [ "$tpl" = gateway ]; then
        $PY "$LIB/gen_gateway.py" "$CONF/portico-gateway.yaml.in" "$cfg" "${vars[@]}"
    else
        $PY "$LIB/fill.py" "$CONF/portico-$tpl.yaml.in" "$cfg" "${vars[@]}"
    fi
    require_loopback_only "$cfg"
    "$bin" validate "$cfg" >"$TMP/$name.validate" 2>&1 ||
        die "portico rejects the $name config:
$(cat "$TMP/$name.validate")"
    require_port_free "$port"
    spawn $PROXY_CPU "$TMP/$name.log" "$bin" -c "$cfg"
    SYS_PID[$name]=$LAST_PID
    wait_ready "$name" "$LAST_PID" "$port" "$TMP/$name.log"
}
start_portico_plain() { start_portico portico plain; }
start_portico_uring() { start_portico portico-uring plain io_uring; }
start_portico_gateway() { start_portico portico-gw gateway; }
# Issue 12: the build before the request-path refactor, same configs.
start_portico_before() { start_portico portico-before plain epoll "$OLD_BIN"; }
start_portico_gw_before() { start_portico portico-gw-before gateway epoll "$OLD_BIN"; }
start_portico_auth() { start_auth_backend; start_portico portico-auth ext_auth; }

# The auth service of the ext_auth rows: a second demo backend (one
# thread, CPU 1, like the first), so the main backend's reuse counters
# stay the upstream's own. Started once, by whichever row needs it first.
start_auth_backend() {
    [ -z "${AUTH_PID:-}" ] || return 0
    require_port_free "$AUTH_PORT"
    spawn $LOAD_CPU "$TMP/authz.log" "$BACKEND_BIN" --listen "127.0.0.1:$AUTH_PORT" \
        --name authz --threads 1 --quiet
    AUTH_PID=$LAST_PID
    wait_ready authz "$AUTH_PID" "$AUTH_PORT" "$TMP/authz.log"
}

# The "before" build: commit OLD_COMMIT checked out (detached) in its own
# git worktree under build-old/ and built there once; later runs reuse the
# binary if the worktree is still at that commit.
build_old() {
    local want have
    want=$(git -C "$ROOT" rev-parse --verify "$OLD_COMMIT^{commit}") ||
        die "no commit $OLD_COMMIT in this repository"
    if [ ! -e "$OLD_DIR/.git" ]; then
        log "checking out $OLD_COMMIT (before the refactor) in ${OLD_DIR#"$ROOT"/}"
        mkdir -p "$(dirname "$OLD_DIR")"
        git -C "$ROOT" worktree add --detach "$OLD_DIR" "$OLD_COMMIT" >"$TMP/old-worktree.log" 2>&1 ||
            die "git worktree add failed: $(cat "$TMP/old-worktree.log")"
    fi
    have=$(git -C "$OLD_DIR" rev-parse HEAD)
    [ "$have" = "$want" ] || die "$OLD_DIR is at $have, not $OLD_COMMIT (remove it: git worktree remove $OLD_DIR)"
    if [ ! -x "$OLD_BIN" ] || [ -n "$(find "$OLD_DIR/src" -newer "$OLD_BIN" -name '*.[ch]' | head -1)" ]; then
        log "building $OLD_COMMIT: make -C ${OLD_DIR#"$ROOT"/} -j2 all"
        make -C "$OLD_DIR" -j2 all >"$TMP/old-build.log" 2>&1 ||
            die "building $OLD_COMMIT failed: $(tail -20 "$TMP/old-build.log")"
    fi
}

start_haproxy() {
    local port=${SYS_PORT[haproxy]} cfg=$TMP/haproxy.cfg
    $PY "$LIB/fill.py" "$CONF/haproxy.cfg.in" "$cfg" PORT="$port" BACKEND_PORT="$BACKEND_PORT"
    require_loopback_only "$cfg"
    haproxy -c -q -f "$cfg" >"$TMP/haproxy.validate" 2>&1 ||
        die "haproxy rejects its config: $(cat "$TMP/haproxy.validate")"
    require_port_free "$port"
    # -db: stay in the foreground, one process (no master-worker).
    spawn $PROXY_CPU "$TMP/haproxy.log" haproxy -db -f "$cfg"
    SYS_PID[haproxy]=$LAST_PID
    wait_ready haproxy "$LAST_PID" "$port" "$TMP/haproxy.log"
}

start_nginx() { # [name template]: nginx with conf/<template>.conf.in
    local name=${1:-nginx} tpl=${2:-nginx}
    local port=${SYS_PORT[$name]} dir=$TMP/$name
    local cfg=$dir/nginx.conf
    mkdir -p "$dir" # its own prefix: pid file and temp paths apart from any other nginx
    $PY "$LIB/fill.py" "$CONF/$tpl.conf.in" "$cfg" PORT="$port" BACKEND_PORT="$BACKEND_PORT" \
        DIR="$dir" AUTH_PORT="$AUTH_PORT"
    require_loopback_only "$cfg"
    nginx -t -q -p "$dir" -c "$cfg" >"$dir/validate" 2>&1 ||
        die "nginx ($name) rejects its config: $(cat "$dir/validate")"
    require_port_free "$port"
    spawn $PROXY_CPU "$TMP/$name.log" nginx -p "$dir" -c "$cfg"
    SYS_PID[$name]=$LAST_PID
    wait_ready "$name" "$LAST_PID" "$port" "$TMP/$name.log"
}
start_nginx_auth() { start_auth_backend; start_nginx nginx-auth nginx-ext_auth; }

# The floor: bench/floor_fwd.c, a bare 1:1 byte forwarder (no HTTP). What
# it costs is what the kernel and the machine cost any proxy. The io_uring
# one is the floor of portico's io_uring row.
start_forwarder() { # system-name floor_fwd-flags...
    local name=$1 port=${SYS_PORT[$1]}
    shift
    [ -x "$FLOOR_BIN" ] || die "build first: make $BUILD/floor_fwd (no $FLOOR_BIN)"
    require_port_free "$port"
    spawn $PROXY_CPU "$TMP/$name.log" "$FLOOR_BIN" "$@" "$port" "$BACKEND_PORT"
    SYS_PID[$name]=$LAST_PID
    wait_ready "$name" "$LAST_PID" "$port" "$TMP/$name.log"
}
start_floor() { start_forwarder floor; }
start_floor_uring() { start_forwarder floor-uring --io_uring; }

# --------------------------------------------------------------- scenarios
#
# One function per scenario: it registers the systems it needs (port
# offsets must be unique; 0 is the backend). Later rows (auth, rate limit,
# TLS, h2) add a function here, a template in bench/conf/, and a line in
# lib/report.py's SCENARIOS table.

# "2.6.12" from "HAProxy version 2.6.12-1+deb12u4 …" (the full string is
# in the report's header).
haproxy_version() {
    haproxy -v | awk 'NR == 1 { sub(/-.*/, "", $3); print $3 }'
}

scenario_plain() {
    add_system direct plain 0 direct start_direct "direct (no proxy)"
    add_system portico plain 1 proxy start_portico_plain "portico"
    add_system portico-uring plain 5 proxy start_portico_uring "portico (io_uring)"
    add_system haproxy plain 2 proxy start_haproxy "HAProxy $(haproxy_version)"
    add_system nginx plain 3 proxy start_nginx "nginx $(nginx -v 2>&1 | sed 's|.*/||')"
    add_system floor plain 6 floor start_floor "bare forwarder (floor)"
    add_system floor-uring plain 7 floor start_floor_uring "bare forwarder, io_uring (floor)"
}

# 1,000 routes, request/response transforms, access log on. Its goals
# compare it with portico plain (≤ 1.15×) and HAProxy plain (≤ 1.0×), and
# added latency needs direct, so those are registered too.
scenario_gateway() {
    add_system direct plain 0 direct start_direct "direct (no proxy)"
    add_system portico plain 1 proxy start_portico_plain "portico"
    add_system portico-uring plain 5 proxy start_portico_uring "portico (io_uring)"
    add_system haproxy plain 2 proxy start_haproxy "HAProxy $(haproxy_version)"
    add_system portico-gw gateway 4 proxy start_portico_gateway "portico gateway route"
}

# Issue 12: this build against the build before the request-path
# refactor (OLD_COMMIT), plain and gateway route, in the same rounds.
# HAProxy is registered for the calibration.
scenario_before() {
    build_old
    add_system direct plain 0 direct start_direct "direct (no proxy)"
    add_system portico plain 1 proxy start_portico_plain "portico"
    add_system haproxy plain 2 proxy start_haproxy "HAProxy $(haproxy_version)"
    add_system portico-before before 8 proxy start_portico_before "portico before ($OLD_COMMIT)"
    add_system portico-gw gateway 4 proxy start_portico_gateway "portico gateway route"
    add_system portico-gw-before before 9 proxy start_portico_gw_before \
        "portico gateway route before ($OLD_COMMIT)"
}

# Issue 12: a route with ext_auth beside nginx's auth_request, both asking
# the same auth service; the plain rows of both are the references for
# what the check adds.
scenario_ext_auth() {
    add_system direct plain 0 direct start_direct "direct (no proxy)"
    add_system portico plain 1 proxy start_portico_plain "portico"
    add_system haproxy plain 2 proxy start_haproxy "HAProxy $(haproxy_version)"
    add_system nginx plain 3 proxy start_nginx "nginx $(nginx -v 2>&1 | sed 's|.*/||')"
    add_system portico-auth ext_auth 10 proxy start_portico_auth "portico ext_auth"
    add_system nginx-auth ext_auth 11 proxy start_nginx_auth \
        "nginx auth_request $(nginx -v 2>&1 | sed 's|.*/||')"
}

# Issue 12: not a row of the rounds but a section of its own, run after
# them on a gateway of its own (measure_suspend).
scenario_suspend() { SUSPEND=1; }

# Issue 14: balancers beside a slow target, and what a closed breaker and
# retries cost; like the suspension, a section of its own after the rounds
# (bench/lib/balance.sh), with its own targets and systems.
scenario_balance() { BALANCE=1; }

# Issue 15: what verifying a caller costs (jwt cached and cold beside
# HAProxy's jwt_verify and openssl speed, key_auth), a section of its own
# after the rounds (bench/lib/auth.sh), with its own gateways.
scenario_auth() { IDENTITY=1; }

# Issue 16: what a rate limit costs (a local limit beside HAProxy's stick
# table; a cluster limit on a loopback redis-server), a section of its own
# (bench/lib/ratelimit.sh).
scenario_ratelimit() { RATELIMIT=1; }

# Issue 17: what tracing costs (sample 1.0, exported to a sink receiver,
# against the same route without tracing), a section of its own
# (bench/lib/tracing.sh). Not in the default list: BENCH_ONLY=tracing.
scenario_tracing() { TRACING=1; }

# Issue 17: what observing a route costs (metrics and access log on vs
# off beside HAProxy's httplog + PROMEX; a /metrics scrape with 1,000
# routes), a section of its own (bench/lib/observability.sh).
scenario_observability() { OBSERVABILITY=1; }

# Issue 18: TLS termination and HTTP/2 beside HAProxy and nginx (HTTPS/1.1
# kept alive, full handshakes, h2 with 100 streams), a section of its own
# (bench/lib/tls.sh).
scenario_tls() { TLS_SECTION=1; }

# Issues 19 and 20: what the edge filters cost (a cache hit beside nginx
# proxy_cache and HAProxy's cache, cors, JSON body transforms, an
# aggregate fan-out of 3), a section of its own (bench/lib/edge19.sh).
scenario_edge19() { EDGE19=1; }

# ------------------------------------------------------------ measurements

# Idle RSS, then RSS growth per idle keep-alive connection.
measure_memory() { # name
    local name=$1 pid=${SYS_PID[$1]} port=${SYS_PORT[$1]}
    local rss_start rss_before rss_after rss_closed out=$RAW/idle-$1.txt
    local rss_anon
    rss_start=$(rss_kb "$pid")
    rss_anon=$(rss_kb "$pid" RssAnon)
    # Let any lazy start-up work settle before the baseline.
    sleep 0.5
    rss_before=$(rss_kb "$pid")
    spawn $LOAD_CPU "$out" $PY "$LIB/idle_conns.py" "$port" "$IDLE_CONNS"
    local helper=$LAST_PID
    for _ in $(seq 300); do
        grep -q '^ready\|^failed' "$out" 2>/dev/null && break
        kill -0 "$helper" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^ready' "$out" || die "idle connections to $name failed: $(cat "$out")"
    sleep 1 # let the proxy finish its per-connection work
    rss_after=$(rss_kb "$pid")
    kill -TERM "$helper" # its connections close as it exits
    reap "$helper"
    sleep 1
    rss_closed=$(rss_kb "$pid")
    record 0 "$name" rss_start_kb "$rss_start"
    record 0 "$name" rss_anon_start_kb "$rss_anon"
    record 0 "$name" rss_idle_before_kb "$rss_before"
    record 0 "$name" rss_idle_after_kb "$rss_after"
    record 0 "$name" rss_after_close_kb "$rss_closed"
    record 0 "$name" bytes_per_idle_conn "$(calc "($rss_after - $rss_before) * 1024 / $IDLE_CONNS" 0)"
    log "  $name: RSS ${rss_before} kB → ${rss_after} kB with $IDLE_CONNS idle connections" \
        "→ ${rss_closed} kB after they closed"
}

# wrk -t1 -c32 for SECONDS; sets WRK_REQ, WRK_RPS, WRK_ERR.
run_wrk() { # port seconds outfile
    taskset -c $LOAD_CPU wrk -t1 -c32 -d"${2}s" "http://127.0.0.1:$1/tiny" >"$3" 2>&1 ||
        die "wrk failed: $(cat "$3")"
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$3")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from 127.0.0.1:$1: $(cat "$3")"
}

# One h2load run; records p50/p90/p99/p999 and the achieved rate as
# PREFIX_*, and the proxy's CPU per request over the run as
# PREFIX_cpu_us; keeps a percentile grid for the chart.
run_h2load() { # round name prefix seconds h2load-args...
    local r=$1 name=$2 prefix=$3 secs=$4 port=${SYS_PORT[$2]}
    shift 4
    local base=$RAW/r$r-$name-$prefix pid=${SYS_PID[$name]} t0 t1 c0 c1 w0 w1 _
    read -r c0 _ < <(cpu_busy $PROXY_CPU)
    w0=$(now_us)
    t0=$(cpu_ticks "$pid")
    taskset -c $LOAD_CPU h2load --h1 -t1 -D "$secs" "$@" --log-file="$TMP/h2.log" \
        "http://127.0.0.1:$port/tiny" >"$base.h2load.txt" 2>&1 ||
        die "h2load failed against $name: $(tail -5 "$base.h2load.txt")"
    t1=$(cpu_ticks "$pid")
    w1=$(now_us)
    read -r c1 _ < <(cpu_busy $PROXY_CPU)
    # Tail latency is what other work on CPU 0 disturbs first: record how
    # busy CPU 0 was with anything but this proxy during this run.
    local mine=$((t1 - t0))
    has_process "$name" || mine=0
    record "$r" "$name" "${prefix}_cpu0_other_pct" \
        "$(calc "100 * ($c1 - $c0 - $mine) / (($w1 - $w0) * $CLK_TCK / 1000000)" 1)"
    local kv k v
    kv=$($PY "$LIB/h2lat.py" "$TMP/h2.log" "$SKIP_S" "$base.grid") ||
        die "no latency samples from h2load against $name"
    for k in $kv; do
        v=${k#*=}
        k=${k%%=*}
        case $k in
        p50 | p90 | p99 | p999 | rate | failed) record "$r" "$name" "${prefix}_$k" "$v" ;;
        all)
            # Same CPU-per-request figure as the wrk run, at this load.
            if has_process "$name" && [ "$v" -gt 0 ]; then
                record "$r" "$name" "${prefix}_cpu_us" "$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $v")"
            fi
            ;;
        esac
    done
    rm -f "$TMP/h2.log"
}

# One run of one system in one round.
measure_run() { # round name
    local r=$1 name=$2 pid=${SYS_PID[$2]} port=${SYS_PORT[$2]}
    local t0 t1 b0 b1 req rps err accepts be_req c0 s0 c1 s1 w0 w1
    kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) is gone"

    # (1) CPU per request, (2) requests/s, (6) upstream reuse.
    backend_reset
    local sp0=0
    [ -z "$SPIN_PID0" ] || sp0=$(cpu_ticks "$SPIN_PID0")
    read -r c0 s0 < <(cpu_busy $PROXY_CPU)
    w0=$(now_us)
    t0=$(cpu_ticks "$pid")
    b0=$(cpu_ticks "$BACKEND_PID")
    spin on
    run_wrk "$port" "$D_LOAD" "$RAW/r$r-$name-wrk.txt"
    spin off
    t1=$(cpu_ticks "$pid")
    b1=$(cpu_ticks "$BACKEND_PID")
    w1=$(now_us)
    read -r c1 s1 < <(cpu_busy $PROXY_CPU)
    # The run's wall time in clock ticks, for the percentages below.
    local wall_ticks
    wall_ticks=$(calc "($w1 - $w0) * $CLK_TCK / 1000000" 3)
    req=$WRK_REQ rps=$WRK_RPS err=$WRK_ERR
    read -r accepts be_req < <(backend_stats)
    [ -n "$be_req" ] || die "the backend's /__stats did not answer"
    [ "$err" = 0 ] || log "  WARNING: $name: $err errors in the wrk run (see raw/r$r-$name-wrk.txt)"
    record "$r" "$name" requests "$req"
    record "$r" "$name" errors "$err"
    record "$r" "$name" rps "$rps"
    record "$r" "$name" backend_cpu_us "$(calc "($b1 - $b0) * 1000000 / $CLK_TCK / $req")"
    record "$r" "$name" upstream_accepts "$accepts"
    record "$r" "$name" upstream_requests "$be_req"
    # Interference: CPU 0 time not charged to the proxy under test (other
    # users of this machine, idle proxies' timers, kernel threads) and
    # time the hypervisor stole, as % of the run.
    local mine=$((t1 - t0))
    has_process "$name" || mine=0
    # With --spin the idle-class busy loop fills CPU 0: not interference.
    [ -z "$SPIN_PID0" ] || mine=$((mine + $(cpu_ticks "$SPIN_PID0") - sp0))
    record "$r" "$name" cpu0_other_pct "$(calc "100 * ($c1 - $c0 - $mine) / $wall_ticks" 1)"
    record "$r" "$name" cpu0_steal_pct "$(calc "100 * ($s1 - $s0) / $wall_ticks" 1)"
    if has_process "$name"; then
        record "$r" "$name" cpu_us "$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $req")"
        # Below ~95% the proxy was not the bottleneck (wrk and the backend
        # share CPU 1): it waited for work, so epoll_wait batched less.
        record "$r" "$name" cpu_util_pct "$(calc "100 * ($t1 - $t0) / $wall_ticks" 1)"
        if [ "${SYS_KIND[$name]}" = proxy ]; then # the floor has no pool: 1:1 by design
            record "$r" "$name" reuse_pct "$(calc "100 * (1 - $accepts / ($be_req > 0 ? $be_req : 1))" 4)"
        fi
    fi

    # (3) latency: one connection, closed loop (unloaded)…
    run_h2load "$r" "$name" c1 "$D_C1" -c1
    # …and 16 connections at a fixed offered rate (open loop).
    run_h2load "$r" "$name" rate "$D_RATE" -c"$RATE_CONNS" --rps="$RPS_PER_CONN"

    log "  round $r $(printf '%-11s' "$name") $(printf '%6s req/s' "$rps")" \
        "$(has_process "$name" && echo "$(calc "($t1 - $t0) * 1000000 / $CLK_TCK / $req" 1) µs CPU/req")"
}

# (7) issue 12, suspension cost: SUSPEND_N requests held at once in a
# fault delay on a gateway of its own (conf/portico-suspend.yaml.in,
# SUSPEND_DELAY on /slow), opened by lib/suspend_conns.py from SUSPEND_N
# connections. RSS (VmRSS) is read before the connections, with them open
# and idle, and at the peak (every request read and waiting); kernel TCP
# memory from /proc/net/sockstat beside it. Meanwhile h2load -c1 probes
# the plain route (/tiny), once before the suspension and once during it.
# Everything is bounded: the helper gives up 60 s after the send.
sockstat_tcp_pages() {
    awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat
}
suspend_wait() { # file pattern seconds
    local i
    for i in $(seq $(($3 * 10))); do
        grep -q "$2\|^failed" "$1" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "$2" "$1" || die "suspension helper: no '$2' after $3 s: $(cat "$1")"
}
suspend_probe() { # prefix: h2load -c1 on /tiny; records SUSP_<prefix>_p50/p99
    local base=$RAW/suspend-$1 kv k v
    taskset -c $LOAD_CPU h2load --h1 -t1 -c1 -D "$D_PROBE" --log-file="$TMP/h2.log" \
        "http://127.0.0.1:$SUSPEND_PORT/tiny" >"$base.h2load.txt" 2>&1 ||
        die "h2load failed against the suspension gateway: $(tail -5 "$base.h2load.txt")"
    kv=$($PY "$LIB/h2lat.py" "$TMP/h2.log" "$SKIP_S" "$base.grid") || die "no latency samples"
    for k in $kv; do
        v=${k#*=}
        k=${k%%=*}
        case $k in p50 | p90 | p99 | p999 | failed) record 0 suspend "${1}_$k" "$v" ;; esac
    done
    rm -f "$TMP/h2.log"
}
measure_suspend() {
    local cfg=$TMP/portico-suspend.yaml out=$RAW/suspend-helper.txt pid helper
    $PY "$LIB/fill.py" "$CONF/portico-suspend.yaml.in" "$cfg" PORT="$SUSPEND_PORT" \
        BACKEND_PORT="$BACKEND_PORT" DELAY="$SUSPEND_DELAY"
    require_loopback_only "$cfg"
    "$PORTICO_BIN" validate "$cfg" >"$TMP/suspend.validate" 2>&1 ||
        die "portico rejects the suspension config: $(cat "$TMP/suspend.validate")"
    require_port_free "$SUSPEND_PORT"
    spawn $PROXY_CPU "$TMP/portico-suspend.log" "$PORTICO_BIN" -c "$cfg"
    pid=$LAST_PID
    wait_ready portico-suspend "$pid" "$SUSPEND_PORT" "$TMP/portico-suspend.log"
    run_wrk "$SUSPEND_PORT" 1 "$TMP/warmup-suspend.txt" # pools and buffers as in steady state
    suspend_probe base
    sleep 0.5
    local rss0 rss_open rss_peak rss_after tcp0 tcp_open tcp_peak be0 be_peak be_after v
    rss0=$(rss_kb "$pid")
    tcp0=$(sockstat_tcp_pages)
    be0=$(backend_requests)
    spawn $LOAD_CPU "$out" $PY "$LIB/suspend_conns.py" "$SUSPEND_PORT" "$SUSPEND_N" /slow 60
    helper=$LAST_PID
    suspend_wait "$out" '^open' 60
    sleep 0.5
    rss_open=$(rss_kb "$pid")
    tcp_open=$(sockstat_tcp_pages)
    local t_send
    t_send=$(now_us)
    kill -USR1 "$helper"
    suspend_wait "$out" '^sent' 30
    sleep 1 # the gateway reads the last requests and arms their timers
    rss_peak=$(rss_kb "$pid")
    tcp_peak=$(sockstat_tcp_pages)
    be_peak=$(backend_requests)
    suspend_probe during
    local be_probe=$(($(backend_requests) - be_peak)) # the probe's own requests
    v=$(rss_kb "$pid")
    [ "$v" -gt "$rss_peak" ] && rss_peak=$v
    # The probe must have finished inside the delay, or "during" is not.
    local probe_end_ms=$((($(now_us) - t_send) / 1000))
    suspend_wait "$out" '^done' 75
    reap "$helper"
    sleep 0.5
    rss_after=$(rss_kb "$pid")
    be_after=$(backend_requests)
    local ok fail first last
    read -r ok fail first last < <(sed -n 's/^done ok=\([0-9]*\) fail=\([0-9]*\) first_ms=\([-0-9]*\) last_ms=\([-0-9]*\)/\1 \2 \3 \4/p' "$out")
    record 0 suspend n "$SUSPEND_N"
    record 0 suspend delay_ms "$(( ${SUSPEND_DELAY%s} * 1000 ))"
    record 0 suspend rss_before_kb "$rss0"
    record 0 suspend rss_open_kb "$rss_open"
    record 0 suspend rss_peak_kb "$rss_peak"
    record 0 suspend rss_after_kb "$rss_after"
    record 0 suspend tcp_mem_pages_before "$tcp0"
    record 0 suspend tcp_mem_pages_open "$tcp_open"
    record 0 suspend tcp_mem_pages_peak "$tcp_peak"
    record 0 suspend upstream_requests_at_peak "$((be_peak - be0))"
    record 0 suspend upstream_requests_after "$((be_after - be0 - be_probe))"
    record 0 suspend answered_200 "${ok:-0}"
    record 0 suspend failed "${fail:-0}"
    # Non-200 answers and errors by kind ("503:12 ConnectionResetError:3"),
    # for the log and the report's note.
    sed -n 's/^outcomes //p' "$out" >"$RAW/suspend-outcomes.txt"
    record 0 suspend first_answer_ms "${first:--1}"
    record 0 suspend last_answer_ms "${last:--1}"
    record 0 suspend probe_end_ms "$probe_end_ms"
    record 0 suspend bytes_per_suspended "$(calc "($rss_peak - $rss0) * 1024 / $SUSPEND_N" 0)"
    record 0 suspend bytes_per_open_conn "$(calc "($rss_open - $rss0) * 1024 / $SUSPEND_N" 0)"
    record 0 suspend bytes_per_request_beyond_conn "$(calc "($rss_peak - $rss_open) * 1024 / $SUSPEND_N" 0)"
    # What holds it: the sizes of the structures, from the binary's debug
    # information when gdb is there.
    if command -v gdb >/dev/null; then
        local ty sz
        for ty in "struct pt_conn" "struct h1_txn" "struct pt_buf"; do
            sz=$(gdb -batch -ex "print sizeof($ty)" "$PORTICO_BIN" 2>/dev/null | awk '/^\$1 =/ { print $3 }')
            [ -z "$sz" ] || record 0 suspend "sizeof_${ty#struct }" "$sz"
        done
    fi
    log "  $SUSPEND_N suspended: RSS $rss0 kB → $rss_open kB (connections open) → $rss_peak kB" \
        "(all suspended) → $rss_after kB after; $(calc "($rss_peak - $rss0) * 1024 / $SUSPEND_N" 0) B each;" \
        "answered ${ok:-0} (first ${first}ms, last ${last}ms), upstream saw $((be_peak - be0)) at the peak"
    kill -TERM "$pid"
    reap "$pid"
}

# (4) syscalls per request: strace -c -f attached to every thread of the
# process in the middle of a wrk run, so the 32 client connections and the
# upstream pool are already open: what it counts is the steady state, not
# accepts and connects. The window is exact: the proxy is stopped (SIGSTOP)
# while strace attaches and detaches and while the backend's request count
# is read at both ends, so the requests counted are the ones the proxy
# forwarded while strace watched it. strace slows the proxy a lot, so only
# the counts are used, never the speed.
measure_syscalls() { # name
    local name=$1 pid=${SYS_PID[$1]} port=${SYS_PORT[$1]} r0 r1
    local out=$RAW/strace-$name.txt
    # Long enough to outlast the attach and the window; stopped after it.
    spawn $LOAD_CPU "$RAW/strace-$name-wrk.txt" wrk -t1 -c32 -d"$((D_STRACE + 10))s" \
        "http://127.0.0.1:$port/tiny"
    local load=$LAST_PID
    sleep 0.5
    kill -STOP "$pid"
    spawn $LOAD_CPU "$TMP/strace-$name.log" strace -c -f -o "$out" -p "$pid"
    local tracer=$LAST_PID
    # Attached when every thread of the process shows strace as its tracer.
    local ok=0
    for _ in $(seq 50); do
        ok=1
        for t in /proc/"$pid"/task/*; do
            grep -q "^TracerPid:[[:space:]]*$tracer\$" "$t/status" 2>/dev/null || ok=0
        done
        [ $ok = 1 ] && break
        sleep 0.1
    done
    [ $ok = 1 ] || { kill -CONT "$pid"; die "strace could not attach to $name (pid $pid): $(cat "$TMP/strace-$name.log")"; }
    sleep 0.05 # requests the proxy sent before it stopped reach the backend
    r0=$(backend_requests || true) # checked below, after the proxy runs again
    kill -CONT "$pid"
    sleep "$D_STRACE"
    kill -STOP "$pid"
    sleep 0.05
    r1=$(backend_requests || true)
    kill -INT "$tracer" 2>/dev/null || true
    reap "$tracer"
    kill -CONT "$pid"
    kill -INT "$load" 2>/dev/null || true
    reap "$load"
    [ -s "$out" ] || die "strace wrote nothing for $name"
    [ -n "$r0" ] && [ -n "$r1" ] && [ "$r1" -gt "$r0" ] ||
        die "no requests reached the backend while strace was attached to $name"
    record 0 "$name" strace_requests "$((r1 - r0))"
    log "  $name: $(awk '$NF == "total" { print $4 }' "$out") syscalls for $((r1 - r0)) requests"
}

# (4b) the same counts at full speed: perf stat counting syscall
# tracepoints (no stop per syscall, so the proxy runs nearly unslowed and
# epoll_wait batches as it really does). Counts every syscall (total),
# the failed ones, and each syscall strace saw any proxy make.
measure_syscalls_perf() { # name syscall-names...
    local name=$1 pid=${SYS_PID[$1]} port=${SYS_PORT[$1]} sc
    shift
    local events=raw_syscalls:sys_enter
    for sc in "$@"; do
        [ -d "/sys/kernel/tracing/events/syscalls/sys_enter_$sc" ] &&
            events+=",syscalls:sys_enter_$sc"
    done
    local out=$RAW/perf-$name.txt
    # The filter applies to the event just before it: failed syscalls.
    spawn $LOAD_CPU "$TMP/perf-$name.log" perf stat -x '\t' -o "$out" -p "$pid" \
        -e "$events" -e raw_syscalls:sys_exit --filter 'ret < 0'
    local counter=$LAST_PID
    sleep 0.3 # perf attaches in a few ms; no request is lost either way
    kill -0 "$counter" 2>/dev/null || die "perf stat failed: $(cat "$TMP/perf-$name.log")"
    backend_reset
    run_wrk "$port" "$D_PERF" "$RAW/perf-$name-wrk.txt"
    kill -INT "$counter"
    reap "$counter"
    record 0 "$name" perf_requests "$WRK_REQ"
    log "  $name: $(awk -F'\t' '$3 == "raw_syscalls:sys_enter" { print $1 }' "$out") syscalls" \
        "for $WRK_REQ requests"
}

# perf is optional: without it (or without tracepoint access) the report
# shows the strace counts only.
perf_usable() {
    command -v perf >/dev/null && [ -d /sys/kernel/tracing/events/raw_syscalls ] &&
        perf stat -e raw_syscalls:sys_enter -x , -- true >/dev/null 2>&1
}

# ------------------------------------------------------------------- main

preflight() {
    local t missing=()
    for t in wrk h2load strace gnuplot haproxy nginx taskset ss curl awk; do
        command -v "$t" >/dev/null || missing+=("$t")
    done
    [ ${#missing[@]} = 0 ] || die "missing tools: ${missing[*]} (run: PORTICO_BENCH_DEPS=1 scripts/deps.sh)"
    [ -x "$PY" ] || die "$PY not found"
    [ -x "$PORTICO_BIN" ] || die "build first: make all (no $PORTICO_BIN)"
    [ -x "$BACKEND_BIN" ] || die "build first: make all (no $BACKEND_BIN)"
    if [ "$(nproc)" -lt 2 ]; then
        log "WARNING: only one CPU: proxy and load generator share it; numbers are not comparable"
        LOAD_CPU=0
    fi
    # 5,000 idle connections need more than the usual 1,024 descriptors,
    # and HAProxy wants 2 per connection of its maxconn (8,000) plus spare;
    # the limit is inherited by everything started below.
    local want=16500 hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
        die "the open-files hard limit is $hard; the idle-connection test needs $want"
    fi
    ulimit -n "$want"
    CLK_TCK=$(getconf CLK_TCK)
}

machine_info() {
    local f=$RAW/meta.tsv
    {
        printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
        printf 'nproc\t%s\n' "$(nproc)"
        printf 'cpu\t%s\n' "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
        printf 'kernel\t%s\n' "$(uname -sr)"
        printf 'portico\t%s\n' "$("$PORTICO_BIN" version 2>&1 | head -1)"
        printf 'git\t%s\n' "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown)"
        printf 'haproxy\t%s\n' "$(haproxy -v | head -1 | awk '{ print $3 }')"
        printf 'nginx\t%s\n' "$(nginx -v 2>&1 | sed 's|.*/||')"
        printf 'wrk\t%s\n' "$(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
        printf 'h2load\t%s\n' "$(h2load --version | awk '{ print $2 }')"
        printf 'mode\t%s\n' "$([ "$QUICK" = 1 ] && echo quick || echo full)"
        printf 'rounds\t%s\n' "$ROUNDS"
        printf 'durations\twrk -c32 %ss, h2load -c1 %ss, h2load --rps %ss, strace %ss, perf %ss\n' \
            "$D_LOAD" "$D_C1" "$D_RATE" "$D_STRACE" "$D_PERF"
        printf 'loadavg\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
        printf 'spin\t%s\n' "$([ "$SPIN" = 1 ] && echo on || echo off)"
        printf 'idle_conns\t%s\n' "$IDLE_CONNS"
        printf 'rate_conns\t%s\n' "$RATE_CONNS"
        printf 'pinning\tproxy on CPU %s; wrk, h2load, backend, helpers on CPU %s\n' \
            "$PROXY_CPU" "$LOAD_CPU"
    } >"$f"
    local n
    for n in "${SYS_LIST[@]}"; do
        printf '%s\t%s\t%s\t%s\n' "$n" "${SYS_SCENARIO[$n]}" "${SYS_KIND[$n]}" "${SYS_LABEL[$n]}"
    done >"$RAW/systems.tsv"
}

main() {
    local t_begin=$SECONDS
    preflight
    TMP=$(mktemp -d /tmp/portico-bench.XXXXXX)
    local stamp
    stamp=$(date +%Y%m%d-%H%M%S)
    RAW=$RESULTS/raw/$stamp
    mkdir -p "$RAW"
    : >"$RAW/results.tsv"

    local s
    for s in ${SCENARIOS//,/ }; do
        declare -F "scenario_$s" >/dev/null || die "unknown scenario '$s' (have: plain, gateway, before, ext_auth, suspend, balance, auth, ratelimit, tracing, observability, tls, edge19)"
        "scenario_$s"
    done
    machine_info
    local n
    for n in "${SYS_LIST[@]}"; do
        [ "${SYS_KIND[$n]}" = direct ] || require_port_free "${SYS_PORT[$n]}"
    done

    log "starting backend and ${SYS_LIST[*]} (raw output: ${RAW#"$ROOT"/})"
    start_backend
    if [ "$SPIN" = 1 ]; then
        # SCHED_IDLE: they run only when nothing else wants the CPU, so
        # they take no time from the proxy, wrk or the backend, but the
        # vCPUs never halt. Stopped until a wrk -c32 run (spin on/off).
        spawn $PROXY_CPU /dev/null chrt -i 0 sh -c 'while :; do :; done'
        SPIN_PID0=$LAST_PID
        SPIN_PIDS+=("$LAST_PID")
        spawn $LOAD_CPU /dev/null chrt -i 0 sh -c 'while :; do :; done'
        SPIN_PIDS+=("$LAST_PID")
        spin off
    fi
    for n in "${SYS_LIST[@]}"; do
        "${SYS_START[$n]}"
    done

    if [ -n "$ONLY" ]; then
        log "BENCH_ONLY=$ONLY: no idle-memory phase"
    else
        log "memory: RSS at start and with $IDLE_CONNS idle keep-alive connections"
        for n in "${SYS_LIST[@]}"; do
            if [ "${SYS_KIND[$n]}" = proxy ]; then measure_memory "$n"; fi
        done
    fi

    # BENCH_ONLY=suspend, balance, auth, ratelimit, tracing, observability, tls or edge19 registers no system: no rounds.
    if [ ${#SYS_LIST[@]} -gt 0 ]; then
        log "warm-up and calibration"
        for n in "${SYS_LIST[@]}"; do
            run_wrk "${SYS_PORT[$n]}" 1 "$TMP/warmup-$n.txt"
        done
        # Both scenarios register HAProxy, the reference for the fixed rate.
        # Median of three short runs: one lucky or unlucky moment on a shared
        # VM must not set the rate for the whole benchmark.
        local caps=() i rps
        for i in 1 2 3; do
            run_wrk "${SYS_PORT[haproxy]}" 2 "$RAW/calibrate-haproxy-$i.txt"
            caps+=("$WRK_RPS")
        done
        rps=$(printf '%s\n' "${caps[@]}" | sort -n | sed -n 2p)
        # Open-loop rate: half of HAProxy's capacity, split over the connections.
        RPS_PER_CONN=$((rps / 2 / RATE_CONNS))
        [ "$RPS_PER_CONN" -gt 0 ] || die "calibration failed (capacity $rps req/s)"
        record 0 calibration haproxy_capacity_rps "$rps"
        record 0 calibration fixed_rate_rps $((RPS_PER_CONN * RATE_CONNS))
        log "  HAProxy capacity $rps req/s → fixed rate $((RPS_PER_CONN * RATE_CONNS)) req/s" \
            "($RATE_CONNS connections × $RPS_PER_CONN)"

        local r
        for r in $(seq "$ROUNDS"); do
            log "round $r/$ROUNDS"
            for n in "${SYS_LIST[@]}"; do
                measure_run "$r" "$n"
            done
        done

        log "syscalls per request (strace -c -f, ${D_STRACE}s runs)"
        for n in "${SYS_LIST[@]}"; do
            if has_process "$n"; then measure_syscalls "$n"; fi
        done
        if perf_usable; then
            log "syscalls per request at full speed (perf stat, ${D_PERF}s runs)"
            # Every syscall name any proxy made under strace.
            local names
            names=$(awk 'NF >= 5 && $1 ~ /^[0-9]/ && $NF != "total" { print $NF }' \
                "$RAW"/strace-*.txt | sort -u | tr '\n' ' ')
            for n in "${SYS_LIST[@]}"; do
                # shellcheck disable=SC2086 # names is a word list
                if has_process "$n"; then measure_syscalls_perf "$n" $names; fi
            done
        else
            log "perf stat with syscall tracepoints unavailable: strace counts only"
        fi
    fi

    if [ "$SUSPEND" = 1 ]; then
        log "suspension: $SUSPEND_N requests held in a $SUSPEND_DELAY fault delay"
        measure_suspend
    fi
    [ "$BALANCE" = 0 ] || measure_balance
    [ "$IDENTITY" = 0 ] || measure_auth
    [ "$RATELIMIT" = 0 ] || measure_ratelimit
    [ "$TRACING" = 0 ] || measure_tracing
    [ "$OBSERVABILITY" = 0 ] || measure_observability
    [ "$TLS_SECTION" = 0 ] || measure_tls
    [ "$EDGE19" = 0 ] || measure_edge19

    record 0 run elapsed_s $((SECONDS - t_begin))
    log "report"
    # A BENCH_ONLY run writes latest-<section>.md and leaves latest.md,
    # the full run's report, alone.
    $PY "$LIB/report.py" "$RAW" "$RESULTS" "${ONLY:+latest-$ONLY}" || die "report.py failed"
    ln -sfn "$stamp" "$RESULTS/raw/last"
    # Keep the raw output of the last 5 runs only.
    local runs=("$RESULTS"/raw/20*/) # stamps sort by date
    [ ${#runs[@]} -le 5 ] || rm -rf "${runs[@]:0:${#runs[@]}-5}"
    local written="latest.md, bench/results/latency.png"
    [ -z "$ONLY" ] || written="latest-$ONLY.md"
    log "done in $((SECONDS - t_begin)) s: bench/results/$written"
}

main
