/*
 * aggregate_merge.c — the `aggregate` filter's answer: the status policy
 * over the finished parts, then each part's JSON shaped (`fields`
 * keep-list, `rename`), merged (namespaced under the call names, or deep
 * with a collision policy) and written into the request arena.
 *
 * JSON goes through jansson, which allocates with malloc: every value made
 * here is released before agg_build returns, and the body that goes to the
 * client is written straight into the request arena (json_dump_callback),
 * bounded by max_body.
 */
#include "filters/aggregate_int.h"

#include <jansson.h>
#include <stdio.h>

/* ---- dotted paths ---- */

/* The next segment of a dotted path; advances *rest past it. */
static bool next_seg(pt_slice *rest, char *seg, size_t cap)
{
    if (!rest->len)
        return false;
    const char *dot = memchr(rest->p, '.', rest->len);
    size_t n = dot ? (size_t)(dot - rest->p) : rest->len;
    snprintf(seg, cap, "%.*s", (int)n, rest->p);
    rest->p += dot ? n + 1 : n;
    rest->len -= dot ? n + 1 : n;
    return true;
}

static json_t *get_path(json_t *v, pt_slice path)
{
    char seg[128];
    while (v && next_seg(&path, seg, sizeof(seg)))
        v = json_is_object(v) ? json_object_get(v, seg) : NULL;
    return v;
}

/* Sets `val` (a new reference, taken) at `path` in object `dst`, making
 * the objects on the way. */
static void set_path(json_t *dst, pt_slice path, json_t *val)
{
    char seg[128];
    while (next_seg(&path, seg, sizeof(seg))) {
        if (!path.len) {
            json_object_set_new(dst, seg, val);
            return;
        }
        json_t *child = json_object_get(dst, seg);
        if (!json_is_object(child)) {
            child = json_object();
            json_object_set_new(dst, seg, child);
        }
        dst = child;
    }
    json_decref(val);
}

/* Copies `path` of object src into object dst; through an array, into
 * each of its object items (dst's array has src's length). */
static void keep_path(json_t *dst, json_t *src, pt_slice path)
{
    char seg[128];
    if (!next_seg(&path, seg, sizeof(seg)))
        return;
    json_t *v = json_object_get(src, seg);
    if (!v)
        return;
    if (!path.len) {
        json_object_set(dst, seg, v);
        return;
    }
    if (json_is_object(v)) {
        json_t *d = json_object_get(dst, seg);
        if (!json_is_object(d)) {
            d = json_object();
            json_object_set_new(dst, seg, d);
        }
        keep_path(d, v, path);
    } else if (json_is_array(v)) {
        json_t *d = json_object_get(dst, seg);
        if (!json_is_array(d)) {
            d = json_array();
            for (size_t i = 0; i < json_array_size(v); i++)
                json_array_append_new(d, json_is_object(json_array_get(v, i))
                                             ? json_object()
                                             : json_deep_copy(json_array_get(v, i)));
            json_object_set_new(dst, seg, d);
        }
        for (size_t i = 0; i < json_array_size(v); i++)
            if (json_is_object(json_array_get(v, i)))
                keep_path(json_array_get(d, i), json_array_get(v, i), path);
    }
}

static pt_slice cs(const char *s)
{
    return (pt_slice){s, strlen(s)};
}

/* The part's keep-list applied to one object (a new reference). */
static json_t *keep(json_t *obj, const struct pt_strlist *fields)
{
    json_t *out = json_object();
    for (uint32_t i = 0; i < fields->n; i++)
        keep_path(out, obj, cs(fields->v[i]));
    return out;
}

static void rename_in(json_t *obj, const struct pt_strmap *rn)
{
    for (uint32_t i = 0; i < rn->n; i++) {
        pt_slice from = cs(rn->keys[i]);
        json_t *v = get_path(obj, from);
        if (!v)
            continue;
        json_incref(v);
        /* remove it from its parent */
        const char *last = strrchr(rn->keys[i], '.');
        json_t *parent = last ? get_path(obj, (pt_slice){from.p, (size_t)(last - from.p)}) : obj;
        json_object_del(parent, last ? last + 1 : rn->keys[i]);
        set_path(obj, cs(rn->values[i]), v);
    }
}

