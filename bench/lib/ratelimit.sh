# shellcheck shell=bash
# bench/lib/ratelimit.sh — issue 16's section of bench/run.sh (sourced by
# it): what a rate limit costs per request.
#
#   local row    portico's plain route against the same route with a local
#                `rate_limit` that never trips (key ip, 100,000,000/s), CPU
#                per request at wrk -c32, beside HAProxy's plain frontend
#                and a frontend tracking src in a stick table
#                (http_req_rate(1s)) with a deny that never trips.
#   cluster row  the same limit with `scope: cluster` on a loopback
#                redis-server started here: added p50/p99 latency against
#                the plain route at a fixed open-loop rate of half the plain
#                route's capacity, and Redis round trips per decision (the
#                server's EVALSHA + EVAL calls ÷ requests answered).
#
# Not a row of run.sh's rounds: it has its own gateways, rounds and load,
# and writes its numbers to RAW/ratelimit.tsv (round, run, metric, value)
# and RAW/ratelimit-runs.tsv (run, system, label, ran|skipped);
# bench/lib/report_ratelimit.py turns them into the report's "Issue 16"
# section. See bench/README.md, "Issue 16".
#
# Uses cpu_ns and cpu_idle_ticks from lib/balance.sh and gen_auth.py's
# config mode (IF/END blocks) from lib/auth.sh's section (sourced before
# it). Its variables are RL_* and its functions rl_*.
#
# Ports: BASE+25 the portico gateway (its routes told apart by Host),
# BASE+26 and BASE+27 HAProxy's plain and limited frontends (one process),
# BASE+28 redis-server. Like everything else: loopback only, proxies on
# CPU 0; load, the backend and redis-server on CPU 1; every process
# recorded in STARTED and killed on exit.

RL_GW_PORT=$((PORT_BASE + 25))
RL_HA_PORT=$((PORT_BASE + 26))
RL_HA_LIM_PORT=$((PORT_BASE + 27))
RL_REDIS_PORT=$((PORT_BASE + 28))
RL_ROUNDS=8       # CPU rounds (A B C D, then D C B A): short paired runs cancel slow drift
RL_D=2            # seconds per wrk -t1 -c32 run
RL_LAT_ROUNDS=5   # fixed-rate rounds (plain route and cluster route)
RL_LAT_D=4        # seconds per h2load run
RL_CONNS=16       # h2load connections at the fixed rate
RL_CAP_D=2        # seconds per capacity run (three, median)
# redis-server's CPU: with the load (CPU 1, the default, like every
# backend) or, to see what sharing CPU 1 with h2load and the backend costs
# the cluster row, PORTICO_BENCH_REDIS_CPU=0 (beside the proxy).
RL_REDIS_CPU=${PORTICO_BENCH_REDIS_CPU:-$LOAD_CPU}

# name, system, Host (or - for HAProxy's frontends, told apart by port) —
# in round order.
RL_RUNS=(
    "p-plain portico plain.bench"
    "p-local portico local.bench"
    "h-plain haproxy -"
    "h-limit haproxy-limited -"
)
declare -A RL_PID RL_PORT RL_SKIP # RL_SKIP[feature]: why this build refuses it
RL_RUN=()                          # CPU runs whose system and route are up
RL_FEATURES=""                     # portico features this build accepts (local, cluster)
RL_REDIS_PID=""

rl_quick() { RL_ROUNDS=2 RL_D=1 RL_LAT_ROUNDS=2 RL_LAT_D=2 RL_CAP_D=1; }

rl_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/ratelimit.tsv"; }
rl_run_row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/ratelimit-runs.tsv"; }

rl_label() { # name
    local ha
    ha="HAProxy $(haproxy_version)"
    case $1 in
    p-plain) echo "portico plain route" ;;
    p-local) echo "portico rate_limit, scope local (key ip, never trips)" ;;
    h-plain) echo "$ha plain frontend" ;;
    h-limit) echo "$ha stick table http_req_rate(1s) on src + deny (never trips)" ;;
    lat-plain) echo "portico plain route" ;;
    lat-clstr) echo "portico rate_limit, scope cluster (loopback Redis)" ;;
    esac
}

