/*
 * trace_export.c — a worker's span exporter (gateway/trace.h).
 *
 * Off the request path: a request only fills a ring record and, when it
 * made the ring non-empty or filled a batch, arms the worker's export
 * timer. The timer (flush_every after the first waiting span, at once
 * when `batch` spans wait) encodes up to `batch` spans as OTLP/HTTP JSON
 * into the worker's buffer and posts it to `tracing.otlp_endpoint`
 * through the outbound client. One post per worker at a time; spans that
 * arrive meanwhile wait in the ring (and past max_queue are dropped,
 * counted). A failed post is counted and logged (at most every 10 s) and
 * never retried: its spans are gone, the next batch follows.
 *
 * The post pins the generation whose upstream it uses until it ends.
 */
#include "gateway/trace_export.h"

#include "core/log.h"
#include "gateway/worker.h"

#include <stdio.h>
#include <stdlib.h>

#define EXPORT_MAX_RESPONSE 512
#define EXPORT_LOG_EVERY_MS 10000

static void on_timer(struct pt_loop *loop, struct pt_timer *tm);

static struct pt_worker *of_ring(struct pt_trace_ring *r)
{
    return pt_container_of(r, struct pt_worker, trace);
}

static void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

void pt_trace_worker_sync(struct pt_worker *w)
{
    if (pt_trace_ring_sync(&w->trace, &w->gen->tracing) < 0)
        pt_error("worker %d: tracing: out of memory for %u span records", w->id,
                 w->gen->tracing.max_queue);
}

void pt_trace_queued(struct pt_worker *w)
{
    struct pt_trace_ring *r = &w->trace;
    const struct pt_tracing_cfg *cfg = &w->gen->tracing;
    if (r->exporting)
        return; /* the post's end looks at what waits */
    if (r->n >= cfg->batch && !r->timer_soon) {
        r->timer_soon = true;
        pt_timer_arm(&w->loop, &r->timer, 0, on_timer);
    } else if (!r->timer.next && !r->timer_soon) {
        pt_timer_arm(&w->loop, &r->timer, cfg->flush_every_ms, on_timer);
    }
}

/* The upstream the generation's endpoint is reached through. */
static const struct pt_upstream *endpoint_upstream(const struct pt_generation *g)
{
    const struct pt_tracing_cfg *cfg = &g->tracing;
    if (cfg->export_up)
        return cfg->export_up;
    for (uint32_t i = 0; cfg->export_authority && i < g->nurl_upstreams; i++)
        if (strcmp(g->url_upstreams[i].name, cfg->export_authority) == 0)
            return &g->url_upstreams[i];
    return NULL;
}

static void export_failed(struct pt_worker *w, uint32_t n, const char *why)
{
    struct pt_trace_ring *r = &w->trace;
    bump(&r->export_failed, n);
    uint64_t now = pt_loop_now(&w->loop);
    if (!r->last_log_ms || now - r->last_log_ms >= EXPORT_LOG_EVERY_MS) {
        r->last_log_ms = now;
        pt_warn("worker %d: tracing: export of %u spans to %s failed: %s", w->id, n,
                w->gen->tracing.otlp_endpoint ? w->gen->tracing.otlp_endpoint : "(none)", why);
    }
}

/* After a post (or none): what waits goes at once when a batch is full,
 * else after flush_every. */
static void rearm(struct pt_worker *w)
{
    struct pt_trace_ring *r = &w->trace;
    if (!r->n)
        return;
    r->timer_soon = r->n >= w->gen->tracing.batch;
    pt_timer_arm(&w->loop, &r->timer, r->timer_soon ? 0 : w->gen->tracing.flush_every_ms, on_timer);
}

static void post_over(struct pt_worker *w)
{
    struct pt_trace_ring *r = &w->trace;
    r->exporting = false;
    r->in_flight = 0;
    pt_worker_unpin(w, r->export_gen);
    r->export_gen = NULL;
    pt_arena_reset(&r->arena);
}

static void post_done(struct pt_fetch *f, void *user)
{
    struct pt_worker *w = user;
    struct pt_trace_ring *r = &w->trace;
    if (f->fail != PT_CALL_FAIL_NONE) {
        export_failed(w, r->in_flight, f->fail_text ? f->fail_text : "call failed");
    } else if (f->status < 200 || f->status > 299) {
        char why[48];
        snprintf(why, sizeof(why), "the collector answered %d", f->status);
        export_failed(w, r->in_flight, why);
    } else {
        bump(&r->exported, r->in_flight);
    }
    post_over(w);
    rearm(w);
}

