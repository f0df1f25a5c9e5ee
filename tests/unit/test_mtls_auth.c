/*
 * test_mtls_auth.c — the mtls_auth filter run directly on a request built
 * here, over a TLS session whose certificate facts are set by the test
 * (the e2e suite test_mtls_auth.py makes real handshakes): which name becomes
 * the consumer, the groups of its consumers entry, every refusal, the
 * forwarded subject / fingerprint / XFCC fields and the removal of
 * client-sent copies; the consumers' name index; config errors.
 */
#include "control/config.h"
#include "core/tls.h"
#include "filters/auth.h"
#include "filters/consumers.h"
#include "filters/registry.h"
#include "unit.h"

#include <unistd.h>

#include <stdio.h>

#define FP "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static struct pt_generation *load(const char *yaml, struct pt_diag *d)
{
    unit_write_file("t.yaml", yaml);
    pt_diag_init(d);
    struct pt_generation *g = pt_config_load("t.yaml", 1, d);
    unlink("t.yaml"); /* the suite runs in the checkout: leave nothing behind */
    return g;
}

#define BASE                                                                                       \
    "listeners: [{ address: \"127.0.0.1:18080\" }]\n"                                              \
    "upstreams: { app: { targets: [\"127.0.0.1:9001\"] } }\n"                                      \
    "consumers:\n"                                                                                 \
    "  - { name: alice, groups: [ops, beta] }\n"                                                   \
    "  - { name: web.example.org, groups: [web] }\n"                                               \
    "  - { name: api, groups: [api] }\n"                                                           \
    "routes:\n"

#define ROUTE(name, filters)                                                                       \
    "  - name: " name "\n    match: { path_prefix: /" name " }\n    upstream: app\n"               \
    "    filters: " filters "\n"

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

struct req {
    struct pt_arena arena;
    struct pt_headers h, resp;
    struct pt_identity id;
    struct pt_filter_ctx ctx;
    struct pt_tls tls;
    struct pt_tls_info info;
};

/* A request on a TLS connection whose verified certificate is `cn`, with
 * the DNS and URI SANs given (NULL-terminated). */
static void req_init(struct req *r, const struct pt_generation *g, const char *cn,
                     const char *const *dns, const char *const *uri)
{
    memset(r, 0, sizeof(*r));
    pt_arena_init(&r->arena, 0);
    r->ctx.arena = &r->arena;
    r->ctx.req_headers = &r->h;
    r->ctx.resp_headers = &r->resp;
    r->ctx.identity = &r->id;
    r->ctx.consumers = &g->consumers;
    r->ctx.tls = &r->tls;
    r->tls.handshake_done = true;
    r->tls.info = &r->info; /* what pt_tls_get_info extracted */
    r->info.sni = "api.example.org";
    r->info.cert_present = r->info.cert_verified = true;
    r->info.subject = "CN=alice,O=Example";
    r->info.subject_cn = cn;
    r->info.fingerprint = FP;
    for (; dns && *dns; dns++)
        r->info.san_dns[r->info.nsan_dns++] = *dns;
    for (; uri && *uri; uri++)
        r->info.san_uri[r->info.nsan_uri++] = *uri;
    pt_headers_add(&r->h, &r->arena, PT_SLICE("X-Client-Subject"), PT_SLICE("CN=forged"));
    pt_headers_add(&r->h, &r->arena, PT_SLICE("X-Client-Fp"), PT_SLICE("forged"));
    pt_headers_add(&r->h, &r->arena, PT_SLICE("X-Forwarded-Client-Cert"), PT_SLICE("Hash=x"));
}

static int run(struct req *r, const struct pt_filter_inst *f)
{
    return f->def->on_request(&r->ctx, f->conf, NULL);
}

static const char *field(struct req *r, const char *name)
{
    const struct pt_hfield *f = pt_headers_find(&r->h, (pt_slice){name, strlen(name)});
    return f ? pt_arena_strndup(&r->arena, f->value.p, f->value.len) : NULL;
}

static uint32_t count(struct req *r, const char *name)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->h.n; i++)
        n += !r->h.f[i].dead && pt_slice_ieq(r->h.f[i].name, (pt_slice){name, strlen(name)});
    return n;
}

static bool consumer_is(const struct req *r, const char *name)
{
    return pt_slice_eq_cstr(r->id.consumer, name);
}

