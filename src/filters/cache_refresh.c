/*
 * cache_refresh.c — the cache's background refresh (stale_while_revalidate,
 * cache_int.h): the request that finds an entry stale within its
 * stale_while_revalidate window is answered from it at once, and the
 * entry is refreshed by a detached call (filter.h svc->call_detached)
 * that belongs to the worker, not to the request.
 *
 * One refresh per key: the refresh holds the key's flight (the request
 * claimed it and hands it over), so other requests for the key meanwhile
 * get the stale answer too, on every worker. It ends the flight whatever
 * happens: stored, revalidated (304), uncacheable (a PASS mark), failed
 * or 5xx (the stale entry stays for stale_if_error), timed out
 * (lock_timeout: after it the flight would be taken over anyway), or
 * cancelled by the worker's shutdown; and wakes the requests parked on
 * the flight.
 *
 * Ownership: struct refresh is malloc'd (the request arena goes with the
 * request) and holds a reference on the entry it refreshes and on the
 * store; the detached call pins the generation, so `conf` stays valid.
 * Freed by the completion, on the worker that started it.
 */
#include "filters/cache_int.h"

#include "http/tokens.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The request's fields, kept for the Vary values of the new answer. */
#define REFRESH_MAX_REQ_BYTES (16u << 10)

struct refresh {
    const struct pt_filter_services *svc;
    const struct cache_conf *conf;
    struct pt_cache_store *store;
    struct pt_cache_entry *entry;
    uint64_t hash, seq;
    pt_slice key, route, client_path; /* the entry's (the target is the request's) */
    uint32_t nreq;
    pt_slice *req_names, *req_values;
    char data[]; /* the slices' bytes */
};

static pt_slice req_value(void *ud, pt_slice name)
{
    const struct refresh *r = ud;
    for (uint32_t i = 0; i < r->nreq; i++)
        if (pt_slice_ieq(r->req_names[i], name))
            return r->req_values[i];
    return (pt_slice){"", 0};
}

/* Stores what came back; the `pass` verdict for the flight. */
static bool refresh_store(struct refresh *r, const struct pt_filter_call_res *res, uint64_t now)
{
    struct pt_headers *h = (struct pt_headers *)&res->headers;
    struct pt_cache_put_slots slots;
    struct pt_cache_put p = {0};
    const struct pt_cache_entry *e = r->entry;
    if (res->status == 304 && (e->etag.len || e->last_modified.len)) {
        pt_slice body;
        pt_cache_put_revalidated(&p, &slots, &body, e, h, r->conf, now);
        if (p.fresh_ms)
            pt_cache_insert(r->store, r->hash, &p);
        return false;
    }
    if (res->status >= 500)
        return false; /* no verdict on the key: the stale entry stays */
    struct pt_cc cc;
    uint64_t fresh =
        pt_cache_status_cacheable(res->status) ? pt_cache_response_freshness(h, r->conf, &cc) : 0;
    if (!fresh || res->truncated || !pt_cache_put_head(&p, &slots, h, req_value, r))
        return true;
    pt_slice body = res->body;
    p.key = r->key;
    p.route = r->route;
    p.path = r->client_path;
    p.status = res->status;
    p.body = &body;
    p.nbody = 1;
    p.body_len = body.len;
    p.now_ms = now;
    p.age0_s = pt_cache_age_field(h);
    p.fresh_ms = fresh;
    p.swr_ms = cc.must_revalidate ? 0 : r->conf->swr_ms;
    p.sie_ms = cc.must_revalidate ? 0 : r->conf->sie_ms;
    return pt_cache_insert(r->store, r->hash, &p) == -E2BIG;
}

static void refresh_done(void *arg, const struct pt_filter_call_res *res, uint64_t now)
{
    struct refresh *r = arg;
    bool pass = false;
    if (res->error == PT_CALL_OK)
        pass = refresh_store(r, res, now);
    if (res->error != PT_CALL_OK || res->status >= 500)
        pt_cache_store_count_refresh(r->store, true);
    uint64_t waiters = pt_cache_flight_end(r->store, r->hash, r->key, r->seq, pass, now);
    if (waiters)
        r->svc->unpark(waiters);
    pt_cache_entry_unref(r->store, r->entry);
    pt_cache_store_unref(r->store);
    free(r);
}

static pt_slice put(char **at, pt_slice v)
{
    pt_slice o = {*at, v.len};
    if (v.len)
        memcpy(*at, v.p, v.len);
    *at += v.len;
    return o;
}

