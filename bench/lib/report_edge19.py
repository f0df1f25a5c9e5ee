"""Issues 19 and 20's section of the bench report: what the edge filters
cost (a cache hit beside nginx proxy_cache and HAProxy's cache, cors, JSON
body transforms, an aggregate fan-out of 3), from what bench/lib/edge19.sh
wrote in the run's raw directory:

  edge19.tsv         round<TAB>run<TAB>metric<TAB>value (round 0: one-off
                     values: elapsed time)
  edge19-runs.tsv    run<TAB>system<TAB>row<TAB>label<TAB>ran|skipped, in
                     round order
  edge19-skip-RUN.txt  why a run did not happen (the build refused its feature)
  edge19-checks.txt  what the start-up checks saw (one line each)
  meta.tsv           the "edge19" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). Every verdict is computed here from those numbers.
"""
import collections
import os

from report_balance import _fmt, _med, _ratio, _spread, _table, _tsv, _verdict

# Goals of issues 19 and 20 ("Numbers (make bench)").
CACHE_VS_NGINX = 0.8  # portico CPU per cache hit ≤ 0.8× nginx proxy_cache's
CORS_VS_PLAIN = 1.03  # cors route ≤ 1.03× the plain route's CPU per request
BFF_VS_PLAIN = 3.5    # fan-out of 3 ≤ 3.5× the plain route's CPU per request

# run → the run it is compared with in the table's "÷ reference" column.
REFERENCE = {"p-cors": "p-plain", "p-cache": "n-cache", "h-cache": "n-cache",
             "p-xform": "p-json", "p-bff": "p-plain"}


class _Data:
    def __init__(self, raw):
        self.per = collections.defaultdict(dict)  # (run, metric) → {round: value}
        for rnd, run, metric, value in _tsv(os.path.join(raw, "edge19.tsv")):
            if value != "":
                self.per[(run, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})
        self.runs = []  # (run, system, row, label, status)
        self.skip = {}
        for f in _tsv(os.path.join(raw, "edge19-runs.tsv")):
            self.runs.append(tuple(f[:5]))
            try:
                with open(os.path.join(raw, "edge19-skip-%s.txt" % f[0])) as fh:
                    self.skip[f[0]] = fh.read().strip()
            except OSError:
                self.skip[f[0]] = ""
        try:
            with open(os.path.join(raw, "edge19-checks.txt")) as fh:
                self.checks = [line.strip() for line in fh if line.strip()]
        except OSError:
            self.checks = []

    def series(self, run, metric):
        d = self.per.get((run, metric), {})
        return [d[r] for r in self.rounds if r in d]

    def one(self, run, metric):
        return self.per.get((run, metric), {}).get(0)

    def ran(self, run):
        return any(r[0] == run and r[4] == "ran" for r in self.runs)

    def label(self, run):
        return next((r[3] for r in self.runs if r[0] == run), run)

    def paired(self, a, b, metric="cpu_us"):
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [x[r] / y[r] for r in self.rounds if r in x and r in y and y[r]]

    def why(self, *runs):
        for run in runs:
            if not self.ran(run):
                return "not run (%s)" % (self.skip.get(run) or "did not run")
        return None

    def added(self, a, b, metric):
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [x[r] - y[r] for r in self.rounds if r in x and r in y]

    def upstream_per_response(self, run):
        req, resp = sum(self.series(run, "upstream_requests")), sum(self.series(run, "responses"))
        return req / resp if resp else None


def _diff(xs, nd=0):
    """'+41 (+20 – +90)' for a list of paired differences."""
    if not xs:
        return "–"
    return "%+.*f (%+.*f – %+.*f)" % (nd, _med(xs), nd, min(xs), nd, max(xs))


def _cpu_pair(d, a, b):
    return "%s µs vs %s µs: paired %s" % (_fmt(_med(d.series(a, "cpu_us")), 2),
                                          _fmt(_med(d.series(b, "cpu_us")), 2), _ratio(d.paired(a, b)))


def _goal_cache(d):
    goal = "cache hit: portico CPU per hit ≤ %.1f× nginx proxy_cache's" % CACHE_VS_NGINX
    why = d.why("p-cache", "n-cache")
    if why:
        return [goal, why, "–"]
    # A run whose backend saw requests measured misses, not hits.
    leaked = {r: int(sum(d.series(r, "upstream_requests"))) for r in ("p-cache", "n-cache", "h-cache")
              if d.ran(r)}
    text = _cpu_pair(d, "p-cache", "n-cache")
    if d.ran("h-cache"):
        text += "; ÷ HAProxy's cache: paired %s (no goal)" % _ratio(d.paired("p-cache", "h-cache"))
    bad = {r: n for r, n in leaked.items() if n}
    if bad:
        return [goal, text + "; backend requests during the measured runs: %s" % ", ".join(
            "%s %d" % (d.label(r), n) for r, n in sorted(bad.items())),
            "**invalid** (not every answer was a hit)"]
    text += "; the backend saw 0 requests during every measured run"
    return [goal, text, _verdict(_med(d.paired("p-cache", "n-cache")), CACHE_VS_NGINX)]


