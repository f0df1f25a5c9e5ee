"""Issue 16's section of the bench report: what a rate limit costs (a local
limit beside HAProxy's stick-table tracking; a cluster limit on a loopback
Redis), from what bench/lib/ratelimit.sh wrote in the run's raw directory:

  ratelimit.tsv       round<TAB>run<TAB>metric<TAB>value (round 0: one-off
                      values: the plain route's capacity, elapsed time)
  ratelimit-runs.tsv  run<TAB>system<TAB>label<TAB>ran|skipped, in round order
  skip-RUN.txt        why a run did not happen (the build refused its config)
  meta.tsv            the "ratelimit" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). Every verdict is computed here from those numbers.
"""
import collections
import os

from report_balance import _fmt, _med, _ratio, _spread, _table, _tsv, _verdict

# Goals of issue 16 ("Numbers (make bench)").
LOCAL_VS_PLAIN = 1.03     # local limit ≤ 1.03× the plain route's CPU per request
CLUSTER_P99_ADDED = 150   # µs of p99 added by a cluster decision, at 50% load
EVALS_PER_DECISION = 1.0  # one Redis round trip per decision
EVALS_TOLERANCE = 0.005   # ± for the ratio (a probe or a NOSCRIPT retry)


class _Data:
    def __init__(self, raw):
        self.per = collections.defaultdict(dict)  # (run, metric) → {round: value}
        for rnd, run, metric, value in _tsv(os.path.join(raw, "ratelimit.tsv")):
            self.per[(run, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})
        self.runs = []  # (name, system, label, status)
        self.skip = {}
        for name, system, label, status in _tsv(os.path.join(raw, "ratelimit-runs.tsv")):
            self.runs.append((name, system, label, status))
            try:
                with open(os.path.join(raw, "skip-%s.txt" % name)) as f:
                    self.skip[name] = f.read().strip()
            except OSError:
                self.skip[name] = ""

    def series(self, run, metric):
        d = self.per.get((run, metric), {})
        return [d[r] for r in self.rounds if r in d]

    def one(self, run, metric):
        return self.per.get((run, metric), {}).get(0)

    def ran(self, name):
        return any(n == name and st == "ran" for n, _, _, st in self.runs)

    def label(self, name):
        return next((lb for n, _, lb, _ in self.runs if n == name), name)

    def paired(self, a, b, metric="cpu_us", f=lambda x, y: x / y):
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [f(x[r], y[r]) for r in self.rounds if r in x and r in y and y[r]]

    def added(self, a, b, metric="cpu_us"):
        return self.paired(a, b, metric, lambda x, y: x - y)


def _why(d, *names):
    for n in names:
        if not d.ran(n):
            return "not run (%s)" % (d.skip.get(n) or "did not run")
    return None


def _diff(xs, nd=2):
    """'+0.41 (−0.20 – +0.90)' for a list of paired differences."""
    if not xs:
        return "–"
    return "%+.*f (%+.*f – %+.*f)" % (nd, _med(xs), nd, min(xs), nd, max(xs))


