/*
 * test_router.c — the compiled router (src/gateway/router.c) against its
 * contract in router.h.
 *
 * Generations are built by hand: routes in the generation arena, regexes
 * compiled here with pcre2_compile + pcre2_jit_compile as the config
 * loader does, route.index in file order. The strongest test is the last:
 * random tables up to 1,000 routes checked against a naive reference that
 * implements the documented order literally (score every route, keep the
 * best) over thousands of random requests.
 */
#include "gateway/router.h"
#include "http/tokens.h"
#include "unit.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>

/* ---- building generations by hand ---- */

#define M(x) (1u << PT_METHOD_##x)

/* A route as a test writes it. kv values starting with '~' are regexes. */
struct spec {
    const char *name;
    const char *hosts[4];
    const char *path, *prefix, *tmpl, *regex;
    uint32_t methods;
    const char *hdr[3][2];
    const char *qry[3][2];
    int priority;
    bool ci; /* match.case_sensitive: false */
};

static pcre2_code *compile_re(struct pt_generation *g, const char *pat, uint32_t opts)
{
    int ec;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, opts, &ec, &off, NULL);
    if (!re) {
        fprintf(stderr, "bad test regex %s\n", pat);
        abort();
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* JIT may be unavailable: then pcre2_match */
    if (g->nregexes == g->capregexes) {
        g->capregexes = g->capregexes ? g->capregexes * 2 : 16;
        g->regexes = realloc(g->regexes, sizeof(*g->regexes) * g->capregexes);
    }
    g->regexes[g->nregexes++] = re;
    return re;
}

static uint32_t fill_kv(struct pt_generation *g, const char *const (*src)[2], int max,
                        struct pt_kv_match **out, bool header)
{
    uint32_t n = 0;
    while ((int)n < max && src[n][0])
        n++;
    struct pt_kv_match *v = pt_arena_zalloc(&g->arena, sizeof(*v) * (n ? n : 1));
    for (uint32_t i = 0; i < n; i++) {
        v[i].name = pt_arena_strdup(&g->arena, src[i][0]);
        v[i].token = header ? pt_token_lookup(src[i][0], strlen(src[i][0])) : 0;
        if (src[i][1][0] == '~')
            v[i].re = compile_re(g, src[i][1] + 1, 0);
        else
            v[i].value = pt_arena_strdup(&g->arena, src[i][1]);
    }
    *out = v;
    return n;
}

static void gen_init(struct pt_generation *g, uint32_t cap)
{
    memset(g, 0, sizeof(*g));
    pt_arena_init(&g->arena, 64 * 1024);
    g->routes = pt_arena_zalloc(&g->arena, sizeof(*g->routes) * (cap ? cap : 1));
}

static struct pt_route *gen_add(struct pt_generation *g, const struct spec *s)
{
    struct pt_route *r = &g->routes[g->nroutes];
    r->index = g->nroutes++;
    r->name = s->name ? pt_arena_strdup(&g->arena, s->name)
                      : pt_arena_sprintf(&g->arena, "r%u", r->index);
    r->priority = s->priority;
    struct pt_route_match *m = &r->match;
    while (m->nhosts < 4 && s->hosts[m->nhosts])
        m->nhosts++;
    m->hosts = pt_arena_zalloc(&g->arena, sizeof(char *) * (m->nhosts ? m->nhosts : 1));
    for (uint32_t i = 0; i < m->nhosts; i++)
        m->hosts[i] = pt_arena_strdup(&g->arena, s->hosts[i]);
    m->path = s->path;
    m->path_prefix = s->prefix;
    m->path_template = s->tmpl;
    m->path_regex = s->regex;
    if (s->regex)
        m->regex = compile_re(g, s->regex, s->ci ? PCRE2_CASELESS : 0);
    m->case_insensitive = s->ci;
    m->methods = s->methods;
    m->nheaders = fill_kv(g, s->hdr, 3, &m->headers, true);
    m->nquery = fill_kv(g, s->qry, 3, &m->query, false);
    return r;
}

static void gen_free(struct pt_generation *g)
{
    for (uint32_t i = 0; i < g->nregexes; i++)
        pcre2_code_free(g->regexes[i]);
    free(g->regexes);
    pt_arena_destroy(&g->arena);
}