static void test_consumer_from(void)
{
    struct pt_diag d;
    struct pt_generation *g =
        load(BASE ROUTE("cn", "{ mtls_auth: {} }")
                 ROUTE("dns", "{ mtls_auth: { consumer_from: san_dns } }")
                     ROUTE("uri", "{ mtls_auth: { consumer_from: san_uri, uri_prefix: "
                                  "\"spiffe://example.org/ns/prod/sa/\" } }")
                         ROUTE("anyuri", "{ mtls_auth: { consumer_from: san_uri } }")
                             ROUTE("strict", "{ mtls_auth: { require_consumer: true } }"),
             &d);
    pt_diag_print(&d, stderr);
    pt_diag_free(&d);
    CHECK(g != NULL);
    if (!g)
        return;
    const struct pt_filter_inst *cn = inst_of(g, "cn", "mtls_auth"),
                                *dns = inst_of(g, "dns", "mtls_auth"),
                                *uri = inst_of(g, "uri", "mtls_auth"),
                                *anyuri = inst_of(g, "anyuri", "mtls_auth"),
                                *strict = inst_of(g, "strict", "mtls_auth");
    CHECK(cn && dns && uri && anyuri && strict && g->routes[0].chain.strips_consumer);
    if (!cn || !dns || !uri || !anyuri || !strict)
        goto out;

    struct req r;
    /* The CN names a consumers entry: its groups come along. */
    req_init(&r, g, "alice", NULL, NULL);
    CHECK_EQ_INT(run(&r, cn), PT_FILTER_CONTINUE);
    CHECK(consumer_is(&r, "alice") && r.id.ngroups == 2 && pt_slice_eq_cstr(r.id.groups[0], "ops"));
    CHECK_STR(r.id.source, "mtls_auth");
    CHECK_STR(field(&r, "X-Consumer-Name"), "alice");
    CHECK_STR(field(&r, "X-Consumer-Groups"), "ops,beta");
    pt_arena_destroy(&r.arena);

    /* A CN no entry has: the consumer with no groups (require_consumer
     * off), or 401 with it on. */
    req_init(&r, g, "carol", NULL, NULL);
    CHECK_EQ_INT(run(&r, cn), PT_FILTER_CONTINUE);
    CHECK(consumer_is(&r, "carol") && r.id.ngroups == 0);
    CHECK(r.id.consumer.p != r.info.subject_cn); /* copied: outlives the connection */
    CHECK(field(&r, "X-Consumer-Groups") == NULL);
    pt_arena_destroy(&r.arena);
    req_init(&r, g, "carol", NULL, NULL);
    CHECK_EQ_INT(run(&r, strict), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    CHECK(r.id.consumer.len == 0);
    pt_arena_destroy(&r.arena);

    /* DNS SANs: the first that names an entry, else the first. */
    static const char *const sans[] = {"a.example.org", "web.example.org", NULL};
    req_init(&r, g, "alice", sans, NULL);
    CHECK_EQ_INT(run(&r, dns), PT_FILTER_CONTINUE);
    CHECK(consumer_is(&r, "web.example.org") && r.id.ngroups == 1);
    pt_arena_destroy(&r.arena);
    static const char *const other[] = {"x.example.org", "y.example.org", NULL};
    req_init(&r, g, "alice", other, NULL);
    CHECK_EQ_INT(run(&r, dns), PT_FILTER_CONTINUE);
    CHECK(consumer_is(&r, "x.example.org") && r.id.ngroups == 0);
    pt_arena_destroy(&r.arena);
    /* No DNS SAN at all: the CN does not stand in. */
    req_init(&r, g, "alice", NULL, NULL);
    CHECK_EQ_INT(run(&r, dns), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    pt_arena_destroy(&r.arena);

    /* URI SANs under the prefix only, the prefix stripped; without a
     * prefix the first URI whole. */
    static const char *const uris[] = {"https://other.example/x",
                                       "spiffe://evil.org/ns/prod/sa/api",
                                       "spiffe://example.org/ns/prod/sa/api", NULL};
    req_init(&r, g, "alice", NULL, uris);
    CHECK_EQ_INT(run(&r, uri), PT_FILTER_CONTINUE);
    CHECK(consumer_is(&r, "api") && r.id.ngroups == 1 && pt_slice_eq_cstr(r.id.groups[0], "api"));
    pt_arena_destroy(&r.arena);
    req_init(&r, g, "alice", NULL, uris);
    CHECK_EQ_INT(run(&r, anyuri), PT_FILTER_CONTINUE);
    CHECK(consumer_is(&r, "https://other.example/x") && r.id.ngroups == 0);
    pt_arena_destroy(&r.arena);
    static const char *const foreign[] = {"spiffe://evil.org/ns/prod/sa/api",
                                          "spiffe://example.org/ns/prod/sa/", NULL};
    req_init(&r, g, "alice", NULL, foreign);
    CHECK_EQ_INT(run(&r, uri), PT_FILTER_RESPOND); /* nothing after the prefix: no name */
    pt_arena_destroy(&r.arena);

    /* A name with a control character never becomes a header value. */
    req_init(&r, g, "al\r\nX-Evil: 1", NULL, NULL);
    CHECK_EQ_INT(run(&r, cn), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    CHECK(field(&r, "X-Consumer-Name") == NULL);
    pt_arena_destroy(&r.arena);
out:
    pt_generation_free(g);
}

static void test_refusals(void)
{
    struct pt_diag d;
    struct pt_generation *g =
        load(BASE ROUTE("r", "{ mtls_auth: {} }")
                 ROUTE("opt", "{ mtls_auth: { optional: true }, acl: { allow: [ops] } }"),
             &d);
    pt_diag_print(&d, stderr);
    pt_diag_free(&d);
    CHECK(g != NULL);
    if (!g)
        return;
    const struct pt_filter_inst *f = inst_of(g, "r", "mtls_auth"),
                                *opt = inst_of(g, "opt", "mtls_auth"),
                                *acl = inst_of(g, "opt", "acl");
    CHECK(f && opt && acl);
    if (!f || !opt || !acl)
        goto out;
    struct req r;
    /* A plain connection. */
    req_init(&r, g, "alice", NULL, NULL);
    r.ctx.tls = NULL;
    CHECK_EQ_INT(run(&r, f), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    CHECK_STR(r.ctx.respond_error, "client certificate required");
    CHECK(pt_headers_find(&r.resp, PT_SLICE("WWW-Authenticate")) == NULL);
    pt_arena_destroy(&r.arena);
    /* TLS without a certificate. */
    req_init(&r, g, "", NULL, NULL);
    r.info.cert_present = r.info.cert_verified = false;
    CHECK_EQ_INT(run(&r, f), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    pt_arena_destroy(&r.arena);
    /* A certificate that failed verification (client_auth: optional). */
    req_init(&r, g, "alice", NULL, NULL);
    r.info.cert_verified = false;
    CHECK_EQ_INT(run(&r, f), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    CHECK_STR(r.ctx.respond_error, "invalid client certificate");
    CHECK(r.id.consumer.len == 0);
    pt_arena_destroy(&r.arena);
    /* optional: no certificate passes on (acl then says 401) ... */
    req_init(&r, g, "", NULL, NULL);
    r.info.cert_present = r.info.cert_verified = false;
    CHECK_EQ_INT(run(&r, opt), PT_FILTER_CONTINUE);
    CHECK(r.id.consumer.len == 0);
    CHECK_EQ_INT(run(&r, acl), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 401);
    pt_arena_destroy(&r.arena);
    /* ... but an unverified one is still refused. */
    req_init(&r, g, "alice", NULL, NULL);
    r.info.cert_verified = false;
    CHECK_EQ_INT(run(&r, opt), PT_FILTER_RESPOND);
    pt_arena_destroy(&r.arena);
    /* acl on the groups of the certificate's consumer. */
    req_init(&r, g, "alice", NULL, NULL);
    CHECK_EQ_INT(run(&r, opt), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(run(&r, acl), PT_FILTER_CONTINUE);
    pt_arena_destroy(&r.arena);
    req_init(&r, g, "carol", NULL, NULL);
    CHECK_EQ_INT(run(&r, opt), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(run(&r, acl), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 403);
    pt_arena_destroy(&r.arena);
out:
    pt_generation_free(g);
}

static void test_forwarded_fields(void)
{
    struct pt_diag d;
    struct pt_generation *g =
        load(BASE ROUTE("r", "{ mtls_auth: { subject_header: X-Client-Subject, "
                             "fingerprint_header: X-Client-Fp, xfcc: true } }")
                 ROUTE("plain", "{ mtls_auth: {} }"),
             &d);
    pt_diag_print(&d, stderr);
    pt_diag_free(&d);
    CHECK(g != NULL);
    if (!g)
        return;
    const struct pt_filter_inst *f = inst_of(g, "r", "mtls_auth"),
                                *plain = inst_of(g, "plain", "mtls_auth");
    CHECK(f && plain);
    if (!f || !plain)
        goto out;
    struct req r;
    static const char *const dns[] = {"a.example.org", NULL};
    static const char *const uri[] = {"spiffe://example.org/a;b", NULL};
    req_init(&r, g, "alice", dns, uri);
    r.info.subject = "CN=alice,O=Ex\\\"ample";
    CHECK_EQ_INT(run(&r, f), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(count(&r, "X-Client-Subject"), 1);
    CHECK_EQ_INT(count(&r, "X-Client-Fp"), 1);
    CHECK_EQ_INT(count(&r, "X-Forwarded-Client-Cert"), 1);
    CHECK_STR(field(&r, "X-Client-Subject"), "CN=alice,O=Ex\\\"ample");
    CHECK_STR(field(&r, "X-Client-Fp"), FP);
    CHECK_STR(field(&r, "X-Forwarded-Client-Cert"),
              "Hash=" FP ";Subject=\"CN=alice,O=Ex\\\\\\\"ample\";URI=\"spiffe://example.org/a;b\""
              ";DNS=a.example.org");
    pt_arena_destroy(&r.arena);
    /* Refused or not, the client's copies are gone. */
    req_init(&r, g, "alice", NULL, NULL);
    r.ctx.tls = NULL;
    CHECK_EQ_INT(run(&r, f), PT_FILTER_RESPOND);
    CHECK_EQ_INT(count(&r, "X-Client-Subject") + count(&r, "X-Client-Fp") +
                     count(&r, "X-Forwarded-Client-Cert"),
                 0);
    pt_arena_destroy(&r.arena);
    /* Fields the route did not configure are none of the filter's business. */
    req_init(&r, g, "alice", NULL, NULL);
    CHECK_EQ_INT(run(&r, plain), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(count(&r, "X-Client-Subject"), 1);
    CHECK_STR(field(&r, "X-Forwarded-Client-Cert"), "Hash=x");
    pt_arena_destroy(&r.arena);
out:
    pt_generation_free(g);
}

static void test_name_index(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    enum { N = 3000 };
    struct pt_consumer *cons = pt_arena_zalloc(&a, sizeof(*cons) * N);
    for (int i = 0; i < N; i++) {
        char *s = pt_arena_alloc(&a, 24);
        int n = snprintf(s, 24, "consumer-%d", i);
        cons[i].name = (pt_slice){s, (size_t)n};
    }
    struct pt_consumers t = {.v = cons, .n = N};
    CHECK(pt_consumers_named(&t, PT_SLICE("consumer-1")) == NULL); /* not indexed yet */
    CHECK_EQ_INT(pt_consumers_index_names(&t, &a), 0);
    int found = 0;
    for (int i = 0; i < N; i++) {
        char s[24];
        int n = snprintf(s, sizeof(s), "consumer-%d", i);
        found += pt_consumers_named(&t, (pt_slice){s, (size_t)n}) == &cons[i];
    }
    CHECK_EQ_INT(found, N);
    CHECK(pt_consumers_named(&t, PT_SLICE("consumer-")) == NULL);
    CHECK(pt_consumers_named(&t, PT_SLICE("Consumer-1")) == NULL); /* exact */
    CHECK(pt_consumers_named(&t, PT_SLICE("")) == NULL);
    CHECK(pt_consumers_named(NULL, PT_SLICE("consumer-1")) == NULL);
    struct pt_consumers empty = {0};
    CHECK_EQ_INT(pt_consumers_index_names(&empty, &a), 0);
    CHECK(pt_consumers_named(&empty, PT_SLICE("x")) == NULL);
    pt_arena_destroy(&a);
}

static bool diag_has(const struct pt_diag *d, const char *text)
{
    for (size_t i = 0; i < d->n; i++)
        if (strstr(d->lines[i], text))
            return true;
    return false;
}

static void test_config_errors(void)
{
    static const struct {
        const char *filters, *message;
    } cases[] = {
        {"{ mtls_auth: { consumer_from: issuer } }", "expected subject_cn, san_dns or san_uri"},
        {"{ mtls_auth: { uri_prefix: \"spiffe://x/\" } }", "needs `consumer_from: san_uri`"},
        {"{ mtls_auth: { subject_header: \"Bad Name\" } }", "subject_header"},
        {"{ mtls_auth: { fingerprint_header: X-Consumer-Fp } }", "X-Consumer-* fields"},
        {"{ mtls_auth: { subject_header: X-Forwarded-Client-Cert } }", "xfcc"},
        {"{ mtls_auth: { subject_header: X-A, fingerprint_header: x-a } }", "subject_header too"},
        {"{ mtls_auth: { consumer: alice } }", "consumer"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++) {
        char yaml[2048];
        snprintf(yaml, sizeof(yaml), BASE ROUTE("r", "%s"), cases[i].filters);
        struct pt_diag d;
        struct pt_generation *g = load(yaml, &d);
        CHECK_MSG(g == NULL, "%s should be refused", cases[i].filters);
        CHECK_MSG(diag_has(&d, cases[i].message) && diag_has(&d, "t.yaml:"), "%s: want \"%s\"",
                  cases[i].filters, cases[i].message);
        if (!diag_has(&d, cases[i].message))
            pt_diag_print(&d, stderr);
        pt_generation_free(g);
        pt_diag_free(&d);
    }
}

int main(void)
{
    test_consumer_from();
    test_refusals();
    test_forwarded_fields();
    test_name_index();
    test_config_errors();
    return unit_report("mtls_auth");
}
