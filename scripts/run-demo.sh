#!/usr/bin/env bash
# `make run`: starts the demo backends, portico on examples/quickstart.yaml
# and a second portico on examples/edge.yaml (HTTPS, HTTP/2, WebSocket,
# client certificates) with demo certificates made on first use.
set -eu
BUILD=${1:-build}
cd "$(dirname "$0")/.."
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
"$BUILD/demo_backend" --name users --listen 127.0.0.1:9001 --listen 127.0.0.1:9002 --quiet & pids+=($!)
"$BUILD/demo_backend" --name orders --listen 127.0.0.1:9003 --quiet & pids+=($!)
"$BUILD/demo_backend" --name users-v2 --listen 127.0.0.1:9004 --quiet & pids+=($!)
scripts/demo-certs.sh examples/certs >/dev/null
sleep 0.3
cat <<'TXT'

portico is starting on http://127.0.0.1:8080 (config: examples/quickstart.yaml). Try:

  curl -i http://127.0.0.1:8080/v1/users          # users service, v1 (prefix stripped)
  curl -i http://127.0.0.1:8080/v1/users/2        # path template + rewrite
  curl -i http://127.0.0.1:8080/v2/users          # a 10/90 canary between v2 and v1 (X-Backend says which)
  curl -i -H 'X-User-ID: 7' http://127.0.0.1:8080/v2/users   # sticky: user 7 always sees the same side
  curl -i -H 'X-Canary: users-v2' http://127.0.0.1:8080/v2/users   # force the canary
  curl -i http://127.0.0.1:8080/orders?user=1
  curl -i http://127.0.0.1:8080/nope              # 404 JSON with a request id
  curl -i -H 'X-Demo-Status: 401' http://127.0.0.1:8080/v1/private/users   # ext_auth says no
  curl -i -H 'X-Portico-Fault-Abort: 503' http://127.0.0.1:8080/orders   # fault injection
  curl -s http://127.0.0.1:9901/upstreams         # targets, health, requests in flight
  kill -HUP $(pgrep -f 'portico -c')              # hot reload, drops nothing

and on the edge (examples/edge.yaml, admin on 9902):

  curl --cacert examples/certs/ca.pem https://localhost:8443/v1/users        # HTTP/2 over TLS
  curl --http2-prior-knowledge http://127.0.0.1:8081/v1/users                 # h2c
  curl --cacert examples/certs/ca.pem --cert examples/certs/alice.pem --key examples/certs/alice.key \
       https://localhost:8444/partners/v1/users                                # mTLS: consumer alice
  python3 -m websockets ws://127.0.0.1:8081/ws/echo                           # WebSocket echo

Ctrl-C stops everything.
TXT
"$BUILD/portico" -c examples/edge.yaml & pids+=($!)
"$BUILD/portico" -c examples/quickstart.yaml & pids+=($!)
wait "${pids[-1]}"