# The loopback redis-server of the cluster row: no persistence, CPU 1.
rl_start_redis() {
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || return 1
    require_port_free "$RL_REDIS_PORT"
    spawn "$RL_REDIS_CPU" "$TMP/redis.log" redis-server --port "$RL_REDIS_PORT" --bind 127.0.0.1 \
        --save '' --appendonly no --dir "$TMP"
    RL_REDIS_PID=$LAST_PID
    for _ in $(seq 100); do
        kill -0 "$RL_REDIS_PID" 2>/dev/null || die "redis-server exited: $(tail -5 "$TMP/redis.log")"
        [ "$(redis-cli -p "$RL_REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
        sleep 0.1
    done
    [ "$(redis-cli -p "$RL_REDIS_PORT" ping 2>/dev/null)" = PONG ] ||
        die "redis-server did not answer PING on 127.0.0.1:$RL_REDIS_PORT: $(tail -5 "$TMP/redis.log")"
    require_sole_listener "$RL_REDIS_PORT" "$RL_REDIS_PID"
}

# Scripts run on the server so far: EVALSHA + EVAL calls (INFO commandstats).
rl_redis_evals() {
    redis-cli -p "$RL_REDIS_PORT" info commandstats |
        awk -F'[:=,]' '$1 == "cmdstat_evalsha" || $1 == "cmdstat_eval" { n += $3 } END { print n + 0 }'
}

# Writes the portico config with FEATURES (comma-separated) to OUT and
# validates it. Returns 1 with the refusal in RL_MSG when this build does
# not support a key yet; dies on any other refusal.
rl_portico_config() { # out features
    local cfg=$1 msg
    $PY "$LIB/gen_auth.py" config "$CONF/portico-ratelimit.yaml.in" "$cfg" "$2" PORT="$RL_GW_PORT" \
        BACKEND_PORT="$BACKEND_PORT" REDIS_PORT="$RL_REDIS_PORT" || die "gen_auth.py config failed"
    require_loopback_only "$cfg"
    if ! msg=$("$PORTICO_BIN" validate "$cfg" 2>&1); then
        if [[ $msg == *"not supported by this build yet"* ]]; then
            msg=$(printf '%s' "$msg" | grep -m1 'not supported by this build yet')
            RL_MSG=${msg#"$TMP"/}
            return 1
        fi
        die "portico rejects the ratelimit gateway config ($2): $msg"
    fi
}

# GET /tiny; prints the status, the RateLimit-Limit field (or -) and the
# body, on one line.
rl_probe() { # port host
    local port=$1 host=$2 hdr body
    hdr=$TMP/rl-probe.hdr
    body=$(curl -s --max-time 2 -D "$hdr" -H "Host: $host" "http://127.0.0.1:$port/tiny" || true)
    printf '%s %s %s\n' "$(awk 'NR == 1 { print $2 }' "$hdr" 2>/dev/null || echo -)" \
        "$(awk -F': *' 'tolower($1) == "ratelimit-limit" { sub(/\r$/, "", $2); print $2 }' "$hdr" 2>/dev/null | grep . || echo -)" \
        "$body"
}

# The routes are up and do what their rows claim: the plain route has no
# RateLimit-* fields, the limited routes have them (the filter ran and
# admitted), and a request on the cluster route is exactly one script run
# on the server.
rl_check_routes() {
    local got e0 e1
    got=$(rl_probe "$RL_GW_PORT" plain.bench)
    [ "$got" = '200 - {"ok":true}' ] || die "portico plain.bench: '$got' (want 200, no RateLimit-Limit)"
    if [[ ,$RL_FEATURES, == *,local,* ]]; then
        got=$(rl_probe "$RL_GW_PORT" local.bench)
        [[ $got == '200 '[0-9]*' {"ok":true}' ]] ||
            die "portico local.bench: '$got' (want 200 with a RateLimit-Limit field)"
    fi
    if [[ ,$RL_FEATURES, == *,cluster,* ]]; then
        got=$(rl_probe "$RL_GW_PORT" clstr.bench) # the worker's connection and the script load
        e0=$(rl_redis_evals)
        got=$(rl_probe "$RL_GW_PORT" clstr.bench)
        e1=$(rl_redis_evals)
        [[ $got == '200 '[0-9]*' {"ok":true}' ]] ||
            die "portico clstr.bench: '$got' (want 200 with a RateLimit-Limit field)"
        [ $((e1 - e0)) = 1 ] || die "one request on clstr.bench ran $((e1 - e0)) scripts on Redis, not 1"
    fi
}

# The gateway with every feature this build accepts: each one is first
# tried alone beside the plain route, so one refusal does not hide the
# other row.
rl_start_portico() {
    local cfg=$TMP/ratelimit-portico.yaml f feats=()
    for f in local cluster; do
        if [ "$f" = cluster ] && [ -z "$RL_REDIS_PID" ]; then
            RL_SKIP[$f]="no redis-server on this machine (PORTICO_BENCH_DEPS=1 scripts/deps.sh)"
        elif rl_portico_config "$TMP/ratelimit-probe-$f.yaml" "$f"; then
            feats+=("$f")
            continue
        else
            RL_SKIP[$f]=$RL_MSG
        fi
        printf '%s\n' "${RL_SKIP[$f]}" >"$RAW/skip-ratelimit-$f.txt"
        log "  SKIPPED portico $f rate limit rows: ${RL_SKIP[$f]}"
    done
    RL_FEATURES=$(
        IFS=,
        echo "${feats[*]}"
    )
    rl_portico_config "$cfg" "$RL_FEATURES" ||
        die "portico refuses the ratelimit gateway with $RL_FEATURES together: $RL_MSG"
    require_port_free "$RL_GW_PORT"
    spawn $PROXY_CPU "$TMP/ratelimit-portico.log" "$PORTICO_BIN" -c "$cfg"
    RL_PID[portico]=$LAST_PID
    RL_PORT[portico]=$RL_GW_PORT
    local got=""
    for _ in $(seq 100); do
        kill -0 "$LAST_PID" 2>/dev/null || die "the ratelimit gateway exited: $(tail -20 "$TMP/ratelimit-portico.log")"
        got=$(rl_probe "$RL_GW_PORT" plain.bench)
        [ "$got" = '200 - {"ok":true}' ] && break
        sleep 0.1
    done
    require_sole_listener "$RL_GW_PORT" "$LAST_PID"
    rl_check_routes
}

# HAProxy's entry for 127.0.0.1 in the stick table: its http_req_rate, or
# "none" (through the stats socket; python3 because socat is not a dependency).
rl_haproxy_rate() {
    $PY - "$TMP/haproxy-rl.sock" <<'EOF'
import re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show table rl_src\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
m = re.search(rb"key=127\.0\.0\.1 .*http_req_rate\(1000\)=(\d+)", out)
print(m.group(1).decode() if m else "none")
EOF
}

rl_start_haproxy() {
    local cfg=$TMP/ratelimit-haproxy.cfg got r
    $PY "$LIB/fill.py" "$CONF/haproxy-ratelimit.cfg.in" "$cfg" PORT="$RL_HA_PORT" \
        LIMITED_PORT="$RL_HA_LIM_PORT" BACKEND_PORT="$BACKEND_PORT" DIR="$TMP"
    require_loopback_only "$cfg"
    haproxy -c -q -f "$cfg" >/dev/null 2>&1 || die "haproxy rejects $cfg: $(haproxy -c -f "$cfg" 2>&1)"
    require_port_free "$RL_HA_PORT"
    require_port_free "$RL_HA_LIM_PORT"
    spawn $PROXY_CPU "$TMP/ratelimit-haproxy.log" haproxy -db -f "$cfg"
    RL_PID[haproxy]=$LAST_PID
    RL_PID[haproxy-limited]=$LAST_PID
    RL_PORT[haproxy]=$RL_HA_PORT
    RL_PORT[haproxy-limited]=$RL_HA_LIM_PORT
    wait_ready "HAProxy (ratelimit, plain)" "$LAST_PID" "$RL_HA_PORT" "$TMP/ratelimit-haproxy.log"
    wait_ready "HAProxy (ratelimit, limited)" "$LAST_PID" "$RL_HA_LIM_PORT" "$TMP/ratelimit-haproxy.log"
    # The limited frontend really tracks: its request shows in the table.
    r=$(rl_haproxy_rate)
    [[ $r =~ ^[1-9][0-9]*$ ]] || die "HAProxy's stick table has no rate for 127.0.0.1 after a request ('$r')"
    got=$(rl_probe "$RL_HA_PORT" plain.bench)
    [ "$got" = '200 - {"ok":true}' ] || die "HAProxy plain frontend: '$got'"
}

# One CPU run: wrk -t1 -c32 on the run's route for RL_D seconds, the
# proxy's CPU time around it (schedstat, ns) ÷ the responses wrk counted.
rl_cpu_run() { # round name
    local r=$1 name=$2 sys host
    read -r _ sys host < <(printf '%s\n' "${RL_RUNS[@]}" | awk -v n="$name" '$1 == n')
    local pid=${RL_PID[$sys]} port=${RL_PORT[$sys]} out=$RAW/rl-r$r-$name-wrk.txt c0 c1 w0 w1 i0 i1
    local d=$RL_D args=(-t1 -c32)
    [ "$r" != 0 ] || d=1 # warm-up
    [ "$host" = - ] || args+=(-H "Host: $host")
    kill -0 "$pid" 2>/dev/null || die "$sys (pid $pid) is gone"
    i0=$(cpu_idle_ticks $PROXY_CPU)
    c0=$(cpu_ns "$pid")
    w0=$(now_us)
    spin on # --spin: as in the rounds' wrk runs (README, "Two regimes")
    taskset -c $LOAD_CPU wrk "${args[@]}" -d"${d}s" "http://127.0.0.1:$port/tiny" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    spin off
    c1=$(cpu_ns "$pid")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$out")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from $name: $(cat "$out")"
    [ "$WRK_ERR" = 0 ] || die "$name: $WRK_ERR errors or non-2xx answers of $WRK_REQ (${out#"$ROOT"/}): a limit tripped?"
    local cpu
    cpu=$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)
    rl_record "$r" "$name" cpu_us "$cpu"
    rl_record "$r" "$name" rps "$WRK_RPS"
    rl_record "$r" "$name" responses "$WRK_REQ"
    rl_record "$r" "$name" cpu_util_pct "$(calc "100 * ($c1 - $c0) / 1000 / ($w1 - $w0)" 1)"
    [ -n "$SPIN_PID0" ] || rl_record "$r" "$name" cpu0_other_pct \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
    [ "$r" = 0 ] || log "  round $r $(printf '%-8s' "$name") $(calc "$cpu" 2) µs CPU/req, $WRK_RPS req/s"
}

# The plain route's capacity (median of three wrk -c32 runs): the fixed
# rate of the cluster row is half of it.
rl_capacity() {
    local caps=() i
    for i in 1 2 3; do
        taskset -c $LOAD_CPU wrk -t1 -c32 -d"${RL_CAP_D}s" -H "Host: plain.bench" \
            "http://127.0.0.1:$RL_GW_PORT/tiny" >"$RAW/rl-capacity-$i.txt" 2>&1 ||
            die "wrk failed: $(cat "$RAW/rl-capacity-$i.txt")"
        read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$RAW/rl-capacity-$i.txt")
        caps+=("$WRK_RPS")
    done
    RL_CAP=$(printf '%s\n' "${caps[@]}" | sort -n | sed -n 2p)
    RL_RATE_PER_CONN=$((RL_CAP / 2 / RL_CONNS))
    [ "$RL_RATE_PER_CONN" -gt 0 ] || die "ratelimit: capacity run failed ($RL_CAP req/s)"
    rl_record 0 calibration plain_capacity_rps "$RL_CAP"
    rl_record 0 calibration fixed_rate_rps $((RL_RATE_PER_CONN * RL_CONNS))
    log "  plain route capacity $RL_CAP req/s → fixed rate $((RL_RATE_PER_CONN * RL_CONNS)) req/s" \
        "($RL_CONNS connections × $RL_RATE_PER_CONN)"
}

# One fixed-rate run on HOST: latency percentiles (h2load's per-request
# log, lib/h2lat.py), the achieved rate, portico's and redis-server's CPU
# per request, and on the cluster route the scripts Redis ran per answer.
rl_lat_run() { # round name host
    local r=$1 name=$2 host=$3 pid=${RL_PID[portico]} base=$RAW/rl-r$1-$2 c0 c1 rc0 rc1 e0 e1 k v kv
    local d=$RL_LAT_D all=0 sent i0 i1 w0 w1
    [ "$r" != 0 ] || d=1
    kill -0 "$pid" 2>/dev/null || die "the ratelimit gateway (pid $pid) is gone"
    e0=$(rl_redis_evals)
    i0=$(cpu_idle_ticks $PROXY_CPU)
    w0=$(now_us)
    rc0=$(cpu_ns "$RL_REDIS_PID")
    c0=$(cpu_ns "$pid")
    taskset -c $LOAD_CPU h2load --h1 -t1 -c"$RL_CONNS" --rps="$RL_RATE_PER_CONN" -D "$d" \
        -H ":authority: $host" --log-file="$TMP/rl-h2.log" "http://127.0.0.1:$RL_GW_PORT/tiny" \
        >"$base.h2load.txt" 2>&1 || die "h2load failed against $name: $(tail -5 "$base.h2load.txt")"
    c1=$(cpu_ns "$pid")
    rc1=$(cpu_ns "$RL_REDIS_PID")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    e1=$(rl_redis_evals)
    kv=$($PY "$LIB/h2lat.py" "$TMP/rl-h2.log" "$SKIP_S" "$base.grid") ||
        die "no latency samples from h2load against $name"
    sent=$(wc -l <"$TMP/rl-h2.log") # every request, answered or not: each one was a decision
    rm -f "$TMP/rl-h2.log"
    for k in $kv; do
        v=${k#*=}
        k=${k%%=*}
        case $k in
        p50 | p90 | p99 | p999 | rate | failed) [ "$r" = 0 ] || rl_record "$r" "$name" "$k" "$v" ;;
        all) all=$v ;;
        esac
    done
    [ "$all" -gt 0 ] || die "h2load got no successful answer from $name"
    [ "$r" != 0 ] || return 0
    rl_record "$r" "$name" answered "$all"
    rl_record "$r" "$name" requests "$sent"
    # Other work on the proxy's CPU during the run (it disturbs tails first).
    rl_record "$r" "$name" cpu0_other_pct \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
    rl_record "$r" "$name" cpu_us "$(calc "($c1 - $c0) / 1000 / $all" 3)"
    rl_record "$r" "$name" redis_cpu_us "$(calc "($rc1 - $rc0) / 1000 / $all" 3)"
    rl_record "$r" "$name" redis_evals "$((e1 - e0))"
    log "  round $r $(printf '%-9s' "$name") p50 $(awk -F'\t' -v r="$r" -v n="$name" \
        '$1 == r && $2 == n && $3 == "p50" { print $4 }' "$RAW/ratelimit.tsv") µs, p99 $(awk -F'\t' \
        -v r="$r" -v n="$name" '$1 == r && $2 == n && $3 == "p99" { print $4 }' "$RAW/ratelimit.tsv") µs," \
        "$((e1 - e0)) scripts on Redis for $sent requests ($all answered 2xx)"
}

