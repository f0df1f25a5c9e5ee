/* test_trace.c — W3C traceparent parsing (valid, invalid, future
 * versions), the trace context decision (continue, start, parent-based
 * sampling), the sampling ratio, the span ring's bound and the OTLP JSON
 * encoding of a span (parsed back with jansson). */
#include "gateway/generation.h"
#include "gateway/trace.h"
#include "http/traceparent.h"
#include "unit.h"

#include <jansson.h>
#include <stdlib.h>

#define TID "4bf92f3577b34da6a3ce929d0e0e4736"
#define PID "00f067aa0ba902b7"

static int parse(const char *s, struct pt_traceparent *t)
{
    return pt_traceparent_parse((pt_slice){s, strlen(s)}, t);
}

static void test_traceparent_valid(void)
{
    struct pt_traceparent t;
    CHECK_EQ_INT(parse("00-" TID "-" PID "-01", &t), 0);
    CHECK_EQ_INT(t.trace_id[0], 0x4b);
    CHECK_EQ_INT(t.trace_id[15], 0x36);
    CHECK_EQ_INT(t.parent_id[7], 0xb7);
    CHECK_EQ_INT(t.flags, 1);
    CHECK_EQ_INT(parse("00-" TID "-" PID "-00", &t), 0);
    CHECK_EQ_INT(t.flags, 0);
    /* Unknown flag bits are carried; only `sampled` means anything. */
    CHECK_EQ_INT(parse("00-" TID "-" PID "-ff", &t), 0);
    CHECK_EQ_INT(t.flags, 0xff);
    /* A later version: version 00's fields, then anything after a dash. */
    CHECK_EQ_INT(parse("01-" TID "-" PID "-01", &t), 0);
    CHECK_EQ_INT(parse("cc-" TID "-" PID "-01-more-fields", &t), 0);
    CHECK_EQ_INT(t.flags, 1);

    char out[PT_TRACEPARENT_LEN + 1] = {0};
    CHECK_EQ_INT(parse("00-" TID "-" PID "-01", &t), 0);
    pt_traceparent_format(out, t.trace_id, t.parent_id, t.flags);
    CHECK_STR(out, "00-" TID "-" PID "-01");
}

static void test_traceparent_invalid(void)
{
    static const char *const bad[] = {
        "",
        "00-" TID "-" PID "-0",                           /* short */
        "00-" TID "-" PID "-01-",                         /* 00 is exactly 55 bytes */
        "00-" TID "-" PID "-01-extra",                    /* ... even with a dash */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-" PID "-01", /* uppercase */
        "00-" TID "-00F067AA0BA902B7-01",                 /* uppercase */
        "00-" TID "-" PID "-0A",                          /* uppercase flags */
        "00-00000000000000000000000000000000-" PID "-01", /* zero trace id */
        "00-" TID "-0000000000000000-01",                 /* zero parent id */
        "ff-" TID "-" PID "-01",                          /* version ff */
        "0g-" TID "-" PID "-01",                          /* not hex */
        "00_" TID "_" PID "_01",                          /* separators */
        "00-" TID "-" PID "-0x",                          /* flags not hex */
        "00-4bf92f3577b34da6a3ce929d0e0e473-" PID "0-01", /* fields shifted */
        "cc-" TID "-" PID "-01.more",                     /* future: no dash after */
        " 00-" TID "-" PID "-01",                         /* leading space */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pt_traceparent t;
        CHECK_MSG(parse(bad[i], &t) < 0, "accepted \"%s\"", bad[i]);
    }
}

static void test_sampling_ratio(void)
{
    CHECK(!pt_trace_sample_new(0.0, 0));
    CHECK(pt_trace_sample_new(1.0, UINT64_MAX));
    CHECK(pt_trace_sample_new(0.5, 0));
    CHECK(!pt_trace_sample_new(0.5, UINT64_MAX));
    uint64_t rng = 42;
    int hits = 0;
    for (int i = 0; i < 100000; i++)
        hits += pt_trace_sample_new(0.1, pt_xorshift64s(&rng));
    CHECK_MSG(hits > 9000 && hits < 11000, "%d of 100000 sampled at 0.1", hits);
}