def _goals(d):
    rows = [_goal_cache(d)]
    goal = "cors: CPU/request ≤ %.2f× the plain route" % CORS_VS_PLAIN
    why = d.why("p-cors", "p-plain")
    rows.append([goal, why, "–"] if why else
                [goal, _cpu_pair(d, "p-cors", "p-plain"),
                 _verdict(_med(d.paired("p-cors", "p-plain")), CORS_VS_PLAIN)])
    goal = "JSON body transform: CPU/request over the plain route on the same object (reported, no goal)"
    why = d.why("p-xform", "p-json")
    rows.append([goal, why, "–"] if why else [goal, _cpu_pair(d, "p-xform", "p-json"), "–"])
    goal = "aggregate, fan-out of 3: CPU per client request ≤ %.1f× the plain route's" % BFF_VS_PLAIN
    why = d.why("p-bff", "p-plain")
    if why:
        rows.append([goal, why, "–"])
    else:
        up = d.upstream_per_response("p-bff")
        rows.append([goal, _cpu_pair(d, "p-bff", "p-plain") + "; p99 %s µs vs %s µs (wrk -c32); "
                     "%s backend requests per client request"
                     % (_fmt(_med(d.series("p-bff", "p99_us")), 0),
                        _fmt(_med(d.series("p-plain", "p99_us")), 0), _fmt(up, 2))
                     + ("; at a fixed %s req/s: p99 %s µs vs %s µs, added %s µs (paired)"
                        % (_fmt(_med(d.series("lat-bff", "offered_rps")), 0),
                           _fmt(_med(d.series("lat-bff", "p99")), 0),
                           _fmt(_med(d.series("lat-plain", "p99")), 0),
                           _diff(d.added("lat-bff", "lat-plain", "p99")))
                        if d.ran("lat-bff") and d.ran("lat-plain") else ""),
                     _verdict(_med(d.paired("p-bff", "p-plain")), BFF_VS_PLAIN)])
    return ["### Goals (issues 19 and 20, \"Numbers\")", "",
            "Ratios are paired: computed within each round, then the median (min – max over the "
            "rounds). `–`: a run the goal needs did not happen (this build refused its feature). "
            "A cache verdict is **invalid** when the backend answered any request during a measured "
            "hit run.", "",
            _table(["goal", "measured", "verdict"], rows, left=2), ""]


def _runs(d, s):
    rows = []
    for run, _, row, label, status in d.runs:
        if row == "lat":
            continue
        if status != "ran":
            rows.append([label, "skipped: %s" % (d.skip.get(run) or "did not run")] + [""] * 6)
            continue
        c = d.series(run, "cpu_us")
        ref = REFERENCE.get(run)
        other = [max(0.0, x) for x in d.series(run, "cpu0_other_pct")]
        rows.append([label, "%s (%s)" % (_fmt(_med(c), 2), _spread(c, 2)),
                     "%s ÷ %s" % (_ratio(d.paired(run, ref)), ref) if ref and d.ran(ref) else "–",
                     _fmt(_med(d.series(run, "rps")), 0),
                     _fmt(_med(d.series(run, "p99_us")), 0),
                     _fmt(d.upstream_per_response(run), 3),
                     _fmt(_med(d.series(run, "cpu_util_pct")), 0),
                     "%s (%s)" % (_fmt(_med(other)), _fmt(max(other))) if other else "–"])
    return ["### Every run", "",
            "Medians over %s rounds (spread: min – max). Each run: `wrk -t1 -c32 --latency -d%ss`; "
            "CPU per request = the proxy's CPU time over the run (all threads, "
            "`/proc/PID/task/*/schedstat`) ÷ the responses wrk counted, every one of which must be "
            "a 2xx. Run order reversed every other round. *÷ reference*: paired ratio to the run "
            "named (p-plain: the plain route; n-cache: nginx's hit; p-json: the plain route on the "
            "transformed object). *p99*: wrk's closed-loop 99th percentile at 32 connections. "
            "*Backend requests per response*: the demo backend's count over the run ÷ the "
            "responses (0 for a cache hit, 1 for a proxied request, 3 for the fan-out). *Proxy "
            "CPU %%*: its CPU time ÷ the run's wall time. *CPU 0 busy elsewhere*: wall time − "
            "CPU 0's idle time − the proxy's time."
            % (s.get("rounds", "?"), s.get("d", "?")), "",
            _table(["run", "CPU µs/req (spread)", "÷ reference (paired)", "req/s", "p99 µs",
                    "backend requests per response", "proxy CPU %", "CPU 0 busy elsewhere % (max)"],
                   rows), ""]


