# shellcheck shell=bash
# bench/lib/balance.sh — issue 14's section of bench/run.sh (sourced by it):
# the slow-target row (where do balancers send requests when one of three
# targets is 20 ms slow, and what does choosing cost) and the breaker-cost
# row (what a closed circuit breaker and retries cost per request).
#
# Not a row of run.sh's rounds: it has its own backends, systems, rounds
# and load, and writes its numbers to RAW/balance.tsv (round, system,
# metric, value) and RAW/balance-systems.tsv (name, row, label, status);
# bench/lib/report_balance.py turns them into the report's "Issue 14"
# section. See bench/README.md, "Issue 14".
#
# Ports: BASE+16..BASE+18 the three targets (BASE+16 is the slow one),
# BASE+19..BASE+23 the slow-target systems, BASE+24 the breaker gateway.
# Like everything else: loopback only, proxies on CPU 0, load and backends
# on CPU 1, every process recorded in STARTED and killed on exit.

BAL_SLOW_PORT=$((PORT_BASE + 16))
BAL_FAST1_PORT=$((PORT_BASE + 17))
BAL_FAST2_PORT=$((PORT_BASE + 18))
BRK_PORT=$((PORT_BASE + 24))
BAL_DELAY_MS=20 # the slow target's delay on every request
BAL_RATE=2000   # offered req/s in the slow-target row (h2load --rps × BAL_CONNS)
BAL_CONNS=16
BAL_ROUNDS=3
BAL_D=5         # seconds per slow-target run
# The CPU comparisons (wrk -c32) use many short interleaved runs: on a
# shared VM the noise is mostly slow drift, which short paired runs cancel.
BAL_SAT_ROUNDS=6
BAL_SAT_D=2     # seconds per wrk -c32 run with the three targets fast (portico only)
BRK_ROUNDS=6
BRK_D=2         # seconds per breaker-cost wrk -c32 run
BRK_RATE_D=2    # seconds per breaker-cost fixed-rate run
BRK_RATE=8000   # offered req/s in the breaker-cost fixed-rate runs

# name, row, port offset, kind, value of @BALANCE@ (portico) — in round order.
BAL_SYSTEMS=(
    "bal-p2c slow 19 portico p2c_ewma"
    "bal-lc slow 20 portico least_conn"
    "bal-rr slow 21 portico round_robin"
    "bal-haproxy slow 22 haproxy -"
    "bal-nginx slow 23 nginx -"
)
declare -A BAL_PID BAL_PORT BAL_KIND
BAL_RUN=() # systems that started (the others are skipped, with the reason)

balance_quick() { BAL_ROUNDS=2 BAL_D=3 BAL_SAT_ROUNDS=2 BRK_ROUNDS=2; }

