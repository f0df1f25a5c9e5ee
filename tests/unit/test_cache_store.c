/*
 * test_cache_store.c — the shared response cache's store and HTTP rules:
 * insert/lookup with Vary variants, replacement, LRU eviction under the
 * shard budget, refcounts keeping an evicted entry readable, flights
 * (lead, wait, pass, takeover after the lock timeout), purge by route and
 * prefix, Cache-Control parsing, freshness, dates and ETag matching.
 */
#include "filters/cache_http.c"
#include "filters/cache_store.c"
#include "unit.h"

#include "core/arena.h"

static pt_slice vals_a[1] = {{"a", 1}};
static pt_slice names_t[1] = {{"X-T", 3}};

static pt_slice field_a(void *ud, pt_slice name)
{
    (void)ud;
    return pt_slice_ieq(name, PT_SLICE("X-T")) ? PT_SLICE("a") : PT_SLICE("");
}

static pt_slice field_b(void *ud, pt_slice name)
{
    (void)ud;
    return pt_slice_ieq(name, PT_SLICE("X-T")) ? PT_SLICE("b") : PT_SLICE("");
}

static struct pt_cache_put put_of(const char *key, const char *route, const char *path,
                                  pt_slice *body, size_t blen)
{
    body->p = blen ? (const char *)calloc(1, blen) : "";
    body->len = blen;
    return (struct pt_cache_put){.key = {key, strlen(key)},
                                 .route = {route, strlen(route)},
                                 .path = {path, strlen(path)},
                                 .status = 200,
                                 .body = body,
                                 .nbody = 1,
                                 .body_len = blen,
                                 .fresh_ms = 1000,
                                 .now_ms = 100};
}

static struct pt_cache_entry *get(struct pt_cache_store *s, const char *key, pt_cache_field_fn f)
{
    enum pt_cache_flight fl;
    uint64_t seq = 0;
    pt_slice k = {key, strlen(key)};
    return pt_cache_lookup(s, pt_cache_hash(s, k), k, f, NULL, 100, false, 0, &fl, &seq, 0);
}

static void test_insert_lookup_variants_and_replace(void)
{
    struct pt_cache_store *s = pt_cache_store_new(1 << 20, 4);
    pt_slice b;
    struct pt_cache_put p = put_of("k1", "r", "/a", &b, 10);
    p.nvary = 1;
    p.vary_names = names_t;
    p.vary_values = vals_a;
    CHECK_EQ_INT(pt_cache_insert(s, pt_cache_hash(s, p.key), &p), 0);
    struct pt_cache_entry *e = get(s, "k1", field_a);
    CHECK(e && e->body.len == 10 && e->status == 200);
    pt_cache_entry_unref(s, e);
    CHECK(get(s, "k1", field_b) == NULL); /* another variant */
    CHECK(get(s, "k2", field_a) == NULL);
    p.status = 404; /* same key and variant: replaces */
    CHECK_EQ_INT(pt_cache_insert(s, pt_cache_hash(s, p.key), &p), 0);
    struct pt_cache_stats st;
    pt_cache_store_stats(s, &st);
    CHECK_EQ_INT((int)st.entries, 1);
    e = get(s, "k1", field_a);
    CHECK(e && e->status == 404);
    pt_cache_entry_unref(s, e);
    free((void *)b.p);
    pt_cache_store_unref(s);
}

static void test_lru_eviction_and_refs(void)
{
    struct pt_cache_store *s = pt_cache_store_new(64 << 10, 1);
    pt_slice b;
    char key[16];
    snprintf(key, sizeof(key), "k0");
    struct pt_cache_put p = put_of(key, "r", "/", &b, 15000);
    CHECK_EQ_INT(pt_cache_insert(s, pt_cache_hash(s, p.key), &p), 0);
    struct pt_cache_entry *held = get(s, "k0", NULL); /* a reader keeps it */
    for (int i = 1; i < 8; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        p.key = (pt_slice){key, strlen(key)};
        CHECK_EQ_INT(pt_cache_insert(s, pt_cache_hash(s, p.key), &p), 0);
    }
    struct pt_cache_stats st;
    pt_cache_store_stats(s, &st);
    CHECK(st.bytes <= 64 << 10);
    CHECK(st.evictions >= 4);
    CHECK(get(s, "k0", NULL) == NULL);                       /* evicted ... */
    CHECK(held && held->body.len == 15000 && !held->linked); /* ... but still readable */
    pt_cache_entry_unref(s, held);
    struct pt_cache_entry *e = get(s, "k7", NULL);
    CHECK(e != NULL);
    pt_cache_entry_unref(s, e);
    p.body_len = 70000; /* bigger than the shard */
    CHECK_EQ_INT(pt_cache_insert(s, pt_cache_hash(s, p.key), &p), -E2BIG);
    free((void *)b.p);
    pt_cache_store_unref(s);
}

