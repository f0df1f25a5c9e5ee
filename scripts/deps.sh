#!/usr/bin/env bash
# Installs the Debian packages portico needs to build, test and benchmark.
# Idempotent and quiet when nothing is missing.
set -eu
pkgs=(
  build-essential pkg-config libyaml-dev libpcre2-dev liburing-dev libc-ares-dev libssl-dev libjansson-dev libhiredis-dev libnghttp2-dev redis-server
  python3 python3-pytest python3-requests python3-jwt python3-jwcrypto python3-h2 python3-websockets curl openssl
  wrk nghttp2-client testssl.sh
  prometheus # promtool: tests/e2e/test_metrics.py checks /metrics with `promtool check metrics`
  chromium # headless, driven over DevTools: tests/e2e/test_cors_browser.py (heavy tier)
)
# bench: Debian 12's nginx-light pulls in the nginx binary, built with
# http_ssl_module and http_v2_module (bench/lib/tls.sh checks `nginx -V`);
# haproxy is built with OpenSSL (`haproxy -vv`).
[ "${PORTICO_BENCH_DEPS:-0}" = 1 ] && pkgs+=(haproxy nginx-light gnuplot-nox strace)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