# Time a process has spent on a CPU, in ns: the sum of its threads'
# sum_exec_runtime (/proc/PID/task/*/schedstat, first field). /proc/PID/stat
# counts in clock ticks (10 ms), too coarse for a few seconds at 2,000 req/s.
cpu_ns() { # pid
    local f s total=0
    for f in /proc/"$1"/task/*/schedstat; do
        read -r s _ <"$f" 2>/dev/null || continue # a thread that just exited
        total=$((total + s))
    done
    echo "$total"
}

# Idle time of one CPU in clock ticks (idle + iowait of /proc/stat). With a
# tickless idle the kernel measures idle time exactly, while busy time is
# sampled at each tick, and the tick restarts as the CPU wakes: at the low
# utilisation of a 2,000 req/s run that sampling overstates busy time
# several times. So CPU 0's other work is wall − idle − the proxy's time.
cpu_idle_ticks() { # cpu
    awk -v c="cpu$1" '$1 == c { print $5 + $6 }' /proc/stat
}

bal_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/balance.tsv"; }
bal_system() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/balance-systems.tsv"; }

# The three targets: one demo backend process each (one thread, CPU 1), so
# each one's /__stats counts the requests its target got.
bal_start_targets() {
    local port delay name
    for port in "$BAL_SLOW_PORT" "$BAL_FAST1_PORT" "$BAL_FAST2_PORT"; do
        delay=0 name=fast
        [ "$port" = "$BAL_SLOW_PORT" ] && delay=$BAL_DELAY_MS name=slow
        require_port_free "$port"
        spawn $LOAD_CPU "$TMP/target-$port.log" "$BACKEND_BIN" --listen "127.0.0.1:$port" \
            --name "$name" --threads 1 --quiet --delay "$delay"
        wait_ready "target $port" "$LAST_PID" "$port" "$TMP/target-$port.log"
    done
}

bal_targets_reset() {
    local port
    for port in "$BAL_SLOW_PORT" "$BAL_FAST1_PORT" "$BAL_FAST2_PORT"; do
        curl -s --max-time 2 -X POST "http://127.0.0.1:$port/__stats/reset" >/dev/null ||
            die "target $port: /__stats/reset did not answer"
    done
}

# Requests each target answered since the reset: "slow fast1 fast2".
bal_targets_requests() {
    local port body counts=()
    for port in "$BAL_SLOW_PORT" "$BAL_FAST1_PORT" "$BAL_FAST2_PORT"; do
        body=$(curl -s --max-time 2 "http://127.0.0.1:$port/__stats")
        [[ $body =~ \"requests\":([0-9]+) ]] || die "target $port: bad /__stats answer '$body'"
        counts+=("${BASH_REMATCH[1]}")
    done
    echo "${counts[*]}"
}

# Writes a system's config from its template and checks it. Returns 1 (after
# recording the system as skipped) when portico refuses a key this build
# does not have yet; dies on any other refusal.
bal_config() { # name kind template out vars...
    local name=$1 kind=$2 tpl=$3 cfg=$4 msg
    shift 4
    $PY "$LIB/fill.py" "$CONF/$tpl" "$cfg" "$@"
    require_loopback_only "$cfg"
    case $kind in
    portico)
        if ! msg=$("$PORTICO_BIN" validate "$cfg" 2>&1); then
            if [[ $msg == *"not supported by this build yet"* ]]; then
                msg=$(printf '%s' "$msg" | grep -m1 'not supported by this build yet')
                log "  SKIPPED $name: this build refuses its config: ${msg#"$TMP"/}"
                printf '%s\n' "${msg#"$TMP"/}" >"$RAW/skip-$name.txt"
                return 1
            fi
            die "portico rejects the $name config: $msg"
        fi
        ;;
    haproxy) haproxy -c -q -f "$cfg" >/dev/null 2>&1 || die "haproxy rejects $cfg: $(haproxy -c -f "$cfg" 2>&1)" ;;
    nginx) nginx -t -q -p "$(dirname "$cfg")" -c "$cfg" >/dev/null 2>&1 ||
        die "nginx rejects $cfg: $(nginx -t -p "$(dirname "$cfg")" -c "$cfg" 2>&1)" ;;
    esac
}

# Starts one slow-target system; on success it joins BAL_RUN.
bal_start_system() { # name row offset kind balance
    local name=$1 row=$2 kind=$4 balance=$5 port=$((PORT_BASE + $3)) cfg label
    local vars=(PORT="$port" SLOW_PORT="$BAL_SLOW_PORT" FAST1_PORT="$BAL_FAST1_PORT"
        FAST2_PORT="$BAL_FAST2_PORT" BALANCE="$balance")
    BAL_PORT[$name]=$port
    BAL_KIND[$name]=$kind
    case $kind in
    portico) label="portico $balance" cfg=$TMP/$name.yaml ;;
    haproxy) label="HAProxy $(haproxy_version) leastconn" cfg=$TMP/$name.cfg ;;
    nginx)
        label="nginx $(nginx -v 2>&1 | sed 's|.*/||') least_conn"
        mkdir -p "$TMP/$name"
        cfg=$TMP/$name/nginx.conf
        vars+=(DIR="$TMP/$name")
        ;;
    esac
    if ! bal_config "$name" "$kind" "$kind-balance.${cfg##*.}.in" "$cfg" "${vars[@]}"; then
        bal_system "$name" "$row" "$label" skipped
        return 0
    fi
    require_port_free "$port"
    case $kind in
    portico) spawn $PROXY_CPU "$TMP/$name.log" "$PORTICO_BIN" -c "$cfg" ;;
    haproxy) spawn $PROXY_CPU "$TMP/$name.log" haproxy -db -f "$cfg" ;;
    nginx) spawn $PROXY_CPU "$TMP/$name.log" nginx -p "$TMP/$name" -c "$cfg" ;;
    esac
    BAL_PID[$name]=$LAST_PID
    wait_ready "$name" "$LAST_PID" "$port" "$TMP/$name.log"
    BAL_RUN+=("$name")
    bal_system "$name" "$row" "$label" ran
}

