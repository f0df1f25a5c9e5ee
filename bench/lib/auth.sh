# shellcheck shell=bash
# bench/lib/auth.sh — issue 15's section of bench/run.sh (sourced by it):
# what verifying a caller costs per request. JWT (RS256, ES256) with a
# repeated token (portico's verified-token cache hits) and with a new token
# on every request (cold: every one verified), beside HAProxy 2.6's
# jwt_verify on the same key and the same route, the plain route of both,
# and OpenSSL's own verify speed (`openssl speed`: the physical limit);
# and key_auth with 1,000 consumers against the plain route.
#
# Not a row of run.sh's rounds: it has its own gateways, rounds and load,
# and writes its numbers to RAW/auth.tsv (round, run, metric, value) and
# RAW/auth-runs.tsv (run, system, label, ran|skipped); bench/lib/
# report_auth.py turns them into the report's "Issue 15" section. See
# bench/README.md, "Issue 15".
#
# Uses cpu_ns and cpu_idle_ticks from lib/balance.sh (sourced before it).
# Its variables are ID_* and its functions id_* (run.sh's AUTH_* belong to
# the ext_auth rows).
#
# Ports: BASE+14 the portico gateway (all its routes, told apart by Host),
# BASE+15 HAProxy. Like everything else: loopback only, proxies on CPU 0,
# load and the backend on CPU 1, every process recorded in STARTED and
# killed on exit.

ID_GW_PORT=$((PORT_BASE + 14))
ID_HA_PORT=$((PORT_BASE + 15))
ID_MAX_ROUNDS=6   # token slices are made for this many rounds (+1 for the warm-up)
ID_ROUNDS=6
ID_D=2            # seconds per repeated-header run (wrk -t1 -c32)
ID_RS_SLICE=16000 # unique RS256 tokens per cold run (~0.7 s at saturation)
ID_ES_SLICE=10000 # unique ES256 tokens per cold run (~1 s)
ID_SPEED_S=2      # openssl speed -seconds, run before and after the rounds
ID_COLD_MAX_S=60  # a cold run that has not used its tokens up by then stops anyway
# Keys, JWKS and tokens: signing 112,000 RS256 tokens takes ~40 s, so they
# are kept beside the build and reused (they expire in 2100).
ID_DIR=${PORTICO_BENCH_AUTH_DIR:-$BUILD_DIR/bench-auth}
ID_AA=${PORTICO_BENCH_AUTH_AA:-0} # 1: the auth routes without their filters (A/A)

# name, system, Host, load (static: the same headers on every request;
# cold: a new token on every request), token family — in round order.
ID_RUNS=(
    "p-plain portico plain.bench static rs256"
    "p-rs-hit portico rs256.bench static rs256"
    "p-es-hit portico es256.bench static es256"
    "p-key portico apkey.bench static rs256"
    "p-plain-cold portico plain.bench cold plain"
    "p-rs-cold portico rs256.bench cold rs256"
    "p-es-cold portico es256.bench cold es256"
    "h-plain-cold haproxy plain.bench cold plain"
    "h-rs-cold haproxy rs256.bench cold rs256"
    "h-es-cold haproxy es256.bench cold es256"
)
declare -A ID_PID ID_PORT ID_SKIP # ID_SKIP[feature]: why this build refuses it
ID_RUN=()                             # runs whose system and route are up
ID_FEATURES=""                        # portico features this build accepts (jwt, key_auth)

id_quick() { ID_ROUNDS=2 ID_D=1 ID_SPEED_S=1; }

id_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/auth.tsv"; }

