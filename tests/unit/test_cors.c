/*
 * test_cors.c — the cors filter run directly (it includes cors.c for its
 * static helpers): origin matching of every kind, the preflight answer
 * and its refusal, the decoration of an upstream's head (its CORS fields
 * replaced, Vary appended to), and the compile step's refusals. The e2e
 * suites test_cors.py and test_cors_browser.py drive the real binary.
 */
#include "filters/cors.c"

#include "unit.h"

struct errs {
    struct pt_filter_errs e;
    int n;
    char last[300];
};

static void report(struct pt_filter_errs *e, const char *field, const char *entry, bool in_value,
                   const char *msg)
{
    struct errs *x = (struct errs *)e;
    x->n++;
    snprintf(x->last, sizeof(x->last), "%s", msg);
}

/* A compiled config from lists given as NULL-terminated arrays. */
static int compile(struct cors_conf *c, struct pt_arena *a, const char **origins, bool credentials,
                   struct errs *er)
{
    memset(c, 0, sizeof(*c));
    uint32_t n = 0;
    while (origins[n])
        n++;
    c->origins = (struct pt_strlist){origins, n};
    c->credentials = credentials;
    memset(er, 0, sizeof(*er));
    er->e.report = report;
    return cors_compile(c, a, &er->e);
}

struct req {
    struct pt_arena arena;
    struct pt_headers h, resp;
    struct pt_filter_ctx ctx;
    struct cors_state st;
};

static void req_init(struct req *r, int method, const char *origin, const char *acrm)
{
    memset(r, 0, sizeof(*r));
    pt_arena_init(&r->arena, 0);
    r->ctx.arena = &r->arena;
    r->ctx.req_headers = &r->h;
    r->ctx.resp_headers = &r->resp;
    r->ctx.method_id = method;
    if (origin)
        pt_headers_add(&r->h, &r->arena, PT_SLICE("Origin"), (pt_slice){origin, strlen(origin)});
    if (acrm)
        pt_headers_add(&r->h, &r->arena, PT_SLICE("Access-Control-Request-Method"),
                       (pt_slice){acrm, strlen(acrm)});
}

static const char *field(struct pt_headers *h, const char *name)
{
    static char buf[256];
    struct pt_hfield *f = pt_headers_find(h, (pt_slice){name, strlen(name)});
    if (!f)
        return NULL;
    snprintf(buf, sizeof(buf), "%.*s", (int)f->value.len, f->value.p);
    return buf;
}

static void test_origin_kinds(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct cors_conf c;
    struct errs er;
    const char *origins[] = {"https://app.example.com", "https://*.example.net",
                             "~^https://[a-z]+\\.example\\.org$", "null", NULL};
    CHECK(compile(&c, &a, origins, true, &er) == 0 && er.n == 0);
    struct {
        const char *origin;
        bool ok;
    } cases[] = {
        {"https://app.example.com", true},
        {"HTTPS://APP.EXAMPLE.COM", true},
        {"https://app.example.com:443", false},
        {"https://app.example.co", false},
        {"https://a.example.net", true},
        {"https://a.b.example.net", true},
        {"https://example.net", false},
        {"https://.example.net", false},
        {"https://a..example.net", false},
        {"https://a/b.example.net", false},
        {"http://a.example.net", false},
        {"https://shop.example.org", true},
        {"https://shop.example.org.x", false},
        {"null", true},
        {"", false},
    };
    struct pt_arena req;
    pt_arena_init(&req, 0);
    for (size_t i = 0; i < PT_ARRAY_LEN(cases); i++)
        CHECK_MSG(origin_allowed(&c, (pt_slice){cases[i].origin, strlen(cases[i].origin)}, &req) ==
                      cases[i].ok,
                  "%s", cases[i].origin);
    pt_arena_destroy(&req);
    pt_arena_destroy(&a);
}

static void test_preflight(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct cors_conf c;
    struct errs er;
    const char *origins[] = {"https://app.example.com", NULL};
    CHECK(compile(&c, &a, origins, true, &er) == 0);

    struct req r;
    req_init(&r, PT_METHOD_OPTIONS, "https://app.example.com", "PUT");
    CHECK_EQ_INT(cors_on_request(&r.ctx, &c, &r.st), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 204);
    CHECK_STR(field(&r.resp, "Access-Control-Allow-Origin"), "https://app.example.com");
    CHECK_STR(field(&r.resp, "Access-Control-Allow-Credentials"), "true");
    CHECK_STR(field(&r.resp, "Access-Control-Allow-Methods"), DEFAULT_METHODS);
    CHECK(field(&r.resp, "Access-Control-Allow-Headers") == NULL); /* none configured */
    CHECK(field(&r.resp, "Access-Control-Max-Age") == NULL);
    pt_arena_destroy(&r.arena);

    req_init(&r, PT_METHOD_OPTIONS, "https://evil.example.com", "PUT");
    CHECK_EQ_INT(cors_on_request(&r.ctx, &c, &r.st), PT_FILTER_RESPOND);
    CHECK_EQ_INT(r.ctx.respond_status, 403);
    CHECK(field(&r.resp, "Access-Control-Allow-Origin") == NULL);
    CHECK(field(&r.resp, "Vary") != NULL);
    pt_arena_destroy(&r.arena);

    /* an OPTIONS without Access-Control-Request-Method is no preflight */
    req_init(&r, PT_METHOD_OPTIONS, "https://app.example.com", NULL);
    CHECK_EQ_INT(cors_on_request(&r.ctx, &c, &r.st), PT_FILTER_CONTINUE);
    CHECK_EQ_INT(r.st.verdict, CORS_ALLOWED);
    pt_arena_destroy(&r.arena);
    pt_arena_destroy(&a);
}