static const struct pt_router *build(struct pt_generation *g, const struct spec *specs, size_t n)
{
    char err[256] = "";
    gen_init(g, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        gen_add(g, &specs[i]);
    struct pt_router *r = pt_router_build(g, err, sizeof(err));
    CHECK_MSG(r != NULL, "build failed: %s", err);
    g->router = r;
    return r;
}

/* ---- requests ---- */

struct req {
    int method;
    const char *host;
    const char *target; /* path?query */
    const char *hdr[4][2];
};

static struct pt_hfield hstore[8];
static struct pt_headers hlist;

static void make_input(const struct req *q, struct pt_route_input *in)
{
    const char *qm = strchr(q->target, '?');
    size_t plen = qm ? (size_t)(qm - q->target) : strlen(q->target);
    *in = (struct pt_route_input){
        .host = {q->host ? q->host : "", q->host ? strlen(q->host) : 0},
        .path = {q->target, plen},
        .query = qm ? (pt_slice){qm + 1, strlen(qm + 1)} : (pt_slice){NULL, 0},
        .method_id = q->method,
        .headers = &hlist,
    };
    hlist = (struct pt_headers){hstore, 0, 8};
    for (int i = 0; i < 4 && q->hdr[i][0]; i++) {
        const char *nm = q->hdr[i][0], *v = q->hdr[i][1];
        hstore[hlist.n++] = (struct pt_hfield){
            {nm, strlen(nm)}, {v, strlen(v)}, pt_token_lookup(nm, strlen(nm)), false};
    }
}

static struct pt_route_result res;

/* Returns the matched route's name, or "404"/"405". */
static const char *lookup(const struct pt_router *r, struct req q)
{
    struct pt_route_input in;
    make_input(&q, &in);
    int rc = pt_router_match(r, &in, &res);
    if (rc != res.status)
        return "rc-mismatch";
    if (rc == 404)
        return "404";
    if (rc == 405)
        return "405";
    return res.route ? res.route->name : "null-route";
}

static bool param_is(const char *name, const char *value)
{
    for (uint32_t i = 0; i < res.nparams; i++)
        if (pt_slice_eq_cstr(res.param_names[i], name))
            return pt_slice_eq_cstr(res.param_values[i], value);
    return false;
}

#define GET(host, target) REQ0(PT_METHOD_GET, host, target)
#define REQ(m, h, t, ...) lookup(r, (struct req){m, h, t, __VA_ARGS__})
#define REQ0(m, h, t) REQ(m, h, t, {{0}})

/* ---- focused tests ---- */

static void test_path_kinds(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "exact", .path = "/health"},
        {.name = "prefix", .prefix = "/static"},
        {.name = "tmpl", .tmpl = "/users/{id}/posts/{post}"},
        {.name = "regex", .regex = "^/files/(?<year>\\d{4})/(\\w+)\\.txt$"},
        {.name = "catchall"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/health"), "exact");
    CHECK_EQ_INT(res.nparams, 0);
    CHECK_STR(GET(NULL, "/health/x"), "catchall");
    CHECK_STR(GET(NULL, "/static"), "prefix");
    CHECK_STR(GET(NULL, "/static/css/a.css"), "prefix");
    CHECK_STR(GET(NULL, "/staticx"), "catchall");
    CHECK_STR(GET(NULL, "/users/42/posts/7"), "tmpl");
    CHECK_EQ_INT(res.nparams, 2);
    CHECK(param_is("id", "42"));
    CHECK(param_is("post", "7"));
    CHECK_STR(GET(NULL, "/users/42/posts/7?x=1"), "tmpl");
    CHECK(param_is("post", "7"));
    CHECK_STR(GET(NULL, "/users/42/posts"), "catchall");
    CHECK_STR(GET(NULL, "/users//posts/7"), "catchall"); /* {id} needs a non-empty segment */
    CHECK_STR(GET(NULL, "/users/42/posts/7/"), "catchall");
    CHECK_STR(GET(NULL, "/files/2024/report.txt"), "regex");
    CHECK_EQ_INT(res.nparams, 2);
    CHECK(param_is("year", "2024"));
    CHECK(param_is("2", "report")); /* unnamed group: its group number */
    CHECK_STR(GET(NULL, "/files/24/report.txt"), "catchall");
    CHECK_STR(GET(NULL, "/"), "catchall");
    /* Param values are slices into the request path. */
    struct req q = {PT_METHOD_GET, NULL, "/users/abc/posts/def", {{0}}};
    struct pt_route_input in;
    make_input(&q, &in);
    CHECK_EQ_INT(pt_router_match(r, &in, &res), 0);
    CHECK(res.nparams == 2 && res.param_values[0].p == q.target + 7 &&
          res.param_values[1].p == q.target + 17);
    gen_free(&g);
}

static void test_regex_params(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "opt", .regex = "^/o/(a)?(?<b>b)(c)?$"},
        {.name = "unanchored", .regex = "/deep$"},
        {.name = "anchored", .regex = "^/start"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/o/b"), "opt");
    CHECK_EQ_INT(res.nparams, 3);
    CHECK(param_is("1", "")); /* unset optional group: empty */
    CHECK(param_is("b", "b"));
    CHECK(param_is("3", ""));
    CHECK_STR(GET(NULL, "/o/abc"), "opt");
    CHECK(param_is("1", "a") && param_is("3", "c"));
    /* Anchored as written: no implicit ^...$ */
    CHECK_STR(GET(NULL, "/x/y/deep"), "unanchored");
    CHECK_STR(GET(NULL, "/x/deep/y"), "404");
    CHECK_STR(GET(NULL, "/startup/x"), "anchored");
    CHECK_STR(GET(NULL, "/x/start"), "404");
    gen_free(&g);
}

static void test_segment_boundaries(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "v1", .prefix = "/v1"},
        {.name = "v1-slash", .prefix = "/v1/x/"},
        {.name = "root", .prefix = "/"},
        {.name = "api", .prefix = "/api/v2"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/v1"), "v1");
    CHECK_STR(GET(NULL, "/v1/"), "v1");
    CHECK_STR(GET(NULL, "/v1/y"), "v1");
    CHECK_STR(GET(NULL, "/v1x"), "root");
    CHECK_STR(GET(NULL, "/v1/x"), "v1"); /* "/v1/x/" needs the slash */
    CHECK_STR(GET(NULL, "/v1/x/"), "v1-slash");
    CHECK_STR(GET(NULL, "/v1/x/z/w"), "v1-slash");
    CHECK_STR(GET(NULL, "/v1/xy"), "v1");
    CHECK_STR(GET(NULL, "/api/v2"), "api");
    CHECK_STR(GET(NULL, "/api/v2/a"), "api");
    CHECK_STR(GET(NULL, "/api/v20"), "root");
    CHECK_STR(GET(NULL, "/api"), "root");
    CHECK_STR(GET(NULL, "/"), "root");
    CHECK_STR(GET(NULL, ""), "404"); /* "/" does not match an empty path */
    gen_free(&g);
}

static void test_hosts(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "any", .prefix = "/"},
        {.name = "wild", .hosts = {"*.example.com"}, .prefix = "/"},
        {.name = "wild-api", .hosts = {"*.api.example.com"}, .prefix = "/"},
        {.name = "exact", .hosts = {"api.example.com", "Admin.Example.Com"}, .prefix = "/"},
        {.name = "exact-h", .hosts = {"h.example.com"}, .path = "/only"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET("api.example.com", "/x"), "exact");
    CHECK_STR(GET("API.EXAMPLE.COM", "/x"), "exact");
    CHECK_STR(GET("admin.example.com", "/x"), "exact"); /* config host case folded too */
    CHECK_STR(GET("a.example.com", "/x"), "wild");
    CHECK_STR(GET("A.b.Example.com", "/x"), "wild");
    CHECK_STR(GET("v.api.example.com", "/x"), "wild-api"); /* longest wildcard */
    CHECK_STR(GET("w.v.api.example.com", "/x"), "wild-api");
    CHECK_STR(GET("example.com", "/x"), "any");
    CHECK_STR(GET(".example.com", "/x"), "any"); /* empty label: no wildcard */
    CHECK_STR(GET("other.org", "/x"), "any");
    CHECK_STR(GET("", "/x"), "any");
    CHECK_STR(GET("api.example.com.evil", "/x"), "any");
    /* A host's bucket failing falls back to less specific hosts. */
    CHECK_STR(GET("h.example.com", "/only"), "exact-h");
    CHECK_STR(GET("h.example.com", "/other"), "wild");
    gen_free(&g);

    /* Host specificity dominates path specificity. */
    const struct spec s2[] = {
        {.name = "nohost-exact", .path = "/a/b"},
        {.name = "wild-prefix", .hosts = {"*.x.io"}, .prefix = "/"},
        {.name = "exact-any", .hosts = {"h.x.io"}},
    };
    r = build(&g, s2, PT_ARRAY_LEN(s2));
    if (!r)
        return;
    CHECK_STR(GET("h.x.io", "/a/b"), "exact-any");
    CHECK_STR(GET("k.x.io", "/a/b"), "wild-prefix");
    CHECK_STR(GET("x.io", "/a/b"), "nohost-exact");
    gen_free(&g);
}

