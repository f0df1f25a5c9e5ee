#!/usr/bin/python3
"""Turn one bench/run.sh run into bench/results/latest.md and latency.png.

Usage: report.py RAW_DIR RESULTS_DIR

RAW_DIR holds what run.sh wrote:
  meta.tsv        key<TAB>value: machine, versions, settings
  systems.tsv     name<TAB>scenario<TAB>kind<TAB>label, in round order
  results.tsv     round<TAB>system<TAB>metric<TAB>value (round 0: one-off)
  strace-NAME.txt strace -c summaries
  perf-NAME.txt   perf stat -x TAB counts of syscall tracepoints (optional)
  r*-NAME-{c1,rate}.grid  latency at fixed quantiles, per round

Every verdict in the report is computed here from those numbers; nothing
is typed in by hand.
"""
import collections
import re
import os
import statistics
import subprocess
import sys

import report_auth
import report_balance
import report_edge19
import report_observability
import report_ratelimit
import report_tracing
import report_tls


def arena_block_bytes():
    """PT_REQ_ARENA_BLOCK as the source defines it (the report describes
    the build it measured), or "?"."""
    path = os.path.join(os.path.dirname(__file__), "..", "..", "src", "gateway", "worker.h")
    try:
        with open(path) as f:
            m = re.search(r"#define PT_REQ_ARENA_BLOCK (\d+)", f.read())
        return m.group(1) if m else "?"
    except OSError:
        return "?"

# ------------------------------------------------------------------ input


def read_tsv(path):
    with open(path) as f:
        return [line.rstrip("\n").split("\t") for line in f if line.strip()]


class Run:
    """All numbers of one benchmark run."""

    def __init__(self, raw):
        self.raw = raw
        self.meta = dict(read_tsv(os.path.join(raw, "meta.tsv")))
        self.systems = []   # names in round order
        self.scenario, self.kind, self.label = {}, {}, {}
        for name, scenario, kind, label in read_tsv(os.path.join(raw, "systems.tsv")):
            self.systems.append(name)
            self.scenario[name], self.kind[name], self.label[name] = scenario, kind, label
        # per[(system, metric)] = {round: value}; round 0 holds one-off values
        self.per = collections.defaultdict(dict)
        for rnd, system, metric, value in read_tsv(os.path.join(raw, "results.tsv")):
            self.per[(system, metric)][int(rnd)] = float(value)
        self.rounds = sorted({r for d in self.per.values() for r in d if r > 0})

    def series(self, system, metric):
        """Values over the rounds (round order)."""
        d = self.per.get((system, metric), {})
        return [d[r] for r in self.rounds if r in d]

    def one(self, system, metric):
        return self.per.get((system, metric), {}).get(0)

    def added(self, system, metric):
        """Per-round difference system − direct for the same metric (the
        latency a hop adds at the same offered load), paired by round."""
        mine = self.per.get((system, metric), {})
        base = self.per.get(("direct", metric), {})
        return [mine[r] - base[r] for r in self.rounds if r in mine and r in base]


def median(xs):
    return statistics.median(xs) if xs else None


def spread(xs):
    return (min(xs), max(xs)) if xs else None


# ------------------------------------------------------------ formatting


def unstable(xs):
    """A CPU/request series whose slowest round is > 1.3× its fastest: the
    system switched regime during the run (see README, "Two regimes")."""
    return bool(xs) and min(xs) > 0 and max(xs) / min(xs) > 1.3


def disagree(at_c32, at_rate, who):
    """A warning when the two CPU ratios against one peer differ by more
    than 25%: one of the two was measured in the slow regime."""
    if at_c32 is None or at_rate is None or at_rate == 0:
        return ""
    if abs(at_c32 / at_rate - 1) <= 0.25:
        return ""
    return ("; ⚠ vs %s the wrk -c32 ratio and the fixed-rate ratio disagree: a system ran in "
            "the slow regime (README, two regimes; try --spin)" % who)


def fmt(x, nd=1):
    if x is None:
        return "–"
    if abs(x) >= 10000 and nd <= 1:
        return "{:,.0f}".format(x)
    return "{:.{}f}".format(x, nd)


def fmt_spread(xs, nd=1):
    s = spread(xs)
    return "–" if s is None else "%s – %s" % (fmt(s[0], nd), fmt(s[1], nd))


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "–" if r is None else "%.2f×" % r


def table(header, rows, left=1):
    """A markdown table; the first `left` columns are left-aligned (text),
    the others right-aligned (numbers)."""
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    return "\n".join(out)


# --------------------------------------------------------------- strace


def read_strace(path):
    """{syscall: (calls, errors)} from an `strace -c` summary."""
    calls = {}
    if not os.path.exists(path):
        return calls
    for line in open(path):
        parts = line.split()
        # "% time seconds usecs/call calls [errors] syscall"
        if len(parts) in (5, 6) and parts[0][0].isdigit() and parts[3].isdigit():
            errors = int(parts[4]) if len(parts) == 6 else 0
            calls[parts[-1]] = (int(parts[3]), errors)
    return calls


