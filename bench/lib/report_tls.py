"""Issue 18's section of the bench report: TLS termination and HTTP/2,
portico beside HAProxy and nginx configured the same way, from what
bench/lib/tls.sh wrote in the run's raw directory:

  tls.tsv         round<TAB>run<TAB>metric<TAB>value; a run is ROW-SYSTEM
                  (ka: HTTPS/1.1 kept alive, hs: full handshakes, h2: HTTP/2
                  with 100 streams); round 0: one-off values (elapsed time)
  tls-runs.tsv    run<TAB>system<TAB>row<TAB>label<TAB>ran|skipped
  tls-skip-RUN.txt  why a run did not happen (the build refused its config)
  tls-info.tsv    system<TAB>probe<TAB>protocol<TAB>cipher<TAB>group<TAB>ALPN
  meta.tsv        the "tls" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). Every verdict is computed here from those numbers.
"""
import collections
import os

from report_balance import _fmt, _med, _ratio, _spread, _table, _tsv

# Goals of issue 18 ("Numbers (make bench)").
KA_CPU_VS_HAPROXY = 0.9   # HTTPS/1.1 kept alive: CPU/request ≤ 0.9× HAProxy's
HS_PER_CORE_VS_HAPROXY = 1.0  # handshakes per second per core ≥ HAProxy's
H2_RPS_VS_NGINX = 1.0     # h2, 100 streams: requests/s ≥ nginx's

SYSTEMS = ("portico", "haproxy", "nginx")


class _Data:
    def __init__(self, raw):
        self.per = collections.defaultdict(dict)  # (run, metric) → {round: value}
        for rnd, run, metric, value in _tsv(os.path.join(raw, "tls.tsv")):
            self.per[(run, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})
        self.runs = {}  # run → (system, row, label, status)
        self.labels = {}
        self.skip = {}
        for run, system, row, label, status in _tsv(os.path.join(raw, "tls-runs.tsv")):
            self.runs[run] = (system, row, label, status)
            self.labels[system] = label
            try:
                with open(os.path.join(raw, "tls-skip-%s.txt" % run)) as f:
                    self.skip[run] = f.read().strip()
            except OSError:
                self.skip[run] = ""
        self.info = _tsv(os.path.join(raw, "tls-info.tsv"))
        self.resume = {f[0]: f[2] for f in _tsv(os.path.join(raw, "tls-resume.tsv")) if len(f) > 2}

    def series(self, run, metric):
        d = self.per.get((run, metric), {})
        return [d[r] for r in self.rounds if r in d]

    def one(self, run, metric):
        return self.per.get((run, metric), {}).get(0)

    def ran(self, run):
        return self.runs.get(run, ("", "", "", ""))[3] == "ran"

    def paired(self, a, b, metric, f=lambda x, y: x / y):
        x, y = self.per.get((a, metric), {}), self.per.get((b, metric), {})
        return [f(x[r], y[r]) for r in self.rounds if r in x and r in y and y[r]]

    def why(self, *runs):
        for run in runs:
            if not self.ran(run):
                return "not run (%s)" % (self.skip.get(run) or "did not run")
        return None


def _inv(x, y):
    """Ratio of the inverses: handshakes per CPU-second from µs per handshake."""
    return y / x if x else None


def _ver(x, goal, at_most):
    if x is None:
        return "–"
    return "**met**" if (x <= goal if at_most else x >= goal) else "**missed**"