# True while PID runs (a zombie, i.e. exited but not yet reaped, does not).
id_alive() { # pid
    local s
    read -r s <"/proc/$1/stat" 2>/dev/null || return 1
    s=${s##*) }
    [ "${s%% *}" != Z ]
}

# The run's label for the report.
id_label() { # name
    local ha
    ha="HAProxy $(haproxy_version)"
    case $1 in
    p-plain) echo "portico plain route (no auth), repeated headers" ;;
    p-rs-hit) echo "portico jwt RS256, repeated token (cache hit)" ;;
    p-es-hit) echo "portico jwt ES256, repeated token (cache hit)" ;;
    p-key) echo "portico key_auth, 1,000 consumers" ;;
    p-plain-cold) echo "portico plain route (no auth), unique tokens" ;;
    p-rs-cold) echo "portico jwt RS256, unique tokens (cold)" ;;
    p-es-cold) echo "portico jwt ES256, unique tokens (cold)" ;;
    h-plain-cold) echo "$ha plain route (no auth), unique tokens" ;;
    h-rs-cold) echo "$ha jwt_verify RS256, unique tokens" ;;
    h-es-cold) echo "$ha jwt_verify ES256, unique tokens" ;;
    esac
}

# The portico feature a route needs ("" for the plain route).
id_feature() { # host
    case $1 in rs256.* | es256.*) echo jwt ;; apkey.*) echo key_auth ;; *) echo "" ;; esac
}

# Keys, JWKS, tokens and API keys (reused when already made with these
# parameters; see lib/gen_auth.py).
id_material() {
    local out
    log "  keys and tokens in ${ID_DIR} ($((ID_MAX_ROUNDS + 1)) slices of $ID_RS_SLICE RS256" \
        "and $ID_ES_SLICE ES256 tokens; ~45 s when not there yet)"
    out=$(taskset -c $LOAD_CPU $PY "$LIB/gen_auth.py" material "$ID_DIR" $((ID_MAX_ROUNDS + 1)) \
        "$ID_RS_SLICE" "$ID_ES_SLICE" 2>&1) || die "gen_auth.py material failed: $out"
    log "  tokens: $out"
    ID_KEY=$(sed -n 500p "$ID_DIR/api_keys.txt") # a consumer in the middle of the table
    [ -n "$ID_KEY" ] || die "no API keys in $ID_DIR/api_keys.txt"
}

# Writes the portico config with FEATURES (comma-separated) to OUT and
# validates it. Returns 1 with the refusal in ID_MSG when this build
# does not support a key yet; dies on any other refusal.
id_portico_config() { # out features
    local cfg=$1 msg
    $PY "$LIB/gen_auth.py" config "$CONF/portico-auth.yaml.in" "$cfg" "$2" PORT="$ID_GW_PORT" \
        BACKEND_PORT="$BACKEND_PORT" DIR="$ID_DIR" || die "gen_auth.py config failed"
    require_loopback_only "$cfg"
    if ! msg=$("$PORTICO_BIN" validate "$cfg" 2>&1); then
        if [[ $msg == *"not supported by this build yet"* ]]; then
            msg=$(printf '%s' "$msg" | grep -m1 'not supported by this build yet')
            ID_MSG=${msg#"$TMP"/}
            return 1
        fi
        die "portico rejects the auth gateway config ($2): $msg"
    fi
}

# GET /tiny on PORT with Host HOST and headers; prints the status and body.
id_probe() { # port host [curl args...]
    local port=$1 host=$2
    shift 2
    curl -s --max-time 2 -w ' %{http_code}' -H "Host: $host" "$@" "http://127.0.0.1:$port/tiny" || true
}

# A route is up when a good credential passes ({"ok":true}) and, on an auth
# route, a bad one is refused with 401: a filter that let everything
# through would make its row meaningless.
id_check_route() { # system port host
    local sys=$1 port=$2 host=$3 fam=rs256 got
    [[ $host == es256.* ]] && fam=es256
    got=$(id_probe "$port" "$host" -H "Authorization: Bearer $(<"$ID_DIR/$fam.one")" -H "X-API-Key: $ID_KEY")
    [ "$got" = '{"ok":true} 200' ] || die "$sys, $host: a good credential got '$got'"
    [[ $sys != portico* ]] || [ "$ID_AA" = 0 ] || return 0 # A/A: no filter to refuse anything
    case $host in
    rs256.* | es256.*)
        got=$(id_probe "$port" "$host" -H "Authorization: Bearer $(<"$ID_DIR/$fam.bad")")
        [ "${got##* }" = 401 ] || die "$sys, $host: a token with a bad signature got '$got', not 401"
        got=$(id_probe "$port" "$host")
        [ "${got##* }" = 401 ] || die "$sys, $host: a request without a token got '$got', not 401"
        ;;
    apkey.*)
        got=$(id_probe "$port" "$host" -H "X-API-Key: ${ID_KEY}x")
        [ "${got##* }" = 401 ] || die "$sys, $host: a wrong API key got '$got', not 401"
        ;;
    esac
}