/* Takes up to `batch` spans out of the ring into the JSON buffer. */
static size_t encode_batch(struct pt_worker *w, uint32_t take)
{
    struct pt_trace_ring *r = &w->trace;
    const struct pt_tracing_cfg *cfg = &w->gen->tracing;
    const struct pt_span_rec **v = pt_arena_alloc(&r->arena, sizeof(*v) * take);
    if (!v)
        return 0;
    for (uint32_t i = 0; i < take; i++) {
        uint32_t k = r->head + i;
        v[i] = &r->v[k >= r->cap ? k - r->cap : k];
    }
    /* Sized from these records' text, not the worst case (~4 KB a span):
     * typical spans need a few hundred bytes. The buffer is kept and only
     * grows; batch ≤ PT_TRACE_BATCH_MAX bounds it. */
    size_t need = pt_otlp_bound(cfg->service_name, v, take);
    if (r->buf_cap < need) {
        char *b = realloc(r->buf, need);
        if (!b)
            return 0;
        r->buf = b;
        r->buf_cap = need;
    }
    size_t len = pt_otlp_encode(r->buf, r->buf_cap, cfg->service_name, v, take);
    r->head = (r->head + take) % r->cap;
    r->n -= take;
    return len;
}

static void export_now(struct pt_worker *w)
{
    struct pt_trace_ring *r = &w->trace;
    struct pt_generation *g = w->gen;
    const struct pt_tracing_cfg *cfg = &g->tracing;
    if (!r->arena_ready) {
        pt_arena_init(&r->arena, 4096);
        r->arena_ready = true;
    }
    const struct pt_upstream *up = cfg->otlp_endpoint ? endpoint_upstream(g) : NULL;
    uint32_t take = PT_MIN(r->n, cfg->batch ? cfg->batch : r->n);
    if (!up) {
        /* Tracing was turned off (or its endpoint dropped) by a reload. */
        r->head = (r->head + r->n) % (r->cap ? r->cap : 1);
        bump(&r->dropped, r->n);
        r->n = 0;
        return;
    }
    size_t len = encode_batch(w, take);
    struct pt_headers *h = pt_arena_zalloc(&r->arena, sizeof(*h));
    if (!len || !h ||
        pt_headers_add(h, &r->arena, PT_SLICE("Content-Type"), PT_SLICE("application/json")) < 0) {
        export_failed(w, take, "out of memory");
        pt_arena_reset(&r->arena);
        return;
    }
    const char *q = memchr(cfg->export_path.p, '?', cfg->export_path.len);
    struct pt_call_req req = {
        .up = up,
        .target = up == cfg->export_up ? up->targets : NULL,
        .rand = pt_xorshift64s(&w->rng),
        .method = PT_SLICE("POST"),
        .method_id = PT_METHOD_POST,
        .path =
            q ? (pt_slice){cfg->export_path.p, (size_t)(q - cfg->export_path.p)} : cfg->export_path,
        .query = q ? (pt_slice){q + 1, cfg->export_path.len - (size_t)(q - cfg->export_path.p) - 1}
                   : (pt_slice){"", 0},
        .headers = h,
        .add_host = true,
        .read_timeout_ms = up->read_timeout_ms,
        .pool_idle_ms = g->limits.idle_timeout_ms,
        .arena = &r->arena,
        .max_headers = (uint32_t)g->limits.max_headers,
    };
    pt_worker_pin(w, g);
    r->export_gen = g;
    r->exporting = true;
    r->in_flight = take;
    if (pt_fetch_start(&r->fetch, &w->ob, &req, (pt_slice){r->buf, len}, EXPORT_MAX_RESPONSE,
                       post_done, w) != 0) {
        export_failed(w, take, r->fetch.fail_text ? r->fetch.fail_text : "call failed");
        post_over(w);
    }
}

static void on_timer(struct pt_loop *loop, struct pt_timer *tm)
{
    struct pt_trace_ring *r = pt_container_of(tm, struct pt_trace_ring, timer);
    struct pt_worker *w = of_ring(r);
    r->timer_soon = false;
    if (r->exporting || !r->n)
        return;
    export_now(w);
    if (!r->exporting)
        rearm(w);
    (void)loop;
}

void pt_trace_worker_stop(struct pt_worker *w)
{
    struct pt_trace_ring *r = &w->trace;
    pt_timer_cancel(&w->loop, &r->timer);
    if (r->exporting) {
        pt_fetch_cancel(&r->fetch);
        bump(&r->export_failed, r->in_flight);
        post_over(w);
    }
    bump(&r->dropped, r->n);
    pt_trace_ring_free(r);
}
