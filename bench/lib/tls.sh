# shellcheck shell=bash
# bench/lib/tls.sh — issue 18's section of bench/run.sh (sourced by it):
# what TLS termination and HTTP/2 cost, portico beside nginx and HAProxy
# configured the same way (conf/portico-tls.yaml.in, conf/nginx-tls.conf.in,
# conf/haproxy-tls.cfg.in): one ECDSA P-256 certificate made here once with
# the openssl CLI, TLS 1.2 and 1.3, Mozilla "intermediate" ciphers with the
# client's preference, session tickets on, ALPN h2,http/1.1, keep-alive on
# both sides, the plain HTTP/1.1 demo backend behind, one worker/thread each.
#
#   ka  HTTPS/1.1 kept alive: wrk -t1 -c32 against https:// (one handshake
#       per connection, at the start): CPU per request, requests/s.
#   hs  new TLS handshakes: h2load --h1 -c N -n N — N clients, each a fresh
#       OpenSSL object with no session to offer, one connection and one
#       request each, so every connection is a FULL handshake (h2load only
#       resumes when a client reconnects, which never happens here; HAProxy's
#       counters of new and resumed sessions are read around each run and
#       must show no resumption). Handshakes/s as h2load saw them, CPU per
#       handshake (connection + handshake + one request + close) and
#       handshakes per second of the proxy's CPU (per core).
#   h2  HTTP/2 over TLS (ALPN h2): h2load -c4 -m100 (400 streams in flight):
#       requests/s and CPU per request.
#
# Rounds are paired: every row runs each system once per round, in the
# order A B C, then C B A in the next round, so a drift favours no system.
# Portico's runs are skipped, with the refusal as the reason, while the
# build says `tls` or `http2` "is not supported by this build yet" (or its
# listener does not answer over TLS, or ALPN does not pick h2).
#
# Writes RAW/tls.tsv (round, run, metric, value), RAW/tls-runs.tsv (run,
# system, row, label, ran|skipped), RAW/tls-skip-RUN.txt (why) and
# RAW/tls-info.tsv (system, probe, protocol, cipher, group, ALPN: what each
# negotiated); bench/lib/report_tls.py turns them into the "Issue 18"
# section. Uses cpu_ns and cpu_idle_ticks (lib/balance.sh) and gen_auth.py's
# config mode (lib/auth.sh). Variables TLS_*, functions tls_*.
#
# Ports BASE+42 (portico), BASE+43 (HAProxy), BASE+44 (nginx). Like
# everything else: loopback only, proxies on CPU 0, load and backend on
# CPU 1, every process recorded in STARTED and killed on exit.

TLS_PORTICO_PORT=$((PORT_BASE + 42))
TLS_HAPROXY_PORT=$((PORT_BASE + 43))
TLS_NGINX_PORT=$((PORT_BASE + 44))
TLS_ROUNDS=6     # paired rounds (A B C, then C B A)
TLS_D=3          # seconds per wrk -c32 (ka) and h2load -m100 (h2) run
TLS_HS_N=1000    # connections (= full handshakes) per hs run, opened at once
TLS_KA_CONNS=32  # wrk connections of the ka row
TLS_H2_CONNS=4   # h2load connections of the h2 row …
TLS_H2_STREAMS=100 # … and streams in flight on each (MAX_CONCURRENT_STREAMS)

TLS_SYSTEMS=(portico haproxy nginx)
TLS_ROWS=(ka hs h2)
declare -A TLS_PID TLS_PORT TLS_SKIP # TLS_SKIP[run]: why that run does not happen
TLS_CERT_DIR=""

tls_quick() { TLS_ROUNDS=2 TLS_D=1 TLS_HS_N=300; }

tls_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/tls.tsv"; }

tls_label() { # system
    case $1 in
    portico) echo "portico" ;;
    haproxy) echo "HAProxy $(haproxy_version)" ;;
    nginx) echo "nginx $(nginx -v 2>&1 | sed 's|.*/||')" ;;
    esac
}

