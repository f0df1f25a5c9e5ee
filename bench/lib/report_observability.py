"""Issue 17's section of the bench report: what observing a route costs
(metrics + JSON access log on vs off, beside HAProxy's httplog + PROMEX)
and what a /metrics scrape costs with many routes, from what
bench/lib/observability.sh wrote in the run's raw directory:

  observability.tsv       round<TAB>run<TAB>metric<TAB>value (round 0:
                          one-off values: the scrape timings, elapsed time)
  observability-runs.tsv  run<TAB>system<TAB>label<TAB>ran, in round order
  meta.tsv                the "observability" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). Every verdict is computed here from those numbers.
"""
import collections
import os

from report_balance import _fmt, _med, _ratio, _spread, _table, _tsv, _verdict

# Goals of issue 17 ("Numbers (make bench)").
ON_VS_OFF = 1.10      # metrics + access log ≤ 1.10× CPU per request of the same route off
SCRAPE_MS = 50.0      # a /metrics scrape with 1,000 routes


class _Data:
    def __init__(self, raw):
        self.per = collections.defaultdict(dict)  # (run, metric) → {round: value}
        for rnd, run, metric, value in _tsv(os.path.join(raw, "observability.tsv")):
            self.per[(run, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})
        self.runs = [tuple(x) for x in _tsv(os.path.join(raw, "observability-runs.tsv"))]

    def series(self, run, metric):
        d = self.per.get((run, metric), {})
        return [d[r] for r in self.rounds if r in d]

    def one(self, run, metric):
        return self.per.get((run, metric), {}).get(0)

    def paired(self, a, b, metric="cpu_us", f=lambda x, y: x / y):
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [f(x[r], y[r]) for r in self.rounds if r in x and r in y and y[r]]


def _diff(xs, nd=2):
    if not xs:
        return "–"
    return "%+.*f (%+.*f – %+.*f)" % (nd, _med(xs), nd, min(xs), nd, max(xs))