static void test_response_head(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct cors_conf c;
    struct errs er;
    const char *origins[] = {"https://app.example.com", NULL};
    CHECK(compile(&c, &a, origins, false, &er) == 0);

    struct req r;
    req_init(&r, PT_METHOD_GET, "https://app.example.com", NULL);
    CHECK_EQ_INT(cors_on_request(&r.ctx, &c, &r.st), PT_FILTER_CONTINUE);
    /* the upstream's head replaces the list the request phase wrote */
    memset(&r.resp, 0, sizeof(r.resp));
    pt_headers_add(&r.resp, &r.arena, PT_SLICE("Vary"), PT_SLICE("Accept-Encoding"));
    pt_headers_add(&r.resp, &r.arena, PT_SLICE("access-control-allow-origin"), PT_SLICE("*"));
    pt_headers_add(&r.resp, &r.arena, PT_SLICE("Access-Control-Max-Age"), PT_SLICE("5"));
    CHECK_EQ_INT(cors_on_response_head(&r.ctx, &c, &r.st), PT_FILTER_CONTINUE);
    CHECK_STR(field(&r.resp, "Access-Control-Allow-Origin"), "https://app.example.com");
    CHECK_STR(field(&r.resp, "Vary"), "Accept-Encoding, Origin");
    CHECK_STR(field(&r.resp, "Access-Control-Max-Age"), "5"); /* not ours: kept */
    uint32_t live = 0;
    for (uint32_t i = 0; i < r.resp.n; i++)
        live += !r.resp.f[i].dead;
    CHECK_EQ_INT(live, 3);
    pt_arena_destroy(&r.arena);

    /* refused: the upstream's field goes and none comes */
    req_init(&r, PT_METHOD_GET, "https://evil.example.com", NULL);
    CHECK_EQ_INT(cors_on_request(&r.ctx, &c, &r.st), PT_FILTER_CONTINUE);
    memset(&r.resp, 0, sizeof(r.resp));
    pt_headers_add(&r.resp, &r.arena, PT_SLICE("Access-Control-Allow-Origin"), PT_SLICE("*"));
    pt_headers_add(&r.resp, &r.arena, PT_SLICE("Vary"), PT_SLICE("*"));
    cors_on_response_head(&r.ctx, &c, &r.st);
    CHECK(field(&r.resp, "Access-Control-Allow-Origin") == NULL);
    CHECK_STR(field(&r.resp, "Vary"), "*"); /* already varies on everything */
    pt_arena_destroy(&r.arena);
    pt_arena_destroy(&a);
}

static void test_lists_token(void)
{
    CHECK(lists_token(PT_SLICE("Accept, origin"), PT_SLICE("Origin")));
    CHECK(lists_token(PT_SLICE(" Origin ,x"), PT_SLICE("Origin")));
    CHECK(!lists_token(PT_SLICE("Origins, X-Origin"), PT_SLICE("Origin")));
    CHECK(lists_token(PT_SLICE("a, *"), PT_SLICE("Origin")));
    CHECK(!lists_token(PT_SLICE(""), PT_SLICE("Origin")));
}

static void test_compile_refusals(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 0);
    struct cors_conf c;
    struct errs er;
    const char *star[] = {"*", NULL};
    CHECK(compile(&c, &a, star, true, &er) != 0 && strstr(er.last, "credentials"));
    CHECK(compile(&c, &a, star, false, &er) == 0 && c.any_origin);
    const char *slash[] = {"https://app.example.com/", NULL};
    CHECK(compile(&c, &a, slash, false, &er) != 0 && strstr(er.last, "did you mean"));
    const char *mid[] = {"https://a.*.example.com", NULL};
    CHECK(compile(&c, &a, mid, false, &er) != 0 && strstr(er.last, "wildcard"));
    const char *bare[] = {"https://*.", NULL};
    CHECK(compile(&c, &a, bare, false, &er) != 0);
    const char *re[] = {"~(", NULL};
    CHECK(compile(&c, &a, re, false, &er) != 0 && strstr(er.last, "invalid regex"));
    const char *none[] = {NULL};
    CHECK(compile(&c, &a, none, false, &er) != 0 && strstr(er.last, "origins"));
    pt_arena_destroy(&a); /* frees the regexes compiled above (pt_arena_defer) */
}

int main(void)
{
    test_origin_kinds();
    test_preflight();
    test_response_head();
    test_lists_token();
    test_compile_refusals();
    return unit_report("cors");
}
