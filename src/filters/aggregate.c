/*
 * aggregate.c — the `aggregate` filter (Backend for Frontend): one request
 * fans out to several calls through the outbound client, at once where
 * they are independent, and one merged JSON answer comes back
 * (aggregate_merge.c). Used on a route in place of `upstream:`.
 *
 * Flow: on_request starts every call with no dependency (svc->fan_call,
 * each an ordinary outbound call: timeouts, retries, breaker, health,
 * metrics, a span) and suspends. Each completion records its part, fails
 * the calls that depended on a failed one, starts those whose
 * dependencies are all in, and once nothing is out (or a required part
 * has failed: the answer cannot change) builds the answer and resumes
 * with PT_FILTER_RESPOND. Resuming, and the request's end, cancel what is
 * still out (exchange_filters.c).
 *
 * Memory: the parts (status, body up to max_part_body) live in the
 * request arena; the config in the generation's. No lock, no blocking.
 */
#include "filters/aggregate_int.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

struct agg_state {
    const struct agg_conf *cf; /* the completions get the state only */
    struct agg_part *parts;
    uint32_t out; /* calls started and not finished */
};

/* ---- config ---- */

static const struct pt_field call_fields[] = {
    {"name", PT_F_STRING, offsetof(struct agg_call, name), NULL},
    {"upstream", PT_F_UPSTREAM, offsetof(struct agg_call, upstream), NULL},
    {"method", PT_F_STRING, offsetof(struct agg_call, method), NULL},
    {"path", PT_F_STRING, offsetof(struct agg_call, path), NULL},
    {"forward_headers", PT_F_STRING_LIST, offsetof(struct agg_call, forward_headers), NULL},
    {"headers", PT_F_TEMPLATE_MAP, offsetof(struct agg_call, headers), NULL},
    {"timeout", PT_F_DURATION, offsetof(struct agg_call, timeout_ms), NULL},
    {"optional", PT_F_BOOL, offsetof(struct agg_call, optional), NULL},
    {"fields", PT_F_STRING_LIST, offsetof(struct agg_call, fields), NULL},
    {"rename", PT_F_STRING_MAP, offsetof(struct agg_call, rename), NULL},
    {NULL, 0, sizeof(struct agg_call), NULL},
};

static const struct pt_field agg_fields[] = {
    {"calls", PT_F_OBJECT_LIST, offsetof(struct agg_conf, calls), call_fields},
    {"merge", PT_F_STRING, offsetof(struct agg_conf, merge), NULL},
    {"on_conflict", PT_F_STRING, offsetof(struct agg_conf, on_conflict), NULL},
    {"fields", PT_F_STRLIST_MAP, offsetof(struct agg_conf, fields), NULL},
    {"rename", PT_F_STRMAP_MAP, offsetof(struct agg_conf, rename), NULL},
    {"errors_field", PT_F_STRING, offsetof(struct agg_conf, errors_field), NULL},
    {"max_parts", PT_F_STRING, offsetof(struct agg_conf, max_parts_s), NULL},
    {"max_part_body", PT_F_SIZE, offsetof(struct agg_conf, max_part_body), NULL},
    {"max_body", PT_F_SIZE, offsetof(struct agg_conf, max_body), NULL},
    {NULL, 0, 0, NULL},
};

#define AGG_DEFAULT_MAX_PARTS 8
#define AGG_DEFAULT_PART_BODY (1024 * 1024)
#define AGG_DEFAULT_BODY (4 * 1024 * 1024)

/* What a call forwards of the client's request by default: what a
 * proxied request carries about who asks and which trace it is in. */
static const char *const default_forward[] = {
    "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP",
    "X-Request-ID",    "traceparent",       "tracestate",       "X-Consumer-*",
};

static int index_of(const struct agg_conf *cf, const struct agg_call *calls, pt_slice name)
{
    for (uint32_t i = 0; i < cf->calls.n; i++)
        if (calls[i].name && pt_slice_eq_cstr(name, calls[i].name))
            return (int)i;
    return -1;
}

static bool valid_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '_' || *s == '-'))
            return false;
    return true;
}

