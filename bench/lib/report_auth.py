"""Issue 15's section of the bench report: what verifying a caller costs
(jwt with a repeated and with unique tokens beside HAProxy's jwt_verify and
OpenSSL's own verify speed; key_auth with 1,000 consumers), from what
bench/lib/auth.sh wrote in the run's raw directory:

  auth.tsv       round<TAB>run<TAB>metric<TAB>value (round 0: warm-up and
                 one-off values: openssl speed, elapsed time)
  auth-runs.tsv  run<TAB>system<TAB>label<TAB>ran|skipped, in round order
  skip-RUN.txt   why a run did not happen (the build refused its config)
  meta.tsv       the "auth" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). Every verdict is computed here from those numbers.
"""
import collections
import os

from report_balance import _fmt, _med, _ratio, _spread, _table, _tsv, _verdict

# Goals of issue 15 ("Numbers (make bench)").
CACHED_VS_PLAIN = 1.10   # repeated token ≤ 1.10× the plain route
COLD_VERIFY_FACTOR = 1.15  # unique tokens ≤ the plain route + 1.15× OpenSSL's verify
KEY_AUTH_VS_PLAIN = 1.03  # key_auth ≤ 1.03× the plain route

# The reference each run is divided by: its own system's plain route under
# the same load (repeated headers, or a new token on every request: the A/A
# runs showed the unique-token load alone costs the plain route 1.1-1.2×,
# see bench/README.md), and HAProxy's run of the same route (HAProxy has no
# cache: it verifies every request, for a repeated token too).
PLAIN_OF = {"p-rs-hit": "p-plain", "p-es-hit": "p-plain", "p-key": "p-plain",
            "p-rs-cold": "p-plain-cold", "p-es-cold": "p-plain-cold",
            "h-rs-cold": "h-plain-cold", "h-es-cold": "h-plain-cold"}
HAPROXY_OF = {"p-plain-cold": "h-plain-cold", "p-rs-hit": "h-rs-cold", "p-es-hit": "h-es-cold",
              "p-rs-cold": "h-rs-cold", "p-es-cold": "h-es-cold"}

class _Data:
    def __init__(self, raw):
        self.per = collections.defaultdict(dict)  # (run, metric) → {round: value}
        for rnd, run, metric, value in _tsv(os.path.join(raw, "auth.tsv")):
            self.per[(run, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})
        self.runs = []  # (name, system, label, status)
        self.skip = {}
        for name, system, label, status in _tsv(os.path.join(raw, "auth-runs.tsv")):
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

    def paired(self, a, b, metric="cpu_us", f=lambda x, y: x / y):
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [f(x[r], y[r]) for r in self.rounds if r in x and r in y and y[r]]

    def verify_us(self, alg):
        """µs per verify from the faster of the two openssl speed runs (the
        least disturbed one: the physical limit)."""
        key = {"rs": "rsa2048", "es": "ecdsap256"}[alg]
        vals = [v for v in (self.one("openssl", "%s_verify_per_s_%s" % (key, t)) for t in ("start", "end")) if v]
        return 1e6 / max(vals) if vals else None


def _why(d, *names):
    for n in names:
        if not d.ran(n):
            return "not run (%s)" % (d.skip.get(n) or "did not run")
    return None


