/*
 * test_consumers.c — the API-key digest table (filters/consumers.c), the
 * `consumers:` loader, and key_auth / acl run directly on a request built
 * here (hide_credentials' query rewrite byte for byte, the identity, the
 * challenges of either-of auth). Also guards that every auth filter in the
 * registry is flagged as one, so its routes lose client X-Consumer-*.
 */
#include "control/config.h"
#include "filters/auth.h"
#include "filters/consumers.h"
#include "filters/registry.h"
#include "unit.h"

#include <unistd.h>

#include <errno.h>
#include <stdio.h>

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < PT_KEY_DIGEST_LEN; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void test_digest(void)
{
    uint8_t d[PT_KEY_DIGEST_LEN];
    char h[2 * PT_KEY_DIGEST_LEN + 1];
    /* FIPS 180-2 appendix B.1 */
    pt_key_digest("abc", 3, d);
    hex(d, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    pt_key_digest("", 0, d);
    hex(d, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    uint8_t p[PT_KEY_DIGEST_LEN];
    CHECK_EQ_INT(pt_key_digest_parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb41"
                                     "0ff61f20015ad",
                                     p),
                 1);
    pt_key_digest("abc", 3, d);
    CHECK(memcmp(p, d, sizeof(d)) == 0);
    CHECK_EQ_INT(pt_key_digest_parse("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB41"
                                     "0FF61F20015AD",
                                     p),
                 1);
    CHECK(memcmp(p, d, sizeof(d)) == 0);
    CHECK_EQ_INT(pt_key_digest_parse("k-123", p), 0);
    CHECK_EQ_INT(pt_key_digest_parse("SHA256:ab", p), 0); /* a raw key that looks alike */
    CHECK_EQ_INT(pt_key_digest_parse("sha256:", p), -1);
    CHECK_EQ_INT(pt_key_digest_parse("sha256:abc", p), -1);
    CHECK_EQ_INT(pt_key_digest_parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb41"
                                     "0ff61f20015ag",
                                     p),
                 -1);
    CHECK_EQ_INT(pt_key_digest_parse("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb41"
                                     "0ff61f20015ad0",
                                     p),
                 -1);
}

static void test_table(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct pt_consumer cons[10] = {0};
    struct pt_consumers t = {.v = cons, .n = 10};
    enum { NKEYS = 5000 };
    CHECK_EQ_INT(pt_consumers_init_keys(&t, &a, NKEYS), 0);
    CHECK(t.mask + 1 >= 2 * NKEYS && ((t.mask + 1) & t.mask) == 0);
    char key[32];
    uint8_t d[PT_KEY_DIGEST_LEN];
    int added = 0;
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        pt_key_digest(key, strlen(key), d);
        added += pt_consumers_add_key(&t, &cons[i % 10], d, NULL) == 0;
    }
    CHECK_EQ_INT(added, NKEYS);
    CHECK_EQ_INT(t.nkeys, NKEYS);
    int found = 0;
    for (int i = 0; i < NKEYS; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        pt_key_digest(key, strlen(key), d);
        found += pt_consumers_find(&t, d) == &cons[i % 10];
    }
    CHECK_EQ_INT(found, NKEYS);
    int misses = 0;
    for (int i = NKEYS; i < 2 * NKEYS; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        pt_key_digest(key, strlen(key), d);
        misses += pt_consumers_find(&t, d) == NULL;
    }
    CHECK_EQ_INT(misses, NKEYS);

    /* The same digest twice names its owner; nothing changes. */
    const struct pt_consumer *owner = NULL;
    pt_key_digest("key-7", 5, d);
    CHECK_EQ_INT(pt_consumers_add_key(&t, &cons[3], d, &owner), -EEXIST);
    CHECK(owner == &cons[7]);
    CHECK(pt_consumers_find(&t, d) == &cons[7]);
    CHECK_EQ_INT(t.nkeys, NKEYS);

    /* Never more than half full: a miss always ends at an empty slot. */
    int full = 0;
    for (int i = 0; i < 4 * NKEYS && full == 0; i++) {
        snprintf(key, sizeof(key), "more-%d", i);
        pt_key_digest(key, strlen(key), d);
        full = pt_consumers_add_key(&t, &cons[0], d, NULL) == -ENOSPC;
    }
    CHECK(full);
    CHECK(t.nkeys <= (t.mask + 1) / 2);
    pt_key_digest("absent", 6, d);
    CHECK(pt_consumers_find(&t, d) == NULL);

    /* No table, an empty one. */
    CHECK(pt_consumers_find(NULL, d) == NULL);
    struct pt_consumers empty = {0};
    CHECK_EQ_INT(pt_consumers_init_keys(&empty, &a, 0), 0);
    CHECK(pt_consumers_find(&empty, d) == NULL);
    CHECK_EQ_INT(pt_consumers_add_key(&empty, &cons[0], d, NULL), -ENOSPC);
    pt_arena_destroy(&a);
}