def _latency(d, s):
    if not (d.ran("lat-bff") and d.ran("lat-plain")):
        return []
    rows = []
    for name in ("lat-plain", "lat-bff"):
        ach, off = d.series(name, "rate"), d.series(name, "offered_rps")
        short = sum(1 for a, o in zip(ach, off) if a < 0.95 * o)
        rows.append([d.label(name)] + [_fmt(_med(d.series(name, q)), 0) for q in ("p50", "p90", "p99", "p999")]
                    + [_fmt(_med(ach), 0) + (" ⚠ %d of %d runs below 95%% of the offered rate"
                                             % (short, len(ach)) if short else ""),
                       "%s (%s)" % (_fmt(_med(d.series(name, "cpu_us")), 2), _spread(d.series(name, "cpu_us"), 2)),
                       _fmt(d.upstream_per_response(name), 3), _fmt(sum(d.series(name, "failed")), 0)])
    rows.append(["added by the fan-out (paired)"]
                + [_diff(d.added("lat-bff", "lat-plain", q)) for q in ("p50", "p90", "p99", "p999")]
                + ["", _diff(d.added("lat-bff", "lat-plain", "cpu_us"), 2), "", ""])
    return ["### Fan-out latency at a fixed rate", "",
            "`h2load --h1 -t1 -c%s --rps R/%s -D%s`, R = %s req/s offered (`PORTICO_BENCH_E19_LAT_RPS`), "
            "the plain route's `GET /tiny` and the fan-out's `GET /bff/1` alternately (the first one "
            "alternating), %s rounds, after nginx and HAProxy stopped. Latencies in µs from h2load's "
            "per-request log (first 0.2 s dropped), medians over the rounds; the added row is the "
            "median (spread) of the paired differences. A fan-out answer waits for the slowest of its "
            "three calls, all to the one demo backend thread on CPU 1."
            % (s.get("lat_conns", "16"), s.get("lat_conns", "16"), s.get("d", "?"), s.get("lat_rps", "?"),
               s.get("rounds", "?")), "",
            _table(["route", "p50", "p90", "p99", "p99.9", "achieved req/s", "portico CPU µs/req",
                    "backend requests per response", "failed"], rows), ""]


def section(raw, meta):
    d = _Data(raw)
    if not d.runs:
        return []
    s = dict(p.split("=", 1) for p in meta.get("edge19", "").split() if "=" in p)
    out = ["## Issues 19 and 20: cache, CORS, body transforms, aggregation", ""]
    el = d.one("run", "edge19_elapsed_s")
    out += ["portico (`conf/portico-edge19.yaml.in`: one gateway, routes told apart by `Host`, each "
            "the plain setup plus one filter), nginx with `proxy_cache` (`conf/nginx-cache.conf.in`) "
            "and HAProxy with its `cache` section (`conf/haproxy-cache.cfg.in`), one process each "
            "pinned to CPU 0; the demo backend and wrk on CPU 1. The cached object is `GET /tiny` "
            "(`{\"ok\":true}`), stored by each cache from one warm-up request whose answer carries "
            "`Cache-Control: public, max-age=600` (HAProxy stores nothing without a lifetime); the "
            "cors runs send `Origin: %s` (the plain route gets it too); the body-transform route "
            "renames, removes and adds one field of `GET /users/1`; the fan-out calls `/users/1`, "
            "`/orders?user=1&limit=2` and `/healthz` on the same backend.%s"
            % (s.get("origin", "?"), " Section run time: %s s." % _fmt(el, 0) if el else ""), ""]
    other = [max(0.0, x) for r in d.runs if r[4] == "ran" for x in d.series(r[0], "cpu0_other_pct")]
    if other and _med(other) > 5:
        out += ["**Warning: CPU 0 was busy with other work during the runs (median %s%% of each run, "
                "max %s%%, beside the proxy): something else runs on this machine. The CPU figures "
                "and ratios are disturbed; rerun on a quiet machine before quoting numbers.**"
                % (_fmt(_med(other)), _fmt(max(other))), ""]
    out += _goals(d) + _runs(d, s) + _latency(d, s)
    if d.checks:
        out += ["### Start-up checks", "", "What each route answered before the rounds (the run stops "
                "if one does not do what its row claims):", ""] + ["- %s" % c for c in d.checks] + [""]
    return out
