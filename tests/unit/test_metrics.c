/* test_metrics.c — the metric blocks and their exposition: histogram
 * bucketing at the bounds, label value escaping, the per-route status and
 * note tables (and their overflow), folding a retired generation's counts
 * into the totals so the same route in two generations is one series that
 * only grows, and the text of a scrape (cumulative buckets, +Inf, _sum,
 * _count). */
#include "control/metrics_text.h"
#include "unit.h"

#include <stdlib.h>

static void test_histogram_buckets(void)
{
    CHECK_EQ_INT(pt_hist_bucket(0), 0);
    CHECK_EQ_INT(pt_hist_bucket(50000), 0); /* le="5e-05" holds 50 µs itself */
    CHECK_EQ_INT(pt_hist_bucket(50001), 1);
    CHECK_EQ_INT(pt_hist_bucket(1000000), 4); /* 1 ms */
    CHECK_EQ_INT(pt_hist_bucket(1000001), 5); /* just above: le="0.0025" */
    CHECK_EQ_INT(pt_hist_bucket(60000000000ull), PT_HIST_BOUNDS - 1);
    CHECK_EQ_INT(pt_hist_bucket(60000000001ull), PT_HIST_BOUNDS); /* +Inf */
    for (uint32_t i = 1; i < PT_HIST_BOUNDS; i++) {
        CHECK(pt_hist_bound_ns[i] > pt_hist_bound_ns[i - 1]);
        /* the label says the same number as the bound */
        CHECK_MSG((uint64_t)(strtod(pt_hist_bound_text[i], NULL) * 1e9 + 0.5) ==
                      pt_hist_bound_ns[i],
                  "%s", pt_hist_bound_text[i]);
    }
    struct pt_hist h = {0};
    pt_hist_observe(&h, 70000);
    pt_hist_observe(&h, 70000);
    pt_hist_observe(&h, 100000000000ull);
    CHECK_EQ_INT(pt_ctr_get(&h.n[1]), 2);
    CHECK_EQ_INT(pt_ctr_get(&h.n[PT_HIST_BOUNDS]), 1);
    CHECK_EQ_INT(pt_ctr_get(&h.sum_ns), 100000140000ull);
}

static void test_label_escaping(void)
{
    char out[64];
    pt_mx_escape(out, sizeof(out), "a\"b\\c\nd");
    CHECK_STR(out, "a\\\"b\\\\c\\nd");
    pt_mx_escape(out, sizeof(out), "plain.name-1");
    CHECK_STR(out, "plain.name-1");
    /* never past the buffer, always terminated */
    pt_mx_escape(out, 6, "\"\"\"\"\"\"");
    CHECK(strlen(out) < 6);
}

static void test_status_table_and_overflow(void)
{
    struct pt_route_mx *r = calloc(1, sizeof(*r));
    pt_mx_count_code(r, 1, 200);
    pt_mx_count_code(r, 1, 200);
    pt_mx_count_code(r, 0, 401);
    uint64_t n200 = 0, n401 = 0, used = 0;
    for (int i = 0; i < PT_CODE_SLOTS; i++) {
        uint32_t k = atomic_load(&r->codes[i].key);
        used += k != 0;
        if (k == ((1u << 10) | 200))
            n200 = pt_ctr_get(&r->codes[i].n);
        if (k == 401)
            n401 = pt_ctr_get(&r->codes[i].n);
    }
    CHECK_EQ_INT(n200, 2);
    CHECK_EQ_INT(n401, 1);
    CHECK_EQ_INT(used, 2);
    /* fill the table: the 17th distinct pair goes to its class */
    for (int s = 500; s < 514; s++)
        pt_mx_count_code(r, 1, s);
    pt_mx_count_code(r, 2, 503);
    CHECK_EQ_INT(pt_ctr_get(&r->codes_other[5]), 1);
    pt_mx_count_code(r, 1, 200); /* a known pair still finds its slot */
    for (int i = 0; i < PT_CODE_SLOTS; i++)
        if (atomic_load(&r->codes[i].key) == ((1u << 10) | 200))
            CHECK_EQ_INT(pt_ctr_get(&r->codes[i].n), 3);
    /* notes: same text, different pointers, one slot */
    char k1[] = "jwt_cache", v1[] = "hit";
    pt_mx_count_note(r, "jwt_cache", "hit");
    pt_mx_count_note(r, k1, v1);
    pt_mx_count_note(r, "jwt_cache", "miss");
    CHECK_EQ_INT(pt_ctr_get(&r->notes[0].n), 2);
    CHECK_EQ_INT(pt_ctr_get(&r->notes[1].n), 1);
    free(r);
}

/* A generation with two routes (no filters) and one upstream, blocks for
 * two workers: enough for pt_gen_metrics_new and the scrape. */
struct fake {
    struct pt_generation g;
    struct pt_route routes[2];
    struct pt_upstream up;
};