/* ---- through the loader ---- */

static const struct pt_filter_inst *inst_of(const struct pt_generation *g, const char *route,
                                            const char *filter)
{
    for (uint32_t i = 0; i < g->nroutes; i++) {
        if (strcmp(g->routes[i].name, route) != 0)
            continue;
        for (uint32_t k = 0; k < g->routes[i].chain.n_all; k++)
            if (strcmp(g->routes[i].chain.all[k].def->name, filter) == 0)
                return &g->routes[i].chain.all[k];
    }
    return NULL;
}

static const struct pt_consumer *lookup(const struct pt_generation *g, const char *key)
{
    uint8_t d[PT_KEY_DIGEST_LEN];
    pt_key_digest(key, strlen(key), d);
    return pt_consumers_find(&g->consumers, d);
}

static void test_example(void)
{
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_generation *g = pt_config_load("examples/auth.yaml", 1, &diag);
    pt_diag_print(&diag, stderr);
    CHECK_MSG(g != NULL, "examples/auth.yaml should load");
    if (g) {
        CHECK_EQ_INT(g->consumers.n, 4);
        CHECK_EQ_INT(g->consumers.nkeys, 4);
        const struct pt_consumer *c = lookup(g, "k-acme-456"); /* written as sha256: */
        CHECK(c && pt_slice_eq_cstr(c->name, "partner-acme"));
        c = lookup(g, "k-ops-000");
        CHECK(c && c->ngroups == 2 && pt_slice_eq_cstr(c->groups[1], "mobile"));
        CHECK(lookup(g, "k-nope") == NULL);
        CHECK(pt_consumers_by_name(&g->consumers, PT_SLICE("old-partner")) != NULL);
        for (uint32_t i = 0; i < g->nroutes; i++)
            CHECK(g->routes[i].chain.strips_consumer);
        CHECK(inst_of(g, "either", "jwt") && inst_of(g, "either", "key_auth") &&
              inst_of(g, "either", "acl"));
    }
    pt_generation_free(g);
    pt_diag_free(&diag);
}

struct req {
    struct pt_arena arena;
    struct pt_headers h, resp;
    struct pt_identity id;
    struct pt_filter_ctx ctx;
};

static void req_init(struct req *r, const struct pt_generation *g, const char *query)
{
    memset(r, 0, sizeof(*r));
    pt_arena_init(&r->arena, 0);
    r->ctx.arena = &r->arena;
    r->ctx.req_headers = &r->h;
    r->ctx.resp_headers = &r->resp;
    r->ctx.query = (pt_slice){query, strlen(query)};
    r->ctx.identity = &r->id;
    r->ctx.consumers = &g->consumers;
}

static int run(struct req *r, const struct pt_filter_inst *f)
{
    return f->def->on_request(&r->ctx, f->conf, NULL);
}

static const char *field(struct req *r, struct pt_headers *h, const char *name)
{
    const struct pt_hfield *f = pt_headers_find(h, (pt_slice){name, strlen(name)});
    return f ? pt_arena_strndup(&r->arena, f->value.p, f->value.len) : NULL;
}

