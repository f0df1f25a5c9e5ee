/*
 * exchange_trace.c — a request's trace (gateway/trace.h): its context,
 * the traceparent sent upstream, its spans and Server-Timing.
 *
 * Cost per request with tracing on: a scan of the request's fields for
 * traceparent/tracestate, a few PRNG draws for ids, and, for a sampled
 * request, one ring record filled per span (no allocation). With
 * `tracing` absent: one branch at start, one at the end.
 */
#include "gateway/exchange.h"
#include "gateway/exchange_int.h"

#include "gateway/trace.h"
#include "gateway/trace_export.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static struct pt_exchange *of_up(struct pt_call_trace *t)
{
    return pt_container_of(t, struct pt_exchange, up_trace);
}

static struct pt_exchange *of_aux(struct pt_call_trace *t)
{
    return pt_container_of(t, struct pt_exchange, aux_trace);
}

static bool is_named(pt_slice name, const char *lit, size_t len)
{
    return name.len == len && strncasecmp(name.p, lit, len) == 0;
}

/* Several tracestate fields are one list joined by commas (W3C Trace
 * Context §3.3.1.1, like any list header, RFC 9110 §5.3). Joins them in
 * the request arena into the first field (`first`, one of n) and removes
 * the rest; false when the list is longer than PT_TRACESTATE_MAX (or the
 * arena is out), and the caller drops it all. */
static bool join_tracestate(struct pt_exchange *ex, struct pt_hfield *first, uint32_t n)
{
    if (n == 1)
        return first->value.len <= PT_TRACESTATE_MAX;
    size_t total = 0;
    uint32_t nonempty = 0;
    for (uint32_t i = 0; i < ex->reqh.n; i++) {
        const struct pt_hfield *f = &ex->reqh.f[i];
        if (!f->dead && f->value.len && is_named(f->name, "tracestate", 10)) {
            total += f->value.len;
            nonempty++;
        }
    }
    total += nonempty ? nonempty - 1 : 0;
    if (total > PT_TRACESTATE_MAX)
        return false;
    char *o = pt_arena_alloc(ex->arena, total ? total : 1);
    if (!o)
        return false;
    size_t k = 0;
    for (uint32_t i = 0; i < ex->reqh.n; i++) {
        struct pt_hfield *f = &ex->reqh.f[i];
        if (f->dead || !is_named(f->name, "tracestate", 10))
            continue;
        if (f->value.len) {
            if (k)
                o[k++] = ',';
            memcpy(o + k, f->value.p, f->value.len);
            k += f->value.len;
        }
        if (f != first)
            f->dead = true;
    }
    first->value = (pt_slice){o, k};
    return true;
}

void pt_exchange_trace_start(struct pt_exchange *ex)
{
    const struct pt_tracing_cfg *cfg = &ex->gen->tracing;
    if (pt_likely(!cfg->enabled))
        return;
    pt_slice tp = {0};
    uint32_t ntp = 0;
    struct pt_hfield *ts = NULL;
    uint32_t nts = 0;
    for (uint32_t i = 0; i < ex->reqh.n; i++) {
        struct pt_hfield *f = &ex->reqh.f[i];
        if (f->dead)
            continue;
        if (is_named(f->name, "traceparent", 11)) {
            tp = f->value;
            ntp++;
            f->dead = true; /* ours replaces it, per attempt (client.h) */
        } else if (is_named(f->name, "tracestate", 10)) {
            if (!ts)
                ts = f; /* the first: a joined list goes in its place */
            nts++;
        }
    }
    pt_trace_begin(&ex->trace, tp, ntp, cfg->sample, &ex->w->rng);
    bool continued = ntp == 1 && ex->trace.parent_id[0] | ex->trace.parent_id[1] |
                                     ex->trace.parent_id[2] | ex->trace.parent_id[3] |
                                     ex->trace.parent_id[4] | ex->trace.parent_id[5] |
                                     ex->trace.parent_id[6] | ex->trace.parent_id[7];
    /* tracestate belongs to the trace it came with: passed on when that
     * trace continues (bounded), else dropped. */
    if (ts && (!continued || !join_tracestate(ex, ts, nts)))
        pt_headers_remove(&ex->reqh, PT_SLICE("tracestate"));
}

/* Spans are kept only for a sampled request of a generation that has
 * somewhere to send them. */
static bool recording(const struct pt_exchange *ex)
{
    return ex->trace.sampled && ex->gen->tracing.otlp_endpoint;
}

static uint8_t flags_of(const struct pt_exchange *ex)
{
    return ex->trace.sampled ? PT_TRACE_FLAG_SAMPLED : 0;
}

