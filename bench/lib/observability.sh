# shellcheck shell=bash
# bench/lib/observability.sh — issue 17's section of bench/run.sh (sourced
# by it): what observing a route costs.
#
#   cost row    portico's plain route with metrics and the JSON access log
#               on (to a file) against the same route with both off, CPU
#               per request at wrk -c32; beside it HAProxy's plain frontend
#               and the same frontend with `option httplog` (to a file) and
#               its Prometheus exporter (PROMEX) on a frontend of its own.
#   scrape row  a gateway with OB_ROUTES routes (each with a rate_limit that
#               never trips) after one request on every route, so every
#               route has its series: the time of a /metrics scrape (median
#               and worst of OB_SCRAPES), its size; then the p50/p99 of a
#               route at a fixed open-loop rate (half the route's capacity)
#               without scrapes and while a scraper pulls /metrics every
#               100 ms, alternated OB_LAT_ROUNDS times.
#
# Writes RAW/observability.tsv (round, run, metric, value) and
# RAW/observability-runs.tsv (run, system, label, ran); bench/lib/
# report_observability.py turns them into the report's "Issue 17" section.
# Uses cpu_ns/cpu_idle_ticks (lib/balance.sh). Variables OB_*, functions ob_*.
#
# Ports BASE+29 … BASE+37 (see OB_* below); loopback only, proxies on CPU 0,
# load, backend and scraper on CPU 1; every process recorded in STARTED.

OB_OFF_PORT=$((PORT_BASE + 29))
OB_OFF_ADMIN=$((PORT_BASE + 30))
OB_ON_PORT=$((PORT_BASE + 31))
OB_ON_ADMIN=$((PORT_BASE + 32))
OB_HA_PORT=$((PORT_BASE + 33))
OB_HA_OBS_PORT=$((PORT_BASE + 34))
OB_HA_PROM_PORT=$((PORT_BASE + 35))
OB_SCR_PORT=$((PORT_BASE + 36))
OB_SCR_ADMIN=$((PORT_BASE + 37))
OB_ROUNDS=6      # CPU rounds (A B C D, then D C B A)
OB_D=2           # seconds per wrk -t1 -c32 run
OB_ROUTES=1000   # routes of the scrape gateway
OB_SCRAPES=20    # timed scrapes
OB_LAT_ROUNDS=4  # fixed-rate rounds, quiet and scraped
OB_LAT_D=4       # seconds per h2load run
OB_CONNS=16      # h2load connections at the fixed rate

OB_RUNS=(
    "p-off portico-off"
    "p-on portico-on"
    "h-plain haproxy"
    "h-obs haproxy-obs"
)
declare -A OB_PID OB_PORT

ob_quick() { OB_ROUNDS=2 OB_D=1 OB_SCRAPES=5 OB_LAT_ROUNDS=1 OB_LAT_D=2; }

ob_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/observability.tsv"; }
ob_run_row() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/observability-runs.tsv"; }

ob_label() { # name
    local ha
    ha="HAProxy $(haproxy_version)"
    case $1 in
    p-off) echo "portico plain route, metrics and access log off" ;;
    p-on) echo "portico plain route, metrics on + JSON access log to a file" ;;
    h-plain) echo "$ha plain frontend, no log" ;;
    h-obs) echo "$ha frontend with option httplog to a file, PROMEX on its own frontend" ;;
    lat-quiet) echo "portico, $OB_ROUTES routes, no scrape" ;;
    lat-scraped) echo "portico, $OB_ROUTES routes, /metrics scraped every 100 ms" ;;
    lat-quiet-ct) echo "the same, control thread moved to CPU $LOAD_CPU, no scrape" ;;
    lat-scraped-ct) echo "the same, control thread moved to CPU $LOAD_CPU, scraped every 100 ms" ;;
    esac
}

