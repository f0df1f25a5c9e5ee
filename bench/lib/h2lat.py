#!/usr/bin/python3
"""Latency percentiles from an h2load --log-file.

Usage: h2lat.py LOG SKIP_SECONDS GRID_OUT

The log has one row per request: start time (µs since the epoch), HTTP
status (-1 when the stream failed), duration until the end of the response
(µs). Requests that started during the first SKIP_SECONDS are dropped
(connection setup, cold caches).

Prints one line of key=value pairs on stdout:
  n, failed, rate (requests/s over the kept window), p50, p90, p99, p999,
  max, mean  (latencies in µs), and all (successful requests in the whole
  log, skipped ones included: what CPU time is divided by)
and writes GRID_OUT: "quantile<TAB>µs" for quantiles from 0.5 to 0.999,
evenly spaced on the "nines" scale -log10(1-q), which is what the chart
plots (the median of the rounds' grids is the curve drawn).
"""
import sys


def nines_grid():
    """Quantiles 0.5 .. 0.999, 0.05 apart in -log10(1-q)."""
    out, x = [], 0.30103  # -log10(0.5)
    while x < 3.0 + 1e-9:
        out.append(1.0 - 10 ** (-x))
        x += 0.05
    out[-1] = 0.999
    return out


def quantile(sorted_vals, q):
    """Nearest-rank quantile: the smallest value with at least q of the
    samples at or below it."""
    n = len(sorted_vals)
    rank = max(1, min(n, int(-(-q * n // 1))))  # ceil(q*n), clamped to 1..n
    return sorted_vals[rank - 1]


def main():
    log, skip, grid_out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    rows = []
    with open(log) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                rows.append((int(parts[0]), int(parts[1]), int(parts[2])))
    if not rows:
        sys.exit("h2lat.py: %s: no requests logged" % log)
    t0 = min(r[0] for r in rows) + int(skip * 1e6)
    kept = [r for r in rows if r[0] >= t0]
    failed = sum(1 for r in kept if r[1] < 200 or r[1] >= 300)
    lat = sorted(r[2] for r in kept if 200 <= r[1] < 300)
    if not lat:
        sys.exit("h2lat.py: %s: no successful requests after the skip" % log)
    span = (max(r[0] for r in kept) - min(r[0] for r in kept)) / 1e6
    rate = len(kept) / span if span > 0 else 0.0
    stats = {
        "n": len(lat), "failed": failed, "rate": "%.0f" % rate,
        "p50": quantile(lat, 0.50), "p90": quantile(lat, 0.90),
        "p99": quantile(lat, 0.99), "p999": quantile(lat, 0.999),
        "max": lat[-1], "mean": "%.1f" % (sum(lat) / len(lat)),
        "all": sum(1 for r in rows if 200 <= r[1] < 300),
    }
    print(" ".join("%s=%s" % kv for kv in stats.items()))
    with open(grid_out, "w") as f:
        for q in nines_grid():
            f.write("%.6f\t%d\n" % (q, quantile(lat, q)))


if __name__ == "__main__":
    main()