static void test_headers_query(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "mobile", .prefix = "/", .hdr = {{"X-Client", "mobile"}}},
        {.name = "ua-re", .prefix = "/", .hdr = {{"user-agent", "~^curl/\\d"}}},
        {.name = "q-exact", .prefix = "/", .qry = {{"version", "2"}}},
        {.name = "q-re", .prefix = "/", .qry = {{"id", "~^\\d+$"}}},
        {.name = "q-flag", .prefix = "/", .qry = {{"debug", ""}}},
        {.name = "q-plus", .prefix = "/", .qry = {{"s", "a+b"}}},
        {.name = "fallback", .prefix = "/"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/", {{"x-client", "mobile"}}), "mobile");
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/", {{"X-CLIENT", "mobile"}}), "mobile");
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/", {{"X-Client", "Mobile"}}), "fallback"); /* value case */
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/", {{"X-Client", "web"}, {"X-Client", "mobile"}}),
              "fallback"); /* first header with the name decides */
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/", {{"User-Agent", "curl/8.1"}}), "ua-re");
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/", {{"User-Agent", "Mozilla curl/8"}}), "fallback");
    CHECK_STR(GET(NULL, "/"), "fallback");
    CHECK_STR(GET(NULL, "/p?version=2"), "q-exact");
    CHECK_STR(GET(NULL, "/p?a=1&version=2&b"), "q-exact");
    CHECK_STR(GET(NULL, "/p?version=22"), "fallback");
    CHECK_STR(GET(NULL, "/p?version=3&version=2"), "fallback"); /* first occurrence */
    CHECK_STR(GET(NULL, "/p?xversion=2"), "fallback");
    CHECK_STR(GET(NULL, "/p?id=123"), "q-re");
    CHECK_STR(GET(NULL, "/p?id=12a"), "fallback");
    CHECK_STR(GET(NULL, "/p?debug"), "q-flag");
    CHECK_STR(GET(NULL, "/p?x=1&debug"), "q-flag");
    CHECK_STR(GET(NULL, "/p?debug="), "q-flag");
    CHECK_STR(GET(NULL, "/p?debug=1"), "fallback");
    CHECK_STR(GET(NULL, "/p?s=a+b"), "q-plus");
    CHECK_STR(GET(NULL, "/p?s=a%20b"), "fallback");
    CHECK_STR(GET(NULL, "/p?"), "fallback");
    gen_free(&g);
}

static void test_methods(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "get", .prefix = "/items", .methods = M(GET)},
        {.name = "write", .prefix = "/items", .methods = M(POST) | M(PUT)},
        {.name = "del", .path = "/items/1", .methods = M(DELETE)},
        {.name = "del-hdr", .path = "/items/2", .methods = M(PATCH), .hdr = {{"X-A", "1"}}},
        {.name = "any", .prefix = "/open"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(REQ0(PT_METHOD_GET, NULL, "/items"), "get");
    CHECK_STR(REQ0(PT_METHOD_HEAD, NULL, "/items"), "get"); /* HEAD → GET */
    CHECK_STR(REQ0(PT_METHOD_POST, NULL, "/items/3"), "write");
    CHECK_STR(REQ0(PT_METHOD_PUT, NULL, "/items"), "write");
    CHECK_STR(REQ0(PT_METHOD_DELETE, NULL, "/items/1"), "del");
    /* Exact path fails on method → falls to the prefix routes. */
    CHECK_STR(REQ0(PT_METHOD_GET, NULL, "/items/1"), "get");
    CHECK_STR(REQ0(PT_METHOD_DELETE, NULL, "/items"), "405");
    CHECK_EQ_INT(res.allow_methods, M(GET) | M(HEAD) | M(POST) | M(PUT));
    CHECK(res.route == NULL);
    CHECK_STR(REQ0(PT_METHOD_OPTIONS, NULL, "/items/1"), "405");
    CHECK_EQ_INT(res.allow_methods, M(GET) | M(HEAD) | M(POST) | M(PUT) | M(DELETE));
    /* A route failing on a header as well does not add its methods. */
    CHECK_STR(REQ0(PT_METHOD_DELETE, NULL, "/items/2"), "405");
    CHECK_EQ_INT(res.allow_methods, M(GET) | M(HEAD) | M(POST) | M(PUT));
    CHECK_STR(REQ(PT_METHOD_DELETE, NULL, "/items/2", {{"X-A", "1"}}), "405");
    CHECK_EQ_INT(res.allow_methods, M(GET) | M(HEAD) | M(POST) | M(PUT) | M(PATCH));
    CHECK_STR(REQ0(PT_METHOD_OTHER, NULL, "/open"), "any");
    CHECK_STR(REQ0(PT_METHOD_TRACE, NULL, "/open/x"), "any");
    CHECK_STR(REQ0(PT_METHOD_GET, NULL, "/nothing"), "404");
    CHECK_EQ_INT(res.allow_methods, 0);
    CHECK(res.route == NULL);
    CHECK_STR(REQ0(77, NULL, "/items"), "405"); /* out-of-range method id never matches a mask */
    gen_free(&g);

    /* A 405 only when nothing else matches; HEAD added only with GET. */
    const struct spec s2[] = {
        {.name = "post", .path = "/x", .methods = M(POST)},
        {.name = "fallback", .prefix = "/"},
    };
    r = build(&g, s2, PT_ARRAY_LEN(s2));
    if (!r)
        return;
    CHECK_STR(REQ0(PT_METHOD_GET, NULL, "/x"), "fallback");
    gen_free(&g);
    r = build(&g, s2, 1);
    if (!r)
        return;
    CHECK_STR(REQ0(PT_METHOD_GET, NULL, "/x"), "405");
    CHECK_EQ_INT(res.allow_methods, M(POST));
    gen_free(&g);
}

