/*
 * ext_auth.c — forward authentication: ask an auth service about each
 * request before it goes upstream (nginx auth_request, Traefik
 * ForwardAuth, Envoy ext_authz over HTTP).
 *
 *   ext_auth:
 *     upstream: authz                          # the auth service: an upstream, or
 *     url: http://authz.internal:9000/check    #   a URL (one of the two, required)
 *     path: /check                             # default / (with upstream)
 *     timeout: 500ms                           # default 500ms (0 = default)
 *     forward_headers: [Authorization, Cookie] # default; [] sends none
 *     copy_headers: [X-User-ID, X-User-Groups] # default none
 *     consumer_header: X-User-ID               # default none
 *     on_error: deny                           # deny (503, default) | allow
 *     optional: false                          # true: no forward_headers field, no check
 *
 * The check is a GET without a body to upstream + path carrying the
 * listed request fields as the client sent them, plus X-Forwarded-Method,
 * -Uri (the original target), -Proto, -Host, -For (the chain the gateway
 * forwards, client address included) and X-Request-ID. Its answer decides:
 *
 *   2xx        the request goes on; the copy_headers fields of the answer
 *              are added to it, consumer_header's value becomes the
 *              caller's identity (and the upstream's X-Consumer-Name);
 *   3xx, 4xx   the client gets the auth service's answer: its status,
 *              WWW-Authenticate, Location, Set-Cookie, and its body with
 *              its Content-Type (an empty body: the gateway's JSON error);
 *   otherwise  (5xx, 1xx, timeout, connection failure) on_error: deny
 *              answers 503 (the caller did nothing wrong; Envoy's default
 *              is 403), allow lets the request go on without an identity.
 *
 * With `optional: true` (either-of auth, auth.h) a request that carries
 * none of the forward_headers fields, i.e. no credential for the auth
 * service, is not checked and goes on unauthenticated; one that carries
 * any of them is checked as always. ext_auth is an auth filter
 * (def->auth): the route loses client-sent X-Consumer-* fields.
 *
 * Priority 1240: after ip_restriction and the local auth filters (jwt,
 * introspection, key_auth), so a request they refuse costs no call; before
 * acl, which reads the identity it finds.
 *
 * Client-sent fields named in copy_headers or consumer_header are removed
 * before the check, whatever its outcome: only the auth service sets them.
 *
 * Ownership: the compiled config lives in the generation arena; the call's
 * headers and everything added to the request live in the request arena.
 * The answer (res) lives in the request arena too (filter.h), so its
 * slices are used as they are, not copied. The state is a pointer to the
 * config, so there is nothing for an on_cancel hook to release (the
 * gateway cancels the call itself).
 */
#include "filters/auth.h"
#include "filters/registry.h"
#include "filters/template.h"
#include "core/log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define EXT_AUTH_TIMEOUT_DEFAULT_MS 500
#define EXT_AUTH_MAX_BODY (64 * 1024)
/* Slack between the call's own timeout and the gateway's suspend
 * deadline: the call times out first and on_error decides. */
#define EXT_AUTH_DEADLINE_MARGIN_MS 1000

struct ext_auth_conf {
    const char *upstream;
    const char *url;    /* instead of upstream + path (host names resolved by the control thread) */
    const char *tls_ca; /* https url: the CA file (read by the loader) */
    const char *path;   /* NULL: "/" */
    uint64_t timeout_ms;
    struct pt_strlist forward_headers; /* v == NULL (absent): the default list */
    struct pt_strlist copy_headers;
    const char *consumer_header;
    const char *on_error; /* NULL: deny */
    bool optional;
    /* Filled by ext_auth_compile (not YAML keys). */
    pt_slice path_s;
    const pt_slice *forward;
    uint32_t nforward;
    const pt_slice *copy;
    uint32_t ncopy;
    pt_slice consumer; /* len 0: none */
    bool allow_on_error;
};

struct ext_auth_state {
    const struct ext_auth_conf *conf; /* for the completion callback */
};