static void test_context_decision(void)
{
    uint64_t rng = 7;
    struct pt_trace_ctx t;
    const char *sampled = "00-" TID "-" PID "-01";
    const char *unsampled = "00-" TID "-" PID "-00";
    /* A sampled parent is followed even at ratio 0, an unsampled one never
     * even at 1; the trace id is kept and the parent is the caller's. */
    memset(&t, 0, sizeof(t));
    pt_trace_begin(&t, (pt_slice){sampled, strlen(sampled)}, 1, 0.0, &rng);
    CHECK(t.on && t.sampled);
    CHECK_EQ_INT(t.trace_id[0], 0x4b);
    CHECK_EQ_INT(t.parent_id[0], 0x00);
    CHECK_EQ_INT(t.parent_id[1], 0xf0);
    CHECK(memcmp(t.span_id, t.parent_id, 8) != 0);
    pt_trace_begin(&t, (pt_slice){unsampled, strlen(unsampled)}, 1, 1.0, &rng);
    CHECK(!t.sampled);
    CHECK_EQ_INT(t.trace_id[0], 0x4b);
    /* Two traceparent fields: invalid, a new trace (root, ratio decides). */
    pt_trace_begin(&t, (pt_slice){sampled, strlen(sampled)}, 2, 1.0, &rng);
    static const uint8_t zero[8];
    CHECK(memcmp(t.parent_id, zero, 8) == 0);
    CHECK(t.trace_id[0] != 0x4b || t.trace_id[1] != 0xf9);
    CHECK(t.sampled);
    pt_trace_begin(&t, (pt_slice){0}, 0, 0.0, &rng);
    CHECK(!t.sampled);
    CHECK(memcmp(t.parent_id, zero, 8) == 0);
}

static void test_ring_is_bounded(void)
{
    struct pt_trace_ring r;
    memset(&r, 0, sizeof(r));
    struct pt_tracing_cfg cfg = {0};
    CHECK_EQ_INT(pt_trace_ring_sync(&r, &cfg), 0);
    CHECK(pt_trace_ring_reserve(&r) == NULL); /* off: nothing is kept */
    cfg.enabled = true;
    cfg.otlp_endpoint = "http://127.0.0.1:4318/v1/traces";
    cfg.max_queue = 16;
    CHECK_EQ_INT(pt_trace_ring_sync(&r, &cfg), 0);
    for (int i = 0; i < 16; i++)
        CHECK(pt_trace_ring_reserve(&r) != NULL);
    CHECK(pt_trace_ring_reserve(&r) == NULL); /* full: dropped, counted */
    CHECK_EQ_INT(atomic_load(&r.queued), 16);
    CHECK_EQ_INT(atomic_load(&r.dropped), 2);
    /* A new size drops what waits (counted) and starts empty. */
    cfg.max_queue = 32;
    CHECK_EQ_INT(pt_trace_ring_sync(&r, &cfg), 0);
    CHECK_EQ_INT(atomic_load(&r.dropped), 18);
    CHECK_EQ_INT(r.n, 0);
    CHECK(pt_trace_ring_reserve(&r) != NULL);
    pt_trace_ring_free(&r);
}

static json_t *encode_one(const struct pt_span_rec *s)
{
    static char buf[1024 + PT_SPAN_JSON_MAX + 1];
    const struct pt_span_rec *v[1] = {s};
    size_t n = pt_otlp_encode(buf, sizeof(buf), "svc \"x\"", v, 1);
    CHECK(n > 0);
    json_error_t err;
    json_t *doc = json_loadb(buf, n, 0, &err);
    CHECK_MSG(doc != NULL, "%s: %.*s", err.text, (int)n, buf);
    return doc;
}