# Waits until the plain route answers (start-up), then checks every route.
id_wait() { # system pid port logfile hosts...
    local sys=$1 pid=$2 port=$3 logf=$4 got="" h
    shift 4
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || die "$sys exited during start-up: $(tail -20 "$logf")"
        got=$(id_probe "$port" plain.bench)
        [ "$got" = '{"ok":true} 200' ] && break
        sleep 0.1
    done
    [ "$got" = '{"ok":true} 200' ] || die "$sys did not answer on 127.0.0.1:$port within 10 s ('$got'): $(tail -20 "$logf")"
    require_sole_listener "$port" "$pid"
    for h in "$@"; do id_check_route "$sys" "$port" "$h"; done
}

# The portico gateway with every feature this build accepts: each one is
# first tried alone beside the plain route, so one refusal does not hide
# the other feature's rows. An A/A run (PORTICO_BENCH_AUTH_AA=1) keeps the
# routes without their filters: every ratio is then between identical
# routes, which shows what the method resolves.
id_start_portico() {
    local cfg=$TMP/auth-portico.yaml f hosts=(plain.bench) feats=()
    if [ "$ID_AA" = 1 ]; then
        feats=(jwt_routes key_routes)
        log "  A/A run: the jwt and key_auth routes have no filter"
    else
        for f in jwt key_auth; do
            if id_portico_config "$TMP/auth-probe-$f.yaml" "$f,${f%_auth}_routes"; then
                feats+=("$f" "${f%_auth}_routes")
            else
                ID_SKIP[$f]=$ID_MSG
                printf '%s\n' "$ID_MSG" >"$RAW/skip-auth-$f.txt"
                log "  SKIPPED portico $f rows: this build refuses its config: $ID_MSG"
            fi
        done
    fi
    ID_FEATURES=$(
        IFS=,
        echo "${feats[*]}"
    )
    id_portico_config "$cfg" "$ID_FEATURES" ||
        die "portico refuses the auth gateway with $ID_FEATURES together: $ID_MSG"
    [[ ,$ID_FEATURES, == *,jwt_routes,* ]] && hosts+=(rs256.bench es256.bench)
    [[ ,$ID_FEATURES, == *,key_routes,* ]] && hosts+=(apkey.bench)
    require_port_free "$ID_GW_PORT"
    spawn $PROXY_CPU "$TMP/auth-portico.log" "$PORTICO_BIN" -c "$cfg"
    ID_PID[portico]=$LAST_PID
    ID_PORT[portico]=$ID_GW_PORT
    id_wait "portico (auth gateway)" "$LAST_PID" "$ID_GW_PORT" "$TMP/auth-portico.log" "${hosts[@]}"
}

id_start_haproxy() {
    local cfg=$TMP/auth-haproxy.cfg
    $PY "$LIB/fill.py" "$CONF/haproxy-auth.cfg.in" "$cfg" PORT="$ID_HA_PORT" \
        BACKEND_PORT="$BACKEND_PORT" RS_PEM="$ID_DIR/rs256.pub.pem" ES_PEM="$ID_DIR/es256.pub.pem"
    require_loopback_only "$cfg"
    haproxy -c -q -f "$cfg" >/dev/null 2>&1 || die "haproxy rejects $cfg: $(haproxy -c -f "$cfg" 2>&1)"
    require_port_free "$ID_HA_PORT"
    spawn $PROXY_CPU "$TMP/auth-haproxy.log" haproxy -db -f "$cfg"
    ID_PID[haproxy]=$LAST_PID
    ID_PORT[haproxy]=$ID_HA_PORT
    id_wait "HAProxy (auth)" "$LAST_PID" "$ID_HA_PORT" "$TMP/auth-haproxy.log" \
        plain.bench rs256.bench es256.bench
}

