# shellcheck shell=bash
# bench/lib/edge19.sh — issues 19 and 20's section of bench/run.sh (sourced
# by it): what the edge filters cost per request.
#
#   cache   a cache hit: portico's `cache` route against nginx `proxy_cache`
#           and HAProxy's `cache` on the same backend object (GET /tiny),
#           each warmed once before the rounds; CPU per hit at wrk -c32.
#           The backend's request counter is read around every measured
#           run: it must stay at 0 (every answer was a hit).
#   cors    a route with `cors` (wrk sends the allowed Origin) against the
#           plain route (sent the same Origin), CPU per request.
#   xform   a route with `response_transform` body rules (rename, remove,
#           add) on the backend's JSON user against the plain route on the
#           same object (GET /users/1), CPU per request.
#   bff     `aggregate` fanning one request out to three backend calls
#           against the plain route's GET /tiny: CPU per client request, p99
#           (wrk --latency) and backend requests per client request (3);
#           then latency at a fixed offered rate (h2load --rps, E19_LAT_RPS
#           over 16 connections), the fan-out and the plain route
#           alternately: p50/p99/p99.9 and the achieved rate.
#
# Rows whose portico feature this build refuses ("not supported by this
# build yet", or an unknown body-rule key before the body transforms land)
# are skipped with the refusal as the reason; the other rows still run.
#
# Every run is wrk -t1 -c32 --latency for E19_D seconds; CPU per request =
# the proxy process's CPU time over the run (/proc/PID/task/*/schedstat,
# cpu_ns of lib/balance.sh) ÷ the responses wrk counted (all must be 2xx).
# Rounds are paired: every run once per round, in list order, then reversed
# in the next round, so a drift favours no run.
#
# Writes RAW/edge19.tsv (round, run, metric, value), RAW/edge19-runs.tsv
# (run, system, row, label, ran|skipped), RAW/edge19-skip-RUN.txt (why) and
# RAW/edge19-checks.txt (what the start-up checks saw);
# bench/lib/report_edge19.py turns them into the "Issues 19 and 20"
# section. Uses gen_auth.py's config mode (IF/END blocks). Variables E19_*,
# functions e19_*.
#
# Ports BASE+45 (portico, routes told apart by Host), BASE+46 (nginx),
# BASE+47 (HAProxy). Like everything else: loopback only, proxies on CPU 0,
# load and backend on CPU 1, every process recorded in STARTED and killed on
# exit.

E19_GW_PORT=$((PORT_BASE + 45))
E19_NGINX_PORT=$((PORT_BASE + 46))
E19_HA_PORT=$((PORT_BASE + 47))
E19_ROUNDS=6    # paired rounds (list order, then reversed)
E19_D=3         # seconds per wrk -t1 -c32 run
E19_LAT_RPS=1000 # offered req/s of the fan-out's fixed-rate latency runs …
E19_LAT_CONNS=16 # … over this many connections
E19_ORIGIN=https://app.bench
# The warm-up request gives the cached object an explicit lifetime: HAProxy
# stores nothing without one (no validator, no freshness), and the same
# header on all three keeps the stored objects alike.
E19_WARM_HDR="X-Demo-Header: Cache-Control: public, max-age=600"

# name, system, Host (- : the peer's own port), path, portico feature (- : none)
# — in round order.
E19_RUNS=(
    "p-plain portico plain.bench /tiny -"
    "p-cors portico cors.bench /tiny cors"
    "p-cache portico cache.bench /tiny cache"
    "n-cache nginx - /tiny -"
    "h-cache haproxy - /tiny -"
    "p-json portico plain.bench /users/1 xform"
    "p-xform portico xform.bench /users/1 xform"
    "p-bff portico bff.bench /bff/1 bff"
)
declare -A E19_PID E19_PORT E19_SKIP # E19_SKIP[feature]: why this build refuses it
E19_RUN=()                            # runs whose system and route are up
E19_FEATURES=""                       # portico features this build accepts

edge19_quick() { E19_ROUNDS=2 E19_D=1; }
[ -z "${PORTICO_BENCH_E19_LAT_RPS:-}" ] || E19_LAT_RPS=$PORTICO_BENCH_E19_LAT_RPS

e19_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/edge19.tsv"; }
e19_check_log() { printf '%s\n' "$*" >>"$RAW/edge19-checks.txt"; }