static const struct pt_field ext_auth_fields[] = {
    {"upstream", PT_F_UPSTREAM, offsetof(struct ext_auth_conf, upstream), NULL},
    {"url", PT_F_URL, offsetof(struct ext_auth_conf, url), NULL},
    {"tls_ca", PT_F_STRING, offsetof(struct ext_auth_conf, tls_ca), NULL},
    {"path", PT_F_STRING, offsetof(struct ext_auth_conf, path), NULL},
    {"timeout", PT_F_DURATION, offsetof(struct ext_auth_conf, timeout_ms), NULL},
    {"forward_headers", PT_F_STRING_LIST, offsetof(struct ext_auth_conf, forward_headers), NULL},
    {"copy_headers", PT_F_STRING_LIST, offsetof(struct ext_auth_conf, copy_headers), NULL},
    {"consumer_header", PT_F_STRING, offsetof(struct ext_auth_conf, consumer_header), NULL},
    {"on_error", PT_F_STRING, offsetof(struct ext_auth_conf, on_error), NULL},
    {"optional", PT_F_BOOL, offsetof(struct ext_auth_conf, optional), NULL},
    {NULL, 0, 0, NULL},
};

static const char *const default_forward[] = {"Authorization", "Cookie"};

/* What the check always carries, in this order after forward_headers. */
enum {
    XF_METHOD,
    XF_URI,
    XF_PROTO,
    XF_HOST,
    XF_FOR,
    XF_REQUEST_ID,
    XF__COUNT,
};
static const pt_slice xf_names[XF__COUNT] = {
    PT_SLICE("X-Forwarded-Method"), PT_SLICE("X-Forwarded-Uri"), PT_SLICE("X-Forwarded-Proto"),
    PT_SLICE("X-Forwarded-Host"),   PT_SLICE("X-Forwarded-For"), PT_SLICE("X-Request-ID"),
};

/* Fields of a denial that reach the client, every instance. */
static const pt_slice denial_fields[] = {
    PT_SLICE("WWW-Authenticate"),
    PT_SLICE("Location"),
    PT_SLICE("Set-Cookie"),
};

static void ext_auth_done(struct pt_filter_ctx *ctx, void *state,
                          const struct pt_filter_call_res *res);
static int decide(struct pt_filter_ctx *ctx, const struct ext_auth_conf *conf,
                  const struct pt_filter_call_res *res);

/* The next live field named `name` at or after index *i; NULL at the end. */
static const struct pt_hfield *next_named(const struct pt_headers *h, pt_slice name, uint32_t *i)
{
    for (; *i < h->n; (*i)++) {
        const struct pt_hfield *f = &h->f[*i];
        if (!f->dead && pt_slice_ieq(f->name, name)) {
            (*i)++;
            return f;
        }
    }
    return NULL;
}

/* Every X-Forwarded-For field of the request joined into one value (the
 * gateway has already appended the client to it); the client address
 * when there is none. {NULL, 0} when out of memory. */
static pt_slice forwarded_for(struct pt_filter_ctx *ctx)
{
    const struct pt_hfield *f;
    size_t total = 0, count = 0;
    for (uint32_t i = 0; (f = next_named(ctx->req_headers, xf_names[XF_FOR], &i));)
        total += f->value.len + 2, count++;
    if (count == 0)
        return ctx->remote_addr;
    char *out = pt_arena_alloc(ctx->arena, total);
    if (!out)
        return (pt_slice){NULL, 0};
    size_t n = 0;
    for (uint32_t i = 0; (f = next_named(ctx->req_headers, xf_names[XF_FOR], &i));) {
        if (n) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        memcpy(out + n, f->value.p, f->value.len);
        n += f->value.len;
    }
    return (pt_slice){out, n};
}

/* The request target as the client sent it; path?query when the gateway
 * did not provide it. {NULL, 0} when out of memory. */
static pt_slice original_uri(struct pt_filter_ctx *ctx)
{
    if (ctx->uri.len || !ctx->query.len)
        return ctx->uri.len ? ctx->uri : ctx->path;
    const char *s = pt_arena_sprintf(ctx->arena, "%.*s?%.*s", (int)ctx->path.len, ctx->path.p,
                                     (int)ctx->query.len, ctx->query.p);
    return s ? (pt_slice){s, strlen(s)} : (pt_slice){NULL, 0};
}