static bool conditional(const struct pt_hfield *f)
{
    return f->token == PT_TOK_IF_NONE_MATCH || f->token == PT_TOK_IF_MODIFIED_SINCE ||
           pt_slice_ieq_cstr(f->name, "if-match") ||
           pt_slice_ieq_cstr(f->name, "if-unmodified-since") ||
           pt_slice_ieq_cstr(f->name, "if-range");
}

/* The refresh's state: the key, route, path and the request's fields
 * copied; NULL when they are too big (the caller fetches in the
 * foreground instead) or out of memory. */
static struct refresh *refresh_new(struct pt_filter_ctx *ctx, pt_slice key)
{
    struct pt_headers *h = ctx->req_headers;
    size_t n = key.len + ctx->client_path.len + (ctx->route_name ? strlen(ctx->route_name) : 0);
    uint32_t nf = 0;
    for (uint32_t i = 0; i < h->n; i++)
        if (!h->f[i].dead) {
            n += h->f[i].name.len + h->f[i].value.len;
            nf++;
        }
    if (n > REFRESH_MAX_REQ_BYTES)
        return NULL;
    struct refresh *r = calloc(1, sizeof(*r) + 2 * nf * sizeof(pt_slice) + n);
    if (!r)
        return NULL;
    r->req_names = (pt_slice *)(void *)r->data;
    r->req_values = r->req_names + nf;
    char *at = (char *)(r->req_values + nf);
    r->key = put(&at, key);
    r->client_path = put(&at, ctx->client_path);
    r->route = put(&at, (pt_slice){ctx->route_name ? ctx->route_name : "",
                                   ctx->route_name ? strlen(ctx->route_name) : 0});
    for (uint32_t i = 0; i < h->n; i++)
        if (!h->f[i].dead) {
            r->req_names[r->nreq] = put(&at, h->f[i].name);
            r->req_values[r->nreq] = put(&at, h->f[i].value);
            r->nreq++;
        }
    return r;
}

/* The fields the refresh sends (request arena; the call copies them): the
 * request's, without its own conditionals, with the entry's validators. */
static struct pt_headers *refresh_fields(struct pt_filter_ctx *ctx, const struct pt_cache_entry *e)
{
    struct pt_headers *src = ctx->req_headers;
    struct pt_headers *h = pt_arena_zalloc(ctx->arena, sizeof(*h));
    uint32_t cap = src->n + 2;
    if (!h || !(h->f = pt_arena_alloc(ctx->arena, sizeof(*h->f) * cap)))
        return NULL;
    h->cap = cap;
    for (uint32_t i = 0; i < src->n; i++)
        if (!src->f[i].dead && !conditional(&src->f[i]))
            h->f[h->n++] = src->f[i];
    if (e->etag.len && pt_headers_add(h, ctx->arena, PT_SLICE("If-None-Match"), e->etag) < 0)
        return NULL;
    if (e->last_modified.len &&
        pt_headers_add(h, ctx->arena, PT_SLICE("If-Modified-Since"), e->last_modified) < 0)
        return NULL;
    return h;
}

int pt_cache_refresh_start(struct pt_filter_ctx *ctx, const struct cache_conf *conf,
                           struct pt_cache_store *store, struct pt_cache_entry *e, pt_slice key,
                           uint64_t hash, uint64_t seq)
{
    struct pt_headers *fields = refresh_fields(ctx, e);
    char *target = ctx->query.len ? pt_arena_sprintf(ctx->arena, "%.*s?%.*s", (int)ctx->path.len,
                                                     ctx->path.p, (int)ctx->query.len, ctx->query.p)
                                  : NULL;
    if (!fields || (ctx->query.len && !target))
        return -ENOMEM;
    struct refresh *r = refresh_new(ctx, key);
    if (!r)
        return -ENOMEM;
    r->svc = ctx->svc;
    r->conf = conf;
    r->store = store;
    r->entry = e;
    r->hash = hash;
    r->seq = seq;
    struct pt_filter_call_req req = {
        .method = PT_SLICE("GET"),
        .path = target ? (pt_slice){target, strlen(target)} : ctx->path,
        .headers = fields,
        .timeout_ms = conf->lock_timeout_ms,
        .max_body = conf->max_object_bytes,
    };
    pt_cache_entry_ref(e);
    pt_cache_store_ref(store);
    int rc = ctx->svc->call_detached(ctx, &req, refresh_done, r);
    if (rc == 0)
        pt_cache_store_count_refresh(store, false);
    if (rc < 0) {
        pt_cache_entry_unref(store, e);
        pt_cache_store_unref(store);
        free(r);
    }
    return rc;
}