e19_label() { # run
    case $1 in
    p-plain) echo "portico plain route (GET /tiny, with Origin)" ;;
    p-cors) echo "portico cors route (GET /tiny, allowed Origin)" ;;
    p-cache) echo "portico cache hit (GET /tiny)" ;;
    n-cache) echo "nginx $(nginx -v 2>&1 | sed 's|.*/||') proxy_cache hit (GET /tiny)" ;;
    h-cache) echo "HAProxy $(haproxy_version) cache hit (GET /tiny)" ;;
    p-json) echo "portico plain route (GET /users/1)" ;;
    p-xform) echo "portico response_transform body rules (GET /users/1)" ;;
    p-bff) echo "portico aggregate, fan-out of 3 (GET /bff/1)" ;;
    lat-plain) echo "portico plain route (GET /tiny), fixed rate" ;;
    lat-bff) echo "portico aggregate, fan-out of 3 (GET /bff/1), fixed rate" ;;
    esac
}

e19_row() { # run → the report row it belongs to
    case $1 in
    p-plain) echo ref ;;
    *-cache) echo cache ;;
    p-cors) echo cors ;;
    p-json | p-xform) echo xform ;;
    p-bff) echo bff ;;
    lat-*) echo lat ;;
    esac
}

# Writes portico's config with FEATURES (comma-separated) and validates it.
# Returns 1 with the refusal in E19_MSG when this build does not have a
# feature yet; dies on any other refusal.
e19_portico_config() { # out features
    local cfg=$1 msg line
    $PY "$LIB/gen_auth.py" config "$CONF/portico-edge19.yaml.in" "$cfg" "$2" PORT="$E19_GW_PORT" \
        BACKEND_PORT="$BACKEND_PORT" ORIGIN="$E19_ORIGIN" || die "gen_auth.py config failed"
    require_loopback_only "$cfg"
    if ! msg=$("$PORTICO_BIN" validate "$cfg" 2>&1); then
        line=$(printf '%s' "$msg" | grep -m1 'not supported by this build yet' || true)
        if [ -n "$line" ]; then
            E19_MSG=${line#"$TMP"/}
            return 1
        fi
        # Before the JSON body transforms (branch body) land, their keys are
        # unknown fields of response_transform.
        # shellcheck disable=SC2016 # the backquotes are literal
        line=$(printf '%s' "$msg" | grep -m1 'unknown field `[a-z]*_body_fields`' || true)
        if [ -n "$line" ]; then
            E19_MSG="this build has no JSON body rules yet: ${line#"$TMP"/}"
            return 1
        fi
        die "portico rejects the edge19 gateway config ($2): $msg"
    fi
}

# GET PATH on PORT (with Host HOST unless -): "STATUS BODY" on stdout, the
# response head in $TMP/e19.hdr. Extra curl arguments follow.
e19_get() { # port host path curl-args...
    local port=$1 host=$2 path=$3 body code
    shift 3
    local args=(-s --max-time 2 -D "$TMP/e19.hdr" -o "$TMP/e19.body" -w '%{http_code}')
    [ "$host" = - ] || args+=(-H "Host: $host")
    code=$(curl "${args[@]}" "$@" "http://127.0.0.1:$port$path" || true)
    body=$(cat "$TMP/e19.body" 2>/dev/null || true)
    printf '%s %s\n' "${code:-000}" "$body"
}

# The value of header NAME in the last e19_get's head (empty if absent).
e19_hdr() { # name
    awk -v n="$(tr '[:upper:]' '[:lower:]' <<<"$1")" '
        { i = index($0, ":") }
        i && tolower(substr($0, 1, i - 1)) == n {
            v = substr($0, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t\r]+$/, "", v); print v; exit
        }' "$TMP/e19.hdr"
}

# Waits until PORT answers GET /tiny with {"ok":true}, the cache warm-up
# header on the request (the first answer a cache keeps has the lifetime).
e19_wait_ready() { # name pid port host logfile
    local name=$1 pid=$2 port=$3 host=$4 logf=$5 got=""
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$name exited during start-up: $(tail -20 "$logf")"
        got=$(e19_get "$port" "$host" /tiny -H "$E19_WARM_HDR")
        [ "$got" = '200 {"ok":true}' ] && break
        sleep 0.1
    done
    [ "$got" = '200 {"ok":true}' ] || die "$name did not answer GET /tiny on 127.0.0.1:$port within 10 s ('$got')"
    require_sole_listener "$port" "$pid"
}