def read_perf(path):
    """{syscall: calls, "total": n, "failed": n} from perf stat -x TAB."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) < 3 or not parts[0].isdigit():
            continue  # comments, "<not counted>", "<not supported>"
        n, event = int(parts[0]), parts[2]
        if event == "raw_syscalls:sys_enter":
            out["total"] = n
        elif event == "raw_syscalls:sys_exit":
            out["failed"] = n  # counted with --filter 'ret < 0'
        elif event.startswith("syscalls:sys_enter_"):
            out[event[len("syscalls:sys_enter_"):]] = n
    return out


# ----------------------------------------------------------------- report


class Report:
    def __init__(self, run):
        self.run = run
        self.lines = []
        # Systems with a process of their own: the proxies and the floor (a
        # bare forwarder, bench/floor_fwd.c; no memory or reuse figures).
        self.proxies = [s for s in run.systems if run.kind[s] in ("proxy", "floor")]

    def add(self, *lines):
        self.lines.extend(lines)

    def has(self, name):
        return name in self.run.systems

    def ratio_cols(self, value_of):
        """Ratio columns of one row: value ÷ HAProxy's, value ÷ nginx's."""
        ha = value_of("haproxy") if self.has("haproxy") else None
        ng = value_of("nginx") if self.has("nginx") else None
        return lambda v: [fmt_ratio(ratio(v, ha)), fmt_ratio(ratio(v, ng))]

    def metric_table(self, title, metric, systems, nd=1, note="", added=False):
        """Median, spread over the rounds, ratios to HAProxy and nginx."""
        run = self.run
        get = (lambda s: run.added(s, metric)) if added else (lambda s: run.series(s, metric))
        cols = self.ratio_cols(lambda s: median(get(s)))
        rows = []
        for s in systems:
            xs = get(s)
            if not xs:
                continue
            m = median(xs)
            sp = fmt_spread(xs, nd)
            if metric in ("cpu_us", "rate_cpu_us") and unstable(xs):
                sp += " ⚠"
            rows.append([run.label[s], fmt(m, nd), sp, str(len(xs))] + cols(m))
        self.add("### " + title, "")
        if note:
            self.add(note, "")
        self.add(table(["system", "median", "spread (min – max)", "runs", "÷ HAProxy", "÷ nginx"],
                       rows), "")

    # ------------------------------------------------------------ sections

    def header(self):
        m = self.run.meta
        self.add("# portico benchmark results", "",
                 "Written by `bench/run.sh` (%s mode) on %s; how to read it: "
                 "[bench/README.md](../README.md)." % (m.get("mode"), m.get("date")), "")
        rows = [["machine", "%s CPUs, %s" % (m.get("nproc"), m.get("cpu"))],
                ["kernel", m.get("kernel", "")],
                ["portico", "%s (git %s)" % (m.get("portico"), m.get("git"))],
                ["HAProxy", m.get("haproxy", "")],
                ["nginx", m.get("nginx", "")],
                ["load", "wrk %s, h2load %s" % (m.get("wrk"), m.get("h2load"))],
                ["pinning", m.get("pinning", "")]]
        if self.run.systems:  # not for a section without rounds (suspend, balance)
            rows += [["rounds", "%s, interleaved (%s)" % (m.get("rounds"),
                                                          " → ".join(self.run.systems))],
                     ["durations", m.get("durations", "")]]
        cap = self.run.one("calibration", "haproxy_capacity_rps")
        rate = self.run.one("calibration", "fixed_rate_rps")
        if cap:
            rows.append(["fixed rate", "%s req/s over %s connections = 50%% of HAProxy's "
                         "capacity (%s req/s at calibration)"
                         % (fmt(rate, 0), m.get("rate_conns"), fmt(cap, 0))])
        el = self.run.one("run", "elapsed_s")
        if el:
            rows.append(["wall time", "%d s" % el])
        rows.append(["load average at start", m.get("loadavg", "?")])
        rows.append(["idle spinners (--spin)", m.get("spin", "off") + (
            ": both CPUs kept out of idle during the wrk -c32 runs (vCPU wake-up cost "
            "excluded there; latency, fixed-rate and syscall runs without)"
            if m.get("spin") == "on" else ": vCPUs halt when idle (wake-up cost included)")])
        other = [max(0.0, x) for s in self.run.systems
                 for x in self.run.series(s, "cpu0_other_pct")]
        steal = [x for s in self.run.systems for x in self.run.series(s, "cpu0_steal_pct")]
        if other:
            rows.append(["CPU 0 interference", "busy time not charged to the proxy under test: "
                         "median %s%%, max %s%% of each wrk run; hypervisor steal median %s%%"
                         % (fmt(median(other)), fmt(max(other)), fmt(median(steal)))])
        self.add(table(["", ""], rows), "")
        if other and median(other) > 5:
            self.add("**Warning: CPU 0 was busy with other work during the runs (median %s%%): "
                     "something else runs on this machine. CPU/request stays usable (it is the "
                     "proxy's own time), but requests/s and latency are disturbed; rerun on a "
                     "quiet machine before drawing conclusions from them.**" % fmt(median(other)),
                     "")

    def summary(self):
        """One table with every headline number: the closing-note table."""
        run = self.run
        order = [s for s in ("direct", "portico", "portico-uring", "portico-gw", "haproxy", "nginx",
                             "floor", "floor-uring") if self.has(s)]
        order += [s for s in run.systems if s not in order]
        sc = self.syscalls_per_request()
        pf = self.syscalls_full_speed()

        def med(metric, added=False):
            return lambda s: median(run.added(s, metric) if added else run.series(s, metric))

        rows_def = [
            ("proxy CPU µs/request (wrk -c32)", med("cpu_us"), 1, "lower"),
            ("proxy CPU µs/request at fixed rate", med("rate_cpu_us"), 1, "lower"),
            ("requests/s (wrk -c32)", med("rps"), 0, "higher"),
            ("added p50 µs, 1 conn", med("c1_p50", True), 0, "lower"),
            ("added p99 µs, 1 conn", med("c1_p99", True), 0, "lower"),
            ("added p99.9 µs, 1 conn", med("c1_p999", True), 0, "lower"),
            ("added p50 µs, fixed rate", med("rate_p50", True), 0, "lower"),
            ("added p99 µs, fixed rate", med("rate_p99", True), 0, "lower"),
            ("added p99.9 µs, fixed rate", med("rate_p999", True), 0, "lower"),
            ("syscalls/request, full speed (perf)", lambda s: pf.get(s, (None,))[0], 2, "lower"),
            ("syscalls/request, under strace", lambda s: sc.get(s, (None,))[0], 2, "lower"),
            ("idle RSS MB", lambda s: (run.one(s, "rss_start_kb") or 0) / 1024
             if run.one(s, "rss_start_kb") else None, 1, "lower"),
            ("bytes per idle conn", lambda s: run.one(s, "bytes_per_idle_conn"), 0, "lower"),
            ("upstream reuse %", med("reuse_pct"), 3, "higher"),
        ]
        header = ["metric (median)"] + [run.label[s] for s in order]
        ratios = []
        short = {"portico": "portico", "portico-uring": "io_uring", "portico-gw": "gw"}
        for p in ("portico", "portico-uring", "portico-gw"):
            if not self.has(p):
                continue
            for ref, rl in (("haproxy", "HAProxy"), ("nginx", "nginx")):
                if self.has(ref):
                    ratios.append((p, ref))
                    header.append("%s ÷ %s" % (short[p], rl))
        rows = []
        for title, f, nd, _ in rows_def:
            vals = {s: f(s) for s in order}
            row = [title] + [fmt(vals[s], nd) for s in order]
            row += [fmt_ratio(ratio(vals[p], vals[ref])) for p, ref in ratios]
            rows.append(row)
        self.add("## Summary", "",
                 "Medians over the rounds; \"added\" = via the proxy minus direct in the same "
                 "round, at the same offered load. Ratios below 1 mean portico uses less "
                 "(or, for requests/s and reuse, achieves less).", "",
                 table(header, rows), "")

    def goals(self):
        run = self.run
        cpu = {s: median(run.series(s, "cpu_us")) for s in self.proxies}
        sc = self.syscalls_per_request()
        out = []

        def verdict(ok):
            return "–" if ok is None else ("**met**" if ok else "**missed**")

        def cmp_le(a, b, factor=1.0):
            """a ≤ factor × b, or None if either is missing."""
            if a is None or b is None:
                return None
            return a <= factor * b

        def both(*oks):
            if any(o is None for o in oks):
                return None
            return all(oks)

        variants = [(pn, "" if pn == "portico" else " (io_uring)")
                    for pn in ("portico", "portico-uring") if self.has(pn)]
        pf = self.syscalls_full_speed()
        rc = {s: median(run.series(s, "rate_cpu_us")) for s in self.proxies}
        h, n = cpu.get("haproxy"), cpu.get("nginx")
        # The floor (a bare forwarder on the same I/O model) beside each
        # verdict: how much of a figure is the kernel and the machine rather
        # than any proxy.
        floor_of = {"portico": ("floor", "bare forwarder"),
                    "portico-uring": ("floor-uring", "bare forwarder, io_uring")}

        def floor1(pn):
            fs, what = floor_of[pn]
            fl = cpu.get(fs)
            return ("; floor (%s) %s µs = %s HAProxy, %s nginx"
                    % (what, fmt(fl), fmt_ratio(ratio(fl, h)), fmt_ratio(ratio(fl, n)))
                    if fl is not None else "")
        # 1. CPU per request, plain (wrk -c32, as the issue defines it);
        # the fixed-rate ratios are shown beside it as a cross-check.
        for pn, tag in variants:
            p = cpu.get(pn)
            unstable_ = [run.label[s] for s in (pn, "haproxy", "nginx")
                         if self.has(s) and unstable(run.series(s, "cpu_us"))]
            out.append(["1" + tag, "proxy CPU/request ≤ 0.75× HAProxy and ≤ 0.65× nginx (plain)",
                        "%s µs = %s HAProxy (%s µs), %s nginx (%s µs); at the fixed rate %s and %s%s"
                        % (fmt(p), fmt_ratio(ratio(p, h)), fmt(h), fmt_ratio(ratio(p, n)), fmt(n),
                           fmt_ratio(ratio(rc.get(pn), rc.get("haproxy"))),
                           fmt_ratio(ratio(rc.get(pn), rc.get("nginx"))),
                           "; ⚠ unstable across rounds: %s (see README, two regimes)"
                           % ", ".join(unstable_) if unstable_ else "")
                        + floor1(pn)
                        + disagree(ratio(p, n), ratio(rc.get(pn), rc.get("nginx")), "nginx")
                        + disagree(ratio(p, h), ratio(rc.get(pn), rc.get("haproxy")), "HAProxy"),
                        verdict(both(cmp_le(p, h, 0.75), cmp_le(p, n, 0.65)))])
        # 2. Gateway route (on the default backend, against its plain row).
        p = cpu.get("portico")
        g = cpu.get("portico-gw")
        out.append(["2", "gateway route ≤ 1.15× portico plain and ≤ 1.0× HAProxy plain",
                    "%s µs = %s plain, %s HAProxy"
                    % (fmt(g), fmt_ratio(ratio(g, p)), fmt_ratio(ratio(g, h))),
                    verdict(both(cmp_le(g, p, 1.15), cmp_le(g, h, 1.0)))])
        # 3. Syscalls, by two methods. The issue's own (strace -c -f on a
        # warm proxy) and the count at full speed (perf), where strace does
        # not slow the proxy into batching more per epoll_wait. Each gets
        # its verdict; the row says which one failed when they differ.
        for pn, tag in variants:
            fs = pf.get(pn, (None,))[0]
            st = sc.get(pn, (None,))[0]
            fv = lambda s: pf.get(s, (None,))[0]
            extra = ", gateway %s" % fmt(fv("portico-gw"), 2) if pn == "portico" else ""
            ok_st, ok_fs = cmp_le(st, 4.1), cmp_le(fs, 4.1)
            if ok_st is None or ok_fs is None or ok_st == ok_fs:
                v = verdict(ok_st if ok_fs is None else ok_fs)
            else:
                v = "%s under strace, %s at full speed" % (verdict(ok_st), verdict(ok_fs))
            out.append(["3" + tag, "syscalls/request ≤ 4.1 at 32 connections",
                        "under strace (steady state, the issue's method): plain %s; "
                        "full speed (perf): plain %s%s (HAProxy %s, nginx %s)"
                        % (fmt(st, 2), fmt(fs, 2), extra, fmt(fv("haproxy"), 2),
                           fmt(fv("nginx"), 2)),
                        v])
        # 4. Added latency.
        ah99 = median(run.added("haproxy", "rate_p99"))
        ah50 = median(run.added("haproxy", "c1_p50"))

        def floor4(pn):
            fs, what = floor_of[pn]
            af99, af50 = median(run.added(fs, "rate_p99")), median(run.added(fs, "c1_p50"))
            return ("; floor (%s): p99 @rate %s µs, p50 @1 conn %s µs = %s HAProxy's"
                    % (what, fmt(af99, 0), fmt(af50, 0), fmt_ratio(ratio(af50, ah50)))
                    if af50 is not None else "")
        for pn, tag in variants:
            ap99 = median(run.added(pn, "rate_p99"))
            ap50 = median(run.added(pn, "c1_p50"))
            # Tails are what interference hits first: say when a run of the
            # systems compared had CPU 0 busy with other work.
            disturbed = [run.label[s] for s in ("direct", pn, "haproxy") if self.has(s)
                         and any(x > 5 for x in run.series(s, "rate_cpu0_other_pct")
                                 + run.series(s, "c1_cpu0_other_pct"))]
            out.append(["4" + tag,
                        "added p99 at fixed rate ≤ HAProxy's; added p50 at 1 conn ≤ 0.8× HAProxy's",
                        "p99 @rate %s µs vs %s µs; p50 @1 conn %s µs vs %s µs (limit %s µs)%s"
                        % (fmt(ap99, 0), fmt(ah99, 0), fmt(ap50, 0), fmt(ah50, 0),
                           fmt(None if ah50 is None else 0.8 * ah50, 0),
                           "; ⚠ CPU 0 was > 5%% busy elsewhere in some latency runs of %s: "
                           "the p99 comparison is not reliable, rerun on a quiet machine"
                           % ", ".join(disturbed) if disturbed else "") + floor4(pn),
                        verdict(both(cmp_le(ap99, ah99), cmp_le(ap50, ah50, 0.8)))])
        # 5. Memory.
        hr, hb = run.one("haproxy", "rss_start_kb"), run.one("haproxy", "bytes_per_idle_conn")
        for pn, tag in variants:
            pr, pb = run.one(pn, "rss_start_kb"), run.one(pn, "bytes_per_idle_conn")
            out.append(["5" + tag, "idle RSS ≤ HAProxy's; bytes per idle conn ≤ 0.75× HAProxy's",
                        "RSS %s vs %s MB; %s vs %s B/conn (%s)"
                        % (fmt(pr and pr / 1024), fmt(hr and hr / 1024), fmt(pb, 0), fmt(hb, 0),
                           fmt_ratio(ratio(pb, hb))),
                        verdict(both(cmp_le(pr, hr), cmp_le(pb, hb, 0.75)))])
        # 6. Reuse.
        gu = median(run.series("portico-gw", "reuse_pct"))
        for pn, tag in variants:
            pu = median(run.series(pn, "reuse_pct"))
            out.append(["6" + tag, "upstream reuse ≥ 99.9%",
                        "plain %s%%%s" % (fmt(pu, 3), ", gateway %s%%" % fmt(gu, 3)
                                          if pn == "portico" else ""),
                        verdict(None if pu is None else pu >= 99.9)])
        out.append(["7", "parser ≥ 1 GB/s; router ≤ 100 ns at 1k routes",
                    "not measured here: `make microbench`", "–"])
        self.add("## Goals (issue 3)", "",
                 "Computed from the medians above on this run; `–` means a number is missing "
                 "(scenario not run).", "",
                 table(["#", "goal", "measured", "verdict"], out, left=4), "")

    # ------------------------------------------------------------ issue 12

    def paired(self, a, b, metric):
        """a ÷ b within each round, for the rounds both ran."""
        run = self.run
        x, y = run.per.get((a, metric), {}), run.per.get((b, metric), {})
        return [x[r] / y[r] for r in run.rounds if r in x and r in y and y[r]]

    def issue12(self):
        """The three parts of issue 12: no regression against the build
        before the refactor, ext_auth beside nginx auth_request, and the
        cost of requests suspended in a fault delay."""
        run = self.run
        parts = []

        def verdict(x, goal):
            return "–" if x is None else ("**met**" if x <= goal else "**missed**")

        rows = []
        for new, old, what in (("portico", "portico-before", "plain route"),
                               ("portico-gw", "portico-gw-before", "gateway route")):
            if not (self.has(new) and self.has(old)):
                continue
            for metric, mname in (("cpu_us", "wrk -c32"), ("rate_cpu_us", "fixed rate")):
                a, b = median(run.series(new, metric)), median(run.series(old, metric))
                pr = self.paired(new, old, metric)
                rows.append(["%s, CPU/request at %s" % (what, mname), fmt(a, 2), fmt(b, 2),
                             fmt_ratio(ratio(a, b)),
                             "%s (%s)" % (fmt(median(pr), 3), fmt_spread(pr, 3)) if pr else "–",
                             verdict(median(pr) if pr else None, 1.03)])
        if rows:
            parts += ["### No regression: this build against the build before the refactor", "",
                      "Same configs, same rounds; \"before\" is commit %s built by run.sh in "
                      "build-old/. Goal: ≤ 1.03× (judged on the paired ratio: within each "
                      "round, then the median)." % run.label.get("portico-before", "?").split("(")[-1].rstrip(")"), "",
                      table(["row", "this build µs", "before µs", "ratio of medians",
                             "paired ratio (spread)", "verdict"], rows), ""]

        if self.has("portico-auth") and self.has("nginx-auth"):
            rows = []
            for s, ref in (("portico-auth", "portico"), ("nginx-auth", "nginx")):
                c = median(run.series(s, "cpu_us"))
                rc = median(run.series(s, "rate_cpu_us"))
                cref = median(run.series(ref, "cpu_us")) if self.has(ref) else None
                rows.append([run.label[s], fmt(c, 2), fmt(rc, 2),
                             fmt(None if cref is None or c is None else c - cref, 2),
                             fmt(median(run.added(s, "c1_p99")), 0),
                             fmt(median(run.added(s, "rate_p99")), 0),
                             fmt(median(run.added(s, "rate_p99")) - median(run.added(ref, "rate_p99"))
                                 if self.has(ref) and run.added(ref, "rate_p99") and run.added(s, "rate_p99") else None, 0)])
            pr = self.paired("portico-auth", "nginx-auth", "cpu_us")
            prr = self.paired("portico-auth", "nginx-auth", "rate_cpu_us")
            errs = {x: int(sum(run.series(x, "errors"))) for x in ("portico-auth", "nginx-auth")}
            ok = None if any(errs.values()) else (median(pr) if pr else None)
            warn = ""
            if any(errs.values()):
                warn = ("**Not valid: the wrk runs had non-2xx answers or errors (portico ext_auth "
                        "%d, nginx auth_request %d; raw/r*-*-auth-wrk.txt): a denied request costs "
                        "less than a served one, so no verdict.**" % (errs["portico-auth"],
                                                                     errs["nginx-auth"]))
            parts += ["### ext_auth beside nginx auth_request", "",
                      "Both ask the same auth service (a second demo backend on CPU 1, "
                      "`GET /healthz` → 200) before each request, over a keep-alive pool. "
                      "\"check adds\": CPU/request minus the same proxy's plain row; "
                      "added p99: minus direct, paired by round.", "",
                      table(["system", "CPU µs/req (wrk -c32)", "at fixed rate", "check adds µs",
                             "added p99, 1 conn", "added p99, fixed rate",
                             "p99 the check adds (fixed rate)"], rows), "",
                      "portico ext_auth ÷ nginx auth_request, CPU/request paired by round: "
                      "%s× (spread %s) at wrk -c32, %s× (spread %s) at the fixed rate; goal ≤ "
                      "0.8×: %s." % (fmt(median(pr), 2), fmt_spread(pr, 2), fmt(median(prr), 2),
                                    fmt_spread(prr, 2), verdict(ok, 0.8)),
                      ""] + ([warn, ""] if warn else [])

        one = lambda m: run.one("suspend", m)
        if one("n"):
            n = int(one("n"))
            per = one("bytes_per_suspended")
            rows = [["RSS before (idle gateway after a warm-up)", "%d kB" % one("rss_before_kb"), ""],
                    ["RSS with the %d connections open, no request yet" % n,
                     "%d kB" % one("rss_open_kb"), "%s B per connection" % fmt(one("bytes_per_open_conn"), 0)],
                    ["RSS with every request suspended (peak)", "%d kB" % one("rss_peak_kb"),
                     "%s B per request on top of its connection" % fmt(one("bytes_per_request_beyond_conn"), 0)],
                    ["RSS after they were answered", "%d kB" % one("rss_after_kb"), ""],
                    ["**growth per suspended request** (peak − before) ÷ %d" % n,
                     "**%s B**" % fmt(per, 0), "goal ≤ 4096 B: %s" % verdict(per, 4096)],
                    ["upstream requests while suspended / after", "%d / %d" % (
                        one("upstream_requests_at_peak"), one("upstream_requests_after")),
                     "0 while suspended: none left early (the latency probe's own requests "
                     "not counted)"],
                    ["answered 200 (first, last answer after the send)",
                     "%d of %d" % (one("answered_200"), n),
                     "%s ms, %s ms (delay %s ms)" % (fmt(one("first_answer_ms"), 0),
                                                     fmt(one("last_answer_ms"), 0),
                                                     fmt(one("delay_ms"), 0))]]
            try:
                with open(os.path.join(run.raw, "suspend-outcomes.txt")) as f:
                    outcomes = f.read().strip()
            except OSError:
                outcomes = ""
            if outcomes:
                rows.append(["answers by status (or error)", outcomes, ""])
            sizes = [("sizeof_pt_conn", "struct pt_conn"), ("sizeof_h1_txn", "struct h1_txn"),
                     ("sizeof_pt_buf", "struct pt_buf header")]
            sz = ", ".join("%s %d B" % (nm, one(k)) for k, nm in sizes if one(k))
            lat = [["plain route /tiny, no suspension"] + [fmt(one("base_" + q), 0) for q in ("p50", "p90", "p99", "p999")],
                   ["plain route /tiny, %d suspended" % n] + [fmt(one("during_" + q), 0) for q in ("p50", "p90", "p99", "p999")]]
            parts += ["### Suspension: %d requests held at once in a fault delay" % n, "",
                      table(["", "value", "per request"], rows, left=1), "",
                      "Sizes from the binary's debug info: %s; the request arena's block is "
                      "PT_REQ_ARENA_BLOCK = %s B (src/gateway/worker.h); a complete request "
                      "holds no read buffer. Kernel socket memory is not in RSS."
                      % (sz or "–", arena_block_bytes()), "",
                      "Latency of sequential requests (h2load -c1, µs) on the plain route:", "",
                      table(["", "p50", "p90", "p99", "p99.9"], lat), ""]
        if parts:
            self.add("## Issue 12: regression, ext_auth, suspension", "", *parts)

    def cpu_section(self):
        self.add("## Details", "")
        self.metric_table("1. Proxy CPU per request (µs)", "cpu_us", self.proxies,
                          note="user+system time of the whole proxy process (all threads, "
                               "/proc/PID/stat) during the wrk -c32 run ÷ responses wrk counted.")
        self.paired_ratios("cpu_us")
        self.metric_table("Proxy CPU per request at the fixed rate (µs)", "rate_cpu_us",
                          self.proxies,
                          note="The same measure during the open-loop h2load run (50% of "
                               "HAProxy's capacity, nobody saturated): independent of how fast "
                               "the load generator happens to be, so steadier on a shared VM.")
        self.paired_ratios("rate_cpu_us")
        self.metric_table("Proxy CPU utilisation during the wrk runs (% of CPU 0)", "cpu_util_pct",
                          self.proxies,
                          note="Near 100%: the proxy was the bottleneck. Well below: wrk and the "
                               "backend (sharing CPU 1) were, and the proxy waited for events, "
                               "which costs it extra epoll_wait calls and wake-ups.")
        self.metric_table("Backend CPU per request (µs, sanity check)", "backend_cpu_us",
                          self.run.systems, 2,
                          note="The demo backend's own CPU in the same runs: it should be about "
                               "the same behind every proxy (it shares CPU 1 with wrk).")

    def paired_ratios(self, metric):
        """portico ÷ peer computed within each round, then the median and
        spread of those ratios: slow drifts of the machine between rounds
        cancel out."""
        run = self.run
        rows = []
        for p in ("portico", "portico-uring", "portico-gw"):
            for ref in ("haproxy", "nginx"):
                if not (self.has(p) and self.has(ref)):
                    continue
                a = run.per.get((p, metric), {})
                b = run.per.get((ref, metric), {})
                xs = [a[r] / b[r] for r in run.rounds if r in a and r in b and b[r]]
                if xs:
                    rows.append(["%s ÷ %s" % (run.label[p], run.label[ref]),
                                 fmt(median(xs), 2) + "×", fmt_spread(xs, 2)])
        if rows:
            self.add("Paired by round (ratio within each round, then median):", "",
                     table(["ratio", "median", "spread (min – max)"], rows), "")

    def rps_section(self):
        self.metric_table("2. Requests/s (wrk -t1 -c32)", "rps", self.run.systems, 0,
                          note="Saturation throughput; noisier than CPU/request on a VM.")

    def latency_section(self):
        run = self.run
        for prefix, title in (("c1", "one connection, closed loop (h2load -c1)"),
                              ("rate", "fixed open-loop rate (h2load --rps)")):
            rows = []
            for s in run.systems:
                cells = [run.label[s]]
                for q in ("p50", "p90", "p99", "p999"):
                    xs = run.series(s, "%s_%s" % (prefix, q))
                    cells.append(fmt(median(xs), 0))
                # Tick rounding can make it slightly negative: show 0.
                oth = [max(0.0, x) for x in run.series(s, prefix + "_cpu0_other_pct")]
                cells.append("%s (%s)" % (fmt(median(oth)), fmt(max(oth) if oth else None)))
                rates = run.series(s, prefix + "_rate")
                cell = fmt(median(rates), 0)
                offered = run.one("calibration", "fixed_rate_rps")
                if prefix == "rate" and offered:
                    short = sum(1 for x in rates if x < 0.95 * offered)
                    if short:
                        cell += " ⚠ %d of %d runs below 95%% of the offered rate: " \
                                "saturated, latency not valid" % (short, len(rates))
                cells.append(cell)
                rows.append(cells)
            self.add("### 3. Latency, %s — absolute (µs)" % title, "",
                     "Medians over the rounds. \"CPU 0 busy elsewhere\": % of the run CPU 0 "
                     "spent on anything but this proxy, median (max) over the rounds; a few % "
                     "is the idle proxies' timers, more is other work on the machine, and it "
                     "shows up in p99/p99.9 first (a proxy waiting a scheduler slice for its "
                     "CPU). Compare tails only between runs where this is low.", "",
                     table(["system", "p50", "p90", "p99", "p99.9", "CPU 0 busy elsewhere %",
                            "achieved req/s"], rows), "")
            for q, qn in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
                self.metric_table("3. Added %s latency, %s (µs)" % (qn, title),
                                  "%s_%s" % (prefix, q), self.proxies, 0, added=True)
        self.add("![latency percentiles](latency.png)", "")

    def syscalls_per_request(self):
        """{system: (total/req, {syscall: (calls/req, errors/req)})}"""
        out = {}
        for s in self.proxies:
            calls = read_strace(os.path.join(self.run.raw, "strace-%s.txt" % s))
            req = self.run.one(s, "strace_requests")
            if not calls or not req:
                continue
            total = calls.pop("total", (sum(c for c, _ in calls.values()), 0))[0]
            out[s] = (total / req, {k: (c / req, e / req) for k, (c, e) in calls.items()})
        return out

    def syscalls_full_speed(self):
        """{system: (total/req, {syscall: calls/req}, failed/req)} from perf."""
        out = {}
        for s in self.proxies:
            counts = read_perf(os.path.join(self.run.raw, "perf-%s.txt" % s))
            req = self.run.one(s, "perf_requests")
            if "total" not in counts or not req:
                continue
            total = counts.pop("total")
            failed = counts.pop("failed", 0)
            out[s] = (total / req, {k: c / req for k, c in counts.items()}, failed / req)
        return out

    def syscalls_perf_section(self):
        pf = self.syscalls_full_speed()
        if not pf:
            return
        systems = [s for s in self.proxies if s in pf]
        names = set()
        for s in systems:
            names |= set(pf[s][1])
        names = sorted(names, key=lambda k: -max(pf[s][1].get(k, 0) for s in systems))
        rows = []
        for k in names:
            if max(pf[s][1].get(k, 0) for s in systems) < 0.001:
                continue
            rows.append([k] + [fmt(pf[s][1].get(k, 0), 3) if pf[s][1].get(k) else ""
                               for s in systems])
        rows.append(["other (not seen under strace)"] +
                     [fmt(max(0.0, pf[s][0] - sum(pf[s][1].values())), 3) for s in systems])
        rows.append(["failed (any syscall returning < 0)"] + [fmt(pf[s][2], 3) for s in systems])
        rows.append(["**total**"] + ["**%s**" % fmt(pf[s][0], 2) for s in systems])
        reqs = ", ".join("%s %d" % (self.run.label[s], self.run.one(s, "perf_requests"))
                         for s in systems)
        self.add("### 4. Syscalls per request at full speed (perf stat, wrk -c32)", "",
                 "Counts of the kernel's syscall tracepoints for the whole process (all "
                 "threads) during a wrk -c32 run ÷ requests wrk counted (%s). Counting a "
                 "tracepoint costs ~0.1 µs, so the proxy runs at nearly full speed and "
                 "epoll_wait batches as it does in the CPU runs; goal 3 gets a verdict on this count "
                 "and on the strace count. Per-syscall rows are the syscalls strace saw (next "
                 "table)."
                 % reqs, "",
                 table(["syscall"] + [self.run.label[s] for s in systems], rows), "")

    def syscalls_section(self):
        sc = self.syscalls_per_request()
        if not sc:
            return
        systems = [s for s in self.proxies if s in sc]
        names = set()
        for s in systems:
            names |= set(sc[s][1])
        # Most frequent first (by the largest per-request count anywhere).
        names = sorted(names, key=lambda k: -max(sc[s][1].get(k, (0, 0))[0] for s in systems))
        rows = []
        for k in names:
            row = [k]
            for s in systems:
                c, e = sc[s][1].get(k, (0, 0))
                row.append("" if c == 0 else (fmt(c, 3) + (" (%s err)" % fmt(e, 3) if e else "")))
            if max(sc[s][1].get(k, (0, 0))[0] for s in systems) >= 0.001:
                rows.append(row)
        rows.append(["**total**"] + ["**%s**" % fmt(sc[s][0], 2) for s in systems])
        reqs = ", ".join("%s %d" % (self.run.label[s], self.run.one(s, "strace_requests"))
                         for s in systems)
        self.add("### 4. Syscalls per request under strace (strace -c -f, wrk -c32)", "",
                 "strace attached in the middle of a wrk run (connections and upstream pool "
                 "already open: the steady state, no accepts or connects); calls ÷ requests the "
                 "backend answered while it was attached (requests: %s). "
                 "\"err\" = calls that failed (EAGAIN, mostly). strace stops the process "
                 "at every syscall, so it serves far fewer requests and finds more events "
                 "ready per epoll_wait: epoll_wait (and so the total) is lower here than at "
                 "full speed. This is the issue's method; the full-speed table is the count "
                 "the proxy really pays at this load." % reqs, "",
                 table(["syscall"] + [self.run.label[s] for s in systems], rows), "")

    def memory_section(self):
        run = self.run
        n = run.meta.get("idle_conns", "5000")
        rows = []
        ha = run.one("haproxy", "bytes_per_idle_conn") if self.has("haproxy") else None
        ng = run.one("nginx", "bytes_per_idle_conn") if self.has("nginx") else None
        ha_rss = run.one("haproxy", "rss_start_kb") if self.has("haproxy") else None
        ng_rss = run.one("nginx", "rss_start_kb") if self.has("nginx") else None
        for s in self.proxies:
            kb = lambda m: run.one(s, m)
            if kb("rss_start_kb") is None:
                continue
            b = kb("bytes_per_idle_conn")
            anon = kb("rss_anon_start_kb")
            rows.append([run.label[s], fmt(kb("rss_start_kb") / 1024, 2),
                         fmt_ratio(ratio(kb("rss_start_kb"), ha_rss)),
                         fmt_ratio(ratio(kb("rss_start_kb"), ng_rss)),
                         fmt(anon / 1024 if anon is not None else None, 2),
                         fmt(kb("rss_idle_after_kb") / 1024, 1), fmt(b, 0),
                         fmt_ratio(ratio(b, ha)), fmt_ratio(ratio(b, ng)),
                         fmt(kb("rss_after_close_kb") / 1024, 1)])
        self.add("### 5. Memory (one measurement per system, fresh process)", "",
                 "RSS (VmRSS) right after start-up (goal 5 compares this), and its anonymous "
                 "part (RssAnon: heap and stacks; the rest is the mapped binary and shared "
                 "libraries such as OpenSSL and Lua); then %s keep-alive connections, each "
                 "having served one request, held idle: (RSS with them − RSS before) ÷ %s. "
                 "Kernel socket buffers are not in RSS, so this is userland memory only."
                 % (n, n), "",
                 table(["system", "idle RSS MB", "÷ HAProxy", "÷ nginx", "of which anon MB",
                        "RSS with %s idle MB" % n, "bytes per idle conn", "÷ HAProxy",
                        "÷ nginx", "RSS after they closed MB"], rows), "")

    def reuse_section(self):
        run = self.run
        rows = []
        for s in self.proxies:
            xs = run.series(s, "reuse_pct")
            if not xs:
                continue
            acc = sum(run.series(s, "upstream_accepts"))
            req = sum(run.series(s, "upstream_requests"))
            rows.append([run.label[s], fmt(median(xs), 3), fmt_spread(xs, 3),
                         "%d / %d" % (acc, req)])
        self.add("### 6. Upstream connection reuse (wrk -c32 runs)", "",
                 "reuse = 1 − backend accepts ÷ backend requests, from the demo backend's "
                 "/__stats, reset before each run. Pools are warm after the first round, so "
                 "this is the steady state.", "",
                 table(["system", "median %", "spread %", "accepts / requests, all rounds"],
                       rows), "")

    def errors_section(self):
        run = self.run
        bad = []
        for s in run.systems:
            e = sum(run.series(s, "errors"))
            f = sum(run.series(s, "c1_failed")) + sum(run.series(s, "rate_failed"))
            if e or f:
                bad.append("- %s: %d wrk errors, %d failed h2load requests" % (run.label[s], e, f))
        if bad:
            self.add("## Errors during the run", "", *bad, "")

    # ---------------------------------------------------------------- chart

    def chart(self, results):
        """latency.png: p50…p99.9 per system, median of the rounds' curves."""
        run = self.run
        plotdir = os.path.join(run.raw, "plot")
        os.makedirs(plotdir, exist_ok=True)
        panels = []
        for prefix in ("c1", "rate"):
            series = []
            for s in run.systems:
                grids = []
                for r in run.rounds:
                    path = os.path.join(run.raw, "r%d-%s-%s.grid" % (r, s, prefix))
                    if os.path.exists(path):
                        grids.append(read_tsv(path))
                if not grids:
                    continue
                dat = os.path.join(plotdir, "%s-%s.dat" % (prefix, s))
                with open(dat, "w") as f:
                    for i, row in enumerate(grids[0]):
                        q = float(row[0])
                        vals = [float(g[i][1]) for g in grids if i < len(g)]
                        f.write("%.6f\t%.1f\n" % (q, statistics.median(vals)))
                series.append((dat, run.label[s]))
            panels.append((prefix, series))
        rate = run.one("calibration", "fixed_rate_rps")
        titles = {"c1": "one connection (closed loop)",
                  "rate": "fixed rate %s req/s, %s connections (open loop)"
                          % (fmt(rate, 0), run.meta.get("rate_conns", "16"))}
        png = os.path.join(results, "latency.png")
        gp = ['set terminal pngcairo size 1400,560 font "sans,11"',
              'set output "%s"' % png,
              'set multiplot layout 1,2 title "portico benchmark: latency percentiles per '
              'system (median of %d rounds, %s)"' % (len(run.rounds), run.meta.get("date", "")),
              "set logscale y", "set grid xtics ytics mytics",
              'set xlabel "percentile"', 'set ylabel "latency (µs, log scale)"',
              'set xtics ("p50" 0.30103, "p90" 1, "p99" 2, "p99.9" 3)',
              "set xrange [0.25:3.05]", "set key top left",
              "nines(q) = -log10(1 - q)"]
        styles = ["lc rgb '#555555' dt 2", "lc rgb '#1f77b4'", "lc rgb '#d62728'",
                  "lc rgb '#2ca02c'", "lc rgb '#9467bd'", "lc rgb '#ff7f0e'",
                  "lc rgb '#8c564b' dt 3"]
        for prefix, series in panels:
            gp.append('set title "%s"' % titles[prefix])
            plots = ['"%s" using (nines($1)):2 with linespoints pt 7 ps 0.5 lw 2 %s title "%s"'
                     % (dat, styles[i % len(styles)], label)
                     for i, (dat, label) in enumerate(series)]
            gp.append("plot " + ", \\\n     ".join(plots))
        gp.append("unset multiplot")
        script = os.path.join(plotdir, "latency.gp")
        with open(script, "w") as f:
            f.write("\n".join(gp) + "\n")
        subprocess.run(["gnuplot", script], check=True)