# One h2load run of BAL_CONNS connections at the fixed rate against PORT,
# with the proxy's CPU time and CPU 0's other work around it. Records
# PREFIX_{p50,p90,p99,p999,rate,failed,cpu_us,cpu0_other_pct} for (round,
# system) and leaves the run's successful requests in H2_ALL.
bal_h2load() { # round name prefix pid port rate seconds [h2load args...]
    local r=$1 name=$2 prefix=$3 pid=$4 port=$5 rate=$6 secs=$7 c0 c1 i0 i1 w0 w1 kv k v
    shift 7
    local base=$RAW/bal-r$r-$name-$prefix
    i0=$(cpu_idle_ticks $PROXY_CPU)
    w0=$(now_us)
    c0=$(cpu_ns "$pid")
    taskset -c $LOAD_CPU h2load --h1 -t1 -c"$BAL_CONNS" --rps=$((rate / BAL_CONNS)) -D "$secs" \
        "$@" --log-file="$TMP/h2.log" "http://127.0.0.1:$port/tiny" >"$base.h2load.txt" 2>&1 ||
        die "h2load failed against $name: $(tail -5 "$base.h2load.txt")"
    c1=$(cpu_ns "$pid")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    kv=$($PY "$LIB/h2lat.py" "$TMP/h2.log" "$SKIP_S" "$base.grid") ||
        die "no latency samples from h2load against $name"
    rm -f "$TMP/h2.log"
    H2_ALL=0
    for k in $kv; do
        v=${k#*=}
        k=${k%%=*}
        case $k in
        p50 | p90 | p99 | p999 | rate | failed) bal_record "$r" "$name" "${prefix}_$k" "$v" ;;
        all) H2_ALL=$v ;;
        esac
    done
    [ "$H2_ALL" -gt 0 ] || die "h2load got no successful answer from $name"
    bal_record "$r" "$name" "${prefix}_cpu_us" "$(calc "($c1 - $c0) / 1000 / $H2_ALL" 3)"
    # Other work on the proxy's CPU during the run (it disturbs tails
    # first): wall time − CPU 0's idle time − the proxy's own time.
    bal_record "$r" "$name" "${prefix}_cpu0_other_pct" \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
}

# One slow-target run: the targets' counters reset, the fixed-rate load,
# then the share each target got.
bal_measure() { # round name
    local r=$1 name=$2 slow f1 f2
    kill -0 "${BAL_PID[$name]}" 2>/dev/null || die "$name (pid ${BAL_PID[$name]}) is gone"
    bal_targets_reset
    bal_h2load "$r" "$name" slow "${BAL_PID[$name]}" "${BAL_PORT[$name]}" "$BAL_RATE" "$BAL_D"
    read -r slow f1 f2 < <(bal_targets_requests)
    local total=$((slow + f1 + f2))
    [ "$total" -gt 0 ] || die "no request of $name reached a target"
    bal_record "$r" "$name" slow_requests "$slow"
    bal_record "$r" "$name" fast1_requests "$f1"
    bal_record "$r" "$name" fast2_requests "$f2"
    bal_record "$r" "$name" slow_share_pct "$(calc "100 * $slow / $total" 2)"
    log "  round $r $(printf '%-11s' "$name") slow target $(calc "100 * $slow / $total" 1)%," \
        "p99 $(awk -F'\t' -v r="$r" -v n="$name" '$1 == r && $2 == n && $3 == "slow_p99" { print $4 }' \
            "$RAW/balance.tsv") µs, $(awk -F'\t' -v r="$r" -v n="$name" \
            '$1 == r && $2 == n && $3 == "slow_cpu_us" { printf "%.1f", $4 }' "$RAW/balance.tsv") µs CPU/req"
}