# The tools and builds this section needs: the peers with TLS and HTTP/2.
tls_preflight() {
    command -v openssl >/dev/null || die "the tls section needs the openssl CLI (apt-get install openssl)"
    local v
    v=$(haproxy -vv 2>&1)
    [[ $v == *"Built with OpenSSL"* ]] || die "this haproxy is built without OpenSSL: the tls section needs it"
    v=$(nginx -V 2>&1)
    [[ $v == *--with-http_ssl_module* && $v == *--with-http_v2_module* ]] ||
        die "this nginx lacks http_ssl_module or http_v2_module (Debian's nginx has both; see scripts/deps.sh)"
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the tls section's CPU clock"
}

# The certificate every system serves: ECDSA P-256, self-signed, made once
# per run in the run's temp dir (the private key never leaves it).
tls_make_cert() {
    TLS_CERT_DIR=$TMP/tls
    mkdir -p "$TLS_CERT_DIR"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj /CN=bench.local -addext "subjectAltName=DNS:bench.local,IP:127.0.0.1" \
        -keyout "$TLS_CERT_DIR/key.pem" -out "$TLS_CERT_DIR/cert.pem" >"$TLS_CERT_DIR/openssl.log" 2>&1 ||
        die "openssl could not make the bench certificate: $(cat "$TLS_CERT_DIR/openssl.log")"
    chmod 600 "$TLS_CERT_DIR/key.pem"
    cat "$TLS_CERT_DIR/cert.pem" "$TLS_CERT_DIR/key.pem" >"$TLS_CERT_DIR/crt.pem" # HAProxy's crt
    chmod 600 "$TLS_CERT_DIR/crt.pem"
}

# GET /tiny over TLS; prints "HTTP-VERSION BODY" ("2 {"ok":true}").
tls_get() { # port curl-flags...
    local port=$1
    shift
    curl -sk --max-time 2 "$@" -w ' %{http_version}' "https://127.0.0.1:$port/tiny" 2>/dev/null |
        awk '{ v = $NF; $NF = ""; sub(/ $/, ""); print v, $0 }' || true
}

# Waits until the system answers GET /tiny over TLS. Returns 1 (with the
# reason in TLS_MSG) after 10 s or if the process exits.
tls_wait_ready() { # name pid port logfile
    local name=$1 pid=$2 port=$3 logf=$4 got=""
    for _ in $(seq 100); do
        if ! kill -0 "$pid" 2>/dev/null; then
            TLS_MSG="$name exited during start-up: $(tail -5 "$logf" | tr '\n' ' ')"
            return 1
        fi
        got=$(tls_get "$port" --http1.1)
        if [ "$got" = '1.1 {"ok":true}' ]; then
            require_sole_listener "$port" "$pid"
            return 0
        fi
        sleep 0.1
    done
    TLS_MSG="$name did not answer GET /tiny over TLS on 127.0.0.1:$port within 10 s (curl: '$got')"
    return 1
}