ob_start_portico() { # name port admin metrics access_log
    local cfg=$TMP/obs-$1.yaml got
    $PY "$LIB/fill.py" "$CONF/portico-observability.yaml.in" "$cfg" PORT="$2" ADMIN_PORT="$3" \
        BACKEND_PORT="$BACKEND_PORT" METRICS="$4" ACCESS_LOG="$5"
    require_loopback_only "$cfg"
    "$PORTICO_BIN" validate "$cfg" >/dev/null 2>&1 || die "portico rejects $cfg: $("$PORTICO_BIN" validate "$cfg" 2>&1)"
    require_port_free "$2"
    spawn $PROXY_CPU "$TMP/obs-$1.log" "$PORTICO_BIN" -c "$cfg"
    OB_PID[$1]=$LAST_PID
    OB_PORT[$1]=$2
    wait_ready "portico ($1)" "$LAST_PID" "$2" "$TMP/obs-$1.log"
    require_sole_listener "$2" "$LAST_PID"
    got=$(curl -s --max-time 2 "http://127.0.0.1:$2/tiny")
    [ "$got" = '{"ok":true}' ] || die "portico ($1): GET /tiny answered '$got'"
}

# The "on" gateway really records: the request shows in /metrics and in
# the access log.
ob_check_on() {
    local m
    m=$(curl -s --max-time 5 "http://127.0.0.1:$OB_ON_ADMIN/metrics" |
        awk '$1 ~ /^portico_requests_total\{route="plain"/ { n += $2 } END { print n + 0 }')
    [ "${m:-0}" -ge 1 ] || die "portico (on): no portico_requests_total for the plain route"
    grep -q '"route":"plain"' "$TMP/obs-access.log" 2>/dev/null ||
        die "portico (on): no access log line in $TMP/obs-access.log"
    m=$(curl -s --max-time 5 "http://127.0.0.1:$OB_OFF_ADMIN/metrics" |
        awk '$1 ~ /^portico_requests_total\{/ { n += $2 } END { print n + 0 }')
    [ "${m:-0}" = 0 ] || die "portico (off) counted requests with metrics off"
}

ob_start_haproxy() {
    local cfg=$TMP/obs-haproxy.cfg
    $PY "$LIB/fill.py" "$CONF/haproxy-observability.cfg.in" "$cfg" PORT="$OB_HA_PORT" \
        OBS_PORT="$OB_HA_OBS_PORT" PROM_PORT="$OB_HA_PROM_PORT" BACKEND_PORT="$BACKEND_PORT"
    require_loopback_only "$cfg"
    haproxy -c -q -f "$cfg" >/dev/null 2>&1 || die "haproxy rejects $cfg: $(haproxy -c -f "$cfg" 2>&1)"
    require_port_free "$OB_HA_PORT"
    require_port_free "$OB_HA_OBS_PORT"
    require_port_free "$OB_HA_PROM_PORT"
    spawn $PROXY_CPU "$TMP/obs-haproxy.log" haproxy -db -f "$cfg"
    OB_PID[haproxy]=$LAST_PID
    OB_PID[haproxy-obs]=$LAST_PID
    OB_PORT[haproxy]=$OB_HA_PORT
    OB_PORT[haproxy-obs]=$OB_HA_OBS_PORT
    wait_ready "HAProxy (observability)" "$LAST_PID" "$OB_HA_PORT" "$TMP/obs-haproxy.log"
    wait_ready "HAProxy (observed)" "$LAST_PID" "$OB_HA_OBS_PORT" "$TMP/obs-haproxy.log"
    curl -s --max-time 2 "http://127.0.0.1:$OB_HA_OBS_PORT/tiny" >/dev/null
    local prom
    prom=$(curl -s --max-time 5 "http://127.0.0.1:$OB_HA_PROM_PORT/metrics")
    [[ $prom == *'haproxy_frontend_http_requests_total{proxy="observed"'* ]] ||
        die "HAProxy's PROMEX frontend does not answer /metrics with the observed frontend's counters"
}

ob_cpu_run() { # round name
    local r=$1 name=$2 sys
    read -r _ sys < <(printf '%s\n' "${OB_RUNS[@]}" | awk -v n="$name" '$1 == n')
    local pid=${OB_PID[$sys]} port=${OB_PORT[$sys]} out=$RAW/ob-r$r-$name-wrk.txt c0 c1 d=$OB_D
    [ "$r" != 0 ] || d=1
    kill -0 "$pid" 2>/dev/null || die "$sys (pid $pid) is gone"
    c0=$(cpu_ns "$pid")
    spin on
    taskset -c $LOAD_CPU wrk -t1 -c32 -d"${d}s" "http://127.0.0.1:$port/tiny" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    spin off
    c1=$(cpu_ns "$pid")
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$out")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from $name: $(cat "$out")"
    [ "$WRK_ERR" = 0 ] || die "$name: $WRK_ERR errors of $WRK_REQ"
    local cpu
    cpu=$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)
    ob_record "$r" "$name" cpu_us "$cpu"
    ob_record "$r" "$name" rps "$WRK_RPS"
    [ "$r" = 0 ] || log "  round $r $(printf '%-8s' "$name") $(calc "$cpu" 2) µs CPU/req, $WRK_RPS req/s"
}

