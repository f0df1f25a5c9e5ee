/*
 * cors.c — Cross-Origin Resource Sharing at the gateway (the Fetch
 * standard's CORS protocol; Kong's cors plugin, Envoy's CorsPolicy).
 *
 *   cors:
 *     origins: [https://app.example.com, "~^https://[a-z]+\\.example\\.org$"]  # see below
 *     methods: [GET, POST]          # default GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS
 *     allow_headers: [Content-Type, Authorization]   # or "*": the request's own
 *     expose_headers: [X-Request-ID]
 *     credentials: true
 *     max_age: 10m
 *     preflight_continue: false
 *     private_network: false
 *
 * A preflight (OPTIONS with Origin and Access-Control-Request-Method) is
 * answered here: 204 with the Allow-* fields for an allowed origin, 403
 * without any for a refused one; the upstream never sees it unless
 * `preflight_continue: true`. Any other request goes on; on its response
 * (the upstream's, or one the gateway makes after this filter ran: a 401,
 * a 429, a 502) an allowed origin is echoed in Access-Control-Allow-Origin
 * with -Allow-Credentials and -Expose-Headers, a refused one gets no CORS
 * field at all, so the browser withholds the response from the page. CORS
 * is not access control: the refused request still reaches the upstream.
 * The upstream's own Access-Control-Allow-Origin, -Allow-Credentials and
 * -Expose-Headers are replaced on a route with cors: the gateway's policy
 * is the answer. Whenever the answer depends on the Origin (every list but
 * `"*"`), `Vary: Origin` is added to the response's Vary.
 *
 * Origins are exact (`https://app.example.com`, compared ignoring ASCII
 * case), a wildcard subdomain (`https://` then `*.example.com`: one or
 * more labels before `.example.com`, never the apex), a PCRE2 regex after `~`
 * (used as written: anchor it), or `"*"` alone. `credentials: true` never
 * goes with a `"*"`: it is a config error, and no `*` is ever answered.
 *
 * Priority 2000, the first request filter: a preflight carries no
 * credentials, so nothing that wants some may refuse it first.
 *
 * Routing: a preflight asks about the method it names, so when no route
 * takes the OPTIONS itself, the gateway routes it as that method, then by
 * host and path alone, and keeps the route when it has cors
 * (exchange.c, route_preflight).
 *
 * Ownership: the compiled config (joined field values, regexes; their
 * pcre2 codes freed with the generation arena) is read-only on workers.
 * Per request: one state word and the echoed origin, in the request arena;
 * a regex match borrows its match data from the request arena too.
 */
#include "filters/registry.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <stdio.h>

enum origin_kind {
    ORIGIN_EXACT,    /* text: the whole origin */
    ORIGIN_WILDCARD, /* text: "scheme://", suffix: ".example.com[:port]" */
    ORIGIN_REGEX,
};

struct cors_origin {
    enum origin_kind kind;
    pt_slice text, suffix;
    pcre2_code *re;
};

struct cors_conf {
    struct pt_strlist origins, methods, allow_headers, expose_headers;
    bool credentials;
    uint64_t max_age_ms;
    bool preflight_continue;
    bool private_network;
    /* Filled by cors_compile (not YAML keys). */
    bool any_origin; /* origins: "*" */
    struct cors_origin *ov;
    uint32_t on;
    pt_slice allow_methods;   /* joined, or "*" */
    pt_slice allow_headers_v; /* joined; empty: none */
    bool reflect_headers;     /* allow_headers: "*" */
    pt_slice expose;          /* joined; empty: none */
    pt_slice max_age;         /* seconds; empty: none */
};

static const struct pt_field cors_fields[] = {
    {"origins", PT_F_STRING_LIST, offsetof(struct cors_conf, origins), NULL},
    {"methods", PT_F_STRING_LIST, offsetof(struct cors_conf, methods), NULL},
    {"allow_headers", PT_F_STRING_LIST, offsetof(struct cors_conf, allow_headers), NULL},
    {"expose_headers", PT_F_STRING_LIST, offsetof(struct cors_conf, expose_headers), NULL},
    {"credentials", PT_F_BOOL, offsetof(struct cors_conf, credentials), NULL},
    {"max_age", PT_F_DURATION, offsetof(struct cors_conf, max_age_ms), NULL},
    {"preflight_continue", PT_F_BOOL, offsetof(struct cors_conf, preflight_continue), NULL},
    {"private_network", PT_F_BOOL, offsetof(struct cors_conf, private_network), NULL},
    {NULL, 0, 0, NULL},
};