# The slow target's delay, changed at run time (demo_backend POST /__control).
bal_slow_delay() { # ms (0: none)
    local body
    body=$(curl -s --max-time 2 -X POST "http://127.0.0.1:$BAL_SLOW_PORT/__control?delay=$1")
    [[ $body == *"\"delay\":$1"* ]] || die "the slow target refused delay=$1: '$body'"
}

# What choosing costs, apart from where it sends requests: wrk -c32 (the
# bench's CPU-per-request load) with the slow target made fast, so every
# balancer moves the same work and the proxy runs at full speed.
bal_saturate() { # round name
    local r=$1 name=$2 pid=${BAL_PID[$2]} c0 c1 slow f1 f2 out=$RAW/bal-r$1-$2-sat-wrk.txt
    kill -0 "$pid" 2>/dev/null || die "$name (pid $pid) is gone"
    bal_targets_reset
    c0=$(cpu_ns "$pid")
    spin on # --spin: as in the rounds' wrk runs (README, "Two regimes")
    taskset -c $LOAD_CPU wrk -t1 -c32 -d"${BAL_SAT_D}s" "http://127.0.0.1:${BAL_PORT[$name]}/tiny" \
        >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    spin off
    c1=$(cpu_ns "$pid")
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$out")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from $name"
    [ "$WRK_ERR" = 0 ] || die "$name answered $WRK_ERR errors or non-2xx (${out#"$ROOT"/})"
    read -r slow f1 f2 < <(bal_targets_requests)
    bal_record "$r" "$name" sat_cpu_us "$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)"
    bal_record "$r" "$name" sat_rps "$WRK_RPS"
    bal_record "$r" "$name" sat_first_share_pct "$(calc "100 * $slow / ($slow + $f1 + $f2)" 2)"
    log "  round $r $(printf '%-11s' "$name") $(calc "($c1 - $c0) / 1000 / $WRK_REQ" 1) µs CPU/req" \
        "(wrk -c32, $WRK_RPS req/s, targets all fast)"
}

# The breaker-cost gateway: both routes in one process, told apart by Host.
brk_start() {
    local cfg=$TMP/brk.yaml body
    if ! bal_config brk portico portico-breaker.yaml.in "$cfg" PORT="$BRK_PORT" \
        BACKEND_PORT="$BACKEND_PORT"; then
        bal_system brk breaker "portico plain route / guarded route" skipped
        return 1
    fi
    require_port_free "$BRK_PORT"
    spawn $PROXY_CPU "$TMP/brk.log" "$PORTICO_BIN" -c "$cfg"
    BRK_PID=$LAST_PID
    local host
    for host in plain.bench guard.bench; do
        for _ in $(seq 100); do
            kill -0 "$BRK_PID" 2>/dev/null || die "the breaker gateway exited: $(tail -20 "$TMP/brk.log")"
            body=$(curl -s --max-time 1 -H "Host: $host" "http://127.0.0.1:$BRK_PORT/tiny" || true)
            [ "$body" = '{"ok":true}' ] && break
            sleep 0.1
        done
        [ "$body" = '{"ok":true}' ] || die "the breaker gateway's $host route does not answer: '$body'"
    done
    require_sole_listener "$BRK_PORT" "$BRK_PID"
    bal_system brk breaker "portico plain route / guarded route" ran
}

# One breaker-cost run of one route: wrk -c32 (CPU per request at
# saturation, the figure the issue's goal is judged on) and the fixed rate.
brk_measure() { # round route(plain|guard)
    local r=$1 route=$2 c0 c1 name=brk-$2
    kill -0 "$BRK_PID" 2>/dev/null || die "the breaker gateway (pid $BRK_PID) is gone"
    c0=$(cpu_ns "$BRK_PID")
    spin on
    taskset -c $LOAD_CPU wrk -t1 -c32 -d"${BRK_D}s" -H "Host: $route.bench" \
        "http://127.0.0.1:$BRK_PORT/tiny" >"$RAW/bal-r$r-$name-wrk.txt" 2>&1 ||
        die "wrk failed: $(cat "$RAW/bal-r$r-$name-wrk.txt")"
    spin off
    c1=$(cpu_ns "$BRK_PID")
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$RAW/bal-r$r-$name-wrk.txt")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from the $route route"
    [ "$WRK_ERR" = 0 ] || die "the $route route answered $WRK_ERR errors or non-2xx (raw/bal-r$r-$name-wrk.txt)"
    bal_record "$r" "$name" cpu_us "$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)"
    bal_record "$r" "$name" rps "$WRK_RPS"
    # h2load writes Host from :authority (a "Host:" header would be a second one).
    bal_h2load "$r" "$name" rate "$BRK_PID" "$BRK_PORT" "$BRK_RATE" "$BRK_RATE_D" \
        -H ":authority: $route.bench"
    log "  round $r $(printf '%-11s' "$name") $(calc "($c1 - $c0) / 1000 / $WRK_REQ" 1) µs CPU/req" \
        "(wrk -c32, $WRK_RPS req/s)"
}