#define BASE                                                                                       \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\n"                                              \
    "upstreams: { app: { targets: [\"127.0.0.1:9001\"] } }\n"                                      \
    "consumers:\n"                                                                                 \
    "  - { name: alice, groups: [mobile, mobile, beta], api_keys: [\"k a+b\"] }\n"                 \
    "  - { name: bob, api_keys: [k-bob] }\n"

static struct pt_generation *load(const char *yaml)
{
    unit_write_file("t.yaml", yaml);
    struct pt_diag d;
    pt_diag_init(&d);
    struct pt_generation *g = pt_config_load("t.yaml", 1, &d);
    unlink("t.yaml"); /* the suite runs in the checkout: leave nothing behind */
    pt_diag_print(&d, stderr);
    pt_diag_free(&d);
    return g;
}

static void test_key_auth_query(void)
{
    struct pt_generation *g =
        load(BASE "routes:\n"
                  "  - name: r\n    match: { path_prefix: / }\n    upstream: app\n"
                  "    filters:\n"
                  "      key_auth: { query: api_key, hide_credentials: true }\n"
                  "      acl: { allow: [beta] }\n");
    CHECK(g != NULL);
    if (!g)
        return;
    const struct pt_filter_inst *ka = inst_of(g, "r", "key_auth"), *acl = inst_of(g, "r", "acl");
    CHECK(ka && acl && g->routes[0].chain.strips_consumer);
    CHECK(ka->def->priority > acl->def->priority);

    static const struct {
        const char *query, *after;
        int result;
    } cases[] = {
        {"api_key=k+a%2Bb", "", PT_FILTER_CONTINUE},
        {"x=1&api_key=k%20a%2bb&y=%26&z", "x=1&y=%26&z", PT_FILTER_CONTINUE},
        {"&&api_key=k+a%2Bb&", "&&", PT_FILTER_CONTINUE},     /* empty segments stay */
        {"api%5Fkey=k+a%2Bb&a=b", "a=b", PT_FILTER_CONTINUE}, /* an encoded name too */
        {"api_keyx=k-bob&api_key=k-bob", "api_keyx=k-bob", PT_FILTER_CONTINUE},
        {"api_key=k-nobody&x=1", "api_key=k-nobody&x=1", PT_FILTER_RESPOND},
        {"api_key=k-bob&api_key=k-bob", "api_key=k-bob&api_key=k-bob", PT_FILTER_RESPOND},
        {"api_key=%4", "api_key=%4", PT_FILTER_RESPOND},
        {"api_key", "api_key", PT_FILTER_RESPOND},     /* present, empty */
        {"x=api_key", "x=api_key", PT_FILTER_RESPOND}, /* none: not optional */
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        struct req r;
        req_init(&r, g, cases[i].query);
        int rc = run(&r, ka);
        CHECK_MSG(rc == cases[i].result, "%s: %d", cases[i].query, rc);
        CHECK_MSG(r.ctx.query.len == strlen(cases[i].after) &&
                      memcmp(r.ctx.query.p, cases[i].after, r.ctx.query.len) == 0,
                  "%s → \"%.*s\"", cases[i].query, (int)r.ctx.query.len, r.ctx.query.p);
        if (rc == PT_FILTER_CONTINUE) {
            const char *who = field(&r, &r.h, "X-Consumer-Name");
            CHECK(who && (strcmp(who, "alice") == 0 || strcmp(who, "bob") == 0));
            CHECK_EQ_INT(run(&r, acl),
                         strcmp(who, "alice") == 0 ? PT_FILTER_CONTINUE : PT_FILTER_RESPOND);
        } else {
            CHECK_EQ_INT(r.ctx.respond_status, 401);
            CHECK(r.id.consumer.len == 0);
        }
        pt_arena_destroy(&r.arena);
    }

    /* Groups deduplicated, in order; the header is removed when hidden. */
    struct req r;
    req_init(&r, g, "");
    pt_headers_add(&r.h, &r.arena, PT_SLICE("x-api-key"), PT_SLICE("k a+b"));
    CHECK_EQ_INT(run(&r, ka), PT_FILTER_CONTINUE);
    CHECK_STR(field(&r, &r.h, "X-Consumer-Groups"), "mobile,beta");
    CHECK(field(&r, &r.h, "X-API-Key") == NULL);
    CHECK_STR(r.id.source, "key_auth");
    pt_arena_destroy(&r.arena);
    pt_generation_free(g);
}