/* Kong's default minus TRACE and CONNECT, which a page can never send
 * (Fetch's forbidden methods). */
#define DEFAULT_METHODS "GET, HEAD, PUT, PATCH, POST, DELETE, OPTIONS"

/* What the request phase found, for the response head. */
enum cors_verdict {
    CORS_NO_ORIGIN = 0, /* not a CORS request (no Origin) */
    CORS_REFUSED,
    CORS_ALLOWED,
};

struct cors_state {
    enum cors_verdict verdict;
    pt_slice origin; /* CORS_ALLOWED: the value to echo (request arena) */
};

/* ---- matching ---- */

static bool host_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.';
}

static bool prefix_ieq(pt_slice s, pt_slice prefix)
{
    return s.len >= prefix.len && pt_slice_ieq((pt_slice){s.p, prefix.len}, prefix);
}

/* PCRE2 allocates the match data through these, from the request arena:
 * nothing to free, no malloc on the request path. */
static void *re_alloc(size_t n, void *arena)
{
    return pt_arena_alloc(arena, n);
}

static void re_free(void *p, void *arena)
{
    (void)p;
    (void)arena;
}

static bool regex_matches(const struct cors_origin *o, pt_slice origin, struct pt_arena *a)
{
    pcre2_general_context *gc = pcre2_general_context_create(re_alloc, re_free, a);
    pcre2_match_data *md = gc ? pcre2_match_data_create(1, gc) : NULL;
    if (!md)
        return false; /* out of memory: refused, never allowed by accident */
    return pcre2_match(o->re, (PCRE2_SPTR)origin.p, origin.len, 0, 0, md, NULL) >= 0;
}

/* A wildcard (scheme, then `*.example.com`): a non-empty run of labels
 * between the scheme and the suffix. */
static bool wildcard_matches(const struct cors_origin *o, pt_slice origin)
{
    if (origin.len <= o->text.len + o->suffix.len || !prefix_ieq(origin, o->text))
        return false;
    pt_slice tail = {origin.p + origin.len - o->suffix.len, o->suffix.len};
    if (!pt_slice_ieq(tail, o->suffix))
        return false;
    const char *s = origin.p + o->text.len, *e = tail.p;
    if (*s == '.' || e[-1] == '.')
        return false;
    for (; s < e; s++)
        if (!host_char((unsigned char)*s))
            return false;
    return true;
}

static bool origin_allowed(const struct cors_conf *c, pt_slice origin, struct pt_arena *a)
{
    for (uint32_t i = 0; i < c->on; i++) {
        const struct cors_origin *o = &c->ov[i];
        switch (o->kind) {
        case ORIGIN_EXACT:
            if (pt_slice_ieq(origin, o->text))
                return true;
            break;
        case ORIGIN_WILDCARD:
            if (wildcard_matches(o, origin))
                return true;
            break;
        case ORIGIN_REGEX:
            if (regex_matches(o, origin, a))
                return true;
            break;
        }
    }
    return false;
}

/* ---- the request phase ---- */

static void add(struct pt_filter_ctx *ctx, pt_slice name, pt_slice value)
{
    /* Out of memory drops a field: the browser then blocks, which is safe. */
    (void)pt_headers_add(ctx->resp_headers, ctx->arena, name, value);
}

/* The fields that say who may read a response; Expose-Headers only on an
 * actual one (a preflight's answer is never read by the page). */
static void add_decoration(struct pt_filter_ctx *ctx, const struct cors_conf *c, pt_slice origin,
                           bool actual)
{
    add(ctx, PT_SLICE("Access-Control-Allow-Origin"), c->any_origin ? PT_SLICE("*") : origin);
    if (c->credentials)
        add(ctx, PT_SLICE("Access-Control-Allow-Credentials"), PT_SLICE("true"));
    if (actual && c->expose.len)
        add(ctx, PT_SLICE("Access-Control-Expose-Headers"), c->expose);
}