def _goals(d):
    rows = []
    for alg, hit in (("RS256", "p-rs-hit"), ("ES256", "p-es-hit")):
        goal = "jwt %s, repeated token: CPU/request ≤ %.2f× the plain route" % (alg, CACHED_VS_PLAIN)
        why = _why(d, hit, "p-plain")
        if why:
            rows.append([goal, why, "–"])
            continue
        pr = d.paired(hit, "p-plain")
        rows.append([goal, "%s µs vs %s µs: paired %s" % (
            _fmt(_med(d.series(hit, "cpu_us")), 2), _fmt(_med(d.series("p-plain", "cpu_us")), 2), _ratio(pr)),
            _verdict(_med(pr), CACHED_VS_PLAIN)])
    for alg, cold, ha in (("RS256", "p-rs-cold", "h-rs-cold"), ("ES256", "p-es-cold", "h-es-cold")):
        v = d.verify_us(alg[:2].lower())
        goal = ("jwt %s, unique tokens: CPU/request ≤ the plain route + %.2f× OpenSSL's verify"
                % (alg, COLD_VERIFY_FACTOR))
        why = _why(d, cold, "p-plain-cold")
        if why or v is None:
            rows.append([goal, why or "no openssl speed figure", "–"])
            continue
        budget = d.paired(cold, "p-plain-cold", f=lambda x, y: x / (y + COLD_VERIFY_FACTOR * v))
        added = d.paired(cold, "p-plain-cold", f=lambda x, y: x - y)
        plain = _med(d.series("p-plain-cold", "cpu_us"))
        text = ("%s µs = plain route (unique tokens) %s µs + %s µs (paired); budget: plain + %.2f × "
                "%s µs (OpenSSL verify) = %s µs; paired ÷ budget %s"
                % (_fmt(_med(d.series(cold, "cpu_us")), 2), _fmt(plain, 2), _fmt(_med(added), 2),
                   COLD_VERIFY_FACTOR, _fmt(v, 2), _fmt(plain + COLD_VERIFY_FACTOR * v, 2), _ratio(budget)))
        if d.ran("p-plain"):
            text += ("; against the plain route with repeated headers (cross-check, includes the "
                     "load's own cost): paired ÷ budget %s"
                     % _ratio(d.paired(cold, "p-plain", f=lambda x, y: x / (y + COLD_VERIFY_FACTOR * v))))
        if d.ran(ha):
            ha_added = d.paired(ha, "h-plain-cold", f=lambda x, y: x - y) if d.ran("h-plain-cold") else []
            text += ("; ÷ HAProxy jwt_verify (%s µs, %s µs over its plain route): paired %s"
                     % (_fmt(_med(d.series(ha, "cpu_us")), 2), _fmt(_med(ha_added), 2),
                        _ratio(d.paired(cold, ha))))
        rows.append([goal, text, _verdict(_med(budget), 1.0)])
    goal = "key_auth, 1,000 consumers: CPU/request ≤ %.2f× the plain route" % KEY_AUTH_VS_PLAIN
    why = _why(d, "p-key", "p-plain")
    if why:
        rows.append([goal, why, "–"])
    else:
        pr = d.paired("p-key", "p-plain")
        rows.append([goal, "%s µs vs %s µs: paired %s" % (
            _fmt(_med(d.series("p-key", "cpu_us")), 2), _fmt(_med(d.series("p-plain", "cpu_us")), 2), _ratio(pr)),
            _verdict(_med(pr), KEY_AUTH_VS_PLAIN)])
    return ["### Goals (issue 15, \"Numbers\")", "",
            "`–`: a run the goal needs did not happen (this build refused its config).", "",
            _table(["goal", "measured", "verdict"], rows, left=2), ""]