static void fake_init(struct fake *f, uint64_t id, const char *r0, const char *r1)
{
    memset(f, 0, sizeof(*f));
    f->g.id = id;
    f->routes[0].name = r0;
    f->routes[1].name = r1;
    f->g.routes = f->routes;
    f->g.nroutes = 2;
    f->up.name = "app";
    f->g.upstreams = &f->up;
    f->g.nupstreams = 1;
    f->g.metrics = pt_gen_metrics_new(&f->g, 2);
}

static void record(struct fake *f, int worker, uint32_t route, int status, uint64_t ns)
{
    struct pt_route_mx *r = &f->g.metrics->w[worker].routes[route];
    pt_mx_count_code(r, 1, status);
    pt_hist_observe(&r->request, ns);
    pt_hist_observe(&f->g.metrics->w[worker].upstreams[0].time, ns / 2);
}

static const uint64_t *series(const struct pt_mx_set *s, enum pt_mx_family fam, const char *key)
{
    const struct pt_mx_map *m = &s->f[fam];
    for (uint32_t i = 0; i < m->n; i++)
        if (strcmp(m->keys[i], key) == 0)
            return &m->vals[(size_t)i * m->width];
    return NULL;
}

static void test_fold_retired_generation(void)
{
    struct fake a, b;
    fake_init(&a, 1, "users", "orders");
    fake_init(&b, 2, "users", "fresh"); /* orders removed, fresh added */
    CHECK(a.g.metrics && b.g.metrics);
    record(&a, 0, 0, 200, 70000);
    record(&a, 1, 0, 200, 70000);
    record(&a, 1, 1, 503, 3000000);
    record(&b, 0, 0, 200, 70000);
    record(&b, 1, 1, 200, 70000);

    /* a is retired and folded; b is live */
    struct pt_mx_set retired;
    pt_mx_set_init(&retired);
    CHECK_EQ_INT(pt_mx_set_add_generation(&retired, &a.g), 0);
    pt_gen_metrics_free(a.g.metrics); /* a is freed */
    a.g.metrics = NULL;

    struct pt_mx_set s;
    pt_mx_set_init(&s);
    CHECK_EQ_INT(pt_mx_set_merge(&s, &retired), 0);
    CHECK_EQ_INT(pt_mx_set_add_generation(&s, &b.g), 0);
    const uint64_t *v =
        series(&s, PT_MXF_REQUESTS, "route=\"users\",upstream=\"app\",code=\"200\"");
    CHECK(v && v[0] == 3); /* 2 from the retired generation + 1 live: one series */
    v = series(&s, PT_MXF_REQUESTS, "route=\"orders\",upstream=\"app\",code=\"503\"");
    CHECK(v && v[0] == 1); /* a removed route keeps its count */
    v = series(&s, PT_MXF_REQUESTS, "route=\"fresh\",upstream=\"app\",code=\"200\"");
    CHECK(v && v[0] == 1);
    v = series(&s, PT_MXF_REQUEST_TIME, "route=\"users\"");
    CHECK(v && v[1] == 3 && v[PT_HIST_BOUNDS + 1] == 3 * 70000);
    v = series(&s, PT_MXF_UP_TIME, "upstream=\"app\"");
    CHECK(v && v[0] == 4 && v[5] == 1); /* 35 µs ×4, 1.5 ms ×1 */

    /* the text: cumulative buckets, +Inf = _count, _sum in seconds */
    const struct pt_generation *live[] = {&b.g};
    struct pt_mx_scrape_in in = {.current = &b.g, .live = live, .nlive = 1, .reloads_ok = 1};
    size_t len = 0;
    char *block = pt_mx_scrape(&retired, &in, 16, &len);
    CHECK(block != NULL);
    char *text = block ? strndup(block + 16, len) : NULL;
    CHECK(text && len == strlen(text));
    CHECK(text && strstr(text, "# TYPE portico_requests_total counter\n"));
    CHECK(text && strstr(text, "portico_requests_total{route=\"users\",upstream=\"app\","
                               "code=\"200\"} 3\n"));
    CHECK(text && strstr(text, "portico_request_duration_seconds_bucket{route=\"users\","
                               "le=\"5e-05\"} 0\n"));
    CHECK(text && strstr(text, "portico_request_duration_seconds_bucket{route=\"users\","
                               "le=\"0.0001\"} 3\n"));
    CHECK(text && strstr(text, "portico_request_duration_seconds_bucket{route=\"users\","
                               "le=\"+Inf\"} 3\n"));
    CHECK(text && strstr(text, "portico_request_duration_seconds_sum{route=\"users\"} "
                               "0.000210000\n"));
    CHECK(text && strstr(text, "portico_request_duration_seconds_count{route=\"users\"} 3\n"));
    CHECK(text && strstr(text, "portico_config_generation 2\n"));
    CHECK(text && strstr(text, "portico_config_reloads_total{result=\"ok\"} 1\n"));
    free(text);
    free(block);

    pt_mx_set_free(&s);
    pt_mx_set_free(&retired);
    pt_gen_metrics_free(b.g.metrics);
}

int main(void)
{
    test_histogram_buckets();
    test_label_escaping();
    test_status_table_and_overflow();
    test_fold_retired_generation();
    return unit_report("metrics");
}
