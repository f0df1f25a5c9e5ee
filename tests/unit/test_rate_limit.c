/*
 * test_rate_limit.c — the rate_limit filter's config as the loader reads
 * it (every error at the file:line:col of the node at fault, the compiled
 * limits: ids, parameters, defaults, RateLimit-Policy), the key text
 * encoding (unambiguous across parts) and reading one JWT claim.
 */
#include "control/config.h"
#include "filters/jose.h"
#include "filters/rate_limit_int.h"
#include "gateway/generation.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

#define HEAD                                                                                       \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\n"                                              \
    "upstreams:\n"                                                                                 \
    "  users: { targets: [\"127.0.0.1:9001\"] }\n"                                                 \
    "routes:\n"                                                                                    \
    "  - name: r\n"                                                                                \
    "    upstream: users\n"                                                                        \
    "    filters:\n"                                                                               \
    "      rate_limit:\n"

static struct pt_generation *load(const char *yaml, struct pt_diag *d)
{
    unit_write_file("rl.yaml", yaml);
    pt_diag_init(d);
    return pt_config_load("rl.yaml", 1, d);
}

/* Loads `yaml` and checks that it fails with exactly the `want` lines. */
static void expect_errors(int line, const char *yaml, const char *const *want)
{
    struct pt_diag d;
    struct pt_generation *g = load(yaml, &d);
    size_t nwant = 0;
    while (want[nwant])
        nwant++;
    bool same = !g && d.n == nwant;
    for (size_t i = 0; same && i < nwant; i++)
        same = strcmp(d.lines[i], want[i]) == 0;
    CHECK_MSG(same, "case at line %d", line);
    if (!same) {
        for (size_t i = 0; i < nwant; i++)
            fprintf(stderr, "  want %s\n", want[i]);
        for (size_t i = 0; i < d.n; i++)
            fprintf(stderr, "  got  %s\n", d.lines[i]);
    }
    pt_generation_free(g);
    pt_diag_free(&d);
}

#define EXPECT(yaml, ...) expect_errors(__LINE__, yaml, (const char *const[]){__VA_ARGS__, NULL})
#define F "rl.yaml:"
#define RL "filter `rate_limit`: "

static const struct rl_conf *conf_of(const struct pt_generation *g)
{
    for (uint32_t i = 0; g && i < g->nroutes; i++)
        for (uint32_t k = 0; k < g->routes[i].chain.n_all; k++)
            if (strcmp(g->routes[i].chain.all[k].def->name, "rate_limit") == 0)
                return g->routes[i].chain.all[k].conf;
    return NULL;
}

static bool slice_is(pt_slice s, const char *want)
{
    bool ok = s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
    if (!ok)
        fprintf(stderr, "  \"%.*s\" != \"%s\"\n", (int)s.len, s.p, want);
    return ok;
}

static void test_compiled_limits(void)
{
    struct pt_diag d;
    struct pt_generation *g =
        load(HEAD "        limits:\n"
                  "          - { name: burst, key: [consumer, header:X-User], rate: 100/s, "
                  "burst: 20 }\n"
                  "          - { key: consumer, rate: 10000/d, algorithm: sliding_window }\n"
                  "          - { rate: 50/m }\n"
                  "          - { key: [consumer], rate: 5/h, algorithm: gcra }\n",
             &d);
    CHECK(g != NULL);
    if (!g)
        pt_diag_print(&d, stderr);
    const struct rl_conf *c = conf_of(g);
    CHECK(c != NULL);
    if (c) {
        CHECK_EQ_INT(c->nlim, 4);
        CHECK(!c->cluster);
        CHECK(c->send_headers);
        CHECK_EQ_INT(c->on_failure, RL_FAIL_LOCAL);
        CHECK_EQ_INT(c->store_timeout_ms, 50);
        /* ids: name or position, then the key spec (header names lowercased) */
        CHECK(slice_is(c->lim[0].id, "burst:consumer+header:x-user"));
        CHECK(slice_is(c->lim[1].id, "#2:consumer"));
        CHECK(slice_is(c->lim[2].id, "#3:ip")); /* the default key */
        CHECK(slice_is(c->lim[3].id, "#4:consumer"));
        CHECK_EQ_INT(c->lim[0].params.capacity, 120);
        CHECK_EQ_INT(c->lim[0].params.period_ms, 1000);
        CHECK_EQ_INT(c->lim[1].params.algorithm, PT_RL_SLIDING_WINDOW);
        CHECK_EQ_INT(c->lim[1].params.period_ms, 86400000);
        CHECK_EQ_INT(c->lim[2].params.algorithm, PT_RL_GCRA);
        CHECK_EQ_INT(c->lim[2].params.capacity, 50);
        /* a limit with the same parts reuses the earlier key text */
        CHECK_EQ_INT(c->lim[0].same_key_as, -1);
        CHECK_EQ_INT(c->lim[1].same_key_as, -1);
        CHECK_EQ_INT(c->lim[3].same_key_as, 1);
        CHECK(slice_is(c->policy, "100;w=1;burst=20, 10000;w=86400, 50;w=60, 5;w=3600"));
    }
    pt_generation_free(g);
    pt_diag_free(&d);

    g = load(HEAD "        limits: [{ rate: 1/s }]\n"
                  "        on_store_failure: deny\n"
                  "        store_timeout: 20ms\n"
                  "        headers: false\n",
             &d);
    c = conf_of(g);
    CHECK(c != NULL);
    if (c) {
        CHECK(!c->send_headers);
        CHECK_EQ_INT(c->on_failure, RL_FAIL_DENY);
        CHECK_EQ_INT(c->store_timeout_ms, 20);
    }
    pt_generation_free(g);
    pt_diag_free(&d);
}