# Writes portico's config with FEATURES (http2 or none) and validates it.
# Returns 1 with the refusal in TLS_MSG when this build does not support a
# key yet; dies on any other refusal.
tls_portico_config() { # out features
    local cfg=$1 msg
    $PY "$LIB/gen_auth.py" config "$CONF/portico-tls.yaml.in" "$cfg" "$2" PORT="$TLS_PORTICO_PORT" \
        BACKEND_PORT="$BACKEND_PORT" CERT="$TLS_CERT_DIR/cert.pem" KEY="$TLS_CERT_DIR/key.pem" ||
        die "gen_auth.py config failed"
    require_loopback_only "$cfg"
    if ! msg=$("$PORTICO_BIN" validate "$cfg" 2>&1); then
        if [[ $msg == *"not supported by this build yet"* ]]; then
            msg=$(printf '%s' "$msg" | grep -m1 'not supported by this build yet')
            TLS_MSG=${msg#"$TMP"/}
            return 1
        fi
        die "portico rejects the tls config ($2): $msg"
    fi
}

tls_skip() { # system rows reason
    local sys=$1 rows=$2 row
    shift 2
    for row in $rows; do TLS_SKIP[$row-$sys]=$*; done
    log "  SKIPPED $sys, rows ${rows// /, }: $*"
}

# Portico with TLS and HTTP/2 if this build takes both, with TLS alone if
# it refuses http2 (the h2 row is then skipped), not at all if it refuses
# tls (every portico row skipped).
tls_start_portico() {
    local cfg=$TMP/tls-portico.yaml feats=http2 why_h2=""
    if ! tls_portico_config "$cfg" http2; then
        why_h2=$TLS_MSG
        feats=""
        if ! tls_portico_config "$cfg" ""; then
            tls_skip portico "ka hs h2" "$TLS_MSG"
            return 0
        fi
    fi
    require_port_free "$TLS_PORTICO_PORT"
    spawn $PROXY_CPU "$TMP/tls-portico.log" "$PORTICO_BIN" -c "$cfg"
    TLS_PID[portico]=$LAST_PID
    TLS_PORT[portico]=$TLS_PORTICO_PORT
    if ! tls_wait_ready portico "$LAST_PID" "$TLS_PORTICO_PORT" "$TMP/tls-portico.log"; then
        tls_skip portico "ka hs h2" "$TLS_MSG"
        kill -TERM "$LAST_PID" 2>/dev/null || true
        reap "$LAST_PID"
        unset 'TLS_PID[portico]'
        return 0
    fi
    local got
    if [ -n "$why_h2" ]; then
        tls_skip portico h2 "$why_h2"
    elif got=$(tls_get "$TLS_PORTICO_PORT" --http2) && [ "$got" != '2 {"ok":true}' ]; then
        tls_skip portico h2 "with \`http2: true\`, GET /tiny over TLS with ALPN h2 did not get an HTTP/2 answer (curl --http2: '$got')"
    fi
    log "  portico: TLS listener up${feats:+ with http2} (127.0.0.1:$TLS_PORTICO_PORT)"
}

tls_start_haproxy() {
    local cfg=$TMP/tls-haproxy.cfg
    $PY "$LIB/fill.py" "$CONF/haproxy-tls.cfg.in" "$cfg" PORT="$TLS_HAPROXY_PORT" \
        BACKEND_PORT="$BACKEND_PORT" CRT="$TLS_CERT_DIR/crt.pem" DIR="$TMP"
    require_loopback_only "$cfg"
    haproxy -c -q -f "$cfg" >/dev/null 2>&1 || die "haproxy rejects $cfg: $(haproxy -c -f "$cfg" 2>&1)"
    require_port_free "$TLS_HAPROXY_PORT"
    spawn $PROXY_CPU "$TMP/tls-haproxy.log" haproxy -db -f "$cfg"
    TLS_PID[haproxy]=$LAST_PID
    TLS_PORT[haproxy]=$TLS_HAPROXY_PORT
    tls_wait_ready HAProxy "$LAST_PID" "$TLS_HAPROXY_PORT" "$TMP/tls-haproxy.log" || die "$TLS_MSG"
    [ "$(tls_get "$TLS_HAPROXY_PORT" --http2)" = '2 {"ok":true}' ] || die "HAProxy does not answer over h2"
    [[ $(tls_haproxy_sessions) =~ ^[0-9]+\ [0-9]+$ ]] ||
        die "HAProxy's stats socket has no ssl_sess/ssl_reused_sess for its TLS frontend"
}

tls_start_nginx() {
    local dir=$TMP/nginx-tls
    local cfg=$dir/nginx.conf
    mkdir -p "$dir"
    $PY "$LIB/fill.py" "$CONF/nginx-tls.conf.in" "$cfg" PORT="$TLS_NGINX_PORT" \
        BACKEND_PORT="$BACKEND_PORT" DIR="$dir" CERT="$TLS_CERT_DIR/cert.pem" KEY="$TLS_CERT_DIR/key.pem"
    require_loopback_only "$cfg"
    nginx -t -q -p "$dir" -c "$cfg" >"$dir/validate" 2>&1 || die "nginx rejects $cfg: $(cat "$dir/validate")"
    require_port_free "$TLS_NGINX_PORT"
    spawn $PROXY_CPU "$TMP/tls-nginx.log" nginx -p "$dir" -c "$cfg"
    TLS_PID[nginx]=$LAST_PID
    TLS_PORT[nginx]=$TLS_NGINX_PORT
    tls_wait_ready nginx "$LAST_PID" "$TLS_NGINX_PORT" "$TMP/tls-nginx.log" || die "$TLS_MSG"
    [ "$(tls_get "$TLS_NGINX_PORT" --http2)" = '2 {"ok":true}' ] || die "nginx does not answer over h2"
}

# HAProxy's TLS frontend: "new resumed" sessions so far (its stats socket;
# python3 because socat is not a dependency).
tls_haproxy_sessions() {
    $PY - "$TMP/haproxy-tls.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
out = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    out += b
lines = out.decode().splitlines()
head = lines[0].lstrip("# ").split(",")
for line in lines[1:]:
    f = line.split(",")
    if len(f) == len(head) and f[0] == "bench_tls" and f[1] == "FRONTEND":
        row = dict(zip(head, f))
        print(row.get("ssl_sess", ""), row.get("ssl_reused_sess", ""))
EOF
}

# What a client negotiates with each system: openssl s_client with its
# defaults (the offer wrk makes) and forced to TLS 1.2.
tls_probe() { # system
    local sys=$1 port=${TLS_PORT[$1]} how out
    for how in "(defaults, like wrk)" -tls1_2; do
        local args=(-connect "127.0.0.1:$port" -alpn http/1.1)
        [ "$how" != -tls1_2 ] || args+=(-tls1_2)
        out=$(openssl s_client "${args[@]}" </dev/null 2>&1 || true)
        # "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
        printf '%s\ts_client %s\t%s\t%s\t%s\t%s\n' "$sys" "$how" \
            "$(sed -n 's/^New, \([^,]*\), Cipher is .*/\1/p' <<<"$out")" \
            "$(sed -n 's/^New, [^,]*, Cipher is //p' <<<"$out")" \
            "$(sed -n 's/^Server Temp Key: //p' <<<"$out" | tr -d ,)" "$(sed -n 's/^ALPN protocol: //p' <<<"$out")" \
            >>"$RAW/tls-info.tsv"
    done
    # Session tickets on: a second connection offering the first one's
    # session resumes (the request is answered first, so the TLS 1.3
    # tickets sent after the handshake have arrived).
    local sess=$TMP/tls/sess-$sys.pem
    printf 'GET /tiny HTTP/1.0\r\n\r\n' |
        openssl s_client -connect "127.0.0.1:$port" -sess_out "$sess" -quiet >/dev/null 2>&1 || true
    out=$(printf 'GET /tiny HTTP/1.0\r\n\r\n' |
        openssl s_client -connect "127.0.0.1:$port" -sess_in "$sess" 2>&1 || true)
    printf '%s\tresumption\t%s\n' "$sys" "$(grep -m1 -oE '^(New|Reused),' <<<"$out" | tr -d , || echo none)" \
        >>"$RAW/tls-resume.tsv"
}

# What an h2load run negotiated, once per system and row.
tls_h2load_info() { # system probe-name h2load-output
    grep -q "^$1	$2	" "$RAW/tls-info.tsv" 2>/dev/null && return 0
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" \
        "$(sed -n 's/^TLS Protocol: //p' "$3")" "$(sed -n 's/^Cipher: //p' "$3")" \
        "$(sed -n 's/^Server Temp Key: //p' "$3")" "$(sed -n 's/^Application protocol: //p' "$3")" \
        >>"$RAW/tls-info.tsv"
}

# h2load's counts: "2XX REQ_PER_S FAILED" (2xx answers, the rate it
# printed, requests that failed or errored).
tls_parse_h2load() { # file
    awk '
        /^finished in / { rps = $4 }
        /^requests: / { failed = $10 + $12 }
        /^status codes: / { ok = $3 }
        END { printf "%d %.1f %d\n", ok, rps, failed }' "$1"
}

# Records the proxy's CPU per unit, its utilisation and how busy CPU 0 was
# with anything else, over one run.
tls_record_cpu() { # round run units c0 c1 w0 w1 i0 i1
    local r=$1 run=$2 n=$3 c0=$4 c1=$5 w0=$6 w1=$7 i0=$8 i1=$9
    tls_record "$r" "$run" cpu_us "$(calc "($c1 - $c0) / 1000 / $n" 3)"
    tls_record "$r" "$run" cpu_util_pct "$(calc "100 * ($c1 - $c0) / 1000 / ($w1 - $w0)" 1)"
    [ -n "$SPIN_PID0" ] || tls_record "$r" "$run" cpu0_other_pct \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
}

# One run of ROW on SYSTEM; round 0 is the unrecorded warm-up.
tls_run() { # round row system
    local r=$1 row=$2 sys=$3 run=$2-$3
    local pid=${TLS_PID[$3]} port=${TLS_PORT[$3]} out=$RAW/tls-r$1-$2-$3.txt
    local c0 c1 w0 w1 i0 i1 s0="" s1="" n rps failed d=$TLS_D hs_n=$TLS_HS_N cmd
    [ "$r" != 0 ] || d=1 hs_n=$((TLS_HS_N / 4))
    kill -0 "$pid" 2>/dev/null || die "$sys (pid $pid) is gone"
    case $row in
    ka) cmd=(wrk -t1 -c"$TLS_KA_CONNS" -d"${d}s" "https://127.0.0.1:$port/tiny") ;;
    hs) cmd=(h2load --h1 -t1 -c"$hs_n" -n"$hs_n" "https://127.0.0.1:$port/tiny") ;;
    h2) cmd=(h2load -t1 -c"$TLS_H2_CONNS" -m"$TLS_H2_STREAMS" -D "$d" "https://127.0.0.1:$port/tiny") ;;
    esac
    [ "$row$sys" != hshaproxy ] || s0=$(tls_haproxy_sessions)
    backend_reset
    i0=$(cpu_idle_ticks $PROXY_CPU)
    c0=$(cpu_ns "$pid")
    w0=$(now_us)
    [ "$row" != ka ] || spin on # --spin: as in the rounds' wrk runs (README, "Two regimes")
    taskset -c $LOAD_CPU "${cmd[@]}" >"$out" 2>&1 || die "${cmd[0]} failed against $sys: $(tail -5 "$out")"
    spin off
    c1=$(cpu_ns "$pid")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    [ "$row$sys" != hshaproxy ] || s1=$(tls_haproxy_sessions)
    local accepts be_req
    read -r accepts be_req < <(backend_stats)
    [ -n "$be_req" ] || die "the backend's /__stats did not answer"
    if [ "$row" = ka ]; then
        read -r n rps failed < <(parse_wrk "$out")
        [ "$failed" = 0 ] || die "$run: $failed errors or non-2xx answers of $n (${out#"$ROOT"/})"
    else
        read -r n rps failed < <(tls_parse_h2load "$out")
        if [ "$row" = h2 ] && ! grep -q '^Application protocol: h2$' "$out"; then
            die "$run: h2load did not negotiate h2 ($(grep -m1 '^Application protocol' "$out" || echo 'no ALPN'))"
        fi
        tls_h2load_info "$sys" "h2load ($row row)" "$out"
    fi
    [ "${n:-0}" -gt 0 ] || die "$run: no 2xx answer (${out#"$ROOT"/}): $(tail -5 "$out")"
    [ "$r" != 0 ] || return 0
    tls_record "$r" "$run" ok "$n"
    tls_record "$r" "$run" rps "$rps"
    tls_record "$r" "$run" failed "$failed"
    tls_record "$r" "$run" upstream_accepts "$accepts"
    tls_record "$r" "$run" upstream_requests "$be_req"
    tls_record_cpu "$r" "$run" "$n" "$c0" "$c1" "$w0" "$w1" "$i0" "$i1"
    if [ -n "$s1" ]; then
        local a0 b0 a1 b1
        read -r a0 b0 <<<"$s0"
        read -r a1 b1 <<<"$s1"
        tls_record "$r" "$run" tls_new $((a1 - a0))
        tls_record "$r" "$run" tls_resumed $((b1 - b0))
        [ $((b1 - b0)) = 0 ] || die "$run: HAProxy counted $((b1 - b0)) resumed sessions: handshakes were not all full"
    fi
    log "  round $r $(printf '%-11s' "$run") $(printf '%8s' "$rps") $([ "$row" = hs ] && echo handshakes/s || echo req/s)," \
        "$(calc "($c1 - $c0) / 1000 / $n" 1) µs CPU per $([ "$row" = hs ] && echo handshake || echo request)"
}

