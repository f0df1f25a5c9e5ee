/*
 * metrics_text.c — admin `GET /metrics`: the Prometheus text exposition
 * (format 0.0.4: `# HELP`, `# TYPE`, escaped label values, histograms as
 * cumulative `_bucket{le=...}` with `+Inf`, `_sum` and `_count`).
 *
 * A scrape merges the retired totals and every live generation's blocks
 * into one fresh set (keyed by label values, so the same route in two
 * generations is one series), writes it, then writes the state read now:
 * config generation and reloads, connections per listener, target health,
 * breakers, rate-limit table. Only reads: workers are never waited on.
 */
#include "control/metrics_text.h"

#include "proxy/state.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct out {
    char *p;
    size_t len, cap;
    bool failed;
};

static void out_reserve(struct out *o, size_t more)
{
    if (o->failed || o->len + more < o->cap)
        return;
    size_t cap = o->cap ? o->cap : 64 * 1024;
    while (cap <= o->len + more)
        cap *= 2;
    char *p = realloc(o->p, cap);
    if (!p) {
        o->failed = true;
        return;
    }
    o->p = p;
    o->cap = cap;
}

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct out *o, const char *fmt, ...)
{
    out_reserve(o, 512);
    if (o->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= o->cap - o->len) {
        out_reserve(o, (size_t)n + 1);
        if (o->failed)
            return;
        va_start(ap, fmt);
        vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
    }
    o->len += (size_t)n;
}