def _goals(d):
    rows = []
    goal = "local limit: CPU/request ≤ %.2f× the plain route" % LOCAL_VS_PLAIN
    why = _why(d, "p-local", "p-plain")
    if why:
        rows.append([goal, why, "–"])
    else:
        pr = d.paired("p-local", "p-plain")
        rows.append([goal, "%s µs vs %s µs: paired %s" % (
            _fmt(_med(d.series("p-local", "cpu_us")), 2), _fmt(_med(d.series("p-plain", "cpu_us")), 2),
            _ratio(pr)), _verdict(_med(pr), LOCAL_VS_PLAIN)])
    goal = "local limit: portico's added CPU ≤ HAProxy's (stick table over its plain frontend)"
    why = _why(d, "p-local", "p-plain", "h-limit", "h-plain")
    if why:
        rows.append([goal, why, "–"])
    else:
        pa, ha = d.added("p-local", "p-plain"), d.added("h-limit", "h-plain")
        # Paired: portico's added cost minus HAProxy's within each round.
        both = [p - h for p, h in zip(pa, ha)]
        rows.append([goal, "portico %+.2f µs/req, HAProxy %+.2f µs/req (medians of paired "
                     "differences); portico − HAProxy, paired: %s µs"
                     % (_med(pa), _med(ha), _diff(both)),
                     _verdict(_med(both), 0.0)])
    goal = "cluster limit: p99 added ≤ %d µs at half the plain route's capacity" % CLUSTER_P99_ADDED
    why = _why(d, "lat-clstr", "lat-plain")
    if why:
        rows.append([goal, why, "–"])
        rows.append(["cluster limit: one Redis round trip per decision", why, "–"])
    else:
        p99 = d.added("lat-clstr", "lat-plain", "p99")
        p50 = d.added("lat-clstr", "lat-plain", "p50")
        rows.append([goal, "p99 %s µs vs %s µs: added %s µs (p50 added %s µs), paired by round"
                     % (_fmt(_med(d.series("lat-clstr", "p99")), 0),
                        _fmt(_med(d.series("lat-plain", "p99")), 0), _diff(p99, 0), _diff(p50, 0)),
                     _verdict(_med(p99), CLUSTER_P99_ADDED)])
        ev, ans = sum(d.series("lat-clstr", "redis_evals")), sum(d.series("lat-clstr", "requests"))
        per = [e / a for e, a in zip(d.series("lat-clstr", "redis_evals"), d.series("lat-clstr", "requests")) if a]
        x = ev / ans if ans else None
        ok = None if x is None else abs(x - EVALS_PER_DECISION) <= EVALS_TOLERANCE
        rows.append(["cluster limit: one Redis round trip per decision",
                     "%s EVALSHA + EVAL calls on the server for %s requests: %s per request "
                     "(rounds %s – %s)" % (_fmt(ev, 0), _fmt(ans, 0), _fmt(x, 4),
                                           _fmt(min(per) if per else None, 4),
                                           _fmt(max(per) if per else None, 4)),
                     "–" if ok is None else ("**met**" if ok else "**missed**")])
    return ["### Goals (issue 16, \"Numbers\")", "",
            "`–`: a run the goal needs did not happen (this build refused its config, or no "
            "redis-server).", "",
            _table(["goal", "measured", "verdict"], rows, left=2), ""]


def _cpu(d, s):
    rows = []
    ref = {"p-local": "p-plain", "h-limit": "h-plain"}
    for name, _, label, status in d.runs:
        if name.startswith("lat-"):
            continue
        if status != "ran":
            rows.append([label, "skipped: %s" % (d.skip.get(name) or "did not run")] + [""] * 4)
            continue
        c = d.series(name, "cpu_us")
        p = ref.get(name)
        have = p and d.ran(p)
        rows.append([label, "%s (%s)" % (_fmt(_med(c), 2), _spread(c, 2)),
                     _ratio(d.paired(name, p)) if have else "–",
                     _diff(d.added(name, p)) if have else "–",
                     _fmt(_med(d.series(name, "rps")), 0),
                     _fmt(_med(d.series(name, "cpu_util_pct")), 0)])
    return ["### Local row: CPU per request", "",
            "Medians over %s rounds (spread: min – max). Each run: `wrk -t1 -c32 -d%ss`, the "
            "proxy's CPU time over the run (all threads, `/proc/PID/task/*/schedstat`) ÷ the "
            "responses wrk counted; every answer must be a 2xx (a limit that trips would make the "
            "row meaningless). portico: one gateway, routes told apart by `Host` "
            "(`conf/portico-ratelimit.yaml.in`); HAProxy: one process, two frontends "
            "(`conf/haproxy-ratelimit.cfg.in`). Ratios and differences are paired: within each "
            "round, then the median (spread); run order reversed every other round. *Proxy CPU "
            "%%*: its CPU time ÷ the run's wall time." % (s.get("rounds", "?"), s.get("run_s", "?")), "",
            _table(["run", "CPU µs/req (spread)", "÷ its plain", "µs over its plain (spread)",
                    "req/s", "proxy CPU %"], rows), ""]