static void test_order(void)
{
    struct pt_generation g;
    /* Rules 3–5: predicates, then priority, then file order. */
    const struct spec s[] = {
        {.name = "first", .prefix = "/p"},
        {.name = "second", .prefix = "/p"},
        {.name = "prio", .prefix = "/q", .priority = -1},
        {.name = "prio-hi", .prefix = "/q", .priority = 5},
        {.name = "plain", .prefix = "/h", .priority = 100},
        {.name = "with-hdr", .prefix = "/h", .hdr = {{"X-T", "1"}}},
        {.name = "with-2", .prefix = "/h", .methods = M(GET), .qry = {{"a", "1"}}},
        /* Specificity beats priority. */
        {.name = "long-low", .prefix = "/s/long", .priority = -10},
        {.name = "short-high", .prefix = "/s", .priority = 10},
        {.name = "exact-low", .path = "/s/long/x", .priority = -10},
        {.name = "tmpl-mid", .tmpl = "/s/long/{x}", .priority = 0},
        {.name = "regex-high", .regex = "^/s/", .priority = 99},
        {.name = "none-top", .priority = 1000, .hosts = {"nope.invalid"}},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/p"), "first");
    CHECK_STR(GET(NULL, "/q"), "prio-hi");
    CHECK_STR(GET(NULL, "/h?a=1"), "with-2");
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/h?a=1", {{"X-T", "1"}}), "with-2");
    CHECK_STR(REQ(PT_METHOD_POST, NULL, "/h?a=1", {{"X-T", "1"}}), "with-hdr");
    CHECK_STR(GET(NULL, "/h"), "plain");
    CHECK_STR(GET(NULL, "/s/long/x"), "exact-low");
    CHECK_STR(GET(NULL, "/s/long/y"), "tmpl-mid");
    CHECK_STR(GET(NULL, "/s/long/y/z"), "long-low");
    CHECK_STR(GET(NULL, "/s/other"), "short-high");
    CHECK_STR(GET(NULL, "/t/s/"), "404");
    gen_free(&g);

    /* Regex below prefix; regexes in order; path-less last. */
    const struct spec s2[] = {
        {.name = "re1", .regex = "^/a"},
        {.name = "re2", .regex = "^/a/b", .priority = 1},
        {.name = "nopath", .priority = 50},
        {.name = "pre", .prefix = "/a/b/c"},
    };
    r = build(&g, s2, PT_ARRAY_LEN(s2));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/a/b/c/d"), "pre");
    CHECK_STR(GET(NULL, "/a/b/x"), "re2");
    CHECK_STR(GET(NULL, "/a/x"), "re1");
    CHECK_STR(GET(NULL, "/z"), "nopath");
    gen_free(&g);

    /* Templates: more literal segments first, whatever the trie visits first. */
    const struct spec s3[] = {
        {.name = "a-x-y", .tmpl = "/a/{x}/{y}"},
        {.name = "p-b-c", .tmpl = "/{p}/b/c"},
        {.name = "all", .tmpl = "/{p}/{q}/{r}", .priority = 9},
        {.name = "me", .tmpl = "/users/me"},
        {.name = "id", .tmpl = "/users/{id}"},
        {.name = "uid-hdr", .tmpl = "/users/{uid}", .hdr = {{"X-V", "2"}}},
    };
    r = build(&g, s3, PT_ARRAY_LEN(s3));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/a/b/c"), "p-b-c");
    CHECK(param_is("p", "a"));
    CHECK_STR(GET(NULL, "/a/b/d"), "a-x-y");
    CHECK(param_is("x", "b") && param_is("y", "d"));
    CHECK_STR(GET(NULL, "/z/z/z"), "all");
    CHECK_STR(GET(NULL, "/users/me"), "me");
    CHECK_EQ_INT(res.nparams, 0);
    CHECK_STR(GET(NULL, "/users/7"), "id");
    CHECK(param_is("id", "7"));
    CHECK_STR(REQ(PT_METHOD_GET, NULL, "/users/7", {{"X-V", "2"}}), "uid-hdr");
    CHECK_EQ_INT(res.nparams, 1);
    CHECK(param_is("uid", "7"));
    gen_free(&g);
}

static void test_versioning(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "users-v1", .hosts = {"api.example.com"}, .prefix = "/v1/users"},
        {.name = "users-v2", .hosts = {"api.example.com"}, .prefix = "/v2/users"},
        {.name = "users-v2-beta",
         .hosts = {"api.example.com"},
         .prefix = "/v2/users",
         .hdr = {{"X-Beta", "1"}}},
        {.name = "v1-legacy", .prefix = "/v1"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET("api.example.com", "/v1/users"), "users-v1");
    CHECK_STR(GET("api.example.com", "/v1/users/12"), "users-v1");
    CHECK_STR(GET("api.example.com", "/v2/users"), "users-v2");
    CHECK_STR(GET("api.example.com", "/v2/users/12?x=1"), "users-v2");
    CHECK_STR(REQ(PT_METHOD_GET, "api.example.com", "/v2/users", {{"X-Beta", "1"}}),
              "users-v2-beta");
    CHECK_STR(GET("api.example.com", "/v1/orders"), "v1-legacy");
    CHECK_STR(GET("other.example.com", "/v1/users"), "v1-legacy");
    CHECK_STR(GET("api.example.com", "/v3/users"), "404");
    gen_free(&g);
}