def section(raw, meta):
    d = _Data(raw)
    if not d.runs:
        return []
    s = dict(p.split("=", 1) for p in meta.get("observability", "").split() if "=" in p)
    label = {n: lb for n, _, lb, _ in d.runs}
    out = ["## Issue 17: what observing a route costs (metrics, access log, scrapes)", ""]
    el = d.one("run", "observability_elapsed_s")
    if el:
        out += ["Section run time: %s s." % _fmt(el, 0), ""]
    on_off = d.paired("p-on", "p-off")
    ms50, msmax = d.one("scrape", "ms_p50"), d.one("scrape", "ms_max")
    msfirst = d.one("scrape", "ms_first")
    p99 = d.paired("lat-scraped", "lat-quiet", "p99", lambda x, y: x - y)
    p99ct = d.paired("lat-scraped-ct", "lat-quiet-ct", "p99", lambda x, y: x - y)
    goals = [
        ["metrics + JSON access log: CPU/request ≤ %.2f× the same route with both off" % ON_VS_OFF,
         "%s µs vs %s µs: paired %s" % (_fmt(_med(d.series("p-on", "cpu_us")), 2),
                                        _fmt(_med(d.series("p-off", "cpu_us")), 2), _ratio(on_off)),
         _verdict(_med(on_off), ON_VS_OFF)],
        ["a /metrics scrape with %s routes < %d ms" % (s.get("routes", "?"), SCRAPE_MS),
         "median %s ms, worst %s ms of the %s scrapes after the first (%s series, %s bytes); "
         "the first scrape of the process (cold memory): %s ms"
         % (_fmt(ms50, 2), _fmt(msmax, 2), int(s.get("scrapes", "1")) - 1,
            _fmt(d.one("scrape", "series"), 0), _fmt(d.one("scrape", "bytes"), 0),
            _fmt(msfirst, 2)),
         _verdict(msmax, SCRAPE_MS)],
        ["workers' p99 does not move during scrapes",
         "p99 %s µs quiet vs %s µs scraped: paired difference %s µs"
         % (_fmt(_med(d.series("lat-quiet", "p99")), 0), _fmt(_med(d.series("lat-scraped", "p99")), 0),
            _diff(p99, 0)), "reported"],
        ["the same, the control thread on the other CPU",
         "p99 %s µs quiet vs %s µs scraped: paired difference %s µs"
         % (_fmt(_med(d.series("lat-quiet-ct", "p99")), 0),
            _fmt(_med(d.series("lat-scraped-ct", "p99")), 0), _diff(p99ct, 0)), "reported"],
    ]
    out += ["### Goals (issue 17, \"Numbers\")", "",
            _table(["goal", "measured", "verdict"], goals, left=2), ""]
    ref = {"p-on": "p-off", "h-obs": "h-plain"}
    rows = []
    for name in ("p-off", "p-on", "h-plain", "h-obs"):
        c = d.series(name, "cpu_us")
        p = ref.get(name)
        rows.append([label.get(name, name), "%s (%s)" % (_fmt(_med(c), 2), _spread(c, 2)),
                     _ratio(d.paired(name, p)) if p else "–",
                     _diff(d.paired(name, p, f=lambda x, y: x - y)) if p else "–",
                     _fmt(_med(d.series(name, "rps")), 0)])
    out += ["### Cost row: CPU per request", "",
            "Medians over %s rounds (spread: min – max). Each run: `wrk -t1 -c32 -d%ss` on "
            "`GET /tiny`, the proxy's CPU time over the run ÷ the responses. portico: two "
            "processes from `conf/portico-observability.yaml.in` (`workers: 1`), one with "
            "`metrics: {enabled: false}` and `access_log: off`, one with metrics on and the JSON "
            "access log written to a file. HAProxy: one process (`conf/haproxy-observability.cfg.in`), "
            "the plain frontend, and a frontend with `option httplog` to stdout (a file) while "
            "PROMEX serves its counters on a frontend of its own. Ratios paired within rounds; "
            "run order reversed every other round." % (s.get("rounds", "?"), s.get("run_s", "?")), "",
            _table(["run", "CPU µs/req (spread)", "÷ its plain", "µs over its plain", "req/s"], rows), ""]
    rate = d.one("scrape", "fixed_rate_rps")
    lrows = []
    for name in ("lat-quiet", "lat-scraped", "lat-quiet-ct", "lat-scraped-ct"):
        if name not in label:
            continue
        lrows.append([label.get(name, name)] + [_fmt(_med(d.series(name, q)), 0)
                                                for q in ("p50", "p99", "p999")]
                     + [_fmt(_med(d.series(name, "scrapes")), 0) if "scraped" in name else "–"])
    out += ["### Scrape row", "",
            "A gateway with %s routes (`lib/gen_routes.py`: prefixes `/rN/`, each with a "
            "`rate_limit` that never trips, so each route has request, overhead and filter "
            "histograms and a status counter), after one request on every route. Scrape time: "
            "wall time of `GET /metrics` on the admin listener, from a Python client on CPU 1 "
            "(request, the whole exposition, close), %s scrapes one after the other. Latency: "
            "`h2load --h1 -c%s --rps R/%s -D%s` on one route at %s req/s (half its capacity), "
            "quiet and with `lib/scrape.py loop` pulling /metrics every 100 ms, alternated over "
            "%s rounds; µs, medians over the rounds. The whole portico process is pinned to CPU 0 "
            "(as every proxy here), so in the first pair the scrape's CPU time (the control "
            "thread) is taken from the worker's core; the second pair moves the control thread "
            "alone to the other CPU (`taskset -p`: the worker stays on CPU 0), as on a machine "
            "with a core to spare. A scrape never locks or waits for a worker."
            % (s.get("routes", "?"), s.get("scrapes", "?"), s.get("conns", "?"), s.get("conns", "?"),
               s.get("lat_s", "?"), _fmt(rate, 0), s.get("lat_rounds", "?")), "",
            _table(["run", "p50", "p99", "p99.9", "scrapes per run"], lrows), ""]
    return out
