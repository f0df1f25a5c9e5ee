/*
 * test_introspection.c — the introspection filter's pure parts (the
 * bearer token, form encoding, the client credential, reading an IdP's
 * answer, compile errors) and the shared answer cache's state machine
 * (single flight, freshness, failure, takeover, bounds). The filter's
 * request path with a real IdP is tests/e2e/test_introspection.py.
 */
#include "../../src/filters/introspection.c"

#include "unit.h"

#include <openssl/evp.h>

static bool slice_is(pt_slice s, const char *want)
{
    return s.len == strlen(want) && memcmp(s.p, want, s.len) == 0;
}

/* ------------------------------------------------------------------ */
/* The token.                                                          */

static enum token_result token_of(const char *value, pt_slice *tok)
{
    struct pt_hfield f[2] = {{.name = PT_SLICE("authorization"), .value = {value, strlen(value)}}};
    struct pt_headers h = {.f = f, .n = 1, .cap = 2};
    return bearer_token(&h, tok);
}

static void test_bearer_token(void)
{
    pt_slice t;
    CHECK(token_of("Bearer abc.DEF-1_2~3+4/5==", &t) == TOKEN_OK &&
          slice_is(t, "abc.DEF-1_2~3+4/5=="));
    CHECK(token_of("bearer   tok  ", &t) == TOKEN_OK && slice_is(t, "tok"));
    CHECK(token_of("Basic dXNlcjpwdw==", &t) == TOKEN_NONE); /* another filter's */
    CHECK(token_of("BearerX tok", &t) == TOKEN_NONE);
    CHECK(token_of("Bearer", &t) == TOKEN_BAD);
    CHECK(token_of("Bearer a b", &t) == TOKEN_BAD);
    CHECK(token_of("Bearer =abc", &t) == TOKEN_BAD);
    CHECK(token_of("Bearer ab=c", &t) == TOKEN_BAD);
    CHECK(token_of("Bearer a\"b", &t) == TOKEN_BAD);
    static char huge[INTRO_MAX_TOKEN + 16];
    memcpy(huge, "Bearer ", 7);
    memset(huge + 7, 'x', INTRO_MAX_TOKEN + 1);
    CHECK(token_of(huge, &t) == TOKEN_BAD);
    huge[7 + INTRO_MAX_TOKEN] = '\0';
    CHECK(token_of(huge, &t) == TOKEN_OK && t.len == INTRO_MAX_TOKEN);

    struct pt_hfield two[2] = {{.name = PT_SLICE("Authorization"), .value = PT_SLICE("Bearer a")},
                               {.name = PT_SLICE("authorization"), .value = PT_SLICE("Bearer b")}};
    struct pt_headers h = {.f = two, .n = 2, .cap = 2};
    CHECK(bearer_token(&h, &t) == TOKEN_BAD);
    two[1].dead = true; /* removed by an earlier filter */
    CHECK(bearer_token(&h, &t) == TOKEN_OK && slice_is(t, "a"));
    h.n = 0;
    CHECK(bearer_token(&h, &t) == TOKEN_NONE);
}

/* ------------------------------------------------------------------ */
/* Form encoding and the client credential.                            */

static void test_form_encode(void)
{
    char out[128];
    const char *in = "a b&c=d+\xc3\xa9/~*-._Z9";
    size_t n = form_encode(out, (pt_slice){in, strlen(in)});
    out[n] = '\0';
    CHECK_STR(out, "a+b%26c%3Dd%2B%C3%A9%2F%7E*-._Z9");
}

static void test_credentials(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    struct intro_conf c = {.client_id = "gw:edge", .client_secret = "s3cr&t+pa ss"};
    CHECK(basic_credential(&c, &a) == 0);
    const char *raw = "gw%3Aedge:s3cr%26t%2Bpa+ss"; /* RFC 6749 §2.3.1 */
    unsigned char want[128];
    int n = EVP_EncodeBlock(want, (const unsigned char *)raw, (int)strlen(raw));
    CHECK(c.basic.len == 6 + (size_t)n && memcmp(c.basic.p, "Basic ", 6) == 0 &&
          memcmp(c.basic.p + 6, want, (size_t)n) == 0);
    CHECK(post_credential(&c, &a) == 0);
    CHECK(slice_is(c.post_suffix, "&client_id=gw%3Aedge&client_secret=s3cr%26t%2Bpa+ss"));
    pt_arena_release(&a);
}

