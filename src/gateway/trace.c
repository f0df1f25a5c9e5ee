/*
 * trace.c — see trace.h: the trace context decision, span records, the
 * worker's span ring and the OTLP/HTTP JSON encoding of a batch.
 */
#include "gateway/trace.h"

#include "gateway/generation.h"
#include "gateway/respond.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* ---- the context ---- */

bool pt_trace_sample_new(double ratio, uint64_t rand)
{
    if (ratio >= 1.0)
        return true;
    if (ratio <= 0.0)
        return false;
    /* The top 53 bits as a double in [0, 1): exact, no bias worth naming. */
    return (double)(rand >> 11) * (1.0 / 9007199254740992.0) < ratio;
}

static void random_bytes(uint8_t *out, size_t n, uint64_t *rng)
{
    for (size_t i = 0; i < n; i += 8) {
        uint64_t x = pt_xorshift64s(rng);
        for (size_t k = 0; k < 8 && i + k < n; k++)
            out[i + k] = (uint8_t)(x >> (8 * k));
    }
}

void pt_trace_new_span_id(uint8_t out[8], uint64_t *rng)
{
    do
        random_bytes(out, 8, rng);
    while (!(out[0] | out[1] | out[2] | out[3] | out[4] | out[5] | out[6] | out[7]));
}

void pt_trace_begin(struct pt_trace_ctx *t, pt_slice tp, uint32_t ntp, double ratio, uint64_t *rng)
{
    struct pt_traceparent in;
    t->on = true;
    pt_trace_new_span_id(t->span_id, rng);
    if (ntp == 1 && pt_traceparent_parse(tp, &in) == 0) {
        memcpy(t->trace_id, in.trace_id, 16);
        memcpy(t->parent_id, in.parent_id, 8);
        t->sampled = in.flags & PT_TRACE_FLAG_SAMPLED; /* parent-based */
        return;
    }
    memset(t->parent_id, 0, 8);
    do
        random_bytes(t->trace_id, 16, rng);
    while (!(t->trace_id[0] | t->trace_id[7] | t->trace_id[8] | t->trace_id[15]));
    t->sampled = pt_trace_sample_new(ratio, pt_xorshift64s(rng));
}

/* ---- span records ---- */

void pt_span_init(struct pt_span_rec *s, const struct pt_trace_ctx *t, const uint8_t span_id[8],
                  const uint8_t parent_id[8], uint8_t kind)
{
    memcpy(s->trace_id, t->trace_id, 16);
    memcpy(s->span_id, span_id, 8);
    memcpy(s->parent_id, parent_id, 8);
    s->kind = kind;
    s->status = PT_SPAN_UNSET;
    s->nattrs = 0;
    s->name_off = s->name_len = s->msg_off = s->msg_len = s->text_len = 0;
    s->start_ns = s->end_ns = 0;
}

/* Copies v into the record's text; (offset, length) of what fit. */
static uint16_t put_text(struct pt_span_rec *s, pt_slice v, uint16_t *len)
{
    size_t room = PT_SPAN_TEXT - s->text_len;
    size_t n = PT_MIN(v.len, room);
    uint16_t off = s->text_len;
    if (n)
        memcpy(s->text + off, v.p, n);
    s->text_len = (uint16_t)(off + n);
    *len = (uint16_t)n;
    return off;
}

void pt_span_set_name(struct pt_span_rec *s, pt_slice name)
{
    s->name_off = put_text(s, name, &s->name_len);
}

void pt_span_set_error(struct pt_span_rec *s, const char *msg)
{
    s->status = PT_SPAN_ERROR;
    if (msg)
        s->msg_off = put_text(s, (pt_slice){msg, strlen(msg)}, &s->msg_len);
}

void pt_span_str(struct pt_span_rec *s, const char *key, pt_slice v)
{
    if (s->nattrs >= PT_SPAN_ATTRS || !v.p)
        return;
    struct pt_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->is_int = false;
    a->off = put_text(s, v, &a->len);
}

void pt_span_int(struct pt_span_rec *s, const char *key, int64_t v)
{
    if (s->nattrs >= PT_SPAN_ATTRS)
        return;
    struct pt_span_attr *a = &s->attrs[s->nattrs++];
    a->key = key;
    a->is_int = true;
    a->i = v;
}

/* ---- the ring ---- */

static void bump(_Atomic uint64_t *c, uint64_t by)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + by,
                          memory_order_relaxed);
}

static int64_t unix_offset(void)
{
    struct timespec rt;
    clock_gettime(CLOCK_REALTIME, &rt);
    uint64_t mono = pt_now_ns();
    return (int64_t)((uint64_t)rt.tv_sec * 1000000000ull + (uint64_t)rt.tv_nsec) - (int64_t)mono;
}

int pt_trace_ring_sync(struct pt_trace_ring *r, const struct pt_tracing_cfg *cfg)
{
    r->unix_offset_ns = unix_offset(); /* follows a stepped wall clock */
    if (!cfg->enabled || !cfg->otlp_endpoint || r->cap == cfg->max_queue)
        return 0;
    struct pt_span_rec *v = malloc(sizeof(*v) * cfg->max_queue);
    if (!v)
        return -ENOMEM;
    /* Spans waiting in a ring of another size are dropped, counted (a
     * post in flight has its own encoded copy). */
    bump(&r->dropped, r->n);
    free(r->v);
    r->v = v;
    r->cap = cfg->max_queue;
    r->head = 0;
    r->n = 0;
    return 0;
}

