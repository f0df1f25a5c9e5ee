"""Issue 17's tracing row of the bench report: CPU per request of the
plain route with tracing at sample 1.0 (every span exported to a sink
receiver) against the same route without tracing, from what
bench/lib/tracing.sh wrote in the run's raw directory:

  tracing.tsv   round<TAB>run<TAB>metric<TAB>value (runs: off, traced)
  meta.tsv      the "tracing" line: the section's settings

section(raw, meta) returns the markdown lines ([] when the section did not
run). The verdict is computed here from those numbers.
"""
import collections
import os

from report_balance import _fmt, _med, _ratio, _spread, _table, _tsv, _verdict

TRACED_VS_OFF = 1.20  # goal: sample 1.0 ≤ 1.20× the CPU per request without tracing


def section(raw, meta):
    per = collections.defaultdict(dict)  # (run, metric) → {round: value}
    for rnd, run, metric, value in _tsv(os.path.join(raw, "tracing.tsv")):
        per[(run, metric)][int(rnd)] = float(value)
    rounds = sorted({r for d in per.values() for r in d if r > 0})
    if not rounds:
        return []
    s = dict(p.split("=", 1) for p in meta.get("tracing", "").split() if "=" in p)

    def series(run, metric):
        return [per[(run, metric)][r] for r in rounds if r in per[(run, metric)]]

    on, off = per[("traced", "cpu_us")], per[("off", "cpu_us")]
    ratios = [on[r] / off[r] for r in rounds if r in on and r in off and off[r]]
    added = [on[r] - off[r] for r in rounds if r in on and r in off]
    resp, spans = sum(series("traced", "responses")), sum(series("traced", "spans"))
    rows = []
    for run, label in (("off", "portico plain route, no `tracing`"),
                       ("traced", "portico, `tracing: {sample: 1.0}` exported to a sink")):
        cpu = series(run, "cpu_us")
        rows.append([label, "%s (%s)" % (_fmt(_med(cpu), 2), _spread(cpu, 2)),
                     _fmt(_med(series(run, "rps")), 0), _fmt(_med(series(run, "cpu_util_pct")))])
    out = ["## Issue 17: what tracing costs", ""]
    el = per[("run", "tracing_elapsed_s")].get(0)
    if el:
        out += ["Section run time: %s s." % _fmt(el, 0), ""]
    other = [max(0.0, x) for run in ("off", "traced") for x in series(run, "cpu0_other_pct")]
    if other and _med(other) > 5:
        out += ["**Warning: CPU 0 was busy with other work during the runs (median %s%%): the "
                "ratios are disturbed.**" % _fmt(_med(other)), ""]
    med = _med(ratios)
    out += [_table(["goal", "measured", "verdict"],
                   [["tracing at sample 1.0 ≤ %.2f× the CPU per request without it" % TRACED_VS_OFF,
                     _ratio(ratios), _verdict(med, TRACED_VS_OFF)]]), "",
            "`wrk -t1 -c32 -d%ss` on `GET /tiny`, %s rounds, the two gateways alternately (order "
            "reversed every other round), one worker each pinned to CPU 0; the ratio is paired "
            "within each round, then the median (spread). Added CPU per request: %s µs (%s). "
            "Spans the sink received: %s for %s traced requests (%s per request; 2 expected: the "
            "server span and the upstream attempt's), so the cost includes the export."
            % (s.get("run_s", "?"), s.get("rounds", "?"), _fmt(_med(added), 2), _spread(added, 2),
               _fmt(spans, 0), _fmt(resp, 0), _fmt(spans / resp, 3) if resp else "–"), "",
            _table(["run", "CPU µs/req (spread)", "req/s", "proxy CPU %"], rows), ""]
    return out