# OpenSSL's own verify speed on the proxies' CPU: RSA 2048 and ECDSA P-256
# verifications per second (the raw signature check of a digest: no
# hashing, base64 or JSON), the physical limit of a cold JWT check.
id_openssl_speed() { # tag (start|end)
    local out=$RAW/auth-openssl-$1.txt rsa ec
    taskset -c $PROXY_CPU openssl speed -seconds "$ID_SPEED_S" rsa2048 ecdsap256 >"$out" 2>/dev/null ||
        die "openssl speed failed: $(tail -5 "$out")"
    rsa=$(awk '/^rsa 2048 bits/ { print $NF }' "$out")
    ec=$(awk '/nistp256/ && /ecdsa/ { print $NF }' "$out")
    [ -n "$rsa" ] && [ -n "$ec" ] || die "no verify/s figures in $out"
    id_record 0 openssl "rsa2048_verify_per_s_$1" "$rsa"
    id_record 0 openssl "ecdsap256_verify_per_s_$1" "$ec"
    log "  openssl speed ($1, CPU $PROXY_CPU): rsa2048 $rsa verify/s ($(calc "1e6 / $rsa" 1) µs)," \
        "ecdsap256 $ec verify/s ($(calc "1e6 / $ec" 1) µs)"
}

# One run: wrk -t1 -c32 on the run's route, the proxy's CPU time around it
# (schedstat, ns) ÷ the responses wrk counted. A static run lasts ID_D
# seconds; a cold run lasts until its slice of tokens is used up.
id_measure() { # round name
    local r=$1 name=$2 sys host load fam
    read -r _ sys host load fam < <(printf '%s\n' "${ID_RUNS[@]}" | awk -v n="$name" '$1 == n')
    local pid=${ID_PID[$sys]} port=${ID_PORT[$sys]} out=$RAW/auth-r$r-$name-wrk.txt c0 c1 w0 w1
    kill -0 "$pid" 2>/dev/null || die "$sys (pid $pid) is gone"
    local args=(-t1 -c32 -H "Host: $host" -H "X-API-Key: $ID_KEY")
    local url="http://127.0.0.1:$port/tiny" slice=$r toks
    if [ "$load" = static ]; then
        local d=$ID_D
        [ "$r" != 0 ] || d=1 # warm-up
        args+=(-d"${d}s" -H "Authorization: Bearer $(<"$ID_DIR/$fam.one")")
    else
        # The plain routes verify nothing: they get the warm-up slice of RS256
        # tokens (the RS256 rows' size), every round.
        [ "$fam" != plain ] || fam=rs256 slice=0
        toks=$ID_DIR/$fam-$slice.tokens
        [ -r "$toks" ] || die "no token slice $toks"
        rm -f "$TMP/auth-done"
        args+=(-d"${ID_COLD_MAX_S}s" -s "$LIB/auth_cold.lua")
    fi
    local i0 i1
    i0=$(cpu_idle_ticks $PROXY_CPU)
    c0=$(cpu_ns "$pid")
    w0=$(now_us)
    spin on # --spin: as in the rounds' wrk runs (README, "Two regimes")
    if [ "$load" = static ]; then
        taskset -c $LOAD_CPU wrk "${args[@]}" "$url" >"$out" 2>&1 || die "wrk failed: $(cat "$out")"
    else
        spawn $LOAD_CPU "$out" wrk "${args[@]}" "$url" -- "$toks" "$TMP/auth-done"
        local wpid=$LAST_PID
        while id_alive "$wpid" && [ ! -e "$TMP/auth-done" ]; do sleep 0.02; done
        kill -INT "$wpid" 2>/dev/null || true
        reap "$wpid"
    fi
    spin off
    c1=$(cpu_ns "$pid")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$out")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from $name: $(cat "$out")"
    [ "$WRK_ERR" = 0 ] || die "$name: $WRK_ERR errors or non-2xx answers of $WRK_REQ (${out#"$ROOT"/})"
    local cpu
    cpu=$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)
    id_record "$r" "$name" cpu_us "$cpu"
    id_record "$r" "$name" rps "$WRK_RPS"
    id_record "$r" "$name" responses "$WRK_REQ"
    id_record "$r" "$name" cpu_util_pct "$(calc "100 * ($c1 - $c0) / 1000 / ($w1 - $w0)" 1)"
    # Other work on the proxy's CPU during the run (another user of the
    # machine): wall time − CPU 0's idle time − the proxy's time. With
    # --spin the idle-class loops fill CPU 0, so the figure is not kept.
    [ -n "$SPIN_PID0" ] || id_record "$r" "$name" cpu0_other_pct \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
    [ "$r" = 0 ] || log "  round $r $(printf '%-12s' "$name") $(calc "$cpu" 1) µs CPU/req," \
        "$WRK_RPS req/s ($WRK_REQ responses)"
}