# One fixed-rate run on /r(N/2)/tiny of the scrape gateway, with or
# without the scraper.
ob_lat_run() { # round name
    local r=$1 name=$2 base=$RAW/ob-r$1-$2 k v kv all=0 spid="" d=$OB_LAT_D
    [ "$r" != 0 ] || d=1
    if [[ $name == lat-scraped* ]]; then
        spawn $LOAD_CPU "$base.scraper.txt" $PY "$LIB/scrape.py" loop "$OB_SCR_ADMIN" "$d"
        spid=$LAST_PID
    fi
    taskset -c $LOAD_CPU h2load --h1 -t1 -c"$OB_CONNS" --rps="$OB_RATE_PER_CONN" -D "$d" \
        --log-file="$TMP/ob-h2.log" "http://127.0.0.1:$OB_SCR_PORT/r$((OB_ROUTES / 2))/tiny" \
        >"$base.h2load.txt" 2>&1 || die "h2load failed ($name): $(tail -5 "$base.h2load.txt")"
    [ -z "$spid" ] || reap "$spid"
    kv=$($PY "$LIB/h2lat.py" "$TMP/ob-h2.log" "$SKIP_S" "$base.grid") || die "no latency samples ($name)"
    rm -f "$TMP/ob-h2.log"
    for k in $kv; do
        v=${k#*=}
        k=${k%%=*}
        case $k in
        p50 | p99 | p999) [ "$r" = 0 ] || ob_record "$r" "$name" "$k" "$v" ;;
        all) all=$v ;;
        esac
    done
    [ "$all" -gt 0 ] || die "h2load got no answer ($name)"
    if [ -n "$spid" ] && [ "$r" != 0 ]; then
        ob_record "$r" "$name" scrapes "$(sed -n 's/.*scrapes=\([0-9]*\).*/\1/p' "$base.scraper.txt")"
    fi
    [ "$r" = 0 ] || log "  round $r $(printf '%-11s' "$name") p50 $(awk -F'\t' -v r="$r" -v n="$name" \
        '$1 == r && $2 == n && $3 == "p50" { print $4 }' "$RAW/observability.tsv") µs, p99 $(awk -F'\t' \
        -v r="$r" -v n="$name" '$1 == r && $2 == n && $3 == "p99" { print $4 }' "$RAW/observability.tsv") µs"
}

ob_lat_rounds() { # quiet scraped
    local r
    for r in $(seq "$OB_LAT_ROUNDS"); do
        if [ $((r % 2)) = 1 ]; then
            ob_lat_run "$r" "$1"
            ob_lat_run "$r" "$2"
        else
            ob_lat_run "$r" "$2"
            ob_lat_run "$r" "$1"
        fi
    done
}