/* The check's header list. Returns 0 or -ENOMEM. */
static int build_call_headers(struct pt_filter_ctx *ctx, const struct ext_auth_conf *conf,
                              struct pt_headers *out)
{
    const struct pt_hfield *f;
    for (uint32_t k = 0; k < conf->nforward; k++)
        for (uint32_t i = 0; (f = next_named(ctx->req_headers, conf->forward[k], &i));)
            if (pt_headers_add(out, ctx->arena, f->name, f->value) < 0)
                return -ENOMEM;
    pt_slice values[XF__COUNT] = {
        [XF_METHOD] = ctx->method,     [XF_URI] = original_uri(ctx),
        [XF_PROTO] = ctx->scheme,      [XF_HOST] = ctx->authority,
        [XF_FOR] = forwarded_for(ctx), [XF_REQUEST_ID] = ctx->request_id,
    };
    if (!values[XF_URI].p || !values[XF_FOR].p)
        return -ENOMEM;
    for (int k = 0; k < XF__COUNT; k++)
        if (values[k].len && pt_headers_add(out, ctx->arena, xf_names[k], values[k]) < 0)
            return -ENOMEM;
    return 0;
}

/* Whether the request carries a field the auth service would be sent. */
static bool has_credential(struct pt_filter_ctx *ctx, const struct ext_auth_conf *conf)
{
    for (uint32_t k = 0; k < conf->nforward; k++) {
        uint32_t i = 0;
        if (next_named(ctx->req_headers, conf->forward[k], &i))
            return true;
    }
    return false;
}

static int ext_auth_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state_)
{
    const struct ext_auth_conf *conf = conf_;
    struct ext_auth_state *st = state_;
    st->conf = conf;
    if (conf->optional && !has_credential(ctx, conf)) {
        for (uint32_t k = 0; k < conf->ncopy; k++)
            pt_headers_remove(ctx->req_headers, conf->copy[k]);
        if (conf->consumer.len)
            pt_headers_remove(ctx->req_headers, conf->consumer);
        return pt_auth_pass_anonymous(ctx, NULL);
    }

    struct pt_headers *h = pt_arena_zalloc(ctx->arena, sizeof(*h));
    if (!h || build_call_headers(ctx, conf, h) < 0)
        return PT_FILTER_ERROR;
    /* Only the auth service may set these, whatever it answers (also
     * when on_error: allow lets the request through unchecked). */
    for (uint32_t k = 0; k < conf->ncopy; k++)
        pt_headers_remove(ctx->req_headers, conf->copy[k]);
    if (conf->consumer.len)
        pt_headers_remove(ctx->req_headers, conf->consumer);

    struct pt_filter_call_req req = {
        .upstream = conf->upstream,
        .url = conf->url,
        .method = PT_SLICE("GET"),
        .path = conf->path_s,
        .headers = h,
        .timeout_ms = conf->timeout_ms,
        .max_body = EXT_AUTH_MAX_BODY,
    };
    int rc = ctx->svc->call(ctx, &req, ext_auth_done);
    if (rc < 0) {
        /* A start that fails never calls back: decide now, as on_error says. */
        struct pt_filter_call_res res = {.error = PT_CALL_ERR_RESOURCES,
                                         .error_text = "the call could not be started"};
        return decide(ctx, conf, &res);
    }
    ctx->suspend_deadline_ms = conf->timeout_ms + EXT_AUTH_DEADLINE_MARGIN_MS;
    return PT_FILTER_SUSPEND;
}

static void ext_auth_done(struct pt_filter_ctx *ctx, void *state,
                          const struct pt_filter_call_res *res)
{
    const struct ext_auth_state *st = state;
    ctx->resume(ctx, decide(ctx, st->conf, res));
}

/* One warning line a second per worker at most: an auth service that is
 * down fails every request, and the log must not become the outage. */