static void test_otlp_json_of_a_span(void)
{
    uint64_t rng = 1;
    struct pt_trace_ctx t = {0};
    const char *tp = "00-" TID "-" PID "-01";
    pt_trace_begin(&t, (pt_slice){tp, strlen(tp)}, 1, 0.0, &rng);
    static struct pt_span_rec s;
    pt_span_init(&s, &t, t.span_id, t.parent_id, PT_SPAN_SERVER);
    s.start_ns = 1700000000123456789ull;
    s.end_ns = 1700000000223456789ull;
    pt_span_set_name(&s, PT_SLICE("users-v1"));
    pt_span_str(&s, "http.request.method", PT_SLICE("GET"));
    pt_span_str(&s, "url.path", PT_SLICE("/v1/\"q\"\n"));
    pt_span_int(&s, "http.response.status_code", 503);
    pt_span_set_error(&s, "upstream timeout");
    json_t *doc = encode_one(&s);
    if (!doc)
        return;
    json_t *rs = json_array_get(json_object_get(doc, "resourceSpans"), 0);
    json_t *res = json_array_get(json_object_get(json_object_get(rs, "resource"), "attributes"), 0);
    CHECK_STR(json_string_value(json_object_get(res, "key")), "service.name");
    CHECK_STR(json_string_value(json_object_get(json_object_get(res, "value"), "stringValue")),
              "svc \"x\"");
    json_t *ss = json_array_get(json_object_get(rs, "scopeSpans"), 0);
    json_t *sp = json_array_get(json_object_get(ss, "spans"), 0);
    CHECK_STR(json_string_value(json_object_get(sp, "traceId")), TID);
    CHECK_STR(json_string_value(json_object_get(sp, "parentSpanId")), PID);
    CHECK_EQ_INT(strlen(json_string_value(json_object_get(sp, "spanId"))), 16);
    CHECK_STR(json_string_value(json_object_get(sp, "name")), "users-v1");
    CHECK_EQ_INT(json_integer_value(json_object_get(sp, "kind")), 2);
    CHECK_STR(json_string_value(json_object_get(sp, "startTimeUnixNano")), "1700000000123456789");
    CHECK_STR(json_string_value(json_object_get(sp, "endTimeUnixNano")), "1700000000223456789");
    json_t *at = json_object_get(sp, "attributes");
    CHECK_EQ_INT(json_array_size(at), 3);
    CHECK_STR(json_string_value(json_object_get(json_array_get(at, 1), "key")), "url.path");
    CHECK_STR(json_string_value(
                  json_object_get(json_object_get(json_array_get(at, 1), "value"), "stringValue")),
              "/v1/\"q\"\n");
    CHECK_STR(json_string_value(
                  json_object_get(json_object_get(json_array_get(at, 2), "value"), "intValue")),
              "503");
    json_t *st = json_object_get(sp, "status");
    CHECK_EQ_INT(json_integer_value(json_object_get(st, "code")), 2);
    CHECK_STR(json_string_value(json_object_get(st, "message")), "upstream timeout");
    json_decref(doc);

    /* A root has no parentSpanId; an unset status no status; a string
     * past the record's room is cut, never overflows. */
    static const uint8_t zero[8];
    pt_span_init(&s, &t, t.span_id, zero, PT_SPAN_CLIENT);
    pt_span_set_name(&s, PT_SLICE("x"));
    static char big[PT_SPAN_TEXT * 2];
    memset(big, 'a', sizeof(big));
    pt_span_str(&s, "long", (pt_slice){big, sizeof(big)});
    doc = encode_one(&s);
    if (!doc)
        return;
    sp = json_array_get(
        json_object_get(
            json_array_get(json_object_get(json_array_get(json_object_get(doc, "resourceSpans"), 0),
                                           "scopeSpans"),
                           0),
            "spans"),
        0);
    CHECK(json_object_get(sp, "parentSpanId") == NULL);
    CHECK(json_object_get(sp, "status") == NULL);
    CHECK_EQ_INT(json_integer_value(json_object_get(sp, "kind")), 3);
    json_t *v = json_object_get(json_array_get(json_object_get(sp, "attributes"), 0), "value");
    CHECK_EQ_INT(strlen(json_string_value(json_object_get(v, "stringValue"))), PT_SPAN_TEXT - 1);
    json_decref(doc);
}

/* The export buffer is sized from the records' own text: a small span
 * needs far less than the worst case, and a worst-case span (all text
 * needing \u escapes, every attribute an int of 20 characters) still fits
 * in exactly its bound. */
static void test_otlp_bound_fits_the_records(void)
{
    uint64_t rng = 7;
    struct pt_trace_ctx t = {0};
    pt_trace_begin(&t, (pt_slice){"", 0}, 0, 1.0, &rng);
    static struct pt_span_rec small, worst;
    pt_span_init(&small, &t, t.span_id, t.parent_id, PT_SPAN_SERVER);
    pt_span_set_name(&small, PT_SLICE("users-v1"));
    pt_span_str(&small, "http.request.method", PT_SLICE("GET"));
    pt_span_int(&small, "http.response.status_code", 200);
    const struct pt_span_rec *v[2] = {&small, &small};
    size_t b1 = pt_otlp_bound("portico", v, 1);
    CHECK_MSG(b1 - pt_otlp_bound("portico", v, 0) < PT_SPAN_JSON_MAX / 4,
              "bound of a small span: %zu", b1);
    CHECK_EQ_INT(pt_otlp_bound("portico", v, 2) - b1, b1 - pt_otlp_bound("portico", v, 0));

    static char ctl[PT_SPAN_TEXT];
    memset(ctl, 0x01, sizeof(ctl));
    pt_span_init(&worst, &t, t.span_id, t.span_id, PT_SPAN_CLIENT);
    pt_span_set_name(&worst, (pt_slice){ctl, 40});
    pt_span_set_error(&worst, "\x01\x01\x01\x01");
    for (int i = 0; i < PT_SPAN_ATTRS - 1; i++)
        pt_span_int(&worst, "http.response.status_code", INT64_MIN);
    pt_span_str(&worst, "url.path", (pt_slice){ctl, sizeof(ctl)});
    v[0] = &worst;
    size_t cap = pt_otlp_bound("svc", v, 1);
    char *buf = malloc(cap);
    size_t n = pt_otlp_encode(buf, cap, "svc", v, 1);
    CHECK(n > 0 && n <= cap);
    json_error_t err;
    json_t *doc = json_loadb(buf, n, 0, &err);
    CHECK_MSG(doc != NULL, "%s", err.text);
    json_decref(doc);
    /* One byte short of the bound is refused, never overrun. */
    CHECK_EQ_INT(pt_otlp_encode(buf, cap - 1, "svc", v, 1), 0);
    free(buf);
}

int main(void)
{
    test_traceparent_valid();
    test_traceparent_invalid();
    test_sampling_ratio();
    test_context_decision();
    test_ring_is_bounded();
    test_otlp_json_of_a_span();
    test_otlp_bound_fits_the_records();
    return unit_report("trace");
}