def _goals(d):
    rows = []
    goal = "HTTPS/1.1 kept alive: portico CPU/request ≤ %.1f× HAProxy's" % KA_CPU_VS_HAPROXY
    why = d.why("ka-portico", "ka-haproxy")
    if why:
        rows.append([goal, why, "–"])
    else:
        pr = d.paired("ka-portico", "ka-haproxy", "cpu_us")
        rows.append([goal, "%s µs vs %s µs: paired %s" % (
            _fmt(_med(d.series("ka-portico", "cpu_us")), 2), _fmt(_med(d.series("ka-haproxy", "cpu_us")), 2),
            _ratio(pr)), _ver(_med(pr), KA_CPU_VS_HAPROXY, True)])
    goal = "new full TLS handshakes per second per core: portico ≥ HAProxy"
    why = d.why("hs-portico", "hs-haproxy")
    if why:
        rows.append([goal, why, "–"])
    else:
        pr = [x for x in d.paired("hs-portico", "hs-haproxy", "cpu_us", _inv) if x is not None]
        mp, mh = _med(d.series("hs-portico", "cpu_us")), _med(d.series("hs-haproxy", "cpu_us"))
        rows.append([goal, "%s vs %s handshakes per CPU-second (%s µs vs %s µs per handshake): paired %s"
                     % (_fmt(1e6 / mp if mp else None, 0), _fmt(1e6 / mh if mh else None, 0),
                        _fmt(mp, 1), _fmt(mh, 1), _ratio(pr)),
                     _ver(_med(pr), HS_PER_CORE_VS_HAPROXY, False)])
    goal = "h2, %s streams per connection: portico requests/s ≥ nginx's" % "100"
    why = d.why("h2-portico", "h2-nginx")
    if why:
        rows.append([goal, why, "–"])
    else:
        pr = d.paired("h2-portico", "h2-nginx", "rps")
        rows.append([goal, "%s vs %s req/s: paired %s" % (
            _fmt(_med(d.series("h2-portico", "rps")), 0), _fmt(_med(d.series("h2-nginx", "rps")), 0),
            _ratio(pr)), _ver(_med(pr), H2_RPS_VS_NGINX, False)])
    return ["### Goals (issue 18, \"Numbers\")", "",
            "Ratios are paired: computed within each round, then the median (min – max over the "
            "rounds). `–`: a run the goal needs did not happen (this build refused its config).", "",
            _table(["goal", "measured", "verdict"], rows, left=2), ""]


def _cell(xs, nd):
    return "%s (%s)" % (_fmt(_med(xs), nd), _spread(xs, nd)) if xs else "–"


def _vs(d, run, ref, metric, f=lambda x, y: x / y):
    if run == ref or not d.ran(ref):
        return "–"
    return _ratio([x for x in d.paired(run, ref, metric, f) if x is not None])


def _row_table(d, row, cols):
    """One row's table: a line per system; cols: (header, function(run) → cell)."""
    out = []
    for sys in SYSTEMS:
        run = "%s-%s" % (row, sys)
        if run not in d.runs:
            continue
        label = d.runs[run][2]
        if not d.ran(run):
            out.append([label, "skipped: %s" % (d.skip.get(run) or "did not run")] + [""] * (len(cols) - 1))
            continue
        out.append([label] + [f(run) for _, f in cols])
    return _table(["system"] + [h for h, _ in cols], out)


def _other(d, run):
    o = [max(0.0, x) for x in d.series(run, "cpu0_other_pct")]
    return "%s (%s)" % (_fmt(_med(o)), _fmt(max(o))) if o else "–"


def _reuse(d, run):
    """Upstream reuse over the run's rounds: 1 − backend accepts ÷ backend requests."""
    acc, req = sum(d.series(run, "upstream_accepts")), sum(d.series(run, "upstream_requests"))
    return "%.2f%%" % (100 * (1 - acc / req)) if req else "–"


def _ka(d, s):
    cols = [("CPU µs/req (spread)", lambda r: _cell(d.series(r, "cpu_us"), 2)),
            ("÷ HAProxy", lambda r: _vs(d, r, "ka-haproxy", "cpu_us")),
            ("÷ nginx", lambda r: _vs(d, r, "ka-nginx", "cpu_us")),
            ("req/s (spread)", lambda r: _cell(d.series(r, "rps"), 0)),
            ("proxy CPU %", lambda r: _fmt(_med(d.series(r, "cpu_util_pct")), 0)),
            ("upstream reuse", lambda r: _reuse(d, r)),
            ("CPU 0 busy elsewhere % (max)", lambda r: _other(d, r))]
    return ["### HTTPS/1.1 kept alive", "",
            "`wrk -t1 -c%s -d%ss https://127.0.0.1:PORT/tiny`: %s connections, each with one handshake "
            "at its start (wrk offers no ALPN: HTTP/1.1), then keep-alive. CPU per request = the proxy "
            "process's CPU time over the run (all threads, `/proc/PID/task/*/schedstat`) ÷ the responses "
            "wrk counted (every one must be a 2xx); the 32 handshakes are inside it (well under 1%% of a "
            "run). Medians over %s rounds (spread: min – max); ratios paired by round."
            % (s.get("ka_conns", "32"), s.get("d", "?"), s.get("ka_conns", "32"), len(d.rounds)), "",
            _row_table(d, "ka", cols), ""]