static void test_errors_at_their_node(void)
{
    EXPECT(HEAD "        scope: local\n",
           F "8:7: " RL "`limits` is required: a list of { key, rate, "
             "burst, algorithm }");
    EXPECT(HEAD "        limits: []\n", F "9:17: " RL "limits: 1 to 16 limits per route");
    EXPECT(HEAD "        limits:\n"
                "          - { key: ip }\n",
           F "10:13: " RL "limits: every limit needs a `rate` (e.g. 100/s, 1000/m)");
    EXPECT(HEAD "        limits:\n"
                "          - { rate: 1/s }\n"
                "          - { rate: 10/week, burst: -1 }\n",
           F "11:21: " RL "limits: rate \"10/week\" is not a rate: N/s, N/m, N/h or N/d with N at "
             "least 1 (e.g. 100/s)",
           F "11:37: " RL "limits: burst must be 0 or more");
    EXPECT(HEAD "        limits:\n"
                "          - { rate: 0/s, algorithm: leaky }\n",
           F "10:21: " RL "limits: rate \"0/s\" is not a rate: N/s, N/m, N/h or N/d with N at "
             "least 1 (e.g. 100/s)",
           F "10:37: " RL "limits: algorithm \"leaky\" is not gcra or sliding_window");
    EXPECT(HEAD "        limits:\n"
                "          - { rate: 2000000/m, algorithm: sliding_window }\n",
           F "10:21: " RL "limits: sliding_window counts at most 1048575 requests per window "
             "(rate + burst); use gcra for more");
    /* key parts: each at its own position */
    EXPECT(HEAD "        limits:\n"
                "          - { rate: 1/s, key: [consumer, user, \"header:bad name\", \"jwt:\"] }\n",
           F "10:42: " RL "limits: key \"user\" is not one of consumer, ip, route, header:NAME, "
             "jwt:CLAIM",
           F "10:48: " RL "limits: invalid header name \"bad name\": byte 0x20 is not allowed (a "
             "header name is letters, digits and !#$%&'*+-.^_`|~)",
           F "10:67: " RL "limits: key \"jwt:\" is not one of consumer, ip, route, header:NAME, "
             "jwt:CLAIM");
    EXPECT(HEAD "        limits:\n"
                "          - { rate: 1/s, key: [ip, header:X-A, header:x-a] }\n",
           F "10:48: " RL "limits: key part \"header:x-a\" is given twice");
    EXPECT(HEAD "        limits:\n"
                "          - { rate: 1/s, key: [] }\n",
           F "10:31: " RL "limits: `key` takes 1 to 16 parts");
    /* names */
    EXPECT(HEAD "        limits:\n"
                "          - { name: a, rate: 1/s }\n"
                "          - { name: \"b c\", rate: 1/s }\n"
                "          - { name: a, rate: 1/m }\n",
           F "11:21: " RL "limits: name \"b c\" must be 1 to 64 letters, digits, '_', '.' or '-'",
           F "12:21: " RL "limits: name \"a\" is also limit #1's");
    /* the options */
    EXPECT(HEAD "        limits: [{ rate: 1/s }]\n"
                "        scope: cluster\n",
           F "10:16: " RL "scope: cluster needs `cluster.redis` at the top level");
    EXPECT(HEAD "        limits: [{ rate: 1/s }]\n"
                "        scope: global\n"
                "        on_store_failure: retry\n"
                "        store_timeout: 1m\n"
                "        headers: maybe\n",
           F "10:16: " RL "scope: \"global\" is not local or cluster",
           F "11:27: " RL "on_store_failure: \"retry\" is not allow, deny or local",
           F "12:24: " RL "store_timeout: \"1m\" is not a duration from 1ms to 10s",
           F "13:18: " RL "headers: expected true or false, got \"maybe\"");
    /* store_timeout 0 would time every decision out at once */
    EXPECT(HEAD "        limits: [{ rate: 1/s }]\n"
                "        store_timeout: 0ms\n",
           F "10:24: " RL "store_timeout: \"0ms\" is not a duration from 1ms to 10s");
    EXPECT(HEAD "        limits: [{ rate: 1/s }]\n"
                "        store_timeout: soon\n",
           F "10:24: " RL "store_timeout: \"soon\" is not a duration from 1ms to 10s");
    EXPECT(HEAD "        limits: [{ rate: 1/s, burst: 1 }]\n"
                "        limit: 3\n",
           F "10:9: unknown field `limit` in filter `rate_limit` (did you mean `limits`?)");
}

