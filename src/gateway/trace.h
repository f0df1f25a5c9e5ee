/*
 * trace.h — tracing (issue 17 item 2; config `tracing`, generation.h).
 *
 * Every request gets a trace context: continued from a valid incoming
 * `traceparent` (same trace id, parent = the caller's span) or started
 * (random ids from the worker's PRNG). Sampling is parent-based: a
 * sampled parent is always followed, an unsampled one never; a new trace
 * is sampled at `tracing.sample`.
 *
 * Spans of sampled requests (the server span, one client span per
 * upstream attempt, one per filter call such as ext_auth, introspection
 * or a JWKS fetch) are written straight into the worker's ring of
 * fixed-size records (struct pt_span_rec): no allocation per span; a full
 * ring drops the span and counts it. The worker's exporter
 * (trace_export.c) encodes batches as OTLP/HTTP JSON and posts them off
 * the request path.
 *
 * Ownership: the ring and everything in it belong to its worker and are
 * touched on its thread only; the counters are single-writer atomics the
 * control thread may read.
 */
#ifndef PT_GATEWAY_TRACE_H
#define PT_GATEWAY_TRACE_H

#include "core/arena.h"
#include "core/loop.h"
#include "http/traceparent.h"
#include "proxy/fetch.h"

#include <stdatomic.h>

struct pt_generation;
struct pt_tracing_cfg;

/* OTLP SpanKind and StatusCode numbers (the JSON encoding uses them). */
enum { PT_SPAN_SERVER = 2, PT_SPAN_CLIENT = 3 };
enum { PT_SPAN_UNSET = 0, PT_SPAN_OK = 1, PT_SPAN_ERROR = 2 };

#define PT_SPAN_ATTRS 12
#define PT_SPAN_TEXT 464 /* name, string attributes and status message */

struct pt_span_attr {
    const char *key; /* a static name that needs no JSON escape */
    bool is_int;
    uint16_t off, len; /* string value: text[off..off+len) */
    int64_t i;
};

/* One finished span, everything copied in (the request's arena and
 * generation may be gone when it is exported). */
struct pt_span_rec {
    uint8_t trace_id[16], span_id[8], parent_id[8]; /* parent all zeros: a root */
    uint64_t start_ns, end_ns;                      /* Unix ns */
    uint8_t kind, status, nattrs;
    uint16_t name_off, name_len, msg_off, msg_len, text_len;
    struct pt_span_attr attrs[PT_SPAN_ATTRS];
    char text[PT_SPAN_TEXT];
};

/* A request's trace context. */
struct pt_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8];   /* the request's (server) span */
    uint8_t parent_id[8]; /* the caller's span; zeros when the trace started here */
    bool on;              /* tracing is configured for this request */
    bool sampled;
};

/* The worker's span ring and its exporter's state. */
struct pt_trace_ring {
    struct pt_span_rec *v;  /* cap records (malloc'd when tracing is first on) */
    uint32_t cap, head, n;  /* oldest at head */
    int64_t unix_offset_ns; /* Unix time minus the loop's monotonic clock */
    _Atomic uint64_t queued, dropped, exported, export_failed; /* spans; one writer */
    /* trace_export.c */
    struct pt_timer timer;
    bool timer_soon; /* armed to export at once (a batch is waiting) */
    bool exporting;
    struct pt_generation *export_gen; /* pinned while a post is in flight */
    struct pt_fetch fetch;
    struct pt_arena arena;
    bool arena_ready;
    char *buf;
    size_t buf_cap;
    uint32_t in_flight; /* spans in the post in flight (taken out of the ring) */
    uint64_t last_log_ms;
};

/* The sampling decision for a new trace: `rand` uniform over 64 bits. */
bool pt_trace_sample_new(double ratio, uint64_t rand);

/* Starts or continues a trace from the request's traceparent value
 * (`tp`, len 0: none; `ntp` how many traceparent fields came: more than
 * one is invalid). Draws ids from *rng. */
void pt_trace_begin(struct pt_trace_ctx *t, pt_slice tp, uint32_t ntp, double ratio, uint64_t *rng);

/* A new non-zero span id. */
void pt_trace_new_span_id(uint8_t out[8], uint64_t *rng);

/* ---- span records ---- */

void pt_span_init(struct pt_span_rec *s, const struct pt_trace_ctx *t, const uint8_t span_id[8],
                  const uint8_t parent_id[8], uint8_t kind);
void pt_span_set_name(struct pt_span_rec *s, pt_slice name);
void pt_span_set_error(struct pt_span_rec *s, const char *msg);
/* Attributes; a string longer than the room left is cut, one past
 * PT_SPAN_ATTRS is dropped. */
void pt_span_str(struct pt_span_rec *s, const char *key, pt_slice v);
void pt_span_int(struct pt_span_rec *s, const char *key, int64_t v);

/* ---- the ring ---- */

/* Sizes the ring for `cfg` (allocating when tracing is on and the size
 * changed: waiting spans are then dropped and counted). Control of the
 * worker's thread, between requests. 0 or -ENOMEM. */
int pt_trace_ring_sync(struct pt_trace_ring *r, const struct pt_tracing_cfg *cfg);
void pt_trace_ring_free(struct pt_trace_ring *r);
/* The next record to fill, or NULL (full or no ring: counted as dropped). */
struct pt_span_rec *pt_trace_ring_reserve(struct pt_trace_ring *r);
/* Loop monotonic ns to Unix ns. */
static inline uint64_t pt_trace_unix_ns(const struct pt_trace_ring *r, uint64_t mono_ns)
{
    return (uint64_t)((int64_t)mono_ns + r->unix_offset_ns);
}

/* ---- OTLP/HTTP JSON ---- */

/* Worst-case JSON bytes of any span (a record full of text that all
 * needs \u escapes); pt_otlp_bound() is the much smaller bound of the
 * records actually given. */
#define PT_SPAN_JSON_MAX (6 * PT_SPAN_TEXT + 80 * PT_SPAN_ATTRS + 400)

/* Most spans one export post carries (`tracing.batch` is capped here):
 * bounds the worker's export buffer. */
#define PT_TRACE_BATCH_MAX 4096

/* Bytes pt_otlp_encode() needs at most for spans [0, n) of `v`, from
 * their actual text lengths. */
size_t pt_otlp_bound(const char *service_name, const struct pt_span_rec *const *v, uint32_t n);

/* Encodes spans [0, n) of the array `v` (consecutive records) as one
 * ExportTraceServiceRequest: resourceSpans → scopeSpans → spans. Returns
 * the length, or 0 when `cap` is too small. */
size_t pt_otlp_encode(char *out, size_t cap, const char *service_name,
                      const struct pt_span_rec *const *v, uint32_t n);

#endif