/* ------------------------------------------------------------------ */
/* Reading the IdP's answer.                                           */

#define NOW_UNIX 1800000000.5
#define NOW_MS 5000000

static int parse(const struct intro_conf *c, const char *body, struct pt_arena *a,
                 struct pt_icache_answer *out)
{
    const char *why = NULL;
    int rc = parse_answer(c, (pt_slice){body, strlen(body)}, NOW_UNIX, NOW_MS, a, out, &why);
    CHECK(rc == 0 || why != NULL);
    return rc;
}

static void test_parse_answer(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    struct intro_conf def = {0};
    struct pt_icache_answer ans;

    CHECK(parse(&def,
                "{\"active\":true,\"sub\":\"alice\",\"scope\":\" read  write \","
                "\"exp\":1800000010}",
                &a, &ans) == 0);
    CHECK(ans.active && slice_is(ans.consumer, "alice") && ans.ngroups == 2);
    CHECK(ans.ngroups == 2 && slice_is(ans.groups[0], "read") && slice_is(ans.groups[1], "write"));
    CHECK_EQ_INT(ans.exp_ms, NOW_MS + 9500);

    CHECK(parse(&def, "{\"active\":false,\"sub\":\"alice\"}", &a, &ans) == 0 && !ans.active);
    /* exp in the past, or now: inactive whatever `active` says */
    CHECK(parse(&def, "{\"active\":true,\"sub\":\"a\",\"exp\":1800000000}", &a, &ans) == 0 &&
          !ans.active && ans.exp_ms == 0);
    /* the consumer: sub, else username, else client_id; unusable values skipped */
    CHECK(parse(&def, "{\"active\":true,\"username\":\"bob\",\"client_id\":\"c\"}", &a, &ans) ==
              0 &&
          slice_is(ans.consumer, "bob"));
    CHECK(parse(&def, "{\"active\":true,\"sub\":\"x\\r\\nX-Evil: 1\",\"client_id\":\"c\"}", &a,
                &ans) == 0 &&
          slice_is(ans.consumer, "c"));
    CHECK(parse(&def, "{\"active\":true,\"sub\":42}", &a, &ans) == 0 && !ans.active);
    CHECK(parse(&def, "{\"active\":true}", &a, &ans) == 0 && !ans.active); /* for whom? */
    /* not answers */
    CHECK(parse(&def, "", &a, &ans) < 0);
    CHECK(parse(&def, "[true]", &a, &ans) < 0);
    CHECK(parse(&def, "{\"active\":\"true\",\"sub\":\"a\"}", &a, &ans) < 0);
    CHECK(parse(&def, "{\"sub\":\"a\"}", &a, &ans) < 0);
    CHECK(parse(&def, "{\"active\":true,\"active\":false}", &a, &ans) < 0);
    CHECK(parse(&def, "{\"active\":true,", &a, &ans) < 0);

    struct intro_conf cf = {.consumer_field = "email", .groups_field = "roles"};
    CHECK(parse(&cf,
                "{\"active\":true,\"sub\":\"s\",\"email\":\"e@x\",\"scope\":\"no\","
                "\"roles\":[\"admin\",\"a,b\",\"\",7,\"ops\"]}",
                &a, &ans) == 0);
    CHECK(ans.active && slice_is(ans.consumer, "e@x") && ans.ngroups == 2 &&
          slice_is(ans.groups[0], "admin") && slice_is(ans.groups[1], "ops"));
    CHECK(parse(&cf, "{\"active\":true,\"sub\":\"s\"}", &a, &ans) == 0 && !ans.active);
    CHECK(parse(&cf, "{\"active\":true,\"email\":\"e\",\"roles\":\"r1 r2\"}", &a, &ans) == 0 &&
          ans.ngroups == 2 && slice_is(ans.groups[1], "r2"));
    /* more groups than kept: the first PT_ICACHE_MAX_GROUPS */
    char big[8192] = "{\"active\":true,\"sub\":\"s\",\"scope\":\"";
    for (int i = 0; i < 100; i++)
        snprintf(big + strlen(big), sizeof(big) - strlen(big), "g%d ", i);
    strcat(big, "\"}");
    CHECK(parse(&def, big, &a, &ans) == 0 && ans.ngroups == PT_ICACHE_MAX_GROUPS);
    pt_arena_release(&a);
}