def _hs(d, s):
    def per_core(r):
        xs = [1e6 / x for x in d.series(r, "cpu_us") if x]
        return _cell(xs, 0)

    def haproxy_sessions(r):
        if not r.endswith("-haproxy"):
            return "–"
        new, res = sum(d.series(r, "tls_new")), sum(d.series(r, "tls_resumed"))
        return "%s new, %s resumed" % (_fmt(new, 0), _fmt(res, 0))

    cols = [("handshakes/s (spread)", lambda r: _cell(d.series(r, "rps"), 0)),
            ("CPU µs per handshake (spread)", lambda r: _cell(d.series(r, "cpu_us"), 1)),
            ("handshakes per CPU-second (spread)", per_core),
            ("÷ HAProxy (per core)", lambda r: _vs(d, r, "hs-haproxy", "cpu_us", _inv)),
            ("÷ nginx (per core)", lambda r: _vs(d, r, "hs-nginx", "cpu_us", _inv)),
            ("proxy CPU %", lambda r: _fmt(_med(d.series(r, "cpu_util_pct")), 0)),
            ("failed", lambda r: _fmt(sum(d.series(r, "failed")), 0)),
            ("TLS sessions (HAProxy's counters)", haproxy_sessions),
            ("upstream reuse", lambda r: _reuse(d, r)),
            ("CPU 0 busy elsewhere % (max)", lambda r: _other(d, r))]
    return ["### New TLS handshakes (full, no resumption)", "",
            "`h2load --h1 -t1 -c%s -n%s https://127.0.0.1:PORT/tiny`: %s clients opened at once, each "
            "one connection, one request, then close. Every h2load client is a fresh OpenSSL object "
            "with no session to offer (h2load offers a saved session only when a client reconnects, "
            "which does not happen with one request per client), so each connection is a full "
            "handshake: ECDHE (X25519) and an ECDSA P-256 signature on the proxy, plus the session "
            "tickets it sends. HAProxy's counters of new and resumed sessions, read around each of its "
            "runs, confirm it (a resumed one stops the run). *handshakes/s* is h2load's rate (1 request "
            "= 1 connection): h2load does the client half of every handshake on CPU 1, beside the "
            "backend, so it can bound this figure; *handshakes per CPU-second* = 10⁶ ÷ the proxy's "
            "CPU µs per handshake (connection, handshake, one proxied request, close) is the per-core "
            "figure the goal uses. Medians over %s rounds."
            % (s.get("hs_n", "?"), s.get("hs_n", "?"), s.get("hs_n", "?"), len(d.rounds)), "",
            _row_table(d, "hs", cols), ""]