void pt_trace_ring_free(struct pt_trace_ring *r)
{
    free(r->v);
    r->v = NULL;
    r->cap = r->n = r->head = 0;
    free(r->buf);
    r->buf = NULL;
    r->buf_cap = 0;
    if (r->arena_ready)
        pt_arena_destroy(&r->arena);
    r->arena_ready = false;
}

struct pt_span_rec *pt_trace_ring_reserve(struct pt_trace_ring *r)
{
    if (pt_unlikely(r->n >= r->cap)) {
        bump(&r->dropped, 1);
        return NULL;
    }
    uint32_t i = r->head + r->n;
    if (i >= r->cap)
        i -= r->cap;
    r->n++;
    bump(&r->queued, 1);
    return &r->v[i];
}

/* ---- OTLP/HTTP JSON ---- */

static size_t put(char *o, const char *s, size_t n)
{
    memcpy(o, s, n);
    return n;
}
#define PUTS(o, lit) put((o), (lit), sizeof(lit) - 1)

static size_t put_hex_str(char *o, const char *key, size_t klen, const uint8_t *b, size_t n)
{
    size_t k = 0;
    o[k++] = '"';
    k += put(o + k, key, klen);
    k += PUTS(o + k, "\":\"");
    pt_hex_encode(o + k, b, n);
    k += 2 * n;
    o[k++] = '"';
    return k;
}

static size_t put_json_str(char *o, const char *p, size_t n)
{
    size_t k = 0;
    o[k++] = '"';
    k += pt_json_escape(o + k, p, n);
    o[k++] = '"';
    return k;
}

static size_t encode_attrs(char *o, const struct pt_span_rec *s)
{
    size_t k = PUTS(o, ",\"attributes\":[");
    for (uint32_t i = 0; i < s->nattrs; i++) {
        const struct pt_span_attr *a = &s->attrs[i];
        k += PUTS(o + k, "{\"key\":");
        k += put_json_str(o + k, a->key, strlen(a->key));
        /* int64 values are strings in the protobuf JSON mapping. */
        if (a->is_int)
            k += (size_t)sprintf(o + k, ",\"value\":{\"intValue\":\"%lld\"}}", (long long)a->i);
        else {
            k += PUTS(o + k, ",\"value\":{\"stringValue\":");
            k += put_json_str(o + k, s->text + a->off, a->len);
            k += PUTS(o + k, "}}");
        }
        if (i + 1 < s->nattrs)
            o[k++] = ',';
    }
    o[k++] = ']';
    return k;
}

/* One span; o has room for span_bound(s) bytes. */
static size_t encode_span(char *o, const struct pt_span_rec *s)
{
    static const uint8_t zero[8];
    size_t k = 0;
    o[k++] = '{';
    k += put_hex_str(o + k, "traceId", 7, s->trace_id, 16);
    o[k++] = ',';
    k += put_hex_str(o + k, "spanId", 6, s->span_id, 8);
    if (memcmp(s->parent_id, zero, 8) != 0) {
        o[k++] = ',';
        k += put_hex_str(o + k, "parentSpanId", 12, s->parent_id, 8);
    }
    k += PUTS(o + k, ",\"name\":");
    k += put_json_str(o + k, s->text + s->name_off, s->name_len);
    k += (size_t)sprintf(o + k,
                         ",\"kind\":%u,\"startTimeUnixNano\":\"%llu\",\"endTimeUnixNano\":\"%llu\"",
                         s->kind, (unsigned long long)s->start_ns, (unsigned long long)s->end_ns);
    k += encode_attrs(o + k, s);
    if (s->status != PT_SPAN_UNSET) {
        k += (size_t)sprintf(o + k, ",\"status\":{\"code\":%u", s->status);
        if (s->msg_len) {
            k += PUTS(o + k, ",\"message\":");
            k += put_json_str(o + k, s->text + s->msg_off, s->msg_len);
        }
        o[k++] = '}';
    }
    o[k++] = '}';
    return k;
}

/* At most what encode_span() writes for s: the fixed frame (ids, times,
 * kind, status, the keys) plus every text byte escaped as \u00XX and,
 * per attribute, its key (a static name that needs no escape) plus its
 * value's frame and up to 20 digits. */
static size_t span_bound(const struct pt_span_rec *s)
{
    size_t k = 400 + 6 * (size_t)s->text_len;
    for (uint32_t i = 0; i < s->nattrs; i++)
        k += 64 + strlen(s->attrs[i].key);
    return k;
}

size_t pt_otlp_bound(const char *service_name, const struct pt_span_rec *const *v, uint32_t n)
{
    size_t k = 256 + 6 * strnlen(service_name, 128);
    for (uint32_t i = 0; i < n; i++)
        k += span_bound(v[i]) + 1;
    return k;
}

size_t pt_otlp_encode(char *out, size_t cap, const char *service_name,
                      const struct pt_span_rec *const *v, uint32_t n)
{
    size_t slen = strnlen(service_name, 128);
    if (cap < pt_otlp_bound(service_name, v, n))
        return 0;
    size_t k = PUTS(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service."
                         "name\",\"value\":{\"stringValue\":");
    k += put_json_str(out + k, service_name, slen);
    k += PUTS(out + k, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"portico\"},\"spans\":[");
    for (uint32_t i = 0; i < n; i++) {
        if (i)
            out[k++] = ',';
        k += encode_span(out + k, v[i]);
    }
    k += PUTS(out + k, "]}]}]}");
    return k;
}