# The gateway with every feature this build accepts: each one is first
# tried alone beside the plain route, so one refusal does not hide another
# row.
e19_start_portico() {
    local cfg=$TMP/edge19-portico.yaml f feats=()
    for f in cache cors xform bff; do
        if e19_portico_config "$TMP/edge19-probe-$f.yaml" "$f"; then
            feats+=("$f")
        else
            E19_SKIP[$f]=$E19_MSG
            log "  SKIPPED portico $f row: $E19_MSG"
        fi
    done
    E19_FEATURES=$(
        IFS=,
        echo "${feats[*]}"
    )
    e19_portico_config "$cfg" "$E19_FEATURES" ||
        die "portico refuses the edge19 gateway with $E19_FEATURES together: $E19_MSG"
    require_port_free "$E19_GW_PORT"
    spawn $PROXY_CPU "$TMP/edge19-portico.log" "$PORTICO_BIN" -c "$cfg"
    E19_PID[portico]=$LAST_PID
    E19_PORT[portico]=$E19_GW_PORT
    e19_wait_ready "portico (edge19)" "$LAST_PID" "$E19_GW_PORT" plain.bench "$TMP/edge19-portico.log"
}

e19_start_nginx() {
    local dir=$TMP/nginx-edge19
    local cfg=$dir/nginx.conf
    mkdir -p "$dir"
    $PY "$LIB/fill.py" "$CONF/nginx-cache.conf.in" "$cfg" PORT="$E19_NGINX_PORT" \
        BACKEND_PORT="$BACKEND_PORT" DIR="$dir"
    require_loopback_only "$cfg"
    nginx -t -q -p "$dir" -c "$cfg" >"$dir/validate" 2>&1 || die "nginx rejects $cfg: $(cat "$dir/validate")"
    require_port_free "$E19_NGINX_PORT"
    spawn $PROXY_CPU "$TMP/edge19-nginx.log" nginx -p "$dir" -c "$cfg"
    E19_PID[nginx]=$LAST_PID
    E19_PORT[nginx]=$E19_NGINX_PORT
    e19_wait_ready "nginx (proxy_cache)" "$LAST_PID" "$E19_NGINX_PORT" - "$TMP/edge19-nginx.log"
}

e19_start_haproxy() {
    local cfg=$TMP/edge19-haproxy.cfg
    $PY "$LIB/fill.py" "$CONF/haproxy-cache.cfg.in" "$cfg" PORT="$E19_HA_PORT" BACKEND_PORT="$BACKEND_PORT"
    require_loopback_only "$cfg"
    haproxy -c -q -f "$cfg" >/dev/null 2>&1 || die "haproxy rejects $cfg: $(haproxy -c -f "$cfg" 2>&1)"
    require_port_free "$E19_HA_PORT"
    spawn $PROXY_CPU "$TMP/edge19-haproxy.log" haproxy -db -f "$cfg"
    E19_PID[haproxy]=$LAST_PID
    E19_PORT[haproxy]=$E19_HA_PORT
    e19_wait_ready "HAProxy (cache)" "$LAST_PID" "$E19_HA_PORT" - "$TMP/edge19-haproxy.log"
}

# Each row's route does what the row claims, checked once before the rounds
# (and written to edge19-checks.txt for the report).
e19_check_cache() { # name port host hit-field
    local name=$1 port=$2 host=$3 field=$4 got v r0 r1
    e19_get "$port" "$host" /tiny -H "$E19_WARM_HDR" >/dev/null # stored (MISS), or already a HIT
    r0=$(backend_requests)
    got=$(e19_get "$port" "$host" /tiny)
    v=$(e19_hdr "$field")
    r1=$(backend_requests)
    [ "$got" = '200 {"ok":true}' ] && [ "$v" = HIT ] && [ "$r1" = "$r0" ] ||
        die "$name: after the warm-up GET /tiny got '$got' with $field '$v' and $((r1 - r0)) backend requests (want a HIT, none upstream)"
    e19_check_log "$name: GET /tiny after the warm-up: $got, $field: $v, Cache-Control: $(e19_hdr Cache-Control), backend requests: 0"
}