/* ------------------------------------------------------------------ */
/* Compile.                                                            */

static char errbuf[2048];

static void collect(struct pt_filter_errs *e, const char *field, const char *entry, bool in_value,
                    const char *msg)
{
    size_t l = strlen(errbuf);
    snprintf(errbuf + l, sizeof(errbuf) - l, "%s: %s\n", field ? field : "-", msg);
}

static int compile_conf(struct intro_conf *c, struct pt_arena *a)
{
    struct pt_filter_errs errs = {collect, false};
    errbuf[0] = '\0';
    return intro_compile(c, a, &errs);
}

static void test_compile(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    struct intro_conf c = {
        .endpoint = "http://127.0.0.1:1/i", .client_id = "gw", .client_secret = "s"};
    CHECK(compile_conf(&c, &a) == 0);
    CHECK_EQ_INT(c.timeout_ms, 1000);
    CHECK_EQ_INT(c.ttl.positive_ms, 60000);
    CHECK_EQ_INT(c.ttl.negative_ms, 5000);
    CHECK_EQ_INT(c.ttl.stale_ms, 60000);
    CHECK(!c.post_auth && c.basic.len > 6 && c.post_suffix.len == 0);
    uint8_t ns1[PT_ICACHE_KEY_LEN];
    memcpy(ns1, c.ns, sizeof(ns1));

    /* the secret is not part of the namespace; the client is */
    struct intro_conf c2 = {.endpoint = "http://127.0.0.1:1/i",
                            .client_id = "gw",
                            .client_secret = "rotated",
                            .stale_if_error = "off",
                            .auth_method = "client_secret_post"};
    CHECK(compile_conf(&c2, &a) == 0);
    CHECK(memcmp(ns1, c2.ns, sizeof(ns1)) == 0);
    CHECK(c2.post_auth && c2.basic.len == 0 && c2.ttl.stale_ms == 0);
    struct intro_conf c3 = {.endpoint = "http://127.0.0.1:1/i",
                            .client_id = "other",
                            .client_secret = "s",
                            .stale_if_error = "30s"};
    CHECK(compile_conf(&c3, &a) == 0);
    CHECK(memcmp(ns1, c3.ns, sizeof(ns1)) != 0 && c3.ttl.stale_ms == 30000);

    struct intro_conf bad = {.auth_method = "private_key_jwt",
                             .stale_if_error = "soon",
                             .client_id = "",
                             .consumer_field = ""};
    CHECK(compile_conf(&bad, &a) < 0);
    CHECK(strstr(errbuf, "`endpoint` is required") != NULL);
    CHECK(strstr(errbuf, "client_id: `client_id` is required") != NULL);
    CHECK(strstr(errbuf, "`client_secret` is required") != NULL);
    CHECK(strstr(errbuf, "auth_method: auth_method: expected") != NULL);
    CHECK(strstr(errbuf, "stale_if_error: stale_if_error: expected a duration") != NULL);
    CHECK(strstr(errbuf, "consumer_field: consumer_field: empty") != NULL);
    pt_arena_release(&a);
}

/* ------------------------------------------------------------------ */
/* The cache.                                                          */

static void key_of(uint8_t k[PT_ICACHE_KEY_LEN], uint32_t i)
{
    char s[32];
    snprintf(s, sizeof(s), "key-%u", i);
    SHA256((const unsigned char *)s, strlen(s), k);
}

static const struct pt_icache_ttl TTL = {
    .positive_ms = 1000, .negative_ms = 100, .stale_ms = 500, .flight_timeout_ms = 300};