/* Shapes one part's value (a reference, taken; returns one). */
static json_t *shape(json_t *v, const struct agg_call *c)
{
    if (!c->fields.n && !c->rename.n)
        return v;
    if (json_is_object(v)) {
        if (c->fields.n) {
            json_t *k = keep(v, &c->fields);
            json_decref(v);
            v = k;
        }
        rename_in(v, &c->rename);
        return v;
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *e = json_array_get(v, i);
            json_incref(e);
            json_array_append_new(out, shape(e, c));
        }
        json_decref(v);
        return out;
    }
    return v;
}

/* Deep merge of object src into dst; false (with the key in *at) on a
 * collision under AGG_CONFLICT_ERROR. */
static bool deep_merge(json_t *dst, json_t *src, enum agg_conflict pol, const char **at)
{
    const char *k;
    json_t *v;
    json_object_foreach(src, k, v)
    {
        json_t *d = json_object_get(dst, k);
        if (!d) {
            json_object_set(dst, k, v);
        } else if (json_is_object(d) && json_is_object(v)) {
            if (!deep_merge(d, v, pol, at))
                return false;
        } else if (pol == AGG_CONFLICT_ERROR) {
            *at = k;
            return false;
        } else if (pol == AGG_CONFLICT_LAST) {
            json_object_set(dst, k, v);
        }
    }
    return true;
}

/* ---- writing into the arena ---- */

struct sink {
    struct pt_arena *a;
    char *p;
    size_t len, cap, max;
};

static int sink_put(const char *buf, size_t size, void *data)
{
    struct sink *s = data;
    if (s->len + size > s->max)
        return -1;
    if (s->len + size > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 1024;
        while (cap < s->len + size)
            cap *= 2;
        char *p = pt_arena_alloc(s->a, cap);
        if (!p)
            return -1;
        if (s->len)
            memcpy(p, s->p, s->len);
        s->p = p;
        s->cap = cap;
    }
    memcpy(s->p + s->len, buf, size);
    s->len += size;
    return 0;
}

/* The error answer naming the part: status, a short error and a detail. */
static void fail(struct pt_filter_ctx *ctx, int status, const char *error, const char *part,
                 const char *detail)
{
    json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:s%}", "error", error, "status", status, "part",
                          part, "detail", detail ? detail : "", "request_id",
                          ctx->request_id.p ? ctx->request_id.p : "", ctx->request_id.len);
    struct sink s = {.a = ctx->arena, .max = 64 * 1024};
    ctx->respond_status = status;
    ctx->respond_error = error;
    if (o && json_dump_callback(o, sink_put, &s, JSON_COMPACT) == 0 && sink_put("\n", 1, &s) == 0)
        ctx->respond_body = (pt_slice){s.p, s.len};
    json_decref(o);
}

static bool is_json(pt_slice b)
{
    json_t *v = json_loadb(b.p ? b.p : "", b.len, JSON_DECODE_ANY, NULL);
    json_decref(v);
    return v != NULL;
}

/* The status policy over the required parts: true when one answers. */
static bool required_failed(struct pt_filter_ctx *ctx, const struct agg_conf *conf,
                            struct agg_part *parts)
{
    for (uint32_t i = 0; i < conf->n; i++) {
        const struct agg_call *c = &conf->c[i];
        struct agg_part *p = &parts[i];
        if (c->optional || p->outcome == AGG_OK || p->outcome == AGG_PENDING)
            continue;
        for (uint32_t k = 0; p->outcome == AGG_CLIENT && k < p->pass.n; k++)
            pt_headers_add(ctx->resp_headers, ctx->arena, p->pass.f[k].name, p->pass.f[k].value);
        if (p->outcome == AGG_CLIENT && is_json(p->body)) {
            ctx->respond_status = p->status; /* its own JSON body, as it is */
            ctx->respond_body = p->body;
        } else if (p->outcome == AGG_CLIENT) {
            fail(ctx, p->status, "client error", c->name, p->why);
        } else if (p->outcome == AGG_TIMEOUT) {
            fail(ctx, 504, "gateway timeout", c->name, p->why);
        } else if (p->outcome == AGG_UNAVAILABLE) {
            fail(ctx, 503, "service unavailable", c->name, p->why);
        } else {
            fail(ctx, 502, "bad gateway", c->name, p->why);
        }
        return true;
    }
    return false;
}

static void note_error(json_t *errs, const char *name, const struct agg_part *p)
{
    json_t *e = json_pack("{s:s, s:s}", "part", name, "error", p->why ? p->why : "failed");
    /* the upstream's status when that was the failure; a 2xx that is not
     * JSON or too large is told by `error` alone */
    if (e && p->status && (p->status < 200 || p->status > 299))
        json_object_set_new(e, "status", json_integer(p->status));
    json_array_append_new(errs, e);
}