static pt_slice req_field(struct pt_filter_ctx *ctx, pt_slice name)
{
    const struct pt_hfield *f = pt_headers_find(ctx->req_headers, name);
    return f ? f->value : (pt_slice){NULL, 0};
}

/* The answer to an allowed preflight: 204 and the Allow-* fields. */
static int answer_preflight(struct pt_filter_ctx *ctx, const struct cors_conf *c, pt_slice origin)
{
    add_decoration(ctx, c, origin, false);
    /* A `*` in Allow-Methods is literal with credentials (a config error
     * then): without, it admits any method. */
    add(ctx, PT_SLICE("Access-Control-Allow-Methods"), c->allow_methods);
    pt_slice want = req_field(ctx, PT_SLICE("Access-Control-Request-Headers"));
    if (c->reflect_headers ? want.len > 0 : c->allow_headers_v.len > 0)
        add(ctx, PT_SLICE("Access-Control-Allow-Headers"),
            c->reflect_headers ? want : c->allow_headers_v);
    if (c->max_age.len)
        add(ctx, PT_SLICE("Access-Control-Max-Age"), c->max_age);
    if (c->private_network &&
        pt_slice_ieq(req_field(ctx, PT_SLICE("Access-Control-Request-Private-Network")),
                     PT_SLICE("true")))
        add(ctx, PT_SLICE("Access-Control-Allow-Private-Network"), PT_SLICE("true"));
    ctx->respond_status = 204;
    pt_filter_note(ctx, "cors", "preflight");
    return PT_FILTER_RESPOND;
}

static int cors_on_request(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct cors_conf *c = conf;
    struct cors_state *st = state;
    const struct pt_hfield *of = pt_headers_find_token(ctx->req_headers, PT_TOK_ORIGIN);
    pt_slice method = ctx->method_id == PT_METHOD_OPTIONS
                          ? req_field(ctx, PT_SLICE("Access-Control-Request-Method"))
                          : (pt_slice){NULL, 0};
    if (!of) {
        st->verdict = CORS_NO_ORIGIN;
        return PT_FILTER_CONTINUE;
    }
    bool allowed = c->any_origin || origin_allowed(c, of->value, ctx->arena);
    bool preflight = method.len > 0;
    if (preflight && !c->preflight_continue) {
        /* The answer depends on these request fields: a cache must key on them. */
        add(ctx, PT_SLICE("Vary"),
            c->private_network ? PT_SLICE("Origin, Access-Control-Request-Method, "
                                          "Access-Control-Request-Headers, "
                                          "Access-Control-Request-Private-Network")
                               : PT_SLICE("Origin, Access-Control-Request-Method, "
                                          "Access-Control-Request-Headers"));
        if (allowed)
            return answer_preflight(ctx, c, of->value);
        ctx->respond_status = 403;
        ctx->respond_error = "CORS origin not allowed";
        pt_filter_note(ctx, "cors", "refused");
        return PT_FILTER_RESPOND;
    }
    if (!allowed) {
        st->verdict = CORS_REFUSED;
        pt_filter_note(ctx, "cors", "refused");
        return PT_FILTER_CONTINUE;
    }
    st->verdict = CORS_ALLOWED;
    st->origin =
        (pt_slice){pt_arena_strndup(ctx->arena, of->value.p, of->value.len), of->value.len};
    if (!st->origin.p) {
        st->verdict = CORS_REFUSED;
        return PT_FILTER_CONTINUE;
    }
    /* A response the gateway makes later (a 401, a 429, a 502) carries
     * these; an upstream's response head replaces the whole field list,
     * and cors_on_response_head decorates it again. */
    add_decoration(ctx, c, st->origin, true);
    if (!c->any_origin)
        add(ctx, PT_SLICE("Vary"), PT_SLICE("Origin"));
    return PT_FILTER_CONTINUE;
}

/* ---- the response head ---- */