e19_check_routes() {
    local port=$E19_GW_PORT got v r0 r1
    got=$(e19_get "$port" plain.bench /tiny -H "Origin: $E19_ORIGIN")
    v=$(e19_hdr Access-Control-Allow-Origin)
    [ "$got" = '200 {"ok":true}' ] && [ -z "$v" ] ||
        die "portico plain.bench: '$got', Access-Control-Allow-Origin '$v' (want 200 and none)"
    e19_check_log "portico plain.bench GET /tiny with Origin: $got, no Access-Control-Allow-Origin"
    if [[ ,$E19_FEATURES, == *,cors,* ]]; then
        got=$(e19_get "$port" cors.bench /tiny -H "Origin: $E19_ORIGIN")
        v=$(e19_hdr Access-Control-Allow-Origin)
        [ "$got" = '200 {"ok":true}' ] && [ "$v" = "$E19_ORIGIN" ] ||
            die "portico cors.bench: '$got', Access-Control-Allow-Origin '$v' (want 200 and $E19_ORIGIN)"
        e19_check_log "portico cors.bench GET /tiny with Origin: $got, Access-Control-Allow-Origin: $v," \
            "-Credentials: $(e19_hdr Access-Control-Allow-Credentials), Vary: $(e19_hdr Vary)"
    fi
    [[ ,$E19_FEATURES, != *,cache,* ]] || e19_check_cache "portico cache.bench" "$port" cache.bench X-Cache
    if [[ ,$E19_FEATURES, == *,xform,* ]]; then
        got=$(e19_get "$port" xform.bench /users/1)
        # The user with its email renamed, its avatar removed and a field added.
        $PY -c '
import json, sys
u = json.loads(sys.argv[1].split(" ", 1)[1])
sys.exit(0 if sys.argv[1][:4] == "200 " and "contact" in u and "email" not in u
         and "avatar" not in u and u.get("source") == "portico" else 1)' "$got" ||
            die "portico xform.bench GET /users/1: '$got' (want 200, email renamed to contact, no avatar, source: portico)"
        e19_check_log "portico xform.bench GET /users/1: $got (plain: $(e19_get "$port" plain.bench /users/1))"
    fi
    if [[ ,$E19_FEATURES, == *,bff,* ]]; then
        r0=$(backend_requests)
        got=$(e19_get "$port" bff.bench /bff/1)
        r1=$(backend_requests)
        $PY -c '
import json, sys
d = json.loads(sys.argv[1].split(" ", 1)[1])
sys.exit(0 if sys.argv[1][:4] == "200 " and all(k in d for k in ("user", "orders", "health")) else 1)' "$got" ||
            die "portico bff.bench GET /bff/1: '$got' (want 200 with user, orders and health)"
        [ $((r1 - r0)) = 3 ] || die "one GET /bff/1 made $((r1 - r0)) backend requests, not 3"
        e19_check_log "portico bff.bench GET /bff/1: $got (3 backend requests)"
    fi
}

# wrk --latency's 99% line in µs ("99%    1.23ms").
e19_wrk_p99() { # wrk-output
    awk '$1 == "99%" {
        v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v)
        m = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1000000 : (u == "m") ? 60000000 : -1
        if (m > 0) printf "%.0f\n", v * m }' "$1"
}

