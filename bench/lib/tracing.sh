# shellcheck shell=bash
# bench/lib/tracing.sh — issue 17's tracing row (sourced by bench/run.sh;
# scenario "tracing", `BENCH_ONLY=tracing bench/run.sh`): what tracing
# costs per request.
#
#   off     portico's plain route (conf/portico-tracing.yaml.in, no
#           `tracing` section)
#   traced  the same route with `tracing: { sample: 1.0 }`: every request
#           continued or started, a traceparent sent upstream, two spans
#           (server + upstream attempt) in the worker's ring, exported in
#           batches of 512 as OTLP/HTTP JSON to a sink receiver
#           (lib/otlp_sink.py, on CPU 1 with the load)
#
# CPU per request at wrk -t1 -c32 (schedstat delta ÷ responses), the two
# gateways alternately (A B, then B A), paired ratio per round. The sink's
# span count checks that the spans were really exported (2 per request)
# rather than dropped. Writes RAW/tracing.tsv (round, run, metric, value);
# bench/lib/report_tracing.py makes the report's section.
#
# Uses cpu_ns and cpu_idle_ticks from lib/balance.sh. Ports: BASE+39 the
# plain gateway, BASE+40 the traced one, BASE+41 the sink. Loopback only;
# gateways on CPU 0, load, backend and sink on CPU 1.

TR_OFF_PORT=$((PORT_BASE + 39))
TR_ON_PORT=$((PORT_BASE + 40))
TR_SINK_PORT=$((PORT_BASE + 41))
TR_ROUNDS=6 # CPU rounds
TR_D=3      # seconds per wrk run
declare -A TR_PID TR_PORT

tr_quick() { TR_ROUNDS=2 TR_D=1; }

tr_record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RAW/tracing.tsv"; }

tr_sink_count() { # spans
    curl -s --max-time 2 "http://127.0.0.1:$TR_SINK_PORT/count" |
        $PY -c 'import json,sys; print(json.load(sys.stdin)["'"${1:-spans}"'"])'
}

tr_start_gateway() { # name tracing-line
    local name=$1 port cfg
    port=$([ "$name" = off ] && echo "$TR_OFF_PORT" || echo "$TR_ON_PORT")
    cfg=$TMP/tracing-$name.yaml
    $PY "$LIB/fill.py" "$CONF/portico-tracing.yaml.in" "$cfg" PORT="$port" \
        BACKEND_PORT="$BACKEND_PORT" TRACING="$2"
    require_loopback_only "$cfg"
    "$PORTICO_BIN" validate "$cfg" >/dev/null 2>&1 ||
        die "portico rejects $cfg: $("$PORTICO_BIN" validate "$cfg" 2>&1)"
    require_port_free "$port"
    spawn $PROXY_CPU "$TMP/tracing-$name.log" "$PORTICO_BIN" -c "$cfg"
    TR_PID[$name]=$LAST_PID
    TR_PORT[$name]=$port
    wait_ready "portico (tracing $name)" "$LAST_PID" "$port" "$TMP/tracing-$name.log"
}