static void test_flights(void)
{
    struct pt_cache_store *s = pt_cache_store_new(1 << 20, 2);
    pt_slice k = PT_SLICE("f");
    uint64_t h = pt_cache_hash(s, k), s1 = 0, s2 = 0, s3 = 0;
    enum pt_cache_flight fl;
    CHECK(!pt_cache_lookup(s, h, k, NULL, NULL, 100, true, 5000, &fl, &s1, 0));
    CHECK_EQ_INT(fl, PT_CACHE_LEAD);
    pt_cache_lookup(s, h, k, NULL, NULL, 101, true, 5000, &fl, &s2, 1u << 3);
    CHECK(fl == PT_CACHE_WAIT && s2 == s1);
    uint64_t s2b = 0; /* a second waiter, on another worker */
    pt_cache_lookup(s, h, k, NULL, NULL, 102, true, 5000, &fl, &s2b, 1u << 5);
    CHECK(fl == PT_CACHE_WAIT && s2b == s1);
    /* the waiters' workers are handed to whoever ends the flight */
    CHECK(pt_cache_flight_end(s, h, k, s1, false, 150) == ((1u << 3) | (1u << 5)));
    CHECK(pt_cache_flight_end(s, h, k, s1, false, 150) == 0); /* ended already */
    pt_cache_lookup(s, h, k, NULL, NULL, 151, true, 5000, &fl, &s2, 0);
    CHECK_EQ_INT(fl, PT_CACHE_NONE); /* the awaited flight ended, no entry */
    /* a new leader; ended as uncacheable → PASS for later misses */
    pt_cache_lookup(s, h, k, NULL, NULL, 200, true, 5000, &fl, &s3, 0);
    CHECK_EQ_INT(fl, PT_CACHE_LEAD);
    pt_cache_flight_end(s, h, k, s3, true, 210);
    uint64_t s4 = 0;
    pt_cache_lookup(s, h, k, NULL, NULL, 300, true, 5000, &fl, &s4, 0);
    CHECK_EQ_INT(fl, PT_CACHE_PASS);
    s4 = 0;
    pt_cache_lookup(s, h, k, NULL, NULL, 210 + PT_CACHE_PASS_MS, true, 5000, &fl, &s4, 0);
    CHECK_EQ_INT(fl, PT_CACHE_LEAD); /* the mark expired */
    uint64_t s5 = 0;                 /* a lost leader is taken over after lock_timeout */
    pt_cache_lookup(s, h, k, NULL, NULL, 210 + PT_CACHE_PASS_MS + 5000, true, 5000, &fl, &s5, 0);
    CHECK(fl == PT_CACHE_LEAD && s5 != s4);
    pt_cache_store_unref(s); /* frees the open flight too */
}

static void test_purge(void)
{
    struct pt_cache_store *s = pt_cache_store_new(1 << 20, 8);
    pt_slice b;
    const char *keys[] = {"a1", "a2", "b1", "o1"}, *paths[] = {"/a/1", "/a/2", "/b/1", "/o/1"};
    for (int i = 0; i < 4; i++) {
        struct pt_cache_put p = put_of(keys[i], i == 3 ? "other" : "main", paths[i], &b, 5);
        CHECK_EQ_INT(pt_cache_insert(s, pt_cache_hash(s, p.key), &p), 0);
        free((void *)b.p);
    }
    CHECK_EQ_INT((int)pt_cache_purge(s, NULL, "/a/"), 2);
    CHECK_EQ_INT((int)pt_cache_purge(s, "other", NULL), 1);
    CHECK_EQ_INT((int)pt_cache_purge(s, "main", "/o/"), 0);
    CHECK_EQ_INT((int)pt_cache_purge(s, NULL, NULL), 1);
    pt_cache_store_unref(s);
}

static void test_http_rules(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    struct pt_hfield store[8];
    struct pt_headers h = {store, 0, 8};
    pt_headers_add(&h, &a, PT_SLICE("Cache-Control"), PT_SLICE("public, max-age=60, x=\"a,b\""));
    pt_headers_add(&h, &a, PT_SLICE("Cache-Control"), PT_SLICE("s-maxage=\"10\""));
    struct pt_cc cc;
    pt_cc_parse(&h, &cc);
    CHECK(cc.public_ && cc.has_max_age && cc.max_age_s == 60 && cc.has_s_maxage);
    bool ex;
    CHECK_EQ_INT((int)pt_cache_freshness_ms(&h, &cc, &ex), 10000); /* s-maxage wins */
    CHECK(ex);
    struct pt_headers h2 = {store + 4, 0, 4};
    pt_headers_add(&h2, &a, PT_SLICE("Date"), PT_SLICE("Sun, 06 Nov 1994 08:49:37 GMT"));
    pt_headers_add(&h2, &a, PT_SLICE("Expires"), PT_SLICE("Sun, 06 Nov 1994 08:50:37 GMT"));
    pt_cc_parse(&h2, &cc);
    CHECK_EQ_INT((int)pt_cache_freshness_ms(&h2, &cc, &ex), 60000);
    h2.n = 0;
    pt_headers_add(&h2, &a, PT_SLICE("Expires"), PT_SLICE("0"));
    CHECK_EQ_INT((int)pt_cache_freshness_ms(&h2, &cc, &ex), 0);
    CHECK(ex); /* an invalid Expires says "expired" */
    h2.n = 0;
    pt_cache_freshness_ms(&h2, &cc, &ex);
    CHECK(!ex);
    int64_t t;
    CHECK(pt_http_date_parse(PT_SLICE("Sunday, 06-Nov-94 08:49:37 GMT"), &t) && t == 784111777);
    CHECK(pt_http_date_parse(PT_SLICE("Sun Nov  6 08:49:37 1994"), &t) && t == 784111777);
    CHECK(!pt_http_date_parse(PT_SLICE("yesterday"), &t));
    CHECK(pt_cache_etag_match(PT_SLICE("\"x\", W/\"v1\""), PT_SLICE("\"v1\"")));
    CHECK(pt_cache_etag_match(PT_SLICE("*"), PT_SLICE("\"v1\"")));
    CHECK(!pt_cache_etag_match(PT_SLICE("\"v2\""), PT_SLICE("\"v1\"")));
    pt_arena_destroy(&a);
}

int main(void)
{
    test_insert_lookup_variants_and_replace();
    test_lru_eviction_and_refs();
    test_flights();
    test_purge();
    test_http_rules();
    return unit_report("cache_store");
}