static void test_cache_single_flight(void)
{
    pt_icache_clear();
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    uint8_t k[PT_ICACHE_KEY_LEN];
    key_of(k, 1);
    struct pt_icache_answer out;
    uint64_t lead, w1, w2;

    CHECK(pt_icache_lookup(k, 100, &TTL, &a, &out, &lead) == PT_ICACHE_LEAD);
    CHECK(pt_icache_lookup(k, 101, &TTL, &a, &out, &w1) == PT_ICACHE_WAIT && w1 == lead);
    CHECK(pt_icache_lookup(k, 102, &TTL, &a, &out, &w2) == PT_ICACHE_WAIT && w2 == lead);
    /* Another worker's cached clock may be behind the leader's start: it
     * waits too (the unsigned difference must not wrap into "timed out"). */
    CHECK(pt_icache_lookup(k, 90, &TTL, &a, &out, &w2) == PT_ICACHE_WAIT && w2 == lead);
    CHECK(pt_icache_await(k, 110, &TTL, &a, &out, &w1) == PT_ICACHE_WAIT);

    pt_slice groups[] = {PT_SLICE("g1"), PT_SLICE("g2")};
    struct pt_icache_answer ans = {.active = true,
                                   .consumer = PT_SLICE("alice"),
                                   .groups = groups,
                                   .ngroups = 2,
                                   .exp_ms = 600};
    pt_icache_store(k, lead, 120, &ans);
    CHECK(pt_icache_await(k, 125, &TTL, &a, &out, &w1) == PT_ICACHE_HIT);
    CHECK(out.active && slice_is(out.consumer, "alice") && out.ngroups == 2 &&
          slice_is(out.groups[1], "g2"));
    CHECK(pt_icache_lookup(k, 599, &TTL, &a, &out, &w2) == PT_ICACHE_HIT);
    /* exp (600) comes before cache_ttl (120 + 1000) */
    CHECK(pt_icache_lookup(k, 600, &TTL, &a, &out, &lead) == PT_ICACHE_LEAD);

    /* the IdP fails: waiters fail with it (past exp: nothing stale to give) */
    CHECK(pt_icache_lookup(k, 601, &TTL, &a, &out, &w1) == PT_ICACHE_WAIT);
    CHECK(pt_icache_fail(k, lead, 610, &TTL, &a, &out) == PT_ICACHE_FAILED);
    CHECK(pt_icache_await(k, 615, &TTL, &a, &out, &w1) == PT_ICACHE_FAILED);
    /* the next request asks again */
    CHECK(pt_icache_lookup(k, 620, &TTL, &a, &out, &lead) == PT_ICACHE_LEAD);

    /* the leader goes away: a waiter takes over with a new flight */
    CHECK(pt_icache_lookup(k, 621, &TTL, &a, &out, &w1) == PT_ICACHE_WAIT);
    pt_icache_abandon(k, lead);
    uint64_t old = w1;
    CHECK(pt_icache_await(k, 622, &TTL, &a, &out, &w1) == PT_ICACHE_LEAD && w1 != old);
    /* a flight older than flight_timeout counts as lost too */
    CHECK(pt_icache_lookup(k, 623, &TTL, &a, &out, &w2) == PT_ICACHE_WAIT && w2 == w1);
    CHECK(pt_icache_await(k, 622 + 300, &TTL, &a, &out, &w2) == PT_ICACHE_LEAD && w2 != w1);
    /* the late leader's answer is still kept */
    struct pt_icache_answer neg = {.active = false};
    pt_icache_store(k, w1, 930, &neg);
    CHECK(pt_icache_await(k, 931, &TTL, &a, &out, &w2) == PT_ICACHE_HIT && !out.active);
    pt_arena_release(&a);
}

