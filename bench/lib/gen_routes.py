#!/usr/bin/python3
"""Writes the observability section's scrape gateway: N routes (prefixes
/r0/ … /rN-1/, each with a rate_limit that never trips, so every route
has a filter series too, and a catch-all `/` for the readiness probe) on
one upstream, metrics on.

Usage: gen_routes.py OUT N PORT ADMIN_PORT BACKEND_PORT
"""
import sys


def main():
    out, n, port, admin, backend = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
    lines = ["workers: 1", "listeners: [{name: bench, address: '127.0.0.1:%s'}]" % port,
             "admin: {address: '127.0.0.1:%s'}" % admin, 'access_log: {path: "off"}',
             "limits: {idle_timeout: 60s}",
             "upstreams:", "  backend: {targets: ['127.0.0.1:%s'], keepalive: 64}" % backend,
             "routes:"]
    for i in range(n):
        lines.append("  - {name: r%d, match: {path_prefix: /r%d/}, upstream: backend, "
                     "filters: {rate_limit: {limits: [{key: ip, rate: 100000000/s}]}}}" % (i, i))
    # GET /tiny for the bench's readiness probe
    lines.append("  - {name: rest, match: {path_prefix: /}, upstream: backend}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