static void test_optional_and_challenges(void)
{
    struct pt_generation *g =
        load(BASE "routes:\n"
                  "  - name: r\n    match: { path_prefix: / }\n    upstream: app\n"
                  "    filters: { key_auth: { optional: true }, acl: { deny: [x] } }\n");
    CHECK(g != NULL);
    if (!g)
        return;
    const struct pt_filter_inst *ka = inst_of(g, "r", "key_auth"), *acl = inst_of(g, "r", "acl");
    struct req r;
    req_init(&r, g, "");
    CHECK_EQ_INT(run(&r, ka), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(r.id.nchallenges, 1);
    CHECK_EQ_INT(pt_auth_pass_anonymous(&r.ctx, "ApiKey"), PT_FILTER_CONTINUE); /* no repeat */
    CHECK_EQ_INT(pt_auth_pass_anonymous(&r.ctx, "Bearer"), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(run(&r, acl), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    int n = 0;
    for (uint32_t i = 0; i < r.resp.n; i++)
        n += pt_slice_ieq_cstr(r.resp.f[i].name, "WWW-Authenticate");
    CHECK_EQ_INT(n, 2);
    CHECK_STR(field(&r, &r.resp, "WWW-Authenticate"), "ApiKey realm=\"portico\"");
    pt_arena_destroy(&r.arena);

    /* A caller identified before keeps its identity; the key is still checked. */
    req_init(&r, g, "");
    r.id.consumer = PT_SLICE("from-jwt");
    pt_headers_add(&r.h, &r.arena, PT_SLICE("X-API-Key"), PT_SLICE("k-bob"));
    CHECK_EQ_INT(run(&r, ka), PT_FILTER_CONTINUE);
    CHECK(pt_slice_eq_cstr(r.id.consumer, "from-jwt"));
    pt_headers_set(&r.h, &r.arena, PT_SLICE("X-API-Key"), PT_SLICE("k-wrong"));
    CHECK_EQ_INT(run(&r, ka), PT_FILTER_RESPOND);
    pt_arena_destroy(&r.arena);
    pt_generation_free(g);
}

/* Every filter that sets or reads the identity is flagged, so a route
 * with it loses client-sent X-Consumer-* fields (exchange_filters.c). */
static void test_auth_filters_are_flagged(void)
{
    static const char *const auth[] = {"ext_auth",  "jwt", "key_auth", "introspection",
                                       "mtls_auth", "acl", NULL};
    int seen = 0;
    for (size_t i = 0; i < pt_filter_registry_len; i++) {
        const struct pt_filter_def *d = pt_filter_registry[i];
        bool is_auth = false;
        for (size_t k = 0; auth[k]; k++)
            is_auth |= strcmp(d->name, auth[k]) == 0;
        CHECK_MSG(d->auth == is_auth, "filter %s: auth flag %d", d->name, d->auth);
        seen += is_auth;
    }
    CHECK(seen >= 3);
    /* acl runs after every authenticating filter. */
    const struct pt_filter_def *acl = pt_filter_find("acl");
    for (size_t i = 0; acl && i < pt_filter_registry_len; i++)
        if (pt_filter_registry[i]->auth && pt_filter_registry[i] != acl)
            CHECK_MSG(pt_filter_registry[i]->priority > acl->priority, "%s",
                      pt_filter_registry[i]->name);
}

int main(void)
{
    test_digest();
    test_table();
    test_example();
    test_key_auth_query();
    test_optional_and_challenges();
    test_auth_filters_are_flagged();
    return unit_report("consumers");
}