def _cluster(d, s):
    if not any(n.startswith("lat-") for n, _, _, _ in d.runs):
        return []
    if not d.ran("lat-clstr"):
        return ["### Cluster row", "", "Not run: %s" % (d.skip.get("lat-clstr") or "–"), ""]
    rate = d.one("calibration", "fixed_rate_rps")
    rows = []
    for name in ("lat-plain", "lat-clstr"):
        ach = d.series(name, "rate")
        other = [max(0.0, x) for x in d.series(name, "cpu0_other_pct")]
        short = sum(1 for x in ach if rate and x < 0.95 * rate)
        cell = _fmt(_med(ach), 0) + (" ⚠ %d of %d runs below 95%% of the offered rate"
                                     % (short, len(ach)) if short else "")
        ev = d.series(name, "redis_evals")
        ans = d.series(name, "requests")
        rows.append([d.label(name)] + [_fmt(_med(d.series(name, q)), 0)
                                       for q in ("p50", "p90", "p99", "p999")]
                    + [cell, "%s (%s)" % (_fmt(_med(d.series(name, "cpu_us")), 2),
                                          _spread(d.series(name, "cpu_us"), 2)),
                       _fmt(_med(d.series(name, "redis_cpu_us")), 2),
                       _fmt(sum(ev) / sum(ans), 4) if ans and sum(ans) else "–",
                       _fmt(sum(d.series(name, "failed")), 0),
                       "%s (%s)" % (_fmt(_med(other)), _fmt(max(other) if other else None))])
    added = [["added by the cluster decision (paired)"]
             + [_diff(d.added("lat-clstr", "lat-plain", q), 0) for q in ("p50", "p90", "p99", "p999")]
             + ["", _diff(d.added("lat-clstr", "lat-plain", "cpu_us")),
                _diff(d.added("lat-clstr", "lat-plain", "redis_cpu_us")), "", "", ""]]
    return ["### Cluster row: added latency at a fixed rate, Redis round trips", "",
            "The plain route's capacity (median of three `wrk -t1 -c32 -d%ss`): %s req/s; fixed "
            "rate: half of it, `h2load --h1 -c%s --rps R/%s -D%s` = %s req/s offered, plain route "
            "and cluster route alternately (first one alternating), %s rounds. Latencies in µs "
            "from h2load's per-request log (first 0.2 s dropped), medians over the rounds; the "
            "added row is the median (spread) of the paired differences. *Scripts per request*: "
            "the server's `INFO commandstats` calls of `evalsha` and `eval` during the run ÷ the "
            "requests h2load logged (a 503 after `store_timeout` was a decision too; the requests "
            "in flight when h2load stops, up to one per connection, are counted by the server "
            "but not in the log). *Non-2xx*: "
            "after the first 0.2 s; with `on_store_failure: deny` a script answered later than "
            "`store_timeout` (50 ms) is a 503. *CPU 0 busy elsewhere*: wall time − CPU 0's idle "
            "time − portico's time, over the run (another user of the machine). redis-server runs on CPU 1 with the load by default (no "
            "persistence; `PORTICO_BENCH_REDIS_CPU`: this run's is CPU %s); its CPU per request is "
            "the schedstat delta of its process."
            % (s.get("cap_s", "?"), _fmt(d.one("calibration", "plain_capacity_rps"), 0),
               s.get("conns", "?"), s.get("conns", "?"), s.get("lat_s", "?"), _fmt(rate, 0),
               s.get("lat_rounds", "?"), s.get("redis_cpu", "?")), "",
            _table(["route", "p50", "p90", "p99", "p99.9", "achieved req/s", "portico CPU µs/req",
                    "redis CPU µs/req", "scripts per request", "non-2xx",
                    "CPU 0 busy elsewhere % (max)"], rows + added), ""]


def section(raw, meta):
    d = _Data(raw)
    if not d.runs:
        return []
    s = dict(p.split("=", 1) for p in meta.get("ratelimit", "").split() if "=" in p)
    out = ["## Issue 16: what a rate limit costs (local, cluster)", ""]
    el = d.one("run", "ratelimit_elapsed_s")
    if el:
        out += ["Section run time: %s s." % _fmt(el, 0), ""]
    other = [max(0.0, x) for n, _, _, st in d.runs if st == "ran" for x in d.series(n, "cpu0_other_pct")]
    if other and _med(other) > 5:
        out += ["**Warning: CPU 0 was busy with other work during the runs (median %s%% of each run, "
                "max %s%%, beside the proxy): something else runs on this machine. The CPU figures "
                "and ratios are disturbed; rerun on a quiet machine before quoting numbers.**"
                % (_fmt(_med(other)), _fmt(max(other))), ""]
    return out + _goals(d) + _cpu(d, s) + _cluster(d, s)