static void warn_failure(struct pt_filter_ctx *ctx, const struct ext_auth_conf *conf,
                         const struct pt_filter_call_res *res)
{
    static _Thread_local uint64_t next_ms, suppressed;
    uint64_t now = ctx->svc->now_ms(ctx);
    if (now < next_ms) {
        suppressed++;
        return;
    }
    next_ms = now + 1000;
    char why[64];
    if (res->error == PT_CALL_OK)
        snprintf(why, sizeof(why), "it answered %d", res->status);
    else
        snprintf(why, sizeof(why), "%s", res->error_text ? res->error_text : "call failed");
    pt_warn("ext_auth: request %.*s: auth service `%s` failed (%s); %s it "
            "(%llu similar failures not logged)",
            (int)ctx->request_id.len, ctx->request_id.p,
            conf->upstream ? conf->upstream : conf->url, why,
            conf->allow_on_error ? "allowing" : "denying", (unsigned long long)suppressed);
    suppressed = 0;
}

/* 2xx: the answer's copy_headers go upstream, consumer_header names the
 * caller. */
static int allow(struct pt_filter_ctx *ctx, const struct ext_auth_conf *conf,
                 const struct pt_filter_call_res *res)
{
    const struct pt_hfield *f;
    for (uint32_t k = 0; k < conf->ncopy; k++)
        for (uint32_t i = 0; (f = next_named(&res->headers, conf->copy[k], &i));)
            if (pt_headers_add(ctx->req_headers, ctx->arena, conf->copy[k], f->value) < 0)
                return PT_FILTER_ERROR;
    uint32_t i = 0;
    f = conf->consumer.len ? next_named(&res->headers, conf->consumer, &i) : NULL;
    /* As every auth filter: on the exchange and, as X-Consumer-Name, to
     * the upstream. */
    if (f && f->value.len && pt_auth_set_identity(ctx, f->value, NULL, 0, "ext_auth") < 0)
        return PT_FILTER_ERROR;
    return PT_FILTER_CONTINUE;
}

/* 3xx / 4xx: the auth service's answer is the client's. */
static int deny(struct pt_filter_ctx *ctx, const struct pt_filter_call_res *res)
{
    const struct pt_hfield *f;
    for (size_t k = 0; k < PT_ARRAY_LEN(denial_fields) && ctx->resp_headers; k++)
        for (uint32_t i = 0; (f = next_named(&res->headers, denial_fields[k], &i));)
            if (pt_headers_add(ctx->resp_headers, ctx->arena, f->name, f->value) < 0)
                return PT_FILTER_ERROR;
    ctx->respond_status = res->status;
    ctx->respond_body = (pt_slice){NULL, 0};
    ctx->respond_content_type = (pt_slice){NULL, 0};
    /* A cut body would be a broken document: the JSON error instead. */
    if (res->body.len && !res->truncated) {
        uint32_t i = 0;
        f = next_named(&res->headers, PT_SLICE("Content-Type"), &i);
        ctx->respond_body = res->body;
        ctx->respond_content_type = f ? f->value : PT_SLICE("application/octet-stream");
    }
    return PT_FILTER_RESPOND;
}

static int decide(struct pt_filter_ctx *ctx, const struct ext_auth_conf *conf,
                  const struct pt_filter_call_res *res)
{
    if (res->error == PT_CALL_OK && res->status >= 200 && res->status < 300)
        return allow(ctx, conf, res);
    if (res->error == PT_CALL_OK && res->status >= 300 && res->status < 500)
        return deny(ctx, res);
    warn_failure(ctx, conf, res);
    if (conf->allow_on_error)
        return PT_FILTER_CONTINUE;
    ctx->respond_status = 503;
    ctx->respond_body = (pt_slice){NULL, 0};
    ctx->respond_content_type = (pt_slice){NULL, 0};
    return PT_FILTER_RESPOND;
}

/* ---- compile ---- */

/* Checks one header name of `field`; a name ext_auth or the gateway sets
 * itself cannot be forwarded, copied or read as the consumer. */