measure_ratelimit() {
    local t0=$SECONDS spec name sys r i n
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the ratelimit section's CPU clock"
    : >"$RAW/ratelimit.tsv"
    : >"$RAW/ratelimit-runs.tsv"
    printf 'ratelimit\trounds=%s run_s=%s lat_rounds=%s lat_s=%s conns=%s cap_s=%s redis_cpu=%s\n' \
        "$RL_ROUNDS" "$RL_D" "$RL_LAT_ROUNDS" "$RL_LAT_D" "$RL_CONNS" "$RL_CAP_D" "$RL_REDIS_CPU" >>"$RAW/meta.tsv"
    log "issue 16, rate limits: a local limit beside HAProxy's stick table; a cluster limit on" \
        "a loopback redis-server (127.0.0.1:$RL_REDIS_PORT)"
    rl_start_redis || log "  no redis-server: the cluster row is skipped"
    rl_start_portico
    rl_start_haproxy
    for spec in "${RL_RUNS[@]}"; do
        # shellcheck disable=SC2086 # spec is a word list
        set -- $spec
        name=$1 sys=$2
        if [ "$name" = p-local ] && [ -n "${RL_SKIP[local]:-}" ]; then
            rl_run_row "$name" "$sys" "$(rl_label "$name")" skipped
            cp "$RAW/skip-ratelimit-local.txt" "$RAW/skip-$name.txt"
            continue
        fi
        rl_run_row "$name" "$sys" "$(rl_label "$name")" ran
        RL_RUN+=("$name")
    done
    log "ratelimit: warm-up (pools open, cells and stick table in steady state)"
    for name in "${RL_RUN[@]}"; do rl_cpu_run 0 "$name"; done
    n=${#RL_RUN[@]}
    for r in $(seq "$RL_ROUNDS"); do
        log "ratelimit, CPU round $r/$RL_ROUNDS"
        # A B C D, then D C B A: a drift over the section favours no run.
        for i in $(seq 0 $((n - 1))); do
            [ $((r % 2)) = 1 ] || i=$((n - 1 - i))
            rl_cpu_run "$r" "${RL_RUN[$i]}"
        done
    done
    kill -TERM "${RL_PID[haproxy]}" # its CPU stays out of the latency rows
    reap "${RL_PID[haproxy]}"
    if [[ ,$RL_FEATURES, == *,cluster,* ]]; then
        rl_run_row lat-plain portico "$(rl_label lat-plain)" ran
        rl_run_row lat-clstr portico "$(rl_label lat-clstr)" ran
        log "ratelimit, cluster row: capacity of the plain route, then $RL_LAT_ROUNDS fixed-rate rounds"
        rl_capacity
        rl_lat_run 0 lat-plain plain.bench
        rl_lat_run 0 lat-clstr clstr.bench
        local first second
        for r in $(seq "$RL_LAT_ROUNDS"); do
            # Alternate which route goes first, so neither always follows the other.
            if [ $((r % 2)) = 1 ]; then first=plain second=clstr; else first=clstr second=plain; fi
            rl_lat_run "$r" "lat-$first" "$first.bench"
            rl_lat_run "$r" "lat-$second" "$second.bench"
        done
    else
        rl_run_row lat-clstr portico "$(rl_label lat-clstr)" skipped
        cp "$RAW/skip-ratelimit-cluster.txt" "$RAW/skip-lat-clstr.txt"
    fi
    kill -TERM "${RL_PID[portico]}"
    reap "${RL_PID[portico]}"
    if [ -n "$RL_REDIS_PID" ]; then
        kill -TERM "$RL_REDIS_PID"
        reap "$RL_REDIS_PID"
    fi
    rl_record 0 run ratelimit_elapsed_s $((SECONDS - t0))
}