ob_scrape_row() {
    local cfg=$TMP/obs-scrape.yaml kv k v caps=() i
    $PY "$LIB/gen_routes.py" "$cfg" "$OB_ROUTES" "$OB_SCR_PORT" "$OB_SCR_ADMIN" "$BACKEND_PORT"
    require_loopback_only "$cfg"
    require_port_free "$OB_SCR_PORT"
    spawn $PROXY_CPU "$TMP/obs-scrape.log" "$PORTICO_BIN" -c "$cfg"
    OB_PID[scrape]=$LAST_PID
    wait_ready "portico ($OB_ROUTES routes)" "$LAST_PID" "$OB_SCR_PORT" "$TMP/obs-scrape.log"
    require_sole_listener "$OB_SCR_PORT" "$LAST_PID"
    taskset -c $LOAD_CPU $PY "$LIB/scrape.py" fill "$OB_SCR_PORT" "$OB_ROUTES" || die "scrape.py fill failed"
    kv=$(taskset -c $LOAD_CPU $PY "$LIB/scrape.py" time "$OB_SCR_ADMIN" "$OB_SCRAPES") || die "scrape.py time failed"
    for k in $kv; do
        v=${k#*=}
        ob_record 0 scrape "${k%%=*}" "$v"
    done
    log "  /metrics with $OB_ROUTES routes: $kv"
    for i in 1 2 3; do
        taskset -c $LOAD_CPU wrk -t1 -c32 -d2s "http://127.0.0.1:$OB_SCR_PORT/r$((OB_ROUTES / 2))/tiny" \
            >"$RAW/ob-capacity-$i.txt" 2>&1 || die "wrk failed: $(cat "$RAW/ob-capacity-$i.txt")"
        read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$RAW/ob-capacity-$i.txt")
        caps+=("$WRK_RPS")
    done
    local cap
    cap=$(printf '%s\n' "${caps[@]}" | sort -n | sed -n 2p)
    OB_RATE_PER_CONN=$((cap / 2 / OB_CONNS))
    [ "$OB_RATE_PER_CONN" -gt 0 ] || die "observability: capacity run failed ($cap req/s)"
    ob_record 0 scrape fixed_rate_rps $((OB_RATE_PER_CONN * OB_CONNS))
    ob_run_row lat-quiet portico "$(ob_label lat-quiet)" ran
    ob_run_row lat-scraped portico "$(ob_label lat-scraped)" ran
    ob_lat_run 0 lat-quiet
    ob_lat_rounds lat-quiet lat-scraped
    # The whole process was pinned to CPU 0, so the scrape (the control
    # thread) took its milliseconds from the worker's core. Again with the
    # control thread alone on the other CPU (its thread id is the pid;
    # the worker keeps CPU 0), as on a machine with a core to spare.
    taskset -p -c $LOAD_CPU "${OB_PID[scrape]}" >/dev/null || die "taskset -p failed"
    ob_run_row lat-quiet-ct portico "$(ob_label lat-quiet-ct)" ran
    ob_run_row lat-scraped-ct portico "$(ob_label lat-scraped-ct)" ran
    ob_lat_rounds lat-quiet-ct lat-scraped-ct
    kill -TERM "${OB_PID[scrape]}"
    reap "${OB_PID[scrape]}"
}

measure_observability() {
    local t0=$SECONDS spec name r i n
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the observability section's CPU clock"
    : >"$RAW/observability.tsv"
    : >"$RAW/observability-runs.tsv"
    printf 'observability\trounds=%s run_s=%s routes=%s scrapes=%s lat_rounds=%s lat_s=%s conns=%s\n' \
        "$OB_ROUNDS" "$OB_D" "$OB_ROUTES" "$OB_SCRAPES" "$OB_LAT_ROUNDS" "$OB_LAT_D" "$OB_CONNS" >>"$RAW/meta.tsv"
    log "issue 17, observability: metrics + access log on vs off beside HAProxy httplog + PROMEX;" \
        "a /metrics scrape with $OB_ROUTES routes"
    ob_start_portico portico-off "$OB_OFF_PORT" "$OB_OFF_ADMIN" false off
    ob_start_portico portico-on "$OB_ON_PORT" "$OB_ON_ADMIN" true "$TMP/obs-access.log"
    ob_check_on
    ob_start_haproxy
    local runs=()
    for spec in "${OB_RUNS[@]}"; do
        # shellcheck disable=SC2086 # spec is a word list
        set -- $spec
        ob_run_row "$1" "$2" "$(ob_label "$1")" ran
        runs+=("$1")
    done
    log "observability: warm-up"
    for name in "${runs[@]}"; do ob_cpu_run 0 "$name"; done
    n=${#runs[@]}
    for r in $(seq "$OB_ROUNDS"); do
        log "observability, CPU round $r/$OB_ROUNDS"
        for i in $(seq 0 $((n - 1))); do
            [ $((r % 2)) = 1 ] || i=$((n - 1 - i))
            ob_cpu_run "$r" "${runs[$i]}"
        done
    done
    for name in portico-off portico-on haproxy; do
        kill -TERM "${OB_PID[$name]}"
        reap "${OB_PID[$name]}"
    done
    log "observability, scrape row"
    ob_scrape_row
    ob_record 0 run observability_elapsed_s $((SECONDS - t0))
}