/* Deep mode: an object part merged key by key into root, any other
 * value under the call's name; a key root already has is the collision
 * policy's (`error` answers 502 naming the part and the key). Takes v;
 * false after answering. */
static bool put_deep(struct pt_filter_ctx *ctx, const struct agg_conf *conf,
                     const struct agg_call *c, json_t *root, json_t *v)
{
    const char *at = NULL;
    bool ok = true;
    if (json_is_object(v)) {
        ok = deep_merge(root, v, conf->conflict, &at);
    } else if (!json_object_get(root, c->name) || conf->conflict == AGG_CONFLICT_LAST) {
        json_object_set(root, c->name, v);
    } else if (conf->conflict == AGG_CONFLICT_ERROR) {
        at = c->name;
        ok = false;
    }
    if (!ok) {
        char d[192];
        snprintf(d, sizeof(d), "parts collide at key `%s`", at ? at : "?");
        fail(ctx, 502, "bad gateway", c->name, d);
    }
    json_decref(v);
    return ok;
}

/* Parses and shapes every finished part into root; false after answering
 * with an error (a required part that is not JSON, a collision). */
static bool merge_parts(struct pt_filter_ctx *ctx, const struct agg_conf *conf,
                        struct agg_part *parts, json_t *root, json_t *errs)
{
    for (uint32_t i = 0; i < conf->n; i++) {
        const struct agg_call *c = &conf->c[i];
        struct agg_part *p = &parts[i];
        json_t *v = NULL;
        if (p->outcome == AGG_OK) {
            v = p->body.len ? json_loadb(p->body.p, p->body.len, JSON_DECODE_ANY, NULL)
                            : json_null();
            if (!v) {
                p->outcome = AGG_FAILED;
                p->why = "the answer is not JSON";
                if (!c->optional) {
                    fail(ctx, 502, "bad gateway", c->name, p->why);
                    return false;
                }
            }
        }
        if (!v) {
            note_error(errs, c->name, p);
            continue;
        }
        v = shape(v, c);
        if (conf->merge_mode == AGG_MERGE_DEEP && !put_deep(ctx, conf, c, root, v))
            return false;
        if (conf->merge_mode != AGG_MERGE_DEEP)
            json_object_set_new(root, c->name, v);
    }
    return true;
}

void agg_build(struct pt_filter_ctx *ctx, const struct agg_conf *conf, struct agg_part *parts)
{
    ctx->respond_body = (pt_slice){NULL, 0};
    ctx->respond_content_type = PT_SLICE("application/json");
    if (required_failed(ctx, conf, parts))
        return;
    json_t *root = json_object(), *errs = json_array();
    if (!root || !errs || !merge_parts(ctx, conf, parts, root, errs)) {
        if (!root || !errs)
            fail(ctx, 500, "internal error", "", "out of memory");
        json_decref(root);
        json_decref(errs);
        return;
    }
    bool partial = json_array_size(errs) > 0;
    if (partial)
        json_object_set(root, conf->errors_field, errs);
    struct sink s = {.a = ctx->arena, .max = conf->max_body};
    int r = json_dump_callback(root, sink_put, &s, JSON_COMPACT);
    json_decref(root);
    json_decref(errs);
    if (r != 0) {
        fail(ctx, 502, "bad gateway", "", "the merged answer is larger than max_body");
        return;
    }
    ctx->respond_status = 200;
    ctx->respond_body = (pt_slice){s.p ? s.p : "{}", s.p ? s.len : 2};
    if (partial)
        pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("X-Partial-Response"),
                       PT_SLICE("true"));
}

pt_slice agg_json_field(struct pt_arena *a, pt_slice body, pt_slice path)
{
    json_t *doc = json_loadb(body.p ? body.p : "", body.len, JSON_DECODE_ANY, NULL);
    json_t *v = get_path(doc, path);
    pt_slice out = {NULL, 0};
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        char *d = pt_arena_strndup(a, s, n);
        out = d ? (pt_slice){d, n} : out;
    } else if (v && !json_is_null(v)) {
        char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        char *d = t ? pt_arena_strdup(a, t) : NULL;
        out = d ? (pt_slice){d, strlen(d)} : out;
        free(t);
    }
    json_decref(doc);
    return out;
}
