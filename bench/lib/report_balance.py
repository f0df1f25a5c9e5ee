"""Issue 14's section of the bench report: the slow-target row and the
breaker-cost row, from what bench/lib/balance.sh wrote in the run's raw
directory:

  balance.tsv          round<TAB>system<TAB>metric<TAB>value (round 0: warm-up,
                       one-off values)
  balance-systems.tsv  name<TAB>row<TAB>label<TAB>ran|skipped
  skip-NAME.txt        why a system did not run (the build refused its config)
  meta.tsv             the "balance" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). Every verdict is computed here from those numbers.
"""
import collections
import os
import statistics

# Goals of issue 14 ("Numbers (make bench)").
P99_VS_HAPROXY = 1.0   # portico's p99 ≤ HAProxy's
CPU_VS_RR = 1.05       # p2c_ewma / least_conn CPU per request ≤ 1.05× round robin
BREAKER_COST = 1.03    # guarded route ≤ 1.03× the plain route


def _tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


def _med(xs):
    return statistics.median(xs) if xs else None


def _fmt(x, nd=1):
    if x is None:
        return "–"
    if abs(x) >= 10000 and nd <= 1:
        return "{:,.0f}".format(x)
    return "{:.{}f}".format(x, nd)


def _spread(xs, nd=1):
    return "–" if not xs else "%s – %s" % (_fmt(min(xs), nd), _fmt(max(xs), nd))


def _ratio(xs):
    """'1.02× (0.98 – 1.05)' for a list of paired ratios."""
    if not xs:
        return "–"
    return "%.2f× (%.2f – %.2f)" % (_med(xs), min(xs), max(xs))


def _table(header, rows, left=1):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _verdict(x, goal):
    return "–" if x is None else ("**met**" if x <= goal else "**missed**")


class _Data:
    def __init__(self, raw):
        self.per = collections.defaultdict(dict)  # (system, metric) → {round: value}
        for rnd, system, metric, value in _tsv(os.path.join(raw, "balance.tsv")):
            self.per[(system, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})
        self.systems = []  # (name, row, label, status) in round order
        self.skip = {}
        for name, row, label, status in _tsv(os.path.join(raw, "balance-systems.tsv")):
            self.systems.append((name, row, label, status))
            try:
                with open(os.path.join(raw, "skip-%s.txt" % name)) as f:
                    self.skip[name] = f.read().strip()
            except OSError:
                self.skip[name] = ""

    def series(self, system, metric):
        d = self.per.get((system, metric), {})
        return [d[r] for r in self.rounds if r in d]

    def paired(self, a, b, metric):
        """a ÷ b within each round both ran, for the median of ratios."""
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [x[r] / y[r] for r in self.rounds if r in x and r in y and y[r]]

    def ran(self, name):
        return any(n == name and st == "ran" for n, _, _, st in self.systems)

    def label(self, name):
        return next((lb for n, _, lb, _ in self.systems if n == name), name)


def _settings(meta):
    kv = dict(p.split("=", 1) for p in meta.get("balance", "").split() if "=" in p)
    return kv


def _slow_row(d, s, notes):
    out = []
    names = [n for n, row, _, _ in d.systems if row == "slow"]
    rows = []
    for n in names:
        if not d.ran(n):
            rows.append([d.label(n), "skipped: %s" % (d.skip.get(n) or "did not run")]
                        + [""] * 9)
            continue
        share = d.series(n, "slow_share_pct")
        cpu = d.series(n, "slow_cpu_us")
        other = [max(0.0, x) for x in d.series(n, "slow_cpu0_other_pct")]
        rate = d.series(n, "slow_rate")
        failed = sum(d.series(n, "slow_failed"))
        offered = float(s.get("rate", 0) or 0)
        rcell = _fmt(_med(rate), 0)
        short = sum(1 for x in rate if offered and x < 0.95 * offered)
        if short:
            rcell += " ⚠ %d of %d runs below 95%% of the offered rate" % (short, len(rate))
        if failed:
            notes.append("%s: %d failed requests (non-2xx or errors) in the measured runs."
                         % (d.label(n), failed))
        rows.append([d.label(n), "%s (%s)" % (_fmt(_med(share), 2), _spread(share, 2))]
                    + [_fmt(_med(d.series(n, "slow_" + q)), 0) for q in ("p50", "p90", "p99", "p999")]
                    + ["%s (%s)" % (_fmt(_med(cpu), 2), _spread(cpu, 2)),
                       _ratio(d.paired(n, "bal-rr", "slow_cpu_us")) if d.ran("bal-rr") else "–",
                       _ratio(d.paired(n, "bal-haproxy", "slow_p99")) if d.ran("bal-haproxy") else "–",
                       _ratio(d.paired(n, "bal-nginx", "slow_p99")) if d.ran("bal-nginx") else "–",
                       "%s (%s) / %s" % (_fmt(_med(other)), _fmt(max(other) if other else None), rcell)])
    out += ["### Slow target: three targets, one +%s ms, %s connections at %s req/s"
            % (s.get("delay_ms", "?"), s.get("conns", "?"), _fmt(float(s.get("rate", 0) or 0), 0)), "",
            "Medians over %s interleaved rounds of %s s (spread: min – max); latencies in µs from "
            "h2load's per-request log (first 0.2 s dropped). *Slow share*: requests the slow "
            "target answered ÷ requests all three answered (each target is its own demo backend "
            "process; `/__stats` reset before each run). *CPU*: the proxy process's CPU time "
            "(all threads, `/proc/PID/task/*/schedstat`) ÷ successful responses. Ratios are "
            "paired: within each round, then the median (spread)."
            % (s.get("rounds", "?"), s.get("run_s", "?")), "",
            _table(["system", "slow share % (spread)", "p50", "p90", "p99", "p99.9",
                    "CPU µs/req (spread)", "CPU ÷ portico round_robin", "p99 ÷ HAProxy",
                    "p99 ÷ nginx", "CPU 0 busy elsewhere % (max) / achieved req/s"], rows), ""]
    return out