/* One call: its name, path, method and headers. */
static int compile_call(struct agg_conf *cf, struct agg_call *c, uint32_t i, struct pt_arena *a,
                        struct pt_filter_errs *errs)
{
    char at[64], err[256];
    int bad = 0;
    snprintf(at, sizeof(at), "#%u", i + 1);
    if (!c->name || !valid_name(c->name))
        bad |= pt_filter_errorf(errs, "calls", at, false,
                                "every call has a `name` (letters, digits, `_`, `-`)");
    const struct agg_call *prev = cf->calls.v;
    for (uint32_t j = 0; c->name && j < i; j++)
        if (prev[j].name && strcmp(prev[j].name, c->name) == 0) {
            char nat[64];
            snprintf(nat, sizeof(nat), "#%u.name", i + 1);
            bad |= pt_filter_errorf(errs, "calls", nat, true,
                                    "duplicate call name `%s` (call #%u has it too): parts are "
                                    "named by their calls",
                                    c->name, j + 1);
            break;
        }
    if (!c->upstream)
        bad |= pt_filter_errorf(errs, "calls", at, false, "call has no `upstream`");
    snprintf(at, sizeof(at), "#%u.path", i + 1);
    if (!c->path)
        bad |= pt_filter_errorf(errs, "calls", at, false, "call has no `path`");
    else if (agg_path_compile(&c->tpl, c->path, a, err, sizeof(err)) < 0)
        bad |= pt_filter_errorf(errs, "calls", at, true, "%s", err);
    c->method_s = c->method ? (pt_slice){c->method, strlen(c->method)} : PT_SLICE("GET");
    if (c->method &&
        (!*c->method || strspn(c->method, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != strlen(c->method))) {
        snprintf(at, sizeof(at), "#%u.method", i + 1);
        bad |= pt_filter_errorf(errs, "calls", at, true, "a method is upper-case letters");
    }
    /* forwarded fields */
    const char *const *fw = c->forward_headers.v ? c->forward_headers.v : default_forward;
    uint32_t nf = c->forward_headers.v ? c->forward_headers.n : PT_ARRAY_LEN(default_forward);
    c->fwd = pt_arena_zalloc(a, sizeof(*c->fwd) * (nf ? nf : 1));
    c->hname = pt_arena_zalloc(a, sizeof(*c->hname) * (c->headers.n ? c->headers.n : 1));
    c->hval = pt_arena_zalloc(a, sizeof(*c->hval) * (c->headers.n ? c->headers.n : 1));
    if (!c->fwd || !c->hname || !c->hval)
        return -1;
    for (uint32_t k = 0; k < nf; k++)
        c->fwd[k] = (pt_slice){fw[k], strlen(fw[k])};
    c->nfwd = nf;
    for (uint32_t k = 0; k < c->headers.n; k++) {
        snprintf(at, sizeof(at), "#%u.headers", i + 1);
        if (pt_header_name_check(errs, "calls", at, false, true, c->headers.keys[k], &c->hname[k]) <
            0) {
            bad = -1;
            continue;
        }
        struct pt_template *t;
        if (pt_template_compile(&t, c->headers.values[k], a, err, sizeof(err)) < 0)
            bad |= pt_filter_errorf(errs, "calls", at, true, "%s", err);
        else
            c->hval[k] = t;
    }
    return bad;
}

/* Resolves `${call.X.f}` to call indexes (dependencies), then refuses a
 * cycle: Kahn's order must reach every call. */
static int compile_deps(struct agg_conf *cf, struct agg_call *calls, struct pt_filter_errs *errs)
{
    int bad = 0;
    char at[64];
    for (uint32_t i = 0; i < cf->calls.n; i++) {
        struct agg_call *c = &calls[i];
        snprintf(at, sizeof(at), "#%u.path", i + 1);
        for (uint32_t k = 0; k < c->tpl.nparts; k++) {
            struct agg_tpart *p = (struct agg_tpart *)&c->tpl.parts[k];
            if (p->kind != AGG_V_CALL)
                continue;
            int j = index_of(cf, calls, p->cname);
            if (j < 0) {
                bad |= pt_filter_errorf(errs, "calls", at, true,
                                        "${call.%.*s...} names no call of this filter",
                                        (int)p->cname.len, p->cname.p);
            } else if ((uint32_t)j == i) {
                bad |= pt_filter_errorf(errs, "calls", at, true, "call `%s` depends on itself",
                                        c->name);
            } else {
                p->call = (uint32_t)j;
                c->deps |= 1u << j;
            }
        }
    }
    if (bad)
        return bad;
    uint32_t done = 0, all = cf->calls.n == 32 ? UINT32_MAX : (1u << cf->calls.n) - 1;
    for (bool moved = true; moved && done != all;) {
        moved = false;
        for (uint32_t i = 0; i < cf->calls.n; i++)
            if (!(done & (1u << i)) && (calls[i].deps & ~done) == 0) {
                done |= 1u << i;
                moved = true;
            }
    }
    for (uint32_t i = 0; i < cf->calls.n; i++)
        if (!(done & (1u << i))) {
            snprintf(at, sizeof(at), "#%u.path", i + 1);
            bad |= pt_filter_errorf(errs, "calls", at, true,
                                    "call `%s` is in a dependency cycle (${call...} references "
                                    "that come back to it)",
                                    calls[i].name);
        }
    return bad;
}

/* The top-level `fields` / `rename` maps go to their calls. */
static int per_part_maps(struct agg_conf *cf, struct agg_call *calls, struct pt_filter_errs *errs)
{
    int bad = 0;
    for (uint32_t k = 0; k < cf->fields.n; k++) {
        int j = index_of(cf, calls, (pt_slice){cf->fields.keys[k], strlen(cf->fields.keys[k])});
        if (j < 0)
            bad |= pt_filter_errorf(errs, "fields", cf->fields.keys[k], false,
                                    "`%s` names no call of this filter", cf->fields.keys[k]);
        else if (calls[j].fields.n)
            bad |= pt_filter_errorf(errs, "fields", cf->fields.keys[k], false,
                                    "call `%s` has its own `fields`", cf->fields.keys[k]);
        else
            calls[j].fields = cf->fields.values[k];
    }
    for (uint32_t k = 0; k < cf->rename.n; k++) {
        int j = index_of(cf, calls, (pt_slice){cf->rename.keys[k], strlen(cf->rename.keys[k])});
        if (j < 0)
            bad |= pt_filter_errorf(errs, "rename", cf->rename.keys[k], false,
                                    "`%s` names no call of this filter", cf->rename.keys[k]);
        else if (calls[j].rename.n)
            bad |= pt_filter_errorf(errs, "rename", cf->rename.keys[k], false,
                                    "call `%s` has its own `rename`", cf->rename.keys[k]);
        else
            calls[j].rename = cf->rename.values[k];
    }
    return bad;
}

static int agg_compile(void *conf, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct agg_conf *cf = conf;
    int bad = 0;
    cf->max_parts = AGG_DEFAULT_MAX_PARTS;
    if (cf->max_parts_s) {
        char *end;
        errno = 0;
        cf->max_parts = strtoll(cf->max_parts_s, &end, 10);
        if (errno || end == cf->max_parts_s || *end || cf->max_parts < 1 ||
            cf->max_parts > AGG_MAX_CALLS)
            bad |= pt_filter_errorf(errs, "max_parts", NULL, false,
                                    "`max_parts` is 1 to %d (got `%s`)", AGG_MAX_CALLS,
                                    cf->max_parts_s);
    }
    if (!cf->max_part_body)
        cf->max_part_body = AGG_DEFAULT_PART_BODY;
    if (!cf->max_body)
        cf->max_body = AGG_DEFAULT_BODY;
    if (!cf->errors_field)
        cf->errors_field = "_errors";
    if (!*cf->errors_field)
        bad |= pt_filter_errorf(errs, "errors_field", NULL, false, "`errors_field` is a name");
    if (!cf->merge || strcmp(cf->merge, "namespace") == 0)
        cf->merge_mode = AGG_MERGE_NAMESPACE;
    else if (strcmp(cf->merge, "deep") == 0)
        cf->merge_mode = AGG_MERGE_DEEP;
    else
        bad |= pt_filter_errorf(errs, "merge", NULL, false,
                                "`merge` is `namespace` or `deep` (got `%s`)", cf->merge);
    if (!cf->on_conflict || strcmp(cf->on_conflict, "last") == 0)
        cf->conflict = AGG_CONFLICT_LAST;
    else if (strcmp(cf->on_conflict, "first") == 0)
        cf->conflict = AGG_CONFLICT_FIRST;
    else if (strcmp(cf->on_conflict, "error") == 0)
        cf->conflict = AGG_CONFLICT_ERROR;
    else
        bad |= pt_filter_errorf(errs, "on_conflict", NULL, false,
                                "`on_conflict` is `last`, `first` or `error` (got `%s`)",
                                cf->on_conflict);
    if (cf->calls.n == 0)
        return pt_filter_errorf(errs, NULL, NULL, false,
                                "`aggregate` needs `calls` (a list of {name, upstream, path})");
    if (cf->calls.n > (uint64_t)(cf->max_parts > 0 ? cf->max_parts : AGG_MAX_CALLS)) {
        char at[32];
        snprintf(at, sizeof(at), "#%" PRId64, cf->max_parts + 1);
        return pt_filter_errorf(errs, "calls", at, false,
                                "%u calls, more than max_parts (%" PRId64 ")", cf->calls.n,
                                cf->max_parts);
    }
    struct agg_call *calls = cf->calls.v;
    for (uint32_t i = 0; i < cf->calls.n; i++)
        if (compile_call(cf, &calls[i], i, a, errs) < 0)
            bad = -1;
    if (bad)
        return -1;
    if (compile_deps(cf, calls, errs) < 0 || per_part_maps(cf, calls, errs) < 0)
        return -1;
    cf->c = calls;
    cf->n = cf->calls.n;
    return 0;
}

/* ---- one request ---- */

static bool forwarded(const struct agg_call *c, pt_slice name)
{
    for (uint32_t k = 0; k < c->nfwd; k++) {
        pt_slice f = c->fwd[k];
        if (f.len && f.p[f.len - 1] == '*') {
            if (name.len >= f.len - 1 && strncasecmp(name.p, f.p, f.len - 1) == 0)
                return true;
        } else if (name.len == f.len && strncasecmp(name.p, f.p, f.len) == 0) {
            return true;
        }
    }
    return false;
}

/* The call's fields: the forwarded ones of the client's request, then its
 * own `headers`. NULL when out of memory. */
static struct pt_headers *call_headers(struct pt_filter_ctx *ctx, const struct agg_call *c)
{
    struct pt_headers *h = pt_arena_zalloc(ctx->arena, sizeof(*h));
    if (!h)
        return NULL;
    uint32_t cap = c->headers.n + 8;
    h->f = pt_arena_alloc(ctx->arena, sizeof(*h->f) * cap);
    if (!h->f)
        return NULL;
    h->cap = cap;
    const struct pt_headers *in = ctx->req_headers;
    for (uint32_t i = 0; c->nfwd && i < in->n; i++) {
        const struct pt_hfield *f = &in->f[i];
        if (!f->dead && forwarded(c, f->name) &&
            pt_headers_add(h, ctx->arena, f->name, f->value) < 0)
            return NULL;
    }
    for (uint32_t k = 0; k < c->headers.n; k++) {
        pt_slice v = pt_template_render(c->hval[k], ctx);
        if (!v.p || pt_headers_set(h, ctx->arena, c->hname[k], v) < 0)
            return NULL;
    }
    return h;
}

static void fan_done(struct pt_filter_ctx *ctx, void *state, uint32_t tag,
                     const struct pt_filter_call_res *res);

/* Records a part's failure before it went out. */
static void fail_part(struct agg_part *p, enum agg_outcome o, const char *why)
{
    p->outcome = o;
    p->why = why;
}

/* Starts call i; a start that fails is that part's failure. */
static void start(struct pt_filter_ctx *ctx, const struct agg_conf *cf, struct agg_state *st,
                  uint32_t i)
{
    const struct agg_call *c = &cf->c[i];
    struct agg_part *p = &st->parts[i];
    p->started = true;
    const char *missing = NULL;
    pt_slice path = agg_path_render(&c->tpl, ctx, st->parts, &missing);
    struct pt_headers *h = path.p ? call_headers(ctx, c) : NULL;
    if (!path.p || !h)
        return fail_part(p, AGG_FAILED, missing ? missing : "out of memory");
    struct pt_filter_call_req req = {
        .upstream = c->upstream,
        .method = c->method_s,
        .path = path,
        .headers = h,
        .timeout_ms = c->timeout_ms,
        .max_body = cf->max_part_body + 1, /* one more: a body past the cap shows */
    };
    int e = ctx->svc->fan_call(ctx, &req, i, fan_done);
    if (e == -EAGAIN || e == -EUSERS) /* refused at the upstream's gate: never contacted */
        return fail_part(p, AGG_UNAVAILABLE,
                         e == -EAGAIN ? "circuit breaker open" : "upstream concurrency limit");
    if (e == -EHOSTUNREACH) /* as a proxied request's 503 */
        return fail_part(p, AGG_UNAVAILABLE, "no healthy upstream target");
    if (e < 0)
        return fail_part(p, AGG_FAILED,
                         e == -ENOENT ? "no such upstream" : "the call could not start");
    st->out++;
}

/* Starts what can start now: a call whose dependencies all succeeded;
 * one whose dependency failed fails too. Repeats until nothing moves. */
static void advance(struct pt_filter_ctx *ctx, const struct agg_conf *cf, struct agg_state *st)
{
    for (bool moved = true; moved;) {
        moved = false;
        for (uint32_t i = 0; i < cf->n; i++) {
            struct agg_part *p = &st->parts[i];
            if (p->started || p->outcome != AGG_PENDING)
                continue;
            bool ready = true, broken = false;
            for (uint32_t j = 0; j < cf->n; j++) {
                if (!(cf->c[i].deps & (1u << j)))
                    continue;
                ready &= st->parts[j].outcome == AGG_OK;
                broken |= st->parts[j].outcome != AGG_OK && st->parts[j].outcome != AGG_PENDING;
            }
            if (broken) {
                p->why = "a call it depends on failed";
                p->outcome = AGG_FAILED;
                moved = true;
            } else if (ready) {
                start(ctx, cf, st, i);
                moved |= p->outcome != AGG_PENDING; /* failed at once */
            }
        }
    }
}

/* Whether the answer is decided: nothing out, or a required part failed. */
static bool decided(const struct agg_conf *cf, const struct agg_state *st)
{
    if (st->out == 0)
        return true;
    for (uint32_t i = 0; i < cf->n; i++) {
        enum agg_outcome o = st->parts[i].outcome;
        if (!cf->c[i].optional && o != AGG_PENDING && o != AGG_OK)
            return true;
    }
    return false;
}

/* The fields of a 4xx answer that go to the client with its status: how
 * to authenticate (401, or 403 with a Bearer error) and when to come
 * back (429). The answer's head is in the request arena (filter.h). */
static void keep_client_fields(struct pt_arena *a, struct agg_part *p,
                               const struct pt_filter_call_res *res)
{
    static const pt_slice names[] = {PT_SLICE("WWW-Authenticate"), PT_SLICE("Retry-After")};
    for (uint32_t i = 0; i < res->headers.n; i++) {
        const struct pt_hfield *f = &res->headers.f[i];
        for (size_t k = 0; !f->dead && k < PT_ARRAY_LEN(names); k++) {
            if (f->name.len != names[k].len || strncasecmp(f->name.p, names[k].p, f->name.len))
                continue;
            pt_headers_add(&p->pass, a, names[k], f->value);
        }
    }
}

static void record(struct pt_arena *a, struct agg_part *p, const struct agg_conf *cf,
                   const struct pt_filter_call_res *res)
{
    p->status = res->error == PT_CALL_OK ? res->status : 0;
    if (res->error == PT_CALL_ERR_TIMEOUT) {
        p->outcome = AGG_TIMEOUT;
        p->why = "timed out";
    } else if (res->error == PT_CALL_ERR_NO_TARGET) {
        p->outcome = AGG_UNAVAILABLE; /* as a proxied request's 503 */
        p->why = res->error_text ? res->error_text : "no healthy target";
    } else if (res->error != PT_CALL_OK) {
        p->outcome = AGG_FAILED;
        p->why = res->error_text ? res->error_text : "the call failed";
    } else if (res->truncated || res->body.len > cf->max_part_body) {
        p->outcome = AGG_FAILED;
        p->why = "the answer is larger than max_part_body";
    } else if (res->status >= 200 && res->status < 300) {
        p->outcome = AGG_OK;
        p->body = res->body;
    } else if (res->status >= 400 && res->status < 500) {
        p->outcome = AGG_CLIENT;
        p->body = res->body;
        p->why = "the upstream refused the request";
        keep_client_fields(a, p, res);
    } else {
        p->outcome = AGG_FAILED;
        p->why = res->status >= 500 ? "the upstream failed" : "unexpected status";
    }
}

static void fan_done(struct pt_filter_ctx *ctx, void *state, uint32_t tag,
                     const struct pt_filter_call_res *res)
{
    struct agg_state *st = state;
    const struct agg_conf *cf = st->cf;
    st->out--;
    record(ctx->arena, &st->parts[tag], cf, res);
    advance(ctx, cf, st);
    if (!decided(cf, st))
        return; /* more are out */
    agg_build(ctx, cf, st->parts);
    ctx->resume(ctx, PT_FILTER_RESPOND); /* cancels what is still out */
}

static int agg_request(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct agg_conf *cf = conf;
    struct agg_state *st = state;
    st->cf = cf;
    st->parts = pt_arena_zalloc(ctx->arena, sizeof(*st->parts) * cf->n);
    if (!st->parts)
        return PT_FILTER_ERROR;
    advance(ctx, cf, st);
    if (decided(cf, st)) {
        agg_build(ctx, cf, st->parts); /* the gateway cancels anything still out */
        return PT_FILTER_RESPOND;
    }
    return PT_FILTER_SUSPEND; /* bounded by the calls' own deadlines (filter.h fan_call) */
}

const struct pt_filter_def pt_filter_aggregate = {
    .name = "aggregate",
    .priority = 100, /* last: it answers, after auth, limits, transforms and the cache */
    .fields = agg_fields,
    .config_size = sizeof(struct agg_conf),
    .compile = agg_compile,
    .state_size = sizeof(struct agg_state),
    .on_request = agg_request,
};