static int check_name(struct pt_filter_errs *errs, const char *field, const char *entry,
                      bool produces, const char *name, pt_slice *out)
{
    if (pt_header_name_check(errs, field, entry, false, produces, name, out) < 0)
        return -1;
    for (int k = 0; k < XF__COUNT; k++)
        if (pt_slice_ieq(*out, xf_names[k]))
            return pt_filter_errorf(
                errs, field, entry, false,
                "%s: \"%s\" is set by the gateway (X-Forwarded-Method, -Uri, "
                "-Proto, -Host, -For and X-Request-ID): it cannot be listed here",
                field, name);
    return 0;
}

/* A list of header names into slices in `a`. */
static int compile_names(struct pt_filter_errs *errs, const char *field, const char *const *v,
                         uint32_t n, bool produces, struct pt_arena *a, const pt_slice **out,
                         uint32_t *nout)
{
    pt_slice *s = pt_arena_zalloc(a, sizeof(*s) * (n ? n : 1));
    if (!s)
        return pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
    int bad = 0;
    for (uint32_t i = 0; i < n; i++)
        bad |= check_name(errs, field, v[i], produces, v[i], &s[i]);
    *out = s;
    *nout = n;
    return bad;
}

/* An origin-form path: '/' then visible ASCII, no fragment. */
static bool path_ok(const char *p)
{
    if (p[0] != '/')
        return false;
    for (; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
            return false;
    return true;
}

static int ext_auth_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct ext_auth_conf *conf = conf_;
    int bad = 0;

    if (!conf->upstream && !conf->url)
        bad |= pt_filter_errorf(errs, NULL, NULL, false,
                                "`upstream` is required (the auth service's upstream), or `url`");
    if (conf->upstream && conf->url)
        bad |= pt_filter_errorf(errs, "url", NULL, false,
                                "`url` and `upstream` both name the auth service: keep one");
    if (conf->url && conf->path)
        bad |= pt_filter_errorf(errs, "path", NULL, false,
                                "`path` goes with `upstream`; with `url`, put the path in the URL");
    if (!conf->path)
        conf->path = "/";
    if (!path_ok(conf->path))
        bad |=
            pt_filter_errorf(errs, "path", NULL, false,
                             "path: \"%s\" is not an origin-form path (it starts with / and has no "
                             "spaces, control characters or #)",
                             conf->path);
    conf->path_s = (pt_slice){conf->path, strlen(conf->path)};
    if (!conf->timeout_ms)
        conf->timeout_ms = EXT_AUTH_TIMEOUT_DEFAULT_MS;

    if (!conf->on_error || strcmp(conf->on_error, "deny") == 0)
        conf->allow_on_error = false;
    else if (strcmp(conf->on_error, "allow") == 0)
        conf->allow_on_error = true;
    else
        bad |= pt_filter_errorf(errs, "on_error", NULL, false,
                                "on_error: expected deny or allow, got \"%s\"", conf->on_error);

    if (conf->forward_headers.v)
        bad |= compile_names(errs, "forward_headers", conf->forward_headers.v,
                             conf->forward_headers.n, true, a, &conf->forward, &conf->nforward);
    else
        bad |=
            compile_names(errs, "forward_headers", default_forward, PT_ARRAY_LEN(default_forward),
                          true, a, &conf->forward, &conf->nforward);
    bad |= compile_names(errs, "copy_headers", conf->copy_headers.v, conf->copy_headers.n, true, a,
                         &conf->copy, &conf->ncopy);
    if (conf->optional && conf->nforward == 0)
        bad |= pt_filter_errorf(errs, "optional", NULL, false,
                                "optional: true needs `forward_headers` (a request without any of "
                                "them is the one that passes on unchecked)");
    conf->consumer = (pt_slice){"", 0};
    if (conf->consumer_header)
        bad |= check_name(errs, "consumer_header", NULL, false, conf->consumer_header,
                          &conf->consumer);
    return bad ? -1 : 0;
}

const struct pt_filter_def pt_filter_ext_auth = {
    .name = "ext_auth",
    .priority = 1240,
    .auth = true,
    .fields = ext_auth_fields,
    .config_size = sizeof(struct ext_auth_conf),
    .compile = ext_auth_compile,
    .state_size = sizeof(struct ext_auth_state),
    .on_request = ext_auth_on_request,
};