/* scope: cluster counts GCRA's interval in whole µs: rates faster than
 * 10,000/s per key (T < 100 µs) are refused at the rate's node; a
 * sliding window (no interval) and local limits are not bounded so. */
static void test_cluster_rate_bound(void)
{
    const char *cl = "cluster: { redis: \"redis://127.0.0.1:6379/0\" }\n";
    char yaml[1024];
    snprintf(yaml, sizeof(yaml),
             "%s" HEAD "        scope: cluster\n"
             "        limits:\n"
             "          - { rate: 10000/s }\n"
             "          - { key: route, rate: 10001/s }\n"
             "          - { key: consumer, rate: 700000/s, algorithm: sliding_window }\n"
             "          - { key: [consumer, ip], rate: 864000001/d }\n",
             cl);
    /* HEAD's lines move down by one: the cluster line comes first */
    EXPECT(yaml,
           F "13:33: " RL "limits: rate 10001/s is faster than scope: cluster counts exactly (at "
             "most 10000 a second per key with gcra)",
           F "15:42: " RL "limits: rate 864000001/d is faster than scope: cluster counts exactly "
             "(at most 10000 a second per key with gcra)");
    snprintf(yaml, sizeof(yaml),
             HEAD "        limits:\n"
                  "          - { rate: 1000000/s }\n");
    struct pt_diag d;
    struct pt_generation *g = load(yaml, &d);
    CHECK(g != NULL); /* local: exact in ns */
    pt_generation_free(g);
    pt_diag_free(&d);
    snprintf(yaml, sizeof(yaml),
             "%s" HEAD "        scope: cluster\n"
             "        limits:\n"
             "          - { rate: 10000/s }\n"
             "          - { key: consumer, rate: 1000000/m, algorithm: sliding_window }\n",
             cl);
    g = load(yaml, &d);
    CHECK(g != NULL);
    if (!g)
        pt_diag_print(&d, stderr);
    const struct rl_conf *c = conf_of(g);
    CHECK(c && c->cluster && c->needs_wall);
    pt_generation_free(g);
    pt_diag_free(&d);
}

static bool text_is(const char *const *vals, uint32_t n, const char *want)
{
    pt_slice v[4];
    for (uint32_t i = 0; i < n; i++)
        v[i] = (pt_slice){vals[i], strlen(vals[i])};
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    pt_slice out;
    bool ok = pt_rl_key_text(&a, v, n, &out) == 0 && slice_is(out, want);
    pt_arena_destroy(&a);
    return ok;
}

static void test_key_text(void)
{
    CHECK(text_is((const char *[]){"alice"}, 1, "alice"));
    CHECK(text_is((const char *[]){""}, 1, ""));
    CHECK(text_is((const char *[]){"::1"}, 1, "%3A%3A1"));
    CHECK(text_is((const char *[]){"a b%c\x7f\xc3\xa9"}, 1, "a%20b%25c%7F%C3%A9"));
    CHECK(text_is((const char *[]){"alice", "users"}, 2, "alice:users"));
    /* a part holding the separator never reads as two parts, nor two
     * parts as one */
    CHECK(text_is((const char *[]){"a:b"}, 1, "a%3Ab"));
    CHECK(text_is((const char *[]){"a", "b"}, 2, "a:b"));
    CHECK(text_is((const char *[]){"a:", ""}, 2, "a%3A:"));
    CHECK(text_is((const char *[]){"a", ":"}, 2, "a:%3A"));
    CHECK(text_is((const char *[]){"", ""}, 2, ":"));
    CHECK(text_is((const char *[]){"%3A"}, 1, "%253A"));
}

static void test_jwt_claim(void)
{
    /* {"sub":"alice","n":5,"ok":true,"o":{"a":1},"z":null} */
    static const char seg[] =
        "eyJzdWIiOiJhbGljZSIsIm4iOjUsIm9rIjp0cnVlLCJvIjp7ImEiOjF9LCJ6IjpudWxsfQ";
    pt_slice s = {seg, strlen(seg)};
    struct pt_arena arena, *a = &arena;
    pt_arena_init(a, 4096);
    CHECK(slice_is(pt_jwt_claim_string(a, s, "sub"), "alice"));
    CHECK(slice_is(pt_jwt_claim_string(a, s, "n"), "5"));
    CHECK(slice_is(pt_jwt_claim_string(a, s, "ok"), "true"));
    CHECK(slice_is(pt_jwt_claim_string(a, s, "o"), "{\"a\":1}"));
    CHECK(slice_is(pt_jwt_claim_string(a, s, "z"), ""));
    CHECK(slice_is(pt_jwt_claim_string(a, s, "missing"), ""));
    CHECK(slice_is(pt_jwt_claim_string(a, (pt_slice){"!!", 2}, "sub"), ""));
    CHECK(slice_is(pt_jwt_claim_string(a, (pt_slice){"", 0}, "sub"), ""));
    pt_arena_destroy(a);
}

int main(void)
{
    test_cluster_rate_bound();
    test_compiled_limits();
    test_errors_at_their_node();
    test_key_text();
    test_jwt_claim();
    remove("rl.yaml");
    return unit_report("rate_limit");
}