/* ---- the upstream call's attempts ---- */

static void up_begin(struct pt_call_trace *t, const struct pt_call *c)
{
    struct pt_exchange *ex = of_up(t);
    pt_trace_new_span_id(ex->up_span, &ex->w->rng);
    ex->up_span_start = pt_loop_now_ns(&ex->w->loop);
    pt_traceparent_format(t->traceparent, ex->trace.trace_id, ex->up_span, flags_of(ex));
    (void)c;
}

/* A client span: the attempt's peer, number, status or error. */
static void client_span(struct pt_exchange *ex, const uint8_t span_id[8], uint64_t start,
                        pt_slice name, const struct pt_call *c, int status, enum pt_call_fail fail)
{
    struct pt_trace_ring *r = &ex->w->trace;
    struct pt_span_rec *s = pt_trace_ring_reserve(r);
    if (!s)
        return;
    pt_trace_queued(ex->w);
    pt_span_init(s, &ex->trace, span_id, ex->trace.span_id, PT_SPAN_CLIENT);
    s->start_ns = pt_trace_unix_ns(r, start);
    s->end_ns = pt_trace_unix_ns(r, pt_loop_now_ns(&ex->w->loop));
    pt_span_set_name(s, name);
    pt_span_str(s, "http.request.method", c->req.method);
    if (c->target)
        pt_span_str(s, "server.address",
                    (pt_slice){c->target->address, strlen(c->target->address)});
    pt_span_str(s, "url.path", c->req.path);
    pt_span_int(s, "portico.attempt", c->attempts);
    if (status)
        pt_span_int(s, "http.response.status_code", status);
    if (fail != PT_CALL_FAIL_NONE)
        pt_span_set_error(s, c->fail_text ? c->fail_text : "upstream call failed");
    else if (status >= 500)
        pt_span_set_error(s, NULL);
    else if (!status)
        pt_span_set_error(s, "cancelled");
}

static void up_end(struct pt_call_trace *t, const struct pt_call *c, int status,
                   enum pt_call_fail fail)
{
    struct pt_exchange *ex = of_up(t);
    if (!recording(ex))
        return;
    client_span(ex, ex->up_span, ex->up_span_start, (pt_slice){ex->up->name, strlen(ex->up->name)},
                c, status, fail);
}

struct pt_call_trace *pt_exchange_trace_upstream(struct pt_exchange *ex)
{
    if (pt_likely(!ex->trace.on))
        return NULL;
    ex->up_trace.begin = up_begin;
    ex->up_trace.end = up_end;
    ex->up_trace.open = false;
    return &ex->up_trace;
}

/* ---- one call of a filter's fan-out (aggregate): a span each ---- */

static void fan_begin(struct pt_call_trace *t, const struct pt_call *c)
{
    struct pt_fan_call *fc = pt_container_of(t, struct pt_fan_call, trace);
    struct pt_exchange *ex = fc->ex;
    pt_trace_new_span_id(fc->span, &ex->w->rng);
    fc->span_start = pt_loop_now_ns(&ex->w->loop);
    pt_traceparent_format(t->traceparent, ex->trace.trace_id, fc->span, flags_of(ex));
    (void)c;
}

static void fan_end(struct pt_call_trace *t, const struct pt_call *c, int status,
                    enum pt_call_fail fail)
{
    struct pt_fan_call *fc = pt_container_of(t, struct pt_fan_call, trace);
    if (!recording(fc->ex))
        return;
    const char *n = fc->name ? fc->name : "filter call";
    client_span(fc->ex, fc->span, fc->span_start, (pt_slice){n, strlen(n)}, c, status, fail);
}

struct pt_call_trace *pt_exchange_trace_fan_call(struct pt_exchange *ex, struct pt_fan_call *fc)
{
    if (pt_likely(!ex->trace.on))
        return NULL;
    fc->trace.begin = fan_begin;
    fc->trace.end = fan_end;
    fc->trace.open = false;
    fc->name = ex->fctx.running;
    return &fc->trace;
}

/* ---- a filter's call (ext_auth, introspection, a JWKS fetch) ---- */

static void aux_begin(struct pt_call_trace *t, const struct pt_call *c)
{
    struct pt_exchange *ex = of_aux(t);
    pt_trace_new_span_id(ex->aux_span, &ex->w->rng);
    ex->aux_span_start = pt_loop_now_ns(&ex->w->loop);
    pt_traceparent_format(t->traceparent, ex->trace.trace_id, ex->aux_span, flags_of(ex));
    (void)c;
}