def _sat_row(d, s):
    names = [n for n, row, _, _ in d.systems if row == "slow" and d.series(n, "sat_cpu_us")]
    if not names:
        return []
    rows = []
    for n in names:
        c = d.series(n, "sat_cpu_us")
        rows.append([d.label(n), "%s (%s)" % (_fmt(_med(c), 2), _spread(c, 2)),
                     _ratio(d.paired(n, "bal-rr", "sat_cpu_us")) if d.ran("bal-rr") else "–",
                     _fmt(_med(d.series(n, "sat_rps")), 0),
                     _fmt(_med(d.series(n, "sat_first_share_pct")), 1)])
    return ["### What choosing costs: wrk -c32, the three targets all fast", "",
            "The same portico processes after the slow-target rounds, with the slow target's "
            "delay set to 0 (`POST /__control`): every balancer moves the same work at full "
            "speed, so the CPU ratio is the balancer's own cost (at 2,000 req/s the figure above "
            "is mostly wake-ups and also depends on where requests went). %s interleaved rounds "
            "of `wrk -t1 -c32 -d%ss` (order reversed every other round)."
            % (s.get("sat_rounds", "?"), s.get("sat_s", "?")), "",
            _table(["system", "CPU µs/req (spread)", "CPU ÷ portico round_robin", "req/s",
                    "the (formerly) slow target's share %"], rows), ""]


def _breaker_row(d, s, notes):
    if not d.systems or not any(row == "breaker" for _, row, _, _ in d.systems):
        return []
    if not d.ran("brk"):
        return ["### Breaker cost: closed circuit breaker + retries against the plain route", "",
                "Not run: %s" % (d.skip.get("brk") or "the gateway did not start"), ""]
    rows = []
    for n, what in (("brk-plain", "plain route (upstream without breaker or retries)"),
                    ("brk-guard", "guarded route (closed `circuit_breaker`, `retries` "
                                  "attempts 2 on connect_failure, reset, 503)")):
        c, rc = d.series(n, "cpu_us"), d.series(n, "rate_cpu_us")
        rows.append([what, "%s (%s)" % (_fmt(_med(c), 2), _spread(c, 2)),
                     _fmt(_med(d.series(n, "rps")), 0),
                     "%s (%s)" % (_fmt(_med(rc), 2), _spread(rc, 2)),
                     _fmt(_med(d.series(n, "rate_p50")), 0), _fmt(_med(d.series(n, "rate_p99")), 0)])
        failed = sum(d.series(n, "rate_failed"))
        if failed:
            notes.append("%s: %d failed requests in the fixed-rate runs." % (what, failed))
    return ["### Breaker cost: closed circuit breaker + retries against the plain route", "",
            "One gateway, two routes told apart by `Host` (`plain.bench`, `guard.bench`: same "
            "length, both exact-host buckets), two upstreams with the same target, pool and "
            "timeouts. Nothing fails, so the breaker stays closed and nothing is retried: what "
            "is measured is their bookkeeping on every request. %s rounds; in each, both routes "
            "(first one alternating): `wrk -t1 -c32 -d%ss` (CPU per request at saturation, the "
            "figure judged) then `h2load -c16 -D%s` at %s req/s (the cross-check)."
            % (s.get("brk_rounds", "?"), s.get("brk_s", "?"), s.get("brk_rate_s", "?"),
               _fmt(float(s.get("brk_rate", 0) or 0), 0)), "",
            _table(["route", "CPU µs/req, wrk -c32 (spread)", "req/s", "CPU µs/req at fixed rate "
                    "(spread)", "p50 µs", "p99 µs"], rows), ""]