measure_auth() {
    local t0=$SECONDS spec name sys host load fam f
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the auth section's CPU clock"
    [ "$ID_ROUNDS" -le "$ID_MAX_ROUNDS" ] || die "ID_ROUNDS > ID_MAX_ROUNDS: not enough token slices"
    : >"$RAW/auth.tsv"
    : >"$RAW/auth-runs.tsv"
    printf 'auth\trounds=%s run_s=%s rs_slice=%s es_slice=%s consumers=1000 speed_s=%s aa=%s\n' \
        "$ID_ROUNDS" "$ID_D" "$ID_RS_SLICE" "$ID_ES_SLICE" "$ID_SPEED_S" "$ID_AA" >>"$RAW/meta.tsv"
    log "issue 15, auth: jwt (RS256, ES256; repeated and unique tokens) beside HAProxy jwt_verify," \
        "key_auth (1,000 consumers), the plain route and openssl speed"
    id_material
    id_start_portico
    id_start_haproxy
    id_openssl_speed start
    for spec in "${ID_RUNS[@]}"; do
        # shellcheck disable=SC2086 # spec is a word list
        set -- $spec
        name=$1 sys=$2 host=$3
        f=$(id_feature "$host")
        if [ "$sys" = portico ] && [ -n "$f" ] && [ -n "${ID_SKIP[$f]:-}" ]; then
            printf '%s\t%s\t%s\t%s\n' "$name" "$sys" "$(id_label "$name")" skipped >>"$RAW/auth-runs.tsv"
            cp "$RAW/skip-auth-$f.txt" "$RAW/skip-$name.txt"
            continue
        fi
        printf '%s\t%s\t%s\t%s\n' "$name" "$sys" "$(id_label "$name")" ran >>"$RAW/auth-runs.tsv"
        ID_RUN+=("$name")
    done
    log "auth: warm-up (pools open, caches and allocator in steady state)"
    for name in "${ID_RUN[@]}"; do id_measure 0 "$name"; done
    local r i n=${#ID_RUN[@]}
    for r in $(seq "$ID_ROUNDS"); do
        log "auth, round $r/$ID_ROUNDS"
        # A B C …, then … C B A: a drift over the section favours no run.
        for i in $(seq 0 $((n - 1))); do
            [ $((r % 2)) = 1 ] || i=$((n - 1 - i))
            id_measure "$r" "${ID_RUN[$i]}"
        done
    done
    id_openssl_speed end
    for sys in portico haproxy; do
        kill -TERM "${ID_PID[$sys]}"
        reap "${ID_PID[$sys]}"
    done
    id_record 0 run auth_elapsed_s $((SECONDS - t0))
}