static void aux_end(struct pt_call_trace *t, const struct pt_call *c, int status,
                    enum pt_call_fail fail)
{
    struct pt_exchange *ex = of_aux(t);
    if (!recording(ex))
        return;
    const char *n = ex->aux_name ? ex->aux_name : "filter call";
    client_span(ex, ex->aux_span, ex->aux_span_start, (pt_slice){n, strlen(n)}, c, status, fail);
}

struct pt_call_trace *pt_exchange_trace_filter_call(struct pt_exchange *ex, const char *filter)
{
    if (pt_likely(!ex->trace.on))
        return NULL;
    ex->aux_trace.begin = aux_begin;
    ex->aux_trace.end = aux_end;
    ex->aux_trace.open = false;
    ex->aux_name = filter;
    return &ex->aux_trace;
}

/* ---- the request's span ---- */

/* What http.route names: the route's path pattern, else its name. */
static const char *route_pattern(const struct pt_route *rt)
{
    const struct pt_route_match *m = &rt->match;
    if (m->path_template)
        return m->path_template;
    if (m->path)
        return m->path;
    if (m->path_prefix)
        return m->path_prefix;
    if (m->path_regex)
        return m->path_regex;
    return rt->name;
}

void pt_exchange_trace_end(struct pt_exchange *ex)
{
    if (pt_likely(!ex->trace.on) || !recording(ex))
        return;
    struct pt_trace_ring *r = &ex->w->trace;
    struct pt_span_rec *s = pt_trace_ring_reserve(r);
    if (!s)
        return;
    pt_trace_queued(ex->w);
    pt_span_init(s, &ex->trace, ex->trace.span_id, ex->trace.parent_id, PT_SPAN_SERVER);
    s->start_ns = pt_trace_unix_ns(r, ex->t_start);
    s->end_ns = pt_trace_unix_ns(r, pt_loop_now_ns(&ex->w->loop));
    const char *name = ex->route ? ex->route->name : "unmatched";
    pt_span_set_name(s, (pt_slice){name, strlen(name)});
    pt_span_str(s, "http.request.method", ex->req.method);
    pt_span_str(s, "url.path", ex->req.path);
    if (ex->route) {
        const char *pat = route_pattern(ex->route);
        pt_span_str(s, "http.route", (pt_slice){pat, strlen(pat)});
    }
    pt_span_int(s, "http.response.status_code", ex->status);
    pt_span_str(s, "server.address", ex->req.host);
    pt_span_str(s, "client.address", ex->client.len ? ex->client : ex->peer);
    pt_span_str(s, "portico.request_id", ex->reqid);
    if (ex->identity.consumer.len)
        pt_span_str(s, "portico.consumer", ex->identity.consumer);
    if (ex->status >= 500)
        pt_span_set_error(s, ex->error);
}

/* ---- Server-Timing ---- */

void pt_exchange_server_timing(struct pt_exchange *ex)
{
    if (pt_likely(!ex->gen->tracing.server_timing) || !ex->t_start)
        return;
    uint64_t now = pt_loop_now_ns(&ex->w->loop);
    uint64_t total = now > ex->t_start ? now - ex->t_start : 0;
    uint64_t up = 0;
    if (ex->t_up_start) {
        uint64_t end = ex->t_up_head ? ex->t_up_head : now;
        up = end > ex->t_up_start ? end - ex->t_up_start : 0;
    }
    if (up > total)
        up = total;
    char *v = pt_arena_alloc(ex->arena, 64);
    if (!v)
        return;
    int n;
    if (ex->t_up_start)
        n = snprintf(v, 64, "gateway;dur=%.3f, upstream;dur=%.3f", (double)(total - up) / 1e6,
                     (double)up / 1e6);
    else
        n = snprintf(v, 64, "gateway;dur=%.3f", (double)total / 1e6);
    pt_headers_set(&ex->resph, ex->arena, PT_SLICE("Server-Timing"), (pt_slice){v, (size_t)n});
}

/* ---- the access log ---- */

size_t pt_exchange_trace_log(const struct pt_exchange *ex, char out[80])
{
    if (pt_likely(!ex->trace.on))
        return 0;
    size_t k = (size_t)snprintf(out, 80, ",\"trace_id\":\"");
    pt_hex_encode(out + k, ex->trace.trace_id, 16);
    k += 32;
    k += (size_t)snprintf(out + k, 80 - k, "\",\"span_id\":\"");
    pt_hex_encode(out + k, ex->trace.span_id, 8);
    k += 16;
    out[k++] = '"';
    out[k] = 0;
    return k;
}