def _goals(d):
    out = []

    def p99_goal(n):
        if not (d.ran(n) and d.ran("bal-haproxy")):
            return None, "not run (%s)" % (d.skip.get(n) or d.skip.get("bal-haproxy") or "–")
        pr = d.paired(n, "bal-haproxy", "slow_p99")
        a, b = _med(d.series(n, "slow_p99")), _med(d.series("bal-haproxy", "slow_p99"))
        return _med(pr), "p99 %s µs vs HAProxy %s µs: paired %s" % (_fmt(a, 0), _fmt(b, 0), _ratio(pr))

    def cpu_goal(n, metric):
        if not (d.ran(n) and d.ran("bal-rr")):
            return None, "not run (%s)" % (d.skip.get(n) or d.skip.get("bal-rr") or "–")
        pr = d.paired(n, "bal-rr", metric)
        a, b = _med(d.series(n, metric)), _med(d.series("bal-rr", metric))
        return _med(pr), "%s µs vs round robin %s µs: paired %s" % (_fmt(a, 2), _fmt(b, 2), _ratio(pr))

    for n, bal in (("bal-p2c", "p2c_ewma"), ("bal-lc", "least_conn")):
        x, m = p99_goal(n)
        out.append(["%s: p99 ≤ HAProxy leastconn's (slow target)" % bal, m, _verdict(x, P99_VS_HAPROXY)])
        # Judged at wrk -c32 with the targets all fast: the balancer's own
        # cost, steady to ±1-3% in A/A runs. At 2,000 req/s the figure is
        # mostly wake-ups (A/A runs of identical processes: 1.08-1.27×), so
        # it is shown beside the verdict, not judged.
        x, m = cpu_goal(n, "sat_cpu_us")
        _, m2 = cpu_goal(n, "slow_cpu_us")
        out.append(["%s: CPU/request ≤ %.2f× round robin" % (bal, CPU_VS_RR),
                    "wrk -c32, targets all fast (judged): %s; at the slow-target rate "
                    "(not judged, wake-up noise): %s" % (m, m2) if x is not None else m,
                    _verdict(x, CPU_VS_RR)])
    if d.ran("brk"):
        pr = d.paired("brk-guard", "brk-plain", "cpu_us")
        prr = d.paired("brk-guard", "brk-plain", "rate_cpu_us")
        out.append(["breaker + retries: CPU/request ≤ %.2f× the plain route" % BREAKER_COST,
                    "wrk -c32: paired %s; at the fixed rate (cross-check): paired %s"
                    % (_ratio(pr), _ratio(prr)), _verdict(_med(pr), BREAKER_COST)])
    else:
        out.append(["breaker + retries: CPU/request ≤ %.2f× the plain route" % BREAKER_COST,
                    "not run (%s)" % (d.skip.get("brk") or "–"), "–"])
    return ["### Goals (issue 14, \"Numbers\")", "",
            "`–`: a system the goal needs did not run (this build refused its config).", "",
            _table(["goal", "measured", "verdict"], out, left=2), ""]


def section(raw, meta):
    d = _Data(raw)
    if not d.systems:
        return []
    s = _settings(meta)
    notes = []
    body = _slow_row(d, s, notes) + _sat_row(d, s) + _breaker_row(d, s, notes)
    out = ["## Issue 14: balancers beside a slow target, breaker cost", ""]
    other = [max(0.0, x) for n, _, _, _ in d.systems for x in d.series(n, "slow_cpu0_other_pct")]
    if other and _med(other) > 5:
        out += ["**Warning: CPU 0 was busy with other work during the slow-target runs (median "
                "%s%% of each run, beside the proxy): something else runs on this machine. "
                "Latencies and the CPU figures at 2,000 req/s are disturbed; the wrk -c32 CPU "
                "ratios hold up better. Rerun on a quiet machine before quoting numbers.**"
                % _fmt(_med(other)), ""]
    out += _goals(d) + body
    if notes:
        out += ["**Errors:**", ""] + ["- " + x for x in notes] + [""]
    return out