def _h2(d, s):
    cols = [("req/s (spread)", lambda r: _cell(d.series(r, "rps"), 0)),
            ("÷ nginx", lambda r: _vs(d, r, "h2-nginx", "rps")),
            ("÷ HAProxy", lambda r: _vs(d, r, "h2-haproxy", "rps")),
            ("CPU µs/req (spread)", lambda r: _cell(d.series(r, "cpu_us"), 2)),
            ("CPU ÷ nginx", lambda r: _vs(d, r, "h2-nginx", "cpu_us")),
            ("proxy CPU %", lambda r: _fmt(_med(d.series(r, "cpu_util_pct")), 0)),
            ("failed", lambda r: _fmt(sum(d.series(r, "failed")), 0)),
            ("upstream reuse", lambda r: _reuse(d, r)),
            ("CPU 0 busy elsewhere % (max)", lambda r: _other(d, r))]
    return ["### HTTP/2, %s streams per connection" % s.get("h2_streams", "100"), "",
            "`h2load -t1 -c%s -m%s -D%s https://127.0.0.1:PORT/tiny` (ALPN h2; a run that negotiates "
            "anything else stops the section): %s requests in flight, each proxied to the HTTP/1.1 "
            "backend. *req/s*: h2load's rate, 2xx only counted for CPU per request. Requests/s is also "
            "bounded by CPU 1 (h2load and the backend share it): read the proxy CPU %% beside it. "
            "Medians over %s rounds; ratios paired by round. *Upstream reuse* (every row): 1 − the "
            "backend's accepts ÷ its requests over the rounds; every upstream pool keeps up to 512 "
            "idle connections, above the 400 requests in flight."
            % (s.get("h2_conns", "4"), s.get("h2_streams", "100"), s.get("d", "?"),
               int(s.get("h2_conns", "4")) * int(s.get("h2_streams", "100")), len(d.rounds)), "",
            _row_table(d, "h2", cols), ""]


def _negotiated(d):
    if not d.info:
        return []
    rows, by_probe = [], collections.defaultdict(set)
    for f in d.info:
        f = (f + [""] * 6)[:6]
        sysname, probe = f[0], f[1]
        rows.append([d.labels.get(sysname, sysname), probe] + [x or "–" for x in f[2:]])
        by_probe[probe].add(tuple(f[2:6]))
    differ = sorted(p for p, v in by_probe.items() if len(v) > 1)
    out = ["### What was negotiated", "",
           "Each system once with `openssl s_client` (its defaults, the offer wrk makes; and "
           "forced to TLS 1.2), and as h2load reported it in each row.", "",
           _table(["system", "client", "protocol", "cipher", "key exchange", "ALPN"], rows, left=6), ""]
    if d.resume:
        out += ["Session resumption (tickets on): a second `openssl s_client -sess_in` connection, "
                "offering the session of a first one that made a request, was: %s."
                % ", ".join("%s **%s**" % (d.labels.get(k, k), v.lower()) for k, v in sorted(d.resume.items())), ""]
        if any(v != "Reused" for v in d.resume.values()):
            out += ["**Warning: not every system resumed a session: session tickets are not configured "
                    "alike.**", ""]
    if differ:
        out += ["**Warning: the systems negotiated different parameters for %s: their configurations "
                "do not match; the comparison is not like for like.**" % ", ".join(differ), ""]
    return out


def section(raw, meta):
    d = _Data(raw)
    if not d.runs:
        return []
    s = dict(p.split("=", 1) for p in meta.get("tls", "").split() if "=" in p)
    out = ["## Issue 18: TLS termination and HTTP/2", ""]
    el = d.one("run", "tls_elapsed_s")
    out += ["portico, %s and %s, one process each pinned to CPU 0, the same ECDSA P-256 certificate "
            "(made with the openssl CLI for the run), TLS 1.2 + 1.3, Mozilla intermediate ciphers with "
            "the client's preference, session tickets on, ALPN h2,http/1.1, keep-alive to the demo "
            "backend (HTTP/1.1) — `conf/portico-tls.yaml.in`, `conf/haproxy-tls.cfg.in`, "
            "`conf/nginx-tls.conf.in`. Load on CPU 1. Rounds paired: A B C, then C B A. OpenSSL %s.%s"
            % (d.labels.get("haproxy", "HAProxy"), d.labels.get("nginx", "nginx"), s.get("openssl", "?"),
               " Section run time: %s s." % _fmt(el, 0) if el else ""), ""]
    other = [max(0.0, x) for run in d.runs if d.ran(run) for x in d.series(run, "cpu0_other_pct")]
    if other and _med(other) > 5:
        out += ["**Warning: CPU 0 was busy with other work during the runs (median %s%% of each run, "
                "max %s%%, beside the proxy): something else runs on this machine. The CPU figures "
                "and ratios are disturbed; rerun on a quiet machine before quoting numbers.**"
                % (_fmt(_med(other)), _fmt(max(other))), ""]
    return out + _goals(d) + _ka(d, s) + _hs(d, s) + _h2(d, s) + _negotiated(d)