static void test_cache_freshness_and_stale(void)
{
    pt_icache_clear();
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    uint8_t k[PT_ICACHE_KEY_LEN], k2[PT_ICACHE_KEY_LEN];
    key_of(k, 2);
    key_of(k2, 3);
    struct pt_icache_answer out, ans = {.active = true, .consumer = PT_SLICE("bob")};
    uint64_t seq, w;

    CHECK(pt_icache_lookup(k, 0, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    pt_icache_store(k, seq, 0, &ans);
    CHECK(pt_icache_lookup(k, 999, &TTL, &a, &out, &seq) == PT_ICACHE_HIT);
    CHECK(pt_icache_lookup(k, 1000, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    CHECK(pt_icache_lookup(k, 1001, &TTL, &a, &out, &w) == PT_ICACHE_WAIT);
    /* the IdP fails within stale_if_error: the old answer, for both */
    CHECK(pt_icache_fail(k, seq, 1200, &TTL, &a, &out) == PT_ICACHE_STALE &&
          slice_is(out.consumer, "bob"));
    CHECK(pt_icache_await(k, 1201, &TTL, &a, &out, &w) == PT_ICACHE_STALE);
    CHECK(pt_icache_lookup(k, 1500, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    CHECK(pt_icache_fail(k, seq, 1500, &TTL, &a, &out) == PT_ICACHE_FAILED); /* past 1000 + 500 */

    /* negative answers: negative_ms */
    CHECK(pt_icache_lookup(k2, 0, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    struct pt_icache_answer neg = {.active = false};
    pt_icache_store(k2, seq, 0, &neg);
    CHECK(pt_icache_lookup(k2, 99, &TTL, &a, &out, &seq) == PT_ICACHE_HIT && !out.active);
    CHECK(pt_icache_lookup(k2, 100, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    /* a TTL change (a reload) applies to answers already stored */
    struct pt_icache_ttl longer = TTL;
    longer.negative_ms = 10000;
    CHECK(pt_icache_lookup(k2, 101, &longer, &a, &out, &seq) == PT_ICACHE_HIT);

    /* an answer too big to keep: the next request asks again */
    pt_slice big[PT_ICACHE_MAX_GROUPS];
    static char gbuf[200];
    memset(gbuf, 'g', sizeof(gbuf));
    for (uint32_t i = 0; i < PT_ICACHE_MAX_GROUPS; i++)
        big[i] = (pt_slice){gbuf, sizeof(gbuf)};
    struct pt_icache_answer huge = {
        .active = true, .consumer = PT_SLICE("c"), .groups = big, .ngroups = PT_ICACHE_MAX_GROUPS};
    uint8_t k3[PT_ICACHE_KEY_LEN];
    key_of(k3, 4);
    CHECK(pt_icache_lookup(k3, 0, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    pt_icache_store(k3, seq, 0, &huge);
    CHECK(pt_icache_lookup(k3, 1, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD);
    pt_arena_release(&a);
}

static void test_cache_bounds(void)
{
    pt_icache_clear();
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    static char cbuf[3000];
    memset(cbuf, 'c', sizeof(cbuf));
    struct pt_icache_answer out, ans = {.active = true, .consumer = {cbuf, sizeof(cbuf)}};
    uint64_t seq, entries, bytes;
    for (uint32_t i = 0; i < 20000; i++) { /* ~60 MB offered */
        uint8_t k[PT_ICACHE_KEY_LEN];
        key_of(k, 1000 + i);
        if (pt_icache_lookup(k, i, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD)
            pt_icache_store(k, seq, i, &ans);
    }
    pt_icache_usage(&entries, &bytes);
    CHECK_MSG(bytes <= PT_ICACHE_MAX_BYTES, "%llu bytes", (unsigned long long)bytes);
    CHECK(entries > 1000 && entries < 20000);
    ans.consumer = PT_SLICE("small");
    for (uint32_t i = 0; i < PT_ICACHE_MAX_ENTRIES + 5000; i++) {
        uint8_t k[PT_ICACHE_KEY_LEN];
        key_of(k, 100000 + i);
        if (pt_icache_lookup(k, i, &TTL, &a, &out, &seq) == PT_ICACHE_LEAD)
            pt_icache_store(k, seq, i, &ans);
        pt_arena_reset(&a);
    }
    pt_icache_usage(&entries, &bytes);
    CHECK_MSG(entries <= PT_ICACHE_MAX_ENTRIES, "%llu entries", (unsigned long long)entries);
    pt_icache_clear();
    pt_icache_usage(&entries, &bytes);
    CHECK(entries == 0 && bytes == 0);
    pt_arena_release(&a);
}

int main(void)
{
    test_bearer_token();
    test_form_encode();
    test_credentials();
    test_parse_answer();
    test_compile();
    test_cache_single_flight();
    test_cache_freshness_and_stale();
    test_cache_bounds();
    return unit_report("introspection");
}