/* Paths deeper than the lookup's segment cache take the uncached road. */
static void test_deep_paths(void)
{
    struct pt_generation g;
    char deep[256], tmpl[256], pre[256], req[256];
    size_t n = 0, t = 0, q = 0, k = 0;
    for (int i = 0; i < 24; i++) {
        n += (size_t)snprintf(deep + n, sizeof(deep) - n, "/s%d", i);
        t += (size_t)snprintf(tmpl + t, sizeof(tmpl) - t, i == 20 ? "/{x}" : "/s%d", i);
        if (i < 19)
            k += (size_t)snprintf(pre + k, sizeof(pre) - k, "/s%d", i);
        q += (size_t)snprintf(req + q, sizeof(req) - q, "/s%d", i == 20 ? 99 : i);
    }
    const struct spec s[] = {
        {.name = "deep-exact", .path = deep},
        {.name = "deep-tmpl", .tmpl = tmpl},
        {.name = "deep-prefix", .prefix = pre},
        {.name = "short-prefix", .prefix = "/s0"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET(NULL, deep), "deep-exact");
    CHECK_STR(GET(NULL, req), "deep-tmpl");
    CHECK(param_is("x", "s99"));
    strcat(req, "/more");
    CHECK_STR(GET(NULL, req), "deep-prefix");
    strcat(pre, "x");
    CHECK_STR(GET(NULL, pre), "short-prefix");
    gen_free(&g);
}

static void test_build_errors(void)
{
    const struct spec bad[] = {
        {.tmpl = "/a/x{id}"},
        {.tmpl = "a/{id}"},
        {.tmpl = "/{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}"},
        {.hosts = {"*example.com"}},
        {.hosts = {"a.*.com"}},
        {.path = "/a", .prefix = "/b"},
        {.prefix = "nope"},
        {.regex = "^/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)(k)(l)(m)(n)(o)(p)(q)"},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        struct pt_generation g;
        char err[256] = "";
        gen_init(&g, 1);
        gen_add(&g, &bad[i]);
        CHECK_MSG(pt_router_build(&g, err, sizeof(err)) == NULL, "bad spec %zu accepted", i);
        CHECK_MSG(strncmp(err, "route r0: ", 10) == 0, "error text: %s", err);
        gen_free(&g);
    }
    /* Empty table: everything is 404. */
    struct pt_generation g;
    gen_init(&g, 0);
    const struct pt_router *r = pt_router_build(&g, NULL, 0);
    CHECK(r != NULL);
    if (r)
        CHECK_STR(GET("a.b", "/"), "404");
    gen_free(&g);
}

/* match.case_sensitive: false. Such a route ignores ASCII case in its
 * exact path, prefix, template literals and regex; the others keep theirs,
 * and the usual order decides between them. */
static void test_case_insensitive(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "admin-ci", .prefix = "/admin", .ci = true},
        {.name = "admin-cs-exact", .path = "/admin/Exact"},
        {.name = "exact-ci", .path = "/Health", .ci = true},
        {.name = "tmpl-ci", .tmpl = "/Users/{id}/posts", .ci = true},
        {.name = "tmpl-cs", .tmpl = "/users/{id}/{x}"},
        {.name = "re-ci", .regex = "^/files/[a-z]+$", .ci = true},
        {.name = "pre-cs", .prefix = "/static"},
        {.name = "pre-ci-longer", .prefix = "/static/img", .ci = true},
        {.name = "pre-ci-same", .prefix = "/Static", .ci = true, .priority = 1},
        {.name = "catchall"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    CHECK_STR(GET(NULL, "/admin"), "admin-ci");
    CHECK_STR(GET(NULL, "/ADMIN/x"), "admin-ci");
    CHECK_STR(GET(NULL, "/aDmIn"), "admin-ci");
    CHECK_STR(GET(NULL, "/adminx"), "catchall");
    CHECK_STR(GET(NULL, "/admin/Exact"), "admin-cs-exact");
    CHECK_STR(GET(NULL, "/admin/exact"), "admin-ci"); /* the exact route keeps its case */
    CHECK_STR(GET(NULL, "/health"), "exact-ci");
    CHECK_STR(GET(NULL, "/HEALTH"), "exact-ci");
    CHECK_STR(GET(NULL, "/users/Ab/posts"), "tmpl-ci"); /* two literals beat one */
    CHECK(param_is("id", "Ab"));                        /* a param keeps the request's case */
    CHECK_STR(GET(NULL, "/USERS/7/POSTS"), "tmpl-ci");
    CHECK_STR(GET(NULL, "/USERS/7/x"), "catchall");
    CHECK_STR(GET(NULL, "/users/7/x"), "tmpl-cs");
    CHECK_STR(GET(NULL, "/FILES/abc"), "re-ci");
    CHECK_STR(GET(NULL, "/static/IMG/a.png"), "pre-ci-longer"); /* longest prefix first */
    CHECK_STR(GET(NULL, "/static/css"), "pre-ci-same");         /* same length: priority */
    CHECK_STR(GET(NULL, "/STATIC/css"), "pre-ci-same");
    gen_free(&g);
}

/* ---- the naive reference: the documented order, literally ---- */

static bool ref_ieq_tail(const char *host, size_t hlen, const char *suf, size_t slen)
{
    return hlen >= slen && strncasecmp(host + hlen - slen, suf, slen) == 0;
}

static int ref_template(const char *t, pt_slice path, pt_slice *names, pt_slice *vals, uint32_t *np,
                        int *nlit, bool ci)
{
    /* Both start with '/'; compare segment by segment. */
    if (!path.len || path.p[0] != '/')
        return 0;
    const char *a = t + 1, *b = path.p + 1, *bend = path.p + path.len;
    *np = 0;
    *nlit = 0;
    for (;;) {
        const char *ae = strchr(a, '/');
        size_t alen = ae ? (size_t)(ae - a) : strlen(a);
        const char *be = memchr(b, '/', (size_t)(bend - b));
        size_t blen = be ? (size_t)(be - b) : (size_t)(bend - b);
        if (alen >= 2 && a[0] == '{') {
            if (blen == 0)
                return 0;
            names[*np] = (pt_slice){a + 1, alen - 2};
            vals[(*np)++] = (pt_slice){b, blen};
        } else {
            if (alen != blen || (ci ? strncasecmp(a, b, alen) : memcmp(a, b, alen)) != 0)
                return 0;
            (*nlit)++;
        }
        if (!ae || !be)
            return !ae && !be;
        a = ae + 1;
        b = be + 1;
    }
}

static bool ref_prefix(const char *pre, pt_slice path, bool ci)
{
    size_t n = strlen(pre);
    if (path.len < n || (ci ? strncasecmp(path.p, pre, n) : memcmp(path.p, pre, n)) != 0)
        return false;
    return pre[n - 1] == '/' || path.len == n || path.p[n] == '/';
}

static bool ref_value(const struct pt_kv_match *k, pt_slice v)
{
    if (!k->re)
        return strlen(k->value) == v.len && memcmp(k->value, v.p, v.len) == 0;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = pcre2_match(k->re, (PCRE2_SPTR)(v.p ? v.p : ""), v.len, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static bool ref_preds(const struct pt_route *rt, const struct pt_route_input *in)
{
    for (uint32_t i = 0; i < rt->match.nheaders; i++) {
        const struct pt_kv_match *k = &rt->match.headers[i];
        const struct pt_hfield *f = NULL;
        for (uint32_t j = 0; j < in->headers->n && !f; j++)
            if (pt_slice_ieq_cstr(in->headers->f[j].name, k->name))
                f = &in->headers->f[j];
        if (!f || !ref_value(k, f->value))
            return false;
    }
    for (uint32_t i = 0; i < rt->match.nquery; i++) {
        const struct pt_kv_match *k = &rt->match.query[i];
        /* Split on '&' into pairs; the first pair with the key counts. */
        char buf[512];
        snprintf(buf, sizeof(buf), "%.*s", (int)in->query.len, in->query.p ? in->query.p : "");
        bool found = false, ok = false;
        char *save = NULL;
        for (char *pair = strtok_r(buf, "&", &save); pair && !found;
             pair = strtok_r(NULL, "&", &save)) {
            char *eq = strchr(pair, '=');
            size_t klen = eq ? (size_t)(eq - pair) : strlen(pair);
            if (klen == strlen(k->name) && memcmp(pair, k->name, klen) == 0) {
                found = true;
                const char *v = eq ? eq + 1 : "";
                ok = ref_value(k, (pt_slice){v, strlen(v)});
            }
        }
        if (!ok)
            return false;
    }
    return true;
}

/* Scores a route for a request; returns false when host or path don't
 * match. key[] is compared lexicographically, smaller first. */
static bool ref_score(const struct pt_route *rt, const struct pt_route_input *in, long key[8],
                      struct pt_route_result *params)
{
    const struct pt_route_match *m = &rt->match;
    long hc = 3, hsub = 0;
    if (m->nhosts == 0) {
        hc = 2;
    } else {
        for (uint32_t i = 0; i < m->nhosts; i++) {
            const char *h = m->hosts[i];
            if (h[0] == '*') {
                size_t sl = strlen(h + 1);
                if (in->host.len > sl && ref_ieq_tail(in->host.p, in->host.len, h + 1, sl) &&
                    (hc > 1 || (hc == 1 && -(long)sl < hsub)))
                    hc = 1, hsub = -(long)sl;
            } else if (pt_slice_ieq_cstr(in->host, h)) {
                hc = 0, hsub = 0;
            }
        }
        if (hc == 3)
            return false;
    }
    long pc, psub = 0;
    params->nparams = 0;
    if (m->path) {
        if (!(m->case_insensitive ? pt_slice_ieq_cstr(in->path, m->path)
                                  : pt_slice_eq_cstr(in->path, m->path)))
            return false;
        pc = 0;
    } else if (m->path_template) {
        int nlit;
        if (!ref_template(m->path_template, in->path, params->param_names, params->param_values,
                          &params->nparams, &nlit, m->case_insensitive))
            return false;
        pc = 1, psub = -nlit;
    } else if (m->path_prefix) {
        if (!ref_prefix(m->path_prefix, in->path, m->case_insensitive))
            return false;
        pc = 2, psub = -(long)strlen(m->path_prefix);
    } else if (m->path_regex) {
        pcre2_match_data *md = pcre2_match_data_create(32, NULL);
        int rc = pcre2_match(m->regex, (PCRE2_SPTR)in->path.p, in->path.len, 0, 0, md, NULL);
        if (rc < 0) {
            pcre2_match_data_free(md);
            return false;
        }
        uint32_t ng = 0;
        pcre2_pattern_info(m->regex, PCRE2_INFO_CAPTURECOUNT, &ng);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        static char numbuf[PT_ROUTE_MAX_PARAMS][4];
        for (uint32_t gi = 1; gi <= ng; gi++) {
            /* Find the group's name by scanning the name table. */
            uint32_t nn = 0, es = 0;
            PCRE2_SPTR tab;
            pcre2_pattern_info(m->regex, PCRE2_INFO_NAMECOUNT, &nn);
            pcre2_pattern_info(m->regex, PCRE2_INFO_NAMEENTRYSIZE, &es);
            pcre2_pattern_info(m->regex, PCRE2_INFO_NAMETABLE, &tab);
            const char *name = NULL;
            for (uint32_t k = 0; k < nn; k++)
                if ((uint32_t)((tab[k * es] << 8) | tab[k * es + 1]) == gi)
                    name = (const char *)tab + k * es + 2;
            if (!name) {
                snprintf(numbuf[gi - 1], sizeof(numbuf[0]), "%u", gi);
                name = numbuf[gi - 1];
            }
            params->param_names[gi - 1] = (pt_slice){name, strlen(name)};
            params->param_values[gi - 1] =
                ov[2 * gi] == PCRE2_UNSET
                    ? (pt_slice){in->path.p, 0}
                    : (pt_slice){in->path.p + ov[2 * gi], ov[2 * gi + 1] - ov[2 * gi]};
        }
        params->nparams = ng;
        pcre2_match_data_free(md);
        pc = 3;
    } else {
        pc = 4;
    }
    if (!ref_preds(rt, in))
        return false;
    long npred = (m->methods != 0) + m->nheaders + m->nquery;
    long k[8] = {hc, hsub, pc, psub, -npred, -(long)rt->priority, (long)rt->index, 0};
    memcpy(key, k, sizeof(k));
    return true;
}

static bool ref_method_ok(uint32_t methods, int method)
{
    if (!methods)
        return true;
    if (methods & M(GET))
        methods |= M(HEAD);
    return method >= 0 && method < 32 && (methods & (1u << method));
}

static int ref_match(const struct pt_generation *g, const struct pt_route_input *in,
                     struct pt_route_result *out)
{
    long best[8], key[8];
    struct pt_route_result tmp;
    uint32_t allow = 0;
    out->route = NULL;
    out->nparams = 0;
    for (uint32_t i = 0; i < g->nroutes; i++) {
        const struct pt_route *rt = &g->routes[i];
        if (!ref_score(rt, in, key, &tmp))
            continue;
        if (!ref_method_ok(rt->match.methods, in->method_id)) {
            allow |= rt->match.methods;
            continue;
        }
        bool better = !out->route;
        for (int j = 0; j < 8 && !better; j++) {
            if (key[j] != best[j]) {
                better = key[j] < best[j];
                break;
            }
        }
        if (better) {
            memcpy(best, key, sizeof(key));
            *out = tmp;
            out->route = rt;
        }
    }
    if (out->route) {
        out->status = 0;
        out->allow_methods = 0;
        return 0;
    }
    out->nparams = 0;
    if (allow & M(GET))
        allow |= M(HEAD);
    out->allow_methods = allow;
    out->status = allow ? 405 : 404;
    return out->status;
}

/* ---- random tables ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(uint32_t n)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)((rng_state >> 11) % n);
}

static const char *const cfg_hosts[] = {"api.example.com", "*.example.com", "*.api.example.com",
                                        "shop.test",       "*.test",        "a.b.example.com",
                                        "*.b.example.com"};
static const char *const req_hosts[] = {
    "api.example.com",   "API.Example.COM", "x.api.example.com", "example.com", "a.b.example.com",
    "z.a.b.example.com", "shop.test",       "m.shop.TEST",       "other.org",   ""};
static const char *const words[] = {"v1", "v2", "users", "orders", "42", "me", "a", "items", ""};
static const char *const regexes[] = {"^/v1/users/(\\d+)$",
                                      "^/(?<ver>v[12])/(orders|items)(/.*)?$",
                                      "^/a",
                                      "/me$",
                                      "^/(\\w+)/(?<id>\\d+)",
                                      "users"};
static const char *const hnames[] = {"X-Client", "x-tenant", "User-Agent"};
static const char *const hvals[] = {"mobile", "web", "Mobile", "acme", "curl/8"};
static const char *const qkeys[] = {"version", "debug", "id"};
static const char *const qvals[] = {"1", "2", "", "a+b", "123"};

/* Case-insensitive routes in the random tables, and words in any case in
 * their paths and in requests (off for the first tables, whose random
 * sequence stays as it was). */
static bool rand_ci;

static char *rand_path(struct pt_arena *a, int kind)
{
    /* kind 0: request path; 1: exact/prefix; 2: template */
    char buf[128];
    size_t n = 0;
    int nseg = 1 + (int)rnd(4);
    for (int i = 0; i < nseg; i++) {
        buf[n++] = '/';
        const char *w = words[rnd(PT_ARRAY_LEN(words))];
        if (kind == 2 && rnd(3) == 0)
            w = rnd(2) ? "{p}" : "{q}";
        if (kind == 2 && w[0] == 0)
            w = "x";
        size_t at = n;
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s", w);
        if (rand_ci && w[0] != '{' && rnd(3) == 0)
            for (size_t k = at; k < n; k += 1 + rnd(2))
                buf[k] = (char)toupper((unsigned char)buf[k]);
    }
    if (kind == 2) {
        /* Distinct param names within one template. */
        int k = 0;
        for (size_t i = 0; i < n; i++)
            if (buf[i] == '{')
                buf[i + 1] = (char)('a' + k++);
    }
    buf[n] = 0;
    return pt_arena_strdup(a, buf);
}

static void rand_table(struct pt_generation *g, uint32_t n)
{
    gen_init(g, n);
    for (uint32_t i = 0; i < n; i++) {
        struct spec s = {0};
        uint32_t nh = rnd(5) < 2 ? 0 : 1 + rnd(2);
        for (uint32_t j = 0; j < nh; j++)
            s.hosts[j] = cfg_hosts[rnd(PT_ARRAY_LEN(cfg_hosts))];
        switch (rnd(6)) {
        case 0:
            s.path = rand_path(&g->arena, 1);
            break;
        case 1:
            s.tmpl = rand_path(&g->arena, 2);
            break;
        case 2:
        case 3: {
            char *p = rand_path(&g->arena, 1);
            s.prefix = (rnd(4) == 0 && strlen(p) > 1) ? pt_arena_sprintf(&g->arena, "%s/", p) : p;
            break;
        }
        case 4:
            s.regex = regexes[rnd(PT_ARRAY_LEN(regexes))];
            break;
        default:
            break;
        }
        /* Catch-alls (no path, prefix "/") always carry a method mask, or
         * a large table would match every request and never 404/405. */
        bool broad = (!s.path && !s.tmpl && !s.prefix && !s.regex) ||
                     (s.prefix && strcmp(s.prefix, "/") == 0);
        if (broad || rnd(2) == 0) {
            uint32_t mm = 0;
            for (uint32_t b = 0, nb = 1 + rnd(broad ? 2 : 3); b < nb; b++)
                mm |= 1u << (1 + rnd(PT_METHOD__COUNT - 1));
            s.methods = mm;
        }
        for (uint32_t j = 0, nk = rnd(6) == 0 ? 1 + rnd(2) : 0; j < nk; j++) {
            s.hdr[j][0] = hnames[rnd(PT_ARRAY_LEN(hnames))];
            s.hdr[j][1] = rnd(3) ? hvals[rnd(PT_ARRAY_LEN(hvals))] : "~^(mobile|web)$";
        }
        for (uint32_t j = 0, nk = rnd(6) == 0 ? 1 + rnd(2) : 0; j < nk; j++) {
            s.qry[j][0] = qkeys[rnd(PT_ARRAY_LEN(qkeys))];
            s.qry[j][1] = rnd(3) ? qvals[rnd(PT_ARRAY_LEN(qvals))] : "~^\\d+$";
        }
        s.priority = rnd(4) ? 0 : (int)rnd(3) - 1;
        s.ci = rand_ci && rnd(3) == 0;
        gen_add(g, &s);
    }
    /* Shuffle file order relative to construction, while keeping index =
     * position (the loader's invariant). Regexes stay owned by g. */
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = rnd(i);
        struct pt_route t = g->routes[i - 1];
        g->routes[i - 1] = g->routes[j];
        g->routes[j] = t;
    }
    for (uint32_t i = 0; i < n; i++)
        g->routes[i].index = i;
}

static bool same_result(const struct pt_route_result *a, const struct pt_route_result *b)
{
    if (a->status != b->status || a->route != b->route || a->allow_methods != b->allow_methods ||
        a->nparams != b->nparams)
        return false;
    for (uint32_t i = 0; i < a->nparams; i++)
        if (!pt_slice_eq(a->param_names[i], b->param_names[i]) ||
            a->param_values[i].p != b->param_values[i].p ||
            a->param_values[i].len != b->param_values[i].len)
            return false;
    return true;
}

static void test_random_vs_reference(uint32_t nroutes, int nreq, uint64_t seed)
{
    struct pt_generation g;
    rng_state = seed;
    rand_table(&g, nroutes);
    char err[256] = "";
    const struct pt_router *r = pt_router_build(&g, err, sizeof(err));
    CHECK_MSG(r != NULL, "random build: %s", err);
    if (!r) {
        gen_free(&g);
        return;
    }
    int mismatches = 0, matched = 0, n405 = 0, kinds[5] = {0}, ci_won = 0;
    for (int i = 0; i < nreq; i++) {
        char target[256];
        struct pt_arena tmp;
        pt_arena_init(&tmp, 1024);
        const char *p = rand_path(&tmp, 0);
        if (rnd(8) == 0)
            p = rnd(2) ? "/" : "";
        int n = snprintf(target, sizeof(target), "%s", p);
        if (rnd(2)) {
            n += snprintf(target + n, sizeof(target) - (size_t)n, "?");
            for (uint32_t j = 0, nq = 1 + rnd(3); j < nq; j++) {
                const char *k = qkeys[rnd(PT_ARRAY_LEN(qkeys))];
                if (rnd(5) == 0)
                    n += snprintf(target + n, sizeof(target) - (size_t)n, "%s%s", j ? "&" : "", k);
                else
                    n += snprintf(target + n, sizeof(target) - (size_t)n, "%s%s=%s", j ? "&" : "",
                                  k, qvals[rnd(PT_ARRAY_LEN(qvals))]);
            }
        }
        struct req q = {.method = (int)rnd(PT_METHOD__COUNT),
                        .host = req_hosts[rnd(PT_ARRAY_LEN(req_hosts))],
                        .target = target};
        for (uint32_t j = 0, nh = rnd(4); j < nh; j++) {
            q.hdr[j][0] = hnames[rnd(PT_ARRAY_LEN(hnames))];
            q.hdr[j][1] = hvals[rnd(PT_ARRAY_LEN(hvals))];
        }
        struct pt_route_input in;
        make_input(&q, &in);
        struct pt_route_result got, want;
        int rc = pt_router_match(r, &in, &got);
        ref_match(&g, &in, &want);
        if (rc != got.status || !same_result(&got, &want)) {
            if (mismatches++ < 5)
                fprintf(stderr,
                        "mismatch: %s %s %s → got %d %s allow=%x np=%u, "
                        "want %d %s allow=%x np=%u\n",
                        pt_method_names[q.method].p, q.host, target, got.status,
                        got.route ? got.route->name : "-", got.allow_methods, got.nparams,
                        want.status, want.route ? want.route->name : "-", want.allow_methods,
                        want.nparams);
        }
        if (want.route) {
            const struct pt_route_match *wm = &want.route->match;
            int kind = wm->path            ? 0
                       : wm->path_template ? 1
                       : wm->path_prefix   ? 2
                       : wm->path_regex    ? 3
                                           : 4;
            kinds[kind]++;
            ci_won += wm->case_insensitive;
        }
        matched += got.status == 0;
        n405 += got.status == 405;
        pt_arena_destroy(&tmp);
    }
    CHECK_MSG(mismatches == 0, "%d of %d lookups differ from the reference (%u routes)", mismatches,
              nreq, nroutes);
    /* The test is only meaningful when all outcomes occur often. */
    CHECK_MSG(matched > nreq / 4 && n405 > 0 && matched < nreq, "matched %d, 405 %d of %d", matched,
              n405, nreq);
    for (int k = 0; k < 5; k++)
        CHECK_MSG(kinds[k] > 0, "no request won by path kind %d", k);
    CHECK_MSG(!rand_ci || ci_won > nreq / 20, "case-insensitive routes won %d of %d", ci_won, nreq);
    printf("router: %u routes, %d random lookups: %d matched (exact %d, template %d, prefix %d, "
           "regex %d, no path %d), %d 405, %d 404, %d mismatches\n",
           nroutes, nreq, matched, kinds[0], kinds[1], kinds[2], kinds[3], kinds[4], n405,
           nreq - matched - n405, mismatches);
    gen_free(&g);
}

/* ---- threads: lookups share the router and use per-thread match data ---- */

struct thr {
    const struct pt_router *r;
    int ok;
};

static void *thr_main(void *arg)
{
    struct thr *t = arg;
    const char *paths[] = {"/files/2024/a.txt", "/users/9/posts/1", "/static/x", "/nope/x"};
    for (int i = 0; i < 20000; i++) {
        const char *p = paths[i % 4];
        struct pt_route_input in = {.path = {p, strlen(p)}, .method_id = PT_METHOD_GET};
        struct pt_route_result out;
        int rc = pt_router_match(t->r, &in, &out);
        bool good = (i % 4 == 0) ? rc == 0 && out.nparams == 2 &&
                                       pt_slice_eq_cstr(out.param_values[0], "2024")
                    : (i % 4 == 1) ? rc == 0 && out.nparams == 2
                    : (i % 4 == 2) ? rc == 0
                                   : rc == 404;
        t->ok += good;
    }
    return NULL;
}

static void test_threads(void)
{
    struct pt_generation g;
    const struct spec s[] = {
        {.name = "tmpl", .tmpl = "/users/{id}/posts/{post}"},
        {.name = "regex", .regex = "^/files/(?<year>\\d{4})/(\\w+)\\.txt$"},
        {.name = "static", .prefix = "/static"},
    };
    const struct pt_router *r = build(&g, s, PT_ARRAY_LEN(s));
    if (!r)
        return;
    pthread_t th[4];
    struct thr t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (struct thr){r, 0};
        pthread_create(&th[i], NULL, thr_main, &t[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(t[i].ok, 20000);
    }
    gen_free(&g);
}

int main(void)
{
    test_path_kinds();
    test_regex_params();
    test_segment_boundaries();
    test_hosts();
    test_headers_query();
    test_methods();
    test_order();
    test_versioning();
    test_deep_paths();
    test_build_errors();
    test_case_insensitive();
    test_threads();
    test_random_vs_reference(20, 5000, 1);
    test_random_vs_reference(200, 10000, 2);
    test_random_vs_reference(1000, 20000, 3);
    test_random_vs_reference(1000, 20000, 4);
    rand_ci = true;
    test_random_vs_reference(200, 10000, 5);
    test_random_vs_reference(1000, 20000, 6);
    return unit_report("router");
}