# One run: wrk -t1 -c32 --latency for E19_D seconds (1 s in the warm-up,
# round 0, which records nothing).
e19_run() { # round name
    local r=$1 name=$2 sys host path
    read -r _ sys host path _ < <(printf '%s\n' "${E19_RUNS[@]}" | awk -v n="$name" '$1 == n')
    local pid=${E19_PID[$sys]} port=${E19_PORT[$sys]} out=$RAW/edge19-r$r-$name-wrk.txt
    local c0 c1 w0 w1 i0 i1 d=$E19_D args=(-t1 -c32 --latency)
    [ "$r" != 0 ] || d=1
    [ "$host" = - ] || args+=(-H "Host: $host")
    [ "$name" != p-plain ] && [ "$name" != p-cors ] || args+=(-H "Origin: $E19_ORIGIN")
    kill -0 "$pid" 2>/dev/null || die "$sys (pid $pid) is gone"
    backend_reset
    i0=$(cpu_idle_ticks $PROXY_CPU)
    c0=$(cpu_ns "$pid")
    w0=$(now_us)
    spin on # --spin: as in the rounds' wrk runs (README, "Two regimes")
    taskset -c $LOAD_CPU wrk "${args[@]}" -d"${d}s" "http://127.0.0.1:$port$path" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    spin off
    c1=$(cpu_ns "$pid")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    local accepts be_req
    read -r accepts be_req < <(backend_stats)
    [ -n "$be_req" ] || die "the backend's /__stats did not answer"
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$out")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from $name: $(cat "$out")"
    [ "$WRK_ERR" = 0 ] || die "$name: $WRK_ERR errors or non-2xx answers of $WRK_REQ (${out#"$ROOT"/})"
    [ "$r" != 0 ] || return 0
    local cpu
    cpu=$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)
    e19_record "$r" "$name" cpu_us "$cpu"
    e19_record "$r" "$name" rps "$WRK_RPS"
    e19_record "$r" "$name" responses "$WRK_REQ"
    e19_record "$r" "$name" p99_us "$(e19_wrk_p99 "$out")"
    e19_record "$r" "$name" upstream_requests "$be_req"
    e19_record "$r" "$name" upstream_accepts "$accepts"
    e19_record "$r" "$name" cpu_util_pct "$(calc "100 * ($c1 - $c0) / 1000 / ($w1 - $w0)" 1)"
    [ -n "$SPIN_PID0" ] || e19_record "$r" "$name" cpu0_other_pct \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
    log "  round $r $(printf '%-8s' "$name") $(calc "$cpu" 2) µs CPU/req, $WRK_RPS req/s," \
        "p99 $(e19_wrk_p99 "$out") µs, backend saw $be_req"
}

# One fixed-rate run on HOST PATH: h2load --h1 -c E19_LAT_CONNS at
# E19_LAT_RPS in total for E19_D seconds (1 s in round 0, which records
# nothing): latency percentiles from its per-request log (lib/h2lat.py, the
# first SKIP_S dropped), the achieved rate, portico's CPU per answer.
e19_lat_run() { # round name host path
    local r=$1 name=$2 host=$3 path=$4 pid=${E19_PID[portico]} base=$RAW/edge19-r$1-$2
    local d=$E19_D per=$((E19_LAT_RPS / E19_LAT_CONNS)) c0 c1 kv k v all=0
    [ "$r" != 0 ] || d=1
    [ "$per" -gt 0 ] || per=1
    kill -0 "$pid" 2>/dev/null || die "the edge19 gateway (pid $pid) is gone"
    backend_reset
    c0=$(cpu_ns "$pid")
    taskset -c $LOAD_CPU h2load --h1 -t1 -c"$E19_LAT_CONNS" --rps="$per" -D "$d" \
        -H ":authority: $host" --log-file="$TMP/e19-h2.log" "http://127.0.0.1:$E19_GW_PORT$path" \
        >"$base.h2load.txt" 2>&1 || die "h2load failed against $name: $(tail -5 "$base.h2load.txt")"
    c1=$(cpu_ns "$pid")
    kv=$($PY "$LIB/h2lat.py" "$TMP/e19-h2.log" "$SKIP_S" "$base.grid") ||
        die "no latency samples from h2load against $name"
    rm -f "$TMP/e19-h2.log"
    for k in $kv; do
        v=${k#*=}
        k=${k%%=*}
        case $k in
        p50 | p90 | p99 | p999 | rate | failed) [ "$r" = 0 ] || e19_record "$r" "$name" "$k" "$v" ;;
        all) all=$v ;;
        esac
    done
    [ "$all" -gt 0 ] || die "h2load got no successful answer from $name"
    [ "$r" != 0 ] || return 0
    local accepts be_req
    read -r accepts be_req < <(backend_stats)
    e19_record "$r" "$name" offered_rps $((per * E19_LAT_CONNS))
    e19_record "$r" "$name" responses "$all"
    e19_record "$r" "$name" upstream_requests "$be_req"
    e19_record "$r" "$name" cpu_us "$(calc "($c1 - $c0) / 1000 / $all" 3)"
    log "  round $r $(printf '%-9s' "$name") p50 $(awk -F'\t' -v r="$r" -v n="$name" \
        '$1 == r && $2 == n && $3 == "p50" { print $4 }' "$RAW/edge19.tsv") µs, p99 $(awk -F'\t' \
        -v r="$r" -v n="$name" '$1 == r && $2 == n && $3 == "p99" { print $4 }' "$RAW/edge19.tsv") µs"
}