static void out_str(struct out *o, const char *s, size_t n)
{
    out_reserve(o, n + 1);
    if (o->failed)
        return;
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

/* Decimal u64 without printf: most of a scrape is these. */
static void out_u64(struct out *o, uint64_t v)
{
    char b[24];
    int i = 24;
    do {
        b[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_str(o, b + i, (size_t)(24 - i));
}

static void header(struct out *o, const char *name, const char *type, const char *help)
{
    out_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter_family(struct out *o, const struct pt_mx_map *m, const char *name,
                           const char *type, const char *help)
{
    header(o, name, type, help);
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < m->n; i++) {
        out_str(o, name, nl);
        out_str(o, "{", 1);
        out_str(o, m->keys[i], strlen(m->keys[i]));
        out_str(o, "} ", 2);
        out_u64(o, m->vals[i]);
        out_str(o, "\n", 1);
    }
}

static void hist_family(struct out *o, const struct pt_mx_map *m, const char *name,
                        const char *help)
{
    header(o, name, "histogram", help);
    size_t nl = strlen(name);
    for (uint32_t i = 0; i < m->n; i++) {
        const uint64_t *v = &m->vals[(size_t)i * m->width];
        const char *k = m->keys[i];
        size_t kl = strlen(k);
        uint64_t cum = 0;
        for (uint32_t b = 0; b <= PT_HIST_BOUNDS; b++) {
            cum += v[b];
            out_str(o, name, nl);
            out_str(o, "_bucket{", 8);
            out_str(o, k, kl);
            out_str(o, ",le=\"", 5);
            const char *le = b < PT_HIST_BOUNDS ? pt_hist_bound_text[b] : "+Inf";
            out_str(o, le, strlen(le));
            out_str(o, "\"} ", 3);
            out_u64(o, cum);
            out_str(o, "\n", 1);
        }
        out_printf(o, "%s_sum{%s} %.9f\n%s_count{%s} %llu\n", name, k,
                   (double)v[PT_HIST_BOUNDS + 1] / 1e9, name, k, (unsigned long long)cum);
    }
}

static void folded(struct out *o, const struct pt_mx_set *s)
{
    counter_family(o, &s->f[PT_MXF_REQUESTS], "portico_requests_total", "counter",
                   "Requests by route, upstream and response status (code=\"Nxx\": past the "
                   "per-route table of 16 statuses).");
    hist_family(o, &s->f[PT_MXF_REQUEST_TIME], "portico_request_duration_seconds",
                "Whole request time, from the first byte of the head to the log phase.");
    hist_family(o, &s->f[PT_MXF_OVERHEAD], "portico_overhead_seconds",
                "Time spent in the gateway itself: the request time minus its upstream time.");
    hist_family(o, &s->f[PT_MXF_UP_TIME], "portico_upstream_duration_seconds",
                "Upstream time: dispatch to the response head, retries included.");
    hist_family(o, &s->f[PT_MXF_FILTER_TIME], "portico_filter_duration_seconds",
                "Time in each filter's hooks per request, its suspension included.");
    counter_family(o, &s->f[PT_MXF_FILTER_OUT], "portico_filter_outcomes_total", "counter",
                   "Request-phase filter outcomes: pass, reject (answered 4xx), error (5xx or "
                   "failure), respond (answered otherwise).");
    counter_family(o, &s->f[PT_MXF_AUTH], "portico_auth_results_total", "counter",
                   "Auth filter results (ext_auth, jwt, key_auth, introspection, acl): allow, "
                   "deny, error.");
    counter_family(o, &s->f[PT_MXF_RL_REJECTED], "portico_ratelimit_rejected_total", "counter",
                   "Requests refused by rate_limit (429).");
    counter_family(o, &s->f[PT_MXF_NOTES], "portico_filter_notes_total", "counter",
                   "Filter notes: jwt_cache hit|miss, introspection hit|miss|stale|coalesced, "
                   "rate_limit decisions (the last note a request's filters made).");
    counter_family(o, &s->f[PT_MXF_CACHE], "portico_cache_requests_total", "counter",
                   "Requests on routes with the cache filter by result: hit, miss, stale, "
                   "bypass.");
    counter_family(o, &s->f[PT_MXF_RETRIES], "portico_upstream_retries_total", "counter",
                   "Upstream attempts beyond the first (upstreams.*.retries).");
    counter_family(o, &s->f[PT_MXF_BUDGET], "portico_upstream_retry_budget_exhausted_total",
                   "counter", "Requests whose due retry the retry budget refused.");
}

/* Tracing (gateway/trace.h): each worker's span ring counters, one writer
 * each, summed here. */
static void trace_state(struct out *o, const struct pt_mx_scrape_in *in)
{
    static const struct {
        const char *name, *help;
    } fam[4] = {
        {"portico_trace_spans_queued_total", "Sampled spans queued for export."},
        {"portico_trace_spans_dropped_total", "Sampled spans dropped: the export ring was full."},
        {"portico_trace_spans_exported_total", "Spans the OTLP endpoint accepted."},
        {"portico_trace_spans_export_failed_total", "Spans in OTLP export batches that failed."},
    };
    uint64_t v[4] = {0};
    for (int w = 0; w < in->nworkers; w++) {
        const struct pt_trace_ring *r = &in->workers[w].trace;
        v[0] += atomic_load_explicit(&r->queued, memory_order_relaxed);
        v[1] += atomic_load_explicit(&r->dropped, memory_order_relaxed);
        v[2] += atomic_load_explicit(&r->exported, memory_order_relaxed);
        v[3] += atomic_load_explicit(&r->export_failed, memory_order_relaxed);
    }
    for (int i = 0; i < 4; i++) {
        header(o, fam[i].name, "counter", fam[i].help);
        out_printf(o, "%s %llu\n", fam[i].name, (unsigned long long)v[i]);
    }
}

static void process_state(struct out *o, const struct pt_mx_scrape_in *in)
{
    header(o, "portico_config_generation", "gauge", "The running configuration generation.");
    out_printf(o, "portico_config_generation %llu\n", (unsigned long long)in->current->id);
    header(o, "portico_config_generations_live", "gauge",
           "Generations not yet freed: the running one and those requests still hold.");
    out_printf(o, "portico_config_generations_live %u\n", in->nlive);
    header(o, "portico_config_reloads_total", "counter", "Configuration reloads by result.");
    out_printf(o, "portico_config_reloads_total{result=\"ok\"} %llu\n",
               (unsigned long long)in->reloads_ok);
    out_printf(o, "portico_config_reloads_total{result=\"failed\"} %llu\n",
               (unsigned long long)in->reloads_failed);
    header(o, "portico_connections_active", "gauge", "Open client connections per listener.");
    /* Listener names from every worker, summed by name. */
    struct {
        char name[32];
        int64_t n;
        uint64_t tls[3]; /* full, resumed, failed */
    } seen[PT_CONN_LISTENERS * 2];
    memset(seen, 0, sizeof(seen));
    uint32_t nseen = 0;
    bool any_tls = false;
    for (int w = 0; w < in->nworkers; w++) {
        const struct pt_conn_counts *c = &in->workers[w].conn_counts;
        uint32_t n = atomic_load_explicit(&c->n, memory_order_acquire);
        for (uint32_t i = 0; i < n; i++) {
            int64_t v = (int64_t)(pt_ctr_get(&c->slot[i].opened) - pt_ctr_get(&c->slot[i].closed));
            uint32_t j = 0;
            while (j < nseen && strcmp(seen[j].name, c->slot[i].name) != 0)
                j++;
            if (j == nseen) {
                if (nseen == sizeof(seen) / sizeof(seen[0]))
                    continue;
                snprintf(seen[j].name, sizeof(seen[j].name), "%s", c->slot[i].name);
                nseen++;
            }
            seen[j].n += v;
            seen[j].tls[0] += pt_ctr_get(&c->slot[i].tls_full);
            seen[j].tls[1] += pt_ctr_get(&c->slot[i].tls_resumed);
            seen[j].tls[2] += pt_ctr_get(&c->slot[i].tls_failed);
            any_tls |= seen[j].tls[0] || seen[j].tls[1] || seen[j].tls[2];
        }
    }
    char esc[80];
    for (uint32_t j = 0; j < nseen; j++) {
        pt_mx_escape(esc, sizeof(esc), seen[j].name);
        out_printf(o, "portico_connections_active{listener=\"%s\"} %lld\n", esc,
                   (long long)(seen[j].n > 0 ? seen[j].n : 0));
    }
    if (any_tls) {
        static const char *const results[3] = {"full", "resumed", "failed"};
        header(o, "portico_tls_handshakes_total", "counter",
               "TLS handshakes on client connections per listener: full, resumed (session "
               "ticket), failed (errors and handshake timeouts).");
        for (uint32_t j = 0; j < nseen; j++) {
            if (!seen[j].tls[0] && !seen[j].tls[1] && !seen[j].tls[2])
                continue;
            pt_mx_escape(esc, sizeof(esc), seen[j].name);
            for (int r = 0; r < 3; r++)
                out_printf(o, "portico_tls_handshakes_total{listener=\"%s\",result=\"%s\"} %llu\n",
                           esc, results[r], (unsigned long long)seen[j].tls[r]);
        }
    }
    struct pt_rl_stats rs = {0};
    if (in->current->rl_table)
        pt_rl_table_counters(in->current->rl_table, &rs);
    header(o, "portico_ratelimit_fail_open_total", "counter",
           "Requests admitted without a rate-limit cell (local table full of live keys).");
    out_printf(o, "portico_ratelimit_fail_open_total %llu\n", (unsigned long long)rs.fail_opens);
    header(o, "portico_ratelimit_evictions_total", "counter",
           "Idle rate-limit cells handed to a new key.");
    out_printf(o, "portico_ratelimit_evictions_total %llu\n", (unsigned long long)rs.evictions);
    trace_state(o, in);
}

/* One labelled gauge/counter line per upstream or target. */
static void up_line(struct out *o, const char *name, const char *up, const char *tg, const char *x,
                    uint64_t v)
{
    if (tg)
        out_printf(o, "%s{upstream=\"%s\",target=\"%s\"%s} %llu\n", name, up, tg, x ? x : "",
                   (unsigned long long)v);
    else
        out_printf(o, "%s{upstream=\"%s\"%s} %llu\n", name, up, x ? x : "", (unsigned long long)v);
}

static void upstream_state(struct out *o, const struct pt_generation *g)
{
    static const struct {
        const char *name, *type, *help;
    } fam[] = {
        {"portico_upstream_target_healthy", "gauge",
         "1 when the target's health (active checks) is up."},
        {"portico_upstream_target_ejected", "gauge", "1 while passive health has it ejected."},
        {"portico_upstream_target_active_requests", "gauge", "Requests in flight to the target."},
        {"portico_upstream_target_ejections_total", "counter",
         "Times passive health ejected the target."},
        {"portico_circuit_open", "gauge", "1 while the upstream's circuit breaker is open."},
        {"portico_circuit_state", "gauge", "The breaker's state: 1 on the current one."},
        {"portico_circuit_opened_total", "counter", "Times the breaker opened (reopenings too)."},
        {"portico_upstream_overflow_total", "counter",
         "Requests refused by circuit_breaker.max_concurrent."},
    };
    char up[256], tg[256];
    for (size_t f = 0; f < sizeof(fam) / sizeof(fam[0]); f++) {
        header(o, fam[f].name, fam[f].type, fam[f].help);
        for (uint32_t u = 0; u < g->nupstreams; u++) {
            const struct pt_upstream *pu = &g->upstreams[u];
            pt_mx_escape(up, sizeof(up), pu->name);
            if (f < 4) {
                for (uint32_t t = 0; t < pu->ntargets; t++) {
                    const struct pt_target_state *s = pu->targets[t].state;
                    if (!s)
                        continue;
                    pt_mx_escape(tg, sizeof(tg), pu->targets[t].address);
                    uint64_t v =
                        f == 0   ? pt_state_healthy(s)
                        : f == 1 ? atomic_load_explicit(&s->ejected, memory_order_relaxed)
                        : f == 2 ? pt_state_active(s)
                                 : atomic_load_explicit(&s->ejections_total, memory_order_relaxed);
                    up_line(o, fam[f].name, up, tg, NULL, v);
                }
                continue;
            }
            const struct pt_upstream_state *us = pu->state;
            if (!us || (f < 7 && !pu->breaker.enabled))
                continue;
            enum pt_breaker_phase ph = pt_breaker_phase(&us->breaker);
            if (f == 4)
                up_line(o, fam[f].name, up, NULL, NULL, ph == PT_BREAKER_OPEN);
            else if (f == 5)
                for (int p = 0; p < 3; p++) {
                    char x[48];
                    snprintf(x, sizeof(x), ",state=\"%s\"", pt_breaker_phase_names[p]);
                    up_line(o, fam[f].name, up, NULL, x, (int)ph == p);
                }
            else if (f == 6)
                up_line(o, fam[f].name, up, NULL, NULL,
                        atomic_load_explicit(&us->breaker.opened, memory_order_relaxed));
            else
                up_line(o, fam[f].name, up, NULL, NULL,
                        atomic_load_explicit(&us->overflows, memory_order_relaxed));
        }
    }
}

/* A fresh multi-MB buffer would take one page fault per 4 KiB while it is
 * written (costly in a VM: most of a cold scrape's time). The kernel fills
 * it in one call instead (Linux ≥ 5.14; elsewhere a no-op). */
static void prefault(char *p, size_t n)
{
#ifdef MADV_POPULATE_WRITE
    if (!p || n < (1u << 20))
        return;
    uintptr_t a = ((uintptr_t)p + 4095) & ~(uintptr_t)4095;
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)4095;
    if (e > a)
        (void)madvise((void *)a, e - a, MADV_POPULATE_WRITE);
#else
    (void)p;
    (void)n;
#endif
}

char *pt_mx_scrape(const struct pt_mx_set *retired, const struct pt_mx_scrape_in *in,
                   size_t headroom, size_t *len)
{
    struct pt_mx_set s;
    pt_mx_set_init(&s);
    int e = pt_mx_set_merge(&s, retired);
    for (uint32_t i = 0; i < in->nlive && e == 0; i++)
        e = pt_mx_set_add_generation(&s, in->live[i]);
    /* One allocation of about the right size: growing a multi-MB buffer by
     * doubling costs copies and page faults that dominate a cold scrape. */
    struct out o = {0};
    size_t est = 64 * 1024 + headroom;
    for (int f = 0; f < PT_MXF_N; f++) /* lines × (name, labels, value) */
        for (uint32_t i = 0; i < s.f[f].n; i++)
            est += (s.f[f].width == 1 ? 1 : PT_HIST_BOUNDS + 3) * (strlen(s.f[f].keys[i]) + 72);
    out_reserve(&o, est);
    o.len = o.failed ? 0 : headroom;
    prefault(o.p, o.cap);
    if (e == 0) {
        folded(&o, &s);
        process_state(&o, in);
        upstream_state(&o, in->current);
    }
    pt_mx_set_free(&s);
    if (e != 0 || o.failed) {
        free(o.p);
        return NULL;
    }
    *len = o.len - headroom;
    return o.p;
}