def main():
    raw, results = sys.argv[1], sys.argv[2]
    # A third argument (BENCH_ONLY runs): the report's name, without the
    # chart; latest.md and latency.png stay the full run's.
    name = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] else "latest"
    run = Run(raw)
    rep = Report(run)
    rep.header()
    if not run.systems:  # BENCH_ONLY=suspend, balance, auth, ratelimit, …, tls, edge19: that section alone
        rep.issue12()
        rep.add(*report_balance.section(raw, run.meta))
        rep.add(*report_auth.section(raw, run.meta))
        rep.add(*report_ratelimit.section(raw, run.meta))
        rep.add(*report_tracing.section(raw, run.meta))
        rep.add(*report_observability.section(raw, run.meta))
        rep.add(*report_tls.section(raw, run.meta))
        rep.add(*report_edge19.section(raw, run.meta))
        with open(os.path.join(results, name + ".md"), "w") as f:
            f.write("\n".join(rep.lines))
        return
    rep.summary()
    rep.goals()
    rep.issue12()
    rep.add(*report_balance.section(raw, run.meta))
    rep.add(*report_auth.section(raw, run.meta))
    rep.add(*report_ratelimit.section(raw, run.meta))
    rep.add(*report_tracing.section(raw, run.meta))
    rep.add(*report_observability.section(raw, run.meta))
    rep.add(*report_tls.section(raw, run.meta))
    rep.add(*report_edge19.section(raw, run.meta))
    rep.cpu_section()
    rep.rps_section()
    rep.latency_section()
    rep.syscalls_perf_section()
    rep.syscalls_section()
    rep.memory_section()
    rep.reuse_section()
    rep.errors_section()
    rep.add("Raw outputs: `bench/results/raw/%s/` (not committed)." % os.path.basename(raw.rstrip("/")),
            "")
    with open(os.path.join(results, name + ".md"), "w") as f:
        f.write("\n".join(rep.lines))
    if name == "latest":
        rep.chart(results)


if __name__ == "__main__":
    main()