measure_balance() {
    local t0=$SECONDS n r spec
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the balance section's CPU clock"
    : >"$RAW/balance.tsv"
    : >"$RAW/balance-systems.tsv"
    printf 'balance\tdelay_ms=%s rate=%s conns=%s rounds=%s run_s=%s sat_rounds=%s sat_s=%s brk_rounds=%s brk_s=%s brk_rate=%s brk_rate_s=%s\n' \
        "$BAL_DELAY_MS" "$BAL_RATE" "$BAL_CONNS" "$BAL_ROUNDS" "$BAL_D" "$BAL_SAT_ROUNDS" "$BAL_SAT_D" \
        "$BRK_ROUNDS" "$BRK_D" "$BRK_RATE" "$BRK_RATE_D" >>"$RAW/meta.tsv"
    log "issue 14, slow target: three targets (127.0.0.1:$BAL_SLOW_PORT +${BAL_DELAY_MS} ms)," \
        "$BAL_CONNS connections at $BAL_RATE req/s"
    bal_start_targets
    for spec in "${BAL_SYSTEMS[@]}"; do
        # shellcheck disable=SC2086 # spec is a word list
        bal_start_system $spec
    done
    if [ ${#BAL_RUN[@]} -gt 0 ]; then
        for n in "${BAL_RUN[@]}"; do # warm-up: pools open, EWMAs settled
            bal_h2load 0 "$n" warmup "${BAL_PID[$n]}" "${BAL_PORT[$n]}" "$BAL_RATE" 1
        done
        for r in $(seq "$BAL_ROUNDS"); do
            log "slow target, round $r/$BAL_ROUNDS"
            for n in "${BAL_RUN[@]}"; do bal_measure "$r" "$n"; done
        done
        local sat=()
        for n in "${BAL_RUN[@]}"; do [ "${BAL_KIND[$n]}" != portico ] || sat+=("$n"); done
        if [ ${#sat[@]} -gt 0 ]; then
            log "what choosing costs: wrk -c32, the slow target made fast (portico only)"
            bal_slow_delay 0
            local i
            for r in $(seq "$BAL_SAT_ROUNDS"); do
                # A B C, then C B A: a drift over the phase favours no one.
                for i in "${!sat[@]}"; do
                    [ $((r % 2)) = 1 ] || i=$((${#sat[@]} - 1 - i))
                    bal_saturate "$r" "${sat[$i]}"
                done
            done
            bal_slow_delay "$BAL_DELAY_MS"
        fi
        for n in "${BAL_RUN[@]}"; do # their CPU stays out of the breaker row
            kill -TERM "${BAL_PID[$n]}"
            reap "${BAL_PID[$n]}"
        done
    fi
    log "issue 14, breaker cost: plain route and guarded route (breaker + retries), one gateway"
    if brk_start; then
        local first second
        bal_h2load 0 brk-plain warmup "$BRK_PID" "$BRK_PORT" "$BRK_RATE" 1 -H ":authority: plain.bench"
        bal_h2load 0 brk-guard warmup "$BRK_PID" "$BRK_PORT" "$BRK_RATE" 1 -H ":authority: guard.bench"
        for r in $(seq "$BRK_ROUNDS"); do
            # Alternate which route goes first, so neither always follows the other.
            if [ $((r % 2)) = 1 ]; then first=plain second=guard; else first=guard second=plain; fi
            brk_measure "$r" "$first"
            brk_measure "$r" "$second"
        done
        kill -TERM "$BRK_PID"
        reap "$BRK_PID"
    fi
    bal_record 0 run balance_elapsed_s $((SECONDS - t0))
}