measure_tls() {
    local t0=$SECONDS sys row r i n order
    tls_preflight
    : >"$RAW/tls.tsv"
    : >"$RAW/tls-runs.tsv"
    : >"$RAW/tls-info.tsv"
    : >"$RAW/tls-resume.tsv"
    printf 'tls\trounds=%s d=%s hs_n=%s ka_conns=%s h2_conns=%s h2_streams=%s openssl=%s\n' \
        "$TLS_ROUNDS" "$TLS_D" "$TLS_HS_N" "$TLS_KA_CONNS" "$TLS_H2_CONNS" "$TLS_H2_STREAMS" \
        "$(openssl version | awk '{ print $2 }')" >>"$RAW/meta.tsv"
    log "issue 18, TLS and HTTP/2: portico, HAProxy and nginx on one ECDSA P-256 certificate" \
        "(127.0.0.1:$TLS_PORTICO_PORT, :$TLS_HAPROXY_PORT, :$TLS_NGINX_PORT)"
    tls_make_cert
    tls_start_portico
    tls_start_haproxy
    tls_start_nginx
    local runs=()
    for row in "${TLS_ROWS[@]}"; do
        for sys in "${TLS_SYSTEMS[@]}"; do
            if [ -n "${TLS_SKIP[$row-$sys]:-}" ]; then
                printf '%s\n' "${TLS_SKIP[$row-$sys]}" >"$RAW/tls-skip-$row-$sys.txt"
                printf '%s\t%s\t%s\t%s\tskipped\n' "$row-$sys" "$sys" "$row" "$(tls_label "$sys")" >>"$RAW/tls-runs.tsv"
            else
                printf '%s\t%s\t%s\t%s\tran\n' "$row-$sys" "$sys" "$row" "$(tls_label "$sys")" >>"$RAW/tls-runs.tsv"
                runs+=("$row-$sys")
            fi
        done
    done
    for sys in "${TLS_SYSTEMS[@]}"; do
        [ -z "${TLS_PID[$sys]:-}" ] || ! kill -0 "${TLS_PID[$sys]}" 2>/dev/null || tls_probe "$sys"
    done
    log "tls: warm-up (one short run of every row on every system)"
    for i in "${runs[@]}"; do tls_run 0 "${i%%-*}" "${i#*-}"; done
    for r in $(seq "$TLS_ROUNDS"); do
        log "tls, round $r/$TLS_ROUNDS"
        for row in "${TLS_ROWS[@]}"; do
            order=()
            for i in "${runs[@]}"; do [ "${i%%-*}" != "$row" ] || order+=("$i"); done
            n=${#order[@]}
            # A B C, then C B A: a drift over the section favours no system.
            for i in $(seq 0 $((n - 1))); do
                [ $((r % 2)) = 1 ] || i=$((n - 1 - i))
                tls_run "$r" "$row" "${order[$i]#*-}"
            done
        done
    done
    for sys in "${TLS_SYSTEMS[@]}"; do
        [ -n "${TLS_PID[$sys]:-}" ] || continue
        kill -TERM "${TLS_PID[$sys]}" 2>/dev/null || true
        reap "${TLS_PID[$sys]}"
    done
    tls_record 0 run tls_elapsed_s $((SECONDS - t0))
}