measure_edge19() {
    local t0=$SECONDS spec name sys feat r i n
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the edge19 section's CPU clock"
    : >"$RAW/edge19.tsv"
    : >"$RAW/edge19-runs.tsv"
    : >"$RAW/edge19-checks.txt"
    printf 'edge19\trounds=%s d=%s origin=%s lat_rps=%s lat_conns=%s\n' "$E19_ROUNDS" "$E19_D" "$E19_ORIGIN" \
        "$E19_LAT_RPS" "$E19_LAT_CONNS" >>"$RAW/meta.tsv"
    log "issues 19 and 20, edge filters: cache hits beside nginx proxy_cache and HAProxy's cache," \
        "cors, body transforms, aggregate (127.0.0.1:$E19_GW_PORT, :$E19_NGINX_PORT, :$E19_HA_PORT)"
    e19_start_portico
    e19_start_nginx
    e19_start_haproxy
    e19_check_routes
    e19_check_cache "nginx proxy_cache" "$E19_NGINX_PORT" - X-Cache-Status
    e19_check_cache "HAProxy cache" "$E19_HA_PORT" - X-Cache-Status
    for spec in "${E19_RUNS[@]}"; do
        # shellcheck disable=SC2086 # spec is a word list
        set -- $spec
        name=$1 sys=$2 feat=$5
        if [ "$feat" != - ] && [ -n "${E19_SKIP[$feat]:-}" ]; then
            printf '%s\t%s\t%s\t%s\tskipped\n' "$name" "$sys" "$(e19_row "$name")" "$(e19_label "$name")" >>"$RAW/edge19-runs.tsv"
            printf '%s\n' "${E19_SKIP[$feat]}" >"$RAW/edge19-skip-$name.txt"
            continue
        fi
        printf '%s\t%s\t%s\t%s\tran\n' "$name" "$sys" "$(e19_row "$name")" "$(e19_label "$name")" >>"$RAW/edge19-runs.tsv"
        E19_RUN+=("$name")
    done
    log "edge19: warm-up (pools open, every run once for 1 s)"
    for name in "${E19_RUN[@]}"; do e19_run 0 "$name"; done
    n=${#E19_RUN[@]}
    for r in $(seq "$E19_ROUNDS"); do
        log "edge19, round $r/$E19_ROUNDS"
        # A B C …, then … C B A: a drift over the section favours no run.
        for i in $(seq 0 $((n - 1))); do
            [ $((r % 2)) = 1 ] || i=$((n - 1 - i))
            e19_run "$r" "${E19_RUN[$i]}"
        done
    done
    if [ -z "${E19_SKIP[bff]:-}" ]; then
        # Latency of the fan-out at a fixed rate, beside the plain route;
        # the peers stop first so their timers stay off CPU 0.
        for sys in nginx haproxy; do
            kill -TERM "${E19_PID[$sys]}" 2>/dev/null || true
            reap "${E19_PID[$sys]}"
            unset "E19_PID[$sys]"
        done
        for name in lat-plain lat-bff; do
            printf '%s\tportico\tlat\t%s\tran\n' "$name" "$(e19_label "$name")" >>"$RAW/edge19-runs.tsv"
        done
        log "edge19: fan-out latency at $E19_LAT_RPS req/s offered, $E19_ROUNDS rounds"
        e19_lat_run 0 lat-plain plain.bench /tiny
        e19_lat_run 0 lat-bff bff.bench /bff/1
        for r in $(seq "$E19_ROUNDS"); do
            # Alternate which route goes first, so neither always follows the other.
            if [ $((r % 2)) = 1 ]; then
                e19_lat_run "$r" lat-plain plain.bench /tiny
                e19_lat_run "$r" lat-bff bff.bench /bff/1
            else
                e19_lat_run "$r" lat-bff bff.bench /bff/1
                e19_lat_run "$r" lat-plain plain.bench /tiny
            fi
        done
    fi
    for sys in portico nginx haproxy; do
        [ -n "${E19_PID[$sys]:-}" ] || continue
        kill -TERM "${E19_PID[$sys]}" 2>/dev/null || true
        reap "${E19_PID[$sys]}"
    done
    e19_record 0 run edge19_elapsed_s $((SECONDS - t0))
}