def _runs(d, s):
    rows = []
    for name, system, label, status in d.runs:
        if status != "ran":
            rows.append([label, "skipped: %s" % (d.skip.get(name) or "did not run")] + [""] * 5)
            continue
        c = d.series(name, "cpu_us")
        plain = PLAIN_OF.get(name)
        ha = HAPROXY_OF.get(name)
        rows.append([label, "%s (%s)" % (_fmt(_med(c), 2), _spread(c, 2)),
                     _ratio(d.paired(name, plain)) if plain and d.ran(plain) else "–",
                     _fmt(_med(d.paired(name, plain, f=lambda x, y: x - y)), 2) if plain and d.ran(plain) else "–",
                     _ratio(d.paired(name, ha)) if ha and d.ran(ha) else "–",
                     _fmt(_med(d.series(name, "rps")), 0),
                     _fmt(_med(d.series(name, "cpu_util_pct")), 0)])
    return ["### CPU per request", "",
            "Medians over %s rounds (spread: min – max). Each run: `wrk -t1 -c32` on the run's route "
            "(`Host`), the proxy's CPU time over the run (all threads, `/proc/PID/task/*/schedstat`) "
            "÷ the responses wrk counted. Every request carries `X-API-Key` and an `Authorization: "
            "Bearer` token (RS256 on the plain and key_auth routes). *Repeated headers*: the same "
            "headers on every request, %s s per run. *Unique tokens*: every request the next token "
            "of a file (`lib/auth_cold.lua`), each token used once, until the run's %s RS256 or %s "
            "ES256 tokens are used up (the plain routes get RS256 tokens). Ratios and differences are "
            "paired: within each round, then the median (spread); run order reversed every other "
            "round. *÷ plain*: ÷ the same system's plain route under the same load; *÷ HAProxy*: ÷ "
            "HAProxy on the same route and load (it verifies every request, a repeated token too). *Proxy CPU %%*: its CPU time ÷ the run's wall "
            "time, start-up of wrk included (below ~90%% the load, not the proxy, set the pace)."
            % (s.get("rounds", "?"), s.get("run_s", "?"), _fmt(float(s.get("rs_slice", 0) or 0), 0),
               _fmt(float(s.get("es_slice", 0) or 0), 0)), "",
            _table(["run", "CPU µs/req (spread)", "÷ plain", "µs over plain", "÷ HAProxy",
                    "req/s", "proxy CPU %"], rows), ""]


def _openssl(d, s):
    rows = []
    for key, what in (("rsa2048", "RSA 2048 (RS256)"), ("ecdsap256", "ECDSA P-256 (ES256)")):
        vals = [d.one("openssl", "%s_verify_per_s_%s" % (key, t)) for t in ("start", "end")]
        best = max([v for v in vals if v] or [0])
        rows.append([what] + [_fmt(v, 0) for v in vals]
                    + [_fmt(1e6 / best, 2) if best else "–",
                       _fmt(COLD_VERIFY_FACTOR * 1e6 / best, 2) if best else "–"])
    return ["### OpenSSL's own verify cost (the physical limit)", "",
            "`openssl speed -seconds %s rsa2048 ecdsap256` on the proxies' CPU, before and after the "
            "rounds; the faster run gives µs per verify (the raw signature check of a digest: no "
            "hashing of the token, no base64 or JSON)." % s.get("speed_s", "?"), "",
            _table(["algorithm", "verify/s before", "verify/s after", "µs per verify",
                    "× %.2f (the cold goal's allowance)" % COLD_VERIFY_FACTOR], rows), ""]


def section(raw, meta):
    d = _Data(raw)
    if not d.runs:
        return []
    s = dict(p.split("=", 1) for p in meta.get("auth", "").split() if "=" in p)
    out = ["## Issue 15: what verifying a caller costs (jwt, key_auth)", ""]
    if s.get("aa") == "1":
        out += ["**A/A run** (`PORTICO_BENCH_AUTH_AA=1`): the portico jwt and key_auth routes have "
                "*no filter* and there are no consumers; every portico ratio below is between "
                "identical routes (what the method resolves), and the verdicts are not the "
                "features'.", ""]
    el = d.one("run", "auth_elapsed_s")
    if el:
        out += ["Section run time: %s s." % _fmt(el, 0), ""]
    other = [max(0.0, x) for n, _, _, st in d.runs if st == "ran" for x in d.series(n, "cpu0_other_pct")]
    if other and _med(other) > 5:
        out += ["**Warning: CPU 0 was busy with other work during the runs (median %s%% of each run, "
                "max %s%%, beside the proxy): something else runs on this machine. The CPU figures "
                "and ratios are disturbed; rerun on a quiet machine before quoting numbers.**"
                % (_fmt(_med(other)), _fmt(max(other))), ""]
    return out + _goals(d) + _runs(d, s) + _openssl(d, s)