/* Whether a comma-separated field value lists `token` (any case) or `*`. */
static bool lists_token(pt_slice v, pt_slice token)
{
    size_t i = 0;
    while (i < v.len) {
        while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t' || v.p[i] == ','))
            i++;
        size_t s = i;
        while (i < v.len && v.p[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v.p[e - 1] == ' ' || v.p[e - 1] == '\t'))
            e--;
        pt_slice item = {v.p + s, e - s};
        if (pt_slice_ieq(item, token) || (item.len == 1 && item.p[0] == '*'))
            return true;
    }
    return false;
}

/* Adds Origin to the response's Vary: appended to the upstream's own
 * (one field line), unless it already names Origin or is `*`. */
static void vary_origin(struct pt_filter_ctx *ctx)
{
    struct pt_headers *h = ctx->resp_headers;
    struct pt_hfield *last = NULL;
    for (uint32_t i = 0; i < h->n; i++) {
        struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token != PT_TOK_VARY)
            continue;
        if (lists_token(f->value, PT_SLICE("Origin")))
            return;
        last = f;
    }
    if (!last || last->value.len == 0) {
        add(ctx, PT_SLICE("Vary"), PT_SLICE("Origin"));
        return;
    }
    size_t n = last->value.len + sizeof(", Origin") - 1;
    char *v = pt_arena_alloc(ctx->arena, n);
    if (!v)
        return;
    memcpy(v, last->value.p, last->value.len);
    memcpy(v + last->value.len, ", Origin", sizeof(", Origin") - 1);
    last->value = (pt_slice){v, n};
}

/* The upstream's own answer to "who may read this" goes: on a route with
 * cors the gateway's policy is the answer. Names checked by length first:
 * most fields cost one comparison. */
static void drop_upstream_cors(struct pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        struct pt_hfield *f = &h->f[i];
        size_t n = f->name.len;
        if (f->dead || (n != 27 && n != 32 && n != 29) || (f->name.p[0] | 0x20) != 'a')
            continue;
        if (pt_slice_ieq(f->name, PT_SLICE("Access-Control-Allow-Origin")) ||
            pt_slice_ieq(f->name, PT_SLICE("Access-Control-Allow-Credentials")) ||
            pt_slice_ieq(f->name, PT_SLICE("Access-Control-Expose-Headers")))
            f->dead = true;
    }
}

static int cors_on_response_head(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct cors_conf *c = conf;
    const struct cors_state *st = state;
    drop_upstream_cors(ctx->resp_headers);
    if (c->any_origin) {
        /* The same answer for everyone: no Vary needed. */
        add_decoration(ctx, c, (pt_slice){NULL, 0}, true);
        return PT_FILTER_CONTINUE;
    }
    if (st->verdict == CORS_ALLOWED)
        add_decoration(ctx, c, st->origin, true);
    vary_origin(ctx);
    return PT_FILTER_CONTINUE;
}

/* A 103 must not carry the upstream's CORS fields the final head drops. */
static bool cors_hides_interim_field(const void *conf, pt_slice name)
{
    (void)conf;
    return pt_slice_ieq(name, PT_SLICE("Access-Control-Allow-Origin")) ||
           pt_slice_ieq(name, PT_SLICE("Access-Control-Allow-Credentials")) ||
           pt_slice_ieq(name, PT_SLICE("Access-Control-Expose-Headers"));
}

/* ---- load time ---- */

static bool token_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static bool is_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!token_char((unsigned char)*s))
            return false;
    return true;
}

static void free_regex(void *re)
{
    pcre2_code_free(re);
}

/* `scheme://host[:port]`, as a browser serializes an origin; `null` too
 * (sandboxed documents, file: pages). */
static const char *origin_shape(const char *s, size_t *host_at)
{
    if (strcmp(s, "null") == 0) {
        *host_at = 0;
        return NULL;
    }
    const char *sep = strstr(s, "://");
    if (!sep || sep == s)
        return "an origin is `scheme://host[:port]`";
    for (const char *p = s; p < sep; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              (p > s && ((*p >= '0' && *p <= '9') || *p == '+' || *p == '-' || *p == '.'))))
            return "an origin is `scheme://host[:port]`";
    const char *h = sep + 3;
    *host_at = (size_t)(h - s);
    if (!*h)
        return "an origin needs a host";
    if (strchr(h, '/') || strchr(h, '?') || strchr(h, '#'))
        return "an origin has no path, query or trailing `/`";
    return NULL;
}