# One CPU run: wrk -t1 -c32 on /tiny for TR_D seconds; the gateway's CPU
# time ÷ the responses; on the traced gateway, the spans the sink got.
tr_cpu_run() { # round name
    local r=$1 name=$2 pid=${TR_PID[$2]} port=${TR_PORT[$2]} out=$RAW/tr-r$1-$2-wrk.txt
    local d=$TR_D c0 c1 w0 w1 i0 i1 s0 s1
    [ "$r" != 0 ] || d=1
    kill -0 "$pid" 2>/dev/null || die "portico (tracing $name, pid $pid) is gone"
    s0=$(tr_sink_count)
    i0=$(cpu_idle_ticks $PROXY_CPU)
    c0=$(cpu_ns "$pid")
    w0=$(now_us)
    spin on
    taskset -c $LOAD_CPU wrk -t1 -c32 -d"${d}s" "http://127.0.0.1:$port/tiny" >"$out" 2>&1 ||
        die "wrk failed: $(cat "$out")"
    spin off
    c1=$(cpu_ns "$pid")
    w1=$(now_us)
    i1=$(cpu_idle_ticks $PROXY_CPU)
    read -r WRK_REQ WRK_RPS WRK_ERR < <(parse_wrk "$out")
    [ "${WRK_REQ:-0}" -gt 0 ] || die "wrk got no responses from tracing $name: $(cat "$out")"
    [ "$WRK_ERR" = 0 ] || die "tracing $name: $WRK_ERR errors or non-2xx answers of $WRK_REQ"
    # The last batch goes within flush_every (1 s) of the run's end.
    [ "$name" = off ] || sleep 1.5
    s1=$(tr_sink_count)
    [ "$r" = 0 ] && return 0
    local cpu
    cpu=$(calc "($c1 - $c0) / 1000 / $WRK_REQ" 3)
    tr_record "$r" "$name" cpu_us "$cpu"
    tr_record "$r" "$name" rps "$WRK_RPS"
    tr_record "$r" "$name" responses "$WRK_REQ"
    tr_record "$r" "$name" spans "$((s1 - s0))"
    tr_record "$r" "$name" cpu_util_pct "$(calc "100 * ($c1 - $c0) / 1000 / ($w1 - $w0)" 1)"
    [ -n "$SPIN_PID0" ] || tr_record "$r" "$name" cpu0_other_pct \
        "$(calc "100 * (1 - (($i1 - $i0) / $CLK_TCK + ($c1 - $c0) / 1e9) / (($w1 - $w0) / 1e6))" 1)"
    log "  round $r $(printf '%-6s' "$name") $(calc "$cpu" 2) µs CPU/req, $WRK_RPS req/s," \
        "$((s1 - s0)) spans exported for $WRK_REQ requests"
}

measure_tracing() {
    local t0=$SECONDS r first second
    [ -r /proc/self/schedstat ] || die "no /proc/PID/schedstat: the tracing section's CPU clock"
    : >"$RAW/tracing.tsv"
    printf 'tracing\trounds=%s run_s=%s\n' "$TR_ROUNDS" "$TR_D" >>"$RAW/meta.tsv"
    log "issue 17, tracing: the plain route without tracing and with sample 1.0 exported to a sink"
    require_port_free "$TR_SINK_PORT"
    spawn $LOAD_CPU "$TMP/otlp-sink.log" $PY "$LIB/otlp_sink.py" "$TR_SINK_PORT"
    TR_PID[sink]=$LAST_PID
    wait_ready "OTLP sink" "$LAST_PID" "$TR_SINK_PORT" "$TMP/otlp-sink.log"
    tr_start_gateway off "# tracing: off"
    tr_start_gateway traced "tracing: {otlp_endpoint: \"http://127.0.0.1:$TR_SINK_PORT/v1/traces\", sample: 1.0}"
    # The traced gateway really exports: one request, two spans (after the
    # readiness probe's spans went, within flush_every).
    local s0
    sleep 1.5
    s0=$(tr_sink_count)
    curl -s --max-time 2 "http://127.0.0.1:$TR_ON_PORT/tiny" >/dev/null
    for _ in $(seq 30); do
        [ "$(($(tr_sink_count) - s0))" -ge 2 ] && break
        sleep 0.1
    done
    [ "$(($(tr_sink_count) - s0))" = 2 ] || die "the traced gateway exported $(($(tr_sink_count) - s0)) spans for one request, not 2"
    log "tracing: warm-up"
    tr_cpu_run 0 off
    tr_cpu_run 0 traced
    for r in $(seq "$TR_ROUNDS"); do
        log "tracing, CPU round $r/$TR_ROUNDS"
        if [ $((r % 2)) = 1 ]; then first=off second=traced; else first=traced second=off; fi
        tr_cpu_run "$r" "$first"
        tr_cpu_run "$r" "$second"
    done
    for r in off traced sink; do
        kill -TERM "${TR_PID[$r]}"
        reap "${TR_PID[$r]}"
    done
    tr_record 0 run tracing_elapsed_s $((SECONDS - t0))
}