static int compile_origin(const char *s, struct cors_origin *o, struct pt_arena *a,
                          struct pt_filter_errs *errs)
{
    char msg[300];
    if (s[0] == '~') {
        int code;
        PCRE2_SIZE off;
        o->kind = ORIGIN_REGEX;
        o->re = pcre2_compile((PCRE2_SPTR)(s + 1), PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
        if (!o->re) {
            PCRE2_UCHAR why[120];
            pcre2_get_error_message(code, why, sizeof(why));
            snprintf(msg, sizeof(msg), "invalid regex `%s`: %s at offset %zu", s + 1,
                     (const char *)why, (size_t)off);
            errs->report(errs, "origins", s, false, msg);
            return -1;
        }
        if (pt_arena_defer(a, free_regex, o->re) != 0) {
            pcre2_code_free(o->re);
            errs->report(errs, "origins", s, false, "out of memory");
            return -1;
        }
        (void)pcre2_jit_compile(o->re, PCRE2_JIT_COMPLETE); /* pcre2_match uses it */
        return 0;
    }
    size_t host_at;
    const char *why = origin_shape(s, &host_at);
    if (why) {
        size_t n = strlen(s);
        const char *sep = strstr(s, "://");
        if (sep && n > 1 && strchr(sep + 3, '/') == s + n - 1)
            why = NULL; /* only the trailing slash: say so below */
        if (why) {
            snprintf(msg, sizeof(msg), "`%s`: %s (e.g. `https://app.example.com`)", s, why);
        } else {
            snprintf(msg, sizeof(msg), "`%s`: an origin has no trailing `/` (did you mean `%.*s`?)",
                     s, (int)(n - 1), s);
        }
        errs->report(errs, "origins", s, false, msg);
        return -1;
    }
    const char *star = strchr(s, '*');
    if (!star) {
        o->kind = ORIGIN_EXACT;
        o->text = (pt_slice){s, strlen(s)};
        return 0;
    }
    if (star != s + host_at || star[1] != '.' || strchr(star + 1, '*') || !star[2]) {
        snprintf(msg, sizeof(msg),
                 "`%s`: a wildcard origin is `scheme://*.domain` (any subdomain), "
                 "or use `~regex`",
                 s);
        errs->report(errs, "origins", s, false, msg);
        return -1;
    }
    o->kind = ORIGIN_WILDCARD;
    o->text = (pt_slice){s, host_at};
    o->suffix = (pt_slice){star + 1, strlen(star + 1)};
    return 0;
}

/* Joins a list of tokens into one field value ("a, b"), checking each. */
static int join_tokens(const struct pt_strlist *l, const char *field, struct pt_arena *a,
                       struct pt_filter_errs *errs, pt_slice *out)
{
    size_t cap = 1;
    int rc = 0;
    for (uint32_t i = 0; i < l->n; i++) {
        cap += strlen(l->v[i]) + 2;
        if (!is_token(l->v[i]) || (strcmp(l->v[i], "*") == 0 && l->n > 1)) {
            char msg[256];
            snprintf(msg, sizeof(msg), "`%s` in `%s`: %s", l->v[i], field,
                     strcmp(l->v[i], "*") == 0 ? "`*` stands alone"
                                               : "not a field or method name (a token)");
            errs->report(errs, field, l->v[i], false, msg);
            rc = -1;
        }
    }
    char *o = pt_arena_alloc(a, cap);
    if (!o) {
        errs->report(errs, field, NULL, false, "out of memory");
        return -1;
    }
    size_t n = 0;
    for (uint32_t i = 0; i < l->n; i++) {
        if (i) {
            o[n++] = ',';
            o[n++] = ' ';
        }
        size_t k = strlen(l->v[i]);
        memcpy(o + n, l->v[i], k);
        n += k;
    }
    o[n] = 0;
    *out = (pt_slice){o, n};
    return rc;
}

static bool is_star(const struct pt_strlist *l)
{
    return l->n == 1 && strcmp(l->v[0], "*") == 0;
}

/* `*` with credentials: the browser takes it literally (Fetch), so it
 * could only mislead. */
static int refuse_star_with_credentials(const struct cors_conf *c, struct pt_filter_errs *errs)
{
    static const struct {
        const char *field;
        size_t off;
        const char *hint;
    } lists[] = {
        {"origins", offsetof(struct cors_conf, origins), "list the origins"},
        {"methods", offsetof(struct cors_conf, methods), "list the methods"},
        {"allow_headers", offsetof(struct cors_conf, allow_headers), "list the request headers"},
        {"expose_headers", offsetof(struct cors_conf, expose_headers), "list the response headers"},
    };
    int rc = 0;
    for (size_t i = 0; i < PT_ARRAY_LEN(lists); i++) {
        const struct pt_strlist *l = (const void *)((const char *)c + lists[i].off);
        for (uint32_t k = 0; k < l->n; k++) {
            if (strcmp(l->v[k], "*") != 0)
                continue;
            char msg[200];
            snprintf(msg, sizeof(msg), "`*` in `%s` does not go with `credentials: true`: %s",
                     lists[i].field, lists[i].hint);
            errs->report(errs, lists[i].field, l->v[k], false, msg);
            rc = -1;
        }
    }
    return rc;
}

static int compile_origins(struct cors_conf *c, struct pt_arena *a, struct pt_filter_errs *errs)
{
    if (c->origins.n == 0) {
        errs->report(errs, NULL, NULL, false,
                     "give `origins` (e.g. `origins: [https://app.example.com]`)");
        return -1;
    }
    if (is_star(&c->origins)) {
        c->any_origin = true;
        return 0;
    }
    c->ov = pt_arena_zalloc(a, sizeof(*c->ov) * c->origins.n);
    if (!c->ov) {
        errs->report(errs, "origins", NULL, false, "out of memory");
        return -1;
    }
    int rc = 0;
    for (uint32_t i = 0; i < c->origins.n; i++) {
        if (strcmp(c->origins.v[i], "*") == 0) {
            errs->report(errs, "origins", "*", false,
                         "`*` allows every origin: it stands alone in `origins`");
            rc = -1;
            continue;
        }
        if (compile_origin(c->origins.v[i], &c->ov[c->on], a, errs) == 0)
            c->on++;
        else
            rc = -1;
    }
    return rc;
}

static int cors_compile(void *conf, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct cors_conf *c = conf;
    int rc = compile_origins(c, a, errs);
    if (c->credentials)
        rc |= refuse_star_with_credentials(c, errs);
    if (c->methods.n == 0)
        c->allow_methods = PT_SLICE(DEFAULT_METHODS);
    else
        rc |= join_tokens(&c->methods, "methods", a, errs, &c->allow_methods);
    c->reflect_headers = is_star(&c->allow_headers);
    if (!c->reflect_headers)
        rc |= join_tokens(&c->allow_headers, "allow_headers", a, errs, &c->allow_headers_v);
    rc |= join_tokens(&c->expose_headers, "expose_headers", a, errs, &c->expose);
    if (c->max_age_ms >= 1000) {
        char *v = pt_arena_sprintf(a, "%llu", (unsigned long long)(c->max_age_ms / 1000));
        if (!v) {
            errs->report(errs, "max_age", NULL, false, "out of memory");
            return -1;
        }
        c->max_age = (pt_slice){v, strlen(v)};
    } else if (c->max_age_ms > 0) {
        errs->report(errs, "max_age", NULL, false,
                     "`max_age` is sent in whole seconds: give at least 1s");
        rc = -1;
    }
    return rc ? -1 : 0;
}

const struct pt_filter_def pt_filter_cors = {
    .name = "cors",
    .priority = 2000,
    .fields = cors_fields,
    .config_size = sizeof(struct cors_conf),
    .compile = cors_compile,
    .state_size = sizeof(struct cors_state),
    .on_request = cors_on_request,
    .on_response_head = cors_on_response_head,
    .hides_interim_field = cors_hides_interim_field,
};
