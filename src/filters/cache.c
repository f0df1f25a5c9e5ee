/*
 * cache.c — the shared response cache filter (RFC 9111), over the
 * process-wide store of cache_store.h.
 *
 *   cache:
 *     ttl: 0s                     # when the response says nothing (0: not stored)
 *     override_ttl: false         # ttl always, whatever the response says
 *     vary_headers: []            # request fields added to the key
 *     per_consumer: false         # the consumer is part of the key
 *     lock_timeout: 5s            # how long a miss waits for another's fetch
 *     stale_while_revalidate: 0s  # serve stale while one background refresh runs
 *     stale_if_error: 0s          # serve stale when the upstream fails / 5xx
 *     max_object_bytes: 1MiB      # bigger bodies are not stored
 *
 * Request phase (priority 500, after auth, limits and transforms): GET and
 * HEAD only; a request the client sent with Authorization (whether or not
 * a filter hid it since) only when an auth filter named the consumer and
 * per_consumer is on; Range and `Cache-Control: no-store`
 * bypass; `no-cache` skips the stored answer (the fetch then refreshes it).
 * A fresh entry answers (X-Cache: HIT, Age), a conditional request that
 * matches it gets a 304. A miss claims the key's flight (one fetch per key
 * across all workers) or waits for the flight, parked (svc->park) until
 * the flight's end wakes its worker (svc->unpark), up to lock_timeout,
 * then goes upstream itself. A HEAD miss goes upstream without a flight
 * (its answer has no body to store). A stale entry within
 * stale_while_revalidate answers at once (STALE) while the request that
 * claimed the flight hands it to a background refresh (cache_refresh.c).
 *
 * Response phase: the fetching request decides cacheability (status 200,
 * 203, 204, 301, 404, 410; no no-store/private/no-cache, no Set-Cookie,
 * no `Vary: *`, a freshness > 0), collects the body chunks (they live in
 * the request arena already) and stores the entry once the body ended
 * whole; a failed or truncated body never reaches eos, so it is never
 * stored. Stale answers: see the docs (operations.md "Caching").
 *
 * Ownership: the per-request state holds at most one entry reference (the
 * entry served or revalidated) and at most one flight; on_log drops both,
 * on every path (the gateway runs on_log for every request whose filters
 * began, cancelled ones included).
 */
#include "filters/cache_int.h"
#include "filters/cache_store.h"
#include "filters/registry.h"
#include "filters/template.h"

#include "http/tokens.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_LOCK_TIMEOUT_MS 5000
#define DEFAULT_MAX_OBJECT (1u << 20)

static const struct pt_field cache_fields[] = {
    {"ttl", PT_F_DURATION, offsetof(struct cache_conf, ttl_ms), NULL},
    {"override_ttl", PT_F_BOOL, offsetof(struct cache_conf, override_ttl), NULL},
    {"vary_headers", PT_F_STRING_LIST, offsetof(struct cache_conf, vary_headers), NULL},
    {"per_consumer", PT_F_BOOL, offsetof(struct cache_conf, per_consumer), NULL},
    {"lock_timeout", PT_F_DURATION, offsetof(struct cache_conf, lock_timeout_ms), NULL},
    {"stale_while_revalidate", PT_F_DURATION, offsetof(struct cache_conf, swr_ms), NULL},
    {"stale_if_error", PT_F_DURATION, offsetof(struct cache_conf, sie_ms), NULL},
    {"max_object_bytes", PT_F_SIZE, offsetof(struct cache_conf, max_object_bytes), NULL},
    {NULL, 0, 0, NULL},
};

enum cache_mode {
    M_OFF = 0, /* bypassed, or answered from the store */
    M_FETCH,   /* goes upstream; may store the answer */
    M_WAIT,    /* suspended on another request's flight */
};

struct cache_state {
    const struct cache_conf *conf;
    struct pt_cache_store *store;
    enum cache_mode mode;
    bool lead;       /* holds the key's flight (seq) */
    bool collecting; /* the answer is being stored */
    bool no_cache;   /* the client asked for a fresh answer */
    bool validated;  /* the fetch carries the entry's validators: a 304 is for us */
    const char *xcache;
    pt_slice key;
    pt_slice inm, ims; /* the client's If-None-Match / If-Modified-Since */
    uint64_t hash, seq, wait_until;
    struct pt_cache_entry *entry; /* served, or stale and being revalidated */
    /* the answer being stored */
    struct pt_cache_put put;
    struct pt_cache_put_slots *slots;
    pt_slice *chunks;
    uint32_t nchunks, capchunks;
};

/* ---- helpers ---- */

static pt_slice cstr(const char *s)
{
    return (pt_slice){s, strlen(s)};
}

static uint64_t now_ms(struct pt_filter_ctx *ctx)
{
    return ctx->svc->now_ms(ctx);
}

static void note(struct pt_filter_ctx *ctx, struct cache_state *st, const char *result,
                 const char *xcache)
{
    pt_filter_note(ctx, "cache", result);
    st->xcache = xcache;
}

static pt_slice req_field(void *ud, pt_slice name)
{
    struct pt_filter_ctx *ctx = ud;
    struct pt_hfield *f = pt_headers_find(ctx->req_headers, name);
    return f ? f->value : (pt_slice){"", 0};
}

static void drop_entry(struct cache_state *st)
{
    if (st->entry) {
        pt_cache_entry_unref(st->store, st->entry);
        st->entry = NULL;
    }
}

/* Ends the flight this request holds and wakes the workers with requests
 * parked on it. */
static void end_flight(struct pt_filter_ctx *ctx, struct cache_state *st, bool pass)
{
    if (st->lead) {
        st->lead = false;
        uint64_t w = pt_cache_flight_end(st->store, st->hash, st->key, st->seq, pass, now_ms(ctx));
        if (w)
            ctx->svc->unpark(w);
    }
}

/* The primary key: method class, route, host, the client's path (as it
 * asked for it: two routes that rewrite to one upstream path never share
 * an entry, nor do routes told apart by match.headers), query, the
 * configured vary fields' values and the consumer, '\n'-separated (none
 * of them can hold a raw LF). */
static bool build_key(struct pt_filter_ctx *ctx, const struct cache_conf *conf,
                      struct cache_state *st)
{
    pt_slice route = cstr(ctx->route_name ? ctx->route_name : "");
    size_t n = 8 + route.len + ctx->authority.len + ctx->client_path.len + ctx->query.len;
    for (uint32_t i = 0; i < conf->vary_headers.n; i++)
        n += req_field(ctx, cstr(conf->vary_headers.v[i])).len + 1;
    pt_slice consumer = ctx->identity ? ctx->identity->consumer : (pt_slice){0};
    if (conf->per_consumer)
        n += consumer.len + 1;
    char *k = pt_arena_alloc(ctx->arena, n);
    if (!k)
        return false;
    size_t o = 0;
    k[o++] = 'G';
    k[o++] = '\n';
    if (route.len)
        memcpy(k + o, route.p, route.len);
    o += route.len;
    k[o++] = '\n';
    for (size_t i = 0; i < ctx->authority.len; i++) {
        char c = ctx->authority.p[i];
        k[o++] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
    }
    k[o++] = '\n';
    if (ctx->client_path.len)
        memcpy(k + o, ctx->client_path.p, ctx->client_path.len);
    o += ctx->client_path.len;
    k[o++] = '?';
    if (ctx->query.len)
        memcpy(k + o, ctx->query.p, ctx->query.len);
    o += ctx->query.len;
    for (uint32_t i = 0; i < conf->vary_headers.n; i++) {
        pt_slice v = req_field(ctx, cstr(conf->vary_headers.v[i]));
        k[o++] = '\n';
        if (v.len)
            memcpy(k + o, v.p, v.len);
        o += v.len;
    }
    if (conf->per_consumer) {
        k[o++] = '\n';
        if (consumer.len)
            memcpy(k + o, consumer.p, consumer.len);
        o += consumer.len;
    }
    st->key = (pt_slice){k, o};
    st->hash = pt_cache_hash(st->store, st->key);
    return true;
}

static void add_age(struct pt_filter_ctx *ctx, const struct pt_cache_entry *e)
{
    char *v = pt_arena_sprintf(ctx->arena, "%llu",
                               (unsigned long long)pt_cache_entry_age_s(e, now_ms(ctx)));
    if (v)
        pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("Age"), cstr(v));
}

/* Whether a conditional request matches the entry (→ 304). */
static bool not_modified(const struct cache_state *st, const struct pt_cache_entry *e)
{
    if (e->status != 200)
        return false;
    if (st->inm.p)
        return e->etag.len && pt_cache_etag_match(st->inm, e->etag);
    int64_t since, lm;
    return st->ims.p && e->last_modified.len && pt_http_date_parse(st->ims, &since) &&
           pt_http_date_parse(e->last_modified, &lm) && lm <= since;
}

/* Answers from the entry (st->entry, whose reference the state keeps until
 * on_log: the body is sent from it in place). */
static int serve(struct pt_filter_ctx *ctx, struct cache_state *st, const char *result,
                 const char *xcache)
{
    const struct pt_cache_entry *e = st->entry;
    note(ctx, st, result, xcache);
    bool nm = not_modified(st, e);
    /* The stored response was decorated when it was stored (cors' Vary
     * and Access-Control-*, response_transform's fields): a field it holds
     * replaces what a filter before this one already put on the answer,
     * never doubles it. */
    struct pt_headers *h = ctx->resp_headers;
    uint32_t before = h->n;
    for (uint32_t i = 0; i < before; i++)
        for (uint32_t j = 0; j < e->nfields && !h->f[i].dead; j++)
            if (pt_slice_ieq(h->f[i].name, e->names[j]))
                h->f[i].dead = true;
    for (uint32_t i = 0; i < e->nfields; i++) {
        if (nm && pt_token_lookup(e->names[i].p, e->names[i].len) == PT_TOK_CONTENT_ENCODING)
            continue;
        pt_headers_add(h, ctx->arena, e->names[i], e->values[i]);
    }
    add_age(ctx, e);
    pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("X-Cache"), cstr(xcache));
    ctx->respond_status = nm ? 304 : e->status;
    ctx->respond_error = NULL;
    ctx->respond_body = e->body;
    if (nm)
        ctx->respond_body = (pt_slice){0};
    ctx->respond_content_type = e->ctype;
    ctx->respond_raw = true; /* an empty stored body, no stored type: as stored */
    return PT_FILTER_RESPOND;
}

static bool stale_usable(const struct pt_cache_entry *e, uint64_t window_ms, uint64_t now)
{
    uint64_t age_ms = e->age0_s * 1000 + (now > e->stored_ms ? now - e->stored_ms : 0);
    return window_ms && age_ms < e->fresh_ms + window_ms;
}

/* Goes upstream as the key's fetcher: the client's own validators would
 * get a 304 we could not store, so they are replaced by the entry's. */
static int fetch(struct pt_filter_ctx *ctx, struct cache_state *st)
{
    st->mode = M_FETCH;
    pt_headers_remove(ctx->req_headers, PT_SLICE("If-None-Match"));
    pt_headers_remove(ctx->req_headers, PT_SLICE("If-Modified-Since"));
    const struct pt_cache_entry *e = st->entry;
    if (e && e->etag.len) {
        pt_headers_set(ctx->req_headers, ctx->arena, PT_SLICE("If-None-Match"), e->etag);
        st->validated = true;
    }
    if (e && e->last_modified.len) {
        pt_headers_set(ctx->req_headers, ctx->arena, PT_SLICE("If-Modified-Since"),
                       e->last_modified);
        st->validated = true;
    }
    if (!st->xcache)
        note(ctx, st, "miss", "MISS");
    return PT_FILTER_CONTINUE;
}

/* Whether a filter of the route edits the response before the cache
 * stores it (run order: cors, rate_limit's fields, response_transform).
 * A background refresh gets the upstream's bare answer, with none of
 * their hooks (they need their request's state): on such a route the
 * request that claims the refresh fetches in the foreground instead, so
 * the entry is what a miss stores, and the others get STALE meanwhile. */
static bool response_filtered(const struct pt_filter_ctx *ctx, const void *conf)
{
    const struct pt_chain *c = ctx->chain; /* phases in run order; the cache is in both */
    return c && ((c->n_response_head && c->response_head[0]->conf != conf) ||
                 (c->n_response_body && c->response_body[0]->conf != conf));
}

static void cache_poll(struct pt_filter_ctx *ctx, void *state);

/* What a lookup (or a poll) found: answer, wait or fetch. */
static int decide(struct pt_filter_ctx *ctx, struct cache_state *st)
{
    const struct cache_conf *conf = st->conf;
    uint64_t now = now_ms(ctx);
    bool head = ctx->method_id == PT_METHOD_HEAD;
    enum pt_cache_flight fl = PT_CACHE_NONE;
    uint64_t seq = st->mode == M_WAIT ? st->seq : 0;
    drop_entry(st);
    st->entry = pt_cache_lookup(st->store, st->hash, st->key, req_field, ctx, now, !head,
                                conf->lock_timeout_ms, &fl, &seq, ctx->svc->worker_bit(ctx));
    struct pt_cache_entry *e = st->entry;
    if (e && !st->no_cache && pt_cache_entry_fresh(e, now)) {
        st->mode = M_OFF;
        return serve(ctx, st, "hit", "HIT");
    }
    if (fl == PT_CACHE_LEAD) {
        st->lead = true;
        st->seq = seq;
        /* Stale within stale_while_revalidate: answered from the entry at
         * once, refreshed in the background (the flight goes with it). */
        if (e && !st->no_cache && stale_usable(e, e->swr_ms, now) &&
            !response_filtered(ctx, conf) &&
            pt_cache_refresh_start(ctx, conf, st->store, e, st->key, st->hash, seq) == 0) {
            st->lead = false;
            st->mode = M_OFF;
            return serve(ctx, st, "stale", "STALE");
        }
        return fetch(ctx, st);
    }
    /* Another request refreshes this stale entry: answer from it. */
    if (e && !st->no_cache && fl == PT_CACHE_WAIT && stale_usable(e, e->swr_ms, now)) {
        st->mode = M_OFF;
        return serve(ctx, st, "stale", "STALE");
    }
    if (fl == PT_CACHE_WAIT && now < st->wait_until) {
        if (st->mode != M_WAIT) {
            pt_filter_note(ctx, "cache", "miss");
            st->mode = M_WAIT;
            st->seq = seq;
        }
        if (ctx->svc->park(ctx, st->wait_until - now, cache_poll) == 0)
            return PT_FILTER_SUSPEND;
    }
    /* The flight ended without an entry (uncacheable, failed), a PASS mark,
     * the wait timed out, or HEAD: upstream, without storing unless we
     * are the only one (PASS: a cacheable answer may still be stored). */
    st->mode = M_FETCH;
    return fetch(ctx, st);
}

/* Whether the client sent Authorization, live or since hidden by a
 * filter (jwt's hide_credentials, request_transform's remove_headers):
 * the answer to such a request is never shared (RFC 9111 §3.5). */
static bool client_sent_authorization(const struct pt_filter_ctx *ctx)
{
    const struct pt_headers *h = ctx->req_headers;
    uint32_t n = ctx->req_fields_sent < h->n ? ctx->req_fields_sent : h->n;
    for (uint32_t i = 0; i < n; i++)
        if (h->f[i].token == PT_TOK_AUTHORIZATION)
            return true;
    return false;
}

/* ---- hooks ---- */

static int cache_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state_)
{
    const struct cache_conf *conf = conf_;
    struct cache_state *st = state_;
    st->conf = conf;
    st->store = ctx->cache_store;
    if (!st->store)
        return PT_FILTER_CONTINUE;
    bool cacheable_method = ctx->method_id == PT_METHOD_GET || ctx->method_id == PT_METHOD_HEAD;
    struct pt_cc cc;
    pt_cc_parse(ctx->req_headers, &cc);
    bool auth_ok = !client_sent_authorization(ctx) ||
                   (conf->per_consumer && ctx->identity && ctx->identity->consumer.len);
    if (!cacheable_method || !auth_ok || cc.no_store ||
        pt_headers_find(ctx->req_headers, PT_SLICE("Range"))) {
        note(ctx, st, "bypass", "BYPASS");
        return PT_FILTER_CONTINUE;
    }
    st->no_cache = cc.no_cache;
    struct pt_hfield *f = pt_headers_find_token(ctx->req_headers, PT_TOK_IF_NONE_MATCH);
    st->inm = f ? f->value : (pt_slice){0};
    f = pt_headers_find_token(ctx->req_headers, PT_TOK_IF_MODIFIED_SINCE);
    st->ims = f ? f->value : (pt_slice){0};
    if (!build_key(ctx, conf, st))
        return PT_FILTER_ERROR;
    st->wait_until = now_ms(ctx) + conf->lock_timeout_ms;
    int r = decide(ctx, st);
    if (r == PT_FILTER_SUSPEND)
        ctx->suspend_deadline_ms = conf->lock_timeout_ms + 1000;
    return r;
}

static void cache_poll(struct pt_filter_ctx *ctx, void *state)
{
    struct cache_state *st = state;
    int r = decide(ctx, st);
    if (r != PT_FILTER_SUSPEND)
        ctx->resume(ctx, r);
}

/* The upstream said 304 to our revalidation: the stored answer is fresh
 * again, its fields updated by the 304's (RFC 9111 §4.3.4). */
static int revalidated(struct pt_filter_ctx *ctx, struct cache_state *st)
{
    struct pt_cache_put_slots *slots = pt_arena_alloc(ctx->arena, sizeof(*slots));
    if (slots) {
        struct pt_cache_put p;
        pt_slice body;
        pt_cache_put_revalidated(&p, slots, &body, st->entry, ctx->resp_headers, st->conf,
                                 now_ms(ctx));
        if (p.fresh_ms)
            pt_cache_insert(st->store, st->hash, &p);
    }
    end_flight(ctx, st, false);
    st->mode = M_OFF;
    /* the upstream's 304 fields are replaced by the entry's */
    for (uint32_t i = 0; i < ctx->resp_headers->n; i++)
        ctx->resp_headers->f[i].dead = true;
    serve(ctx, st, "miss", "MISS");
    pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("Age"), PT_SLICE("0"));
    return PT_FILTER_RESPOND;
}

static int cache_on_response_head(struct pt_filter_ctx *ctx, const void *conf_, void *state_)
{
    const struct cache_conf *conf = conf_;
    struct cache_state *st = state_;
    /* The body is only read (to store it), never changed: the upstream's
     * framing stays (a Content-Length is kept), and a response that is
     * not stored streams with no copy at all (filter.h, enum pt_body_use). */
    ctx->body_use = PT_BODY_SKIP;
    if (st->xcache)
        pt_headers_set(ctx->resp_headers, ctx->arena, PT_SLICE("X-Cache"), cstr(st->xcache));
    if (st->mode != M_FETCH)
        return PT_FILTER_CONTINUE;
    uint64_t now = now_ms(ctx);
    if (ctx->status == 304 && st->entry && st->validated)
        return revalidated(ctx, st); /* leader or not: a 304 the client did not ask for */
    if (ctx->status >= 500 && st->entry && stale_usable(st->entry, st->entry->sie_ms, now)) {
        end_flight(ctx, st, false);
        st->mode = M_OFF;
        for (uint32_t i = 0; i < ctx->resp_headers->n; i++)
            ctx->resp_headers->f[i].dead = true;
        return serve(ctx, st, "stale", "STALE");
    }
    struct pt_cc cc;
    uint64_t fresh = pt_cache_status_cacheable(ctx->status) && ctx->method_id == PT_METHOD_GET
                         ? pt_cache_response_freshness(ctx->resp_headers, conf, &cc)
                         : 0;
    if (fresh && !st->slots)
        st->slots = pt_arena_alloc(ctx->arena, sizeof(*st->slots));
    if (fresh == 0 || !st->slots ||
        !pt_cache_put_head(&st->put, st->slots, ctx->resp_headers, req_field, ctx)) {
        /* uncacheable: waiters go upstream at once; a 5xx is no verdict on
         * the key, so it leaves no pass mark */
        end_flight(ctx, st, ctx->status < 500);
        return PT_FILTER_CONTINUE;
    }
    st->put.key = st->key;
    st->put.route = cstr(ctx->route_name ? ctx->route_name : "");
    st->put.path = ctx->client_path; /* purge by prefix: what clients asked for */
    st->put.status = ctx->status;
    st->put.fresh_ms = fresh;
    st->put.age0_s = pt_cache_age_field(ctx->resp_headers);
    st->put.swr_ms = cc.must_revalidate ? 0 : conf->swr_ms;
    st->put.sie_ms = cc.must_revalidate ? 0 : conf->sie_ms;
    if (ctx->status == 204) {
        /* no content (RFC 9110 §15.3.5): no body phase follows to end it */
        st->put.now_ms = now;
        end_flight(ctx, st, pt_cache_insert(st->store, st->hash, &st->put) == -E2BIG);
        return PT_FILTER_CONTINUE;
    }
    st->collecting = true;
    ctx->body_use = PT_BODY_OBSERVE;
    return PT_FILTER_CONTINUE;
}

/* No answer came (connect error, timeout, reset): stale_if_error. */
static int cache_on_upstream_failure(struct pt_filter_ctx *ctx, const void *conf, void *state_)
{
    (void)conf;
    struct cache_state *st = state_;
    if (st->mode != M_FETCH || !st->entry ||
        !stale_usable(st->entry, st->entry->sie_ms, now_ms(ctx)))
        return PT_FILTER_CONTINUE;
    end_flight(ctx, st, false);
    st->mode = M_OFF;
    return serve(ctx, st, "stale", "STALE");
}

static int cache_on_response_body(struct pt_filter_ctx *ctx, const void *conf_, void *state_,
                                  pt_slice *chunk, bool eos)
{
    const struct cache_conf *conf = conf_;
    struct cache_state *st = state_;
    if (!st->collecting)
        return PT_FILTER_CONTINUE;
    if (chunk->len) {
        if (st->put.body_len + chunk->len > conf->max_object_bytes) {
            st->collecting = false;
            end_flight(ctx, st, true);
            return PT_FILTER_CONTINUE;
        }
        if (st->nchunks == st->capchunks) {
            uint32_t cap = st->capchunks ? st->capchunks * 2 : 8;
            pt_slice *c = pt_arena_alloc(ctx->arena, sizeof(*c) * cap);
            if (!c) {
                st->collecting = false;
                end_flight(ctx, st, false);
                return PT_FILTER_CONTINUE;
            }
            if (st->nchunks)
                memcpy(c, st->chunks, sizeof(*c) * st->nchunks);
            st->chunks = c;
            st->capchunks = cap;
        }
        /* the chunk's bytes are the request arena's (or a body filter's,
         * there too): they stay until the request ends */
        st->chunks[st->nchunks++] = *chunk;
        st->put.body_len += chunk->len;
    }
    if (eos) {
        st->collecting = false;
        st->put.body = st->chunks;
        st->put.nbody = st->nchunks;
        st->put.now_ms = now_ms(ctx);
        int e = pt_cache_insert(st->store, st->hash, &st->put);
        end_flight(ctx, st, e == -E2BIG);
    }
    return PT_FILTER_CONTINUE;
}

static void cache_on_log(struct pt_filter_ctx *ctx, const void *conf, void *state_)
{
    (void)conf;
    struct cache_state *st = state_;
    if (!st->store)
        return;
    st->collecting = false;
    end_flight(ctx, st, false); /* the answer never completed */
    drop_entry(st);
}

static int cache_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    (void)a;
    struct cache_conf *conf = conf_;
    bool ok = true;
    if (!conf->lock_timeout_ms)
        conf->lock_timeout_ms = DEFAULT_LOCK_TIMEOUT_MS;
    if (conf->lock_timeout_ms > 60000) {
        pt_filter_errorf(errs, "lock_timeout", NULL, false, "lock_timeout: at most 60s");
        ok = false;
    }
    if (!conf->max_object_bytes)
        conf->max_object_bytes = DEFAULT_MAX_OBJECT;
    for (uint32_t i = 0; i < conf->vary_headers.n; i++) {
        const char *v = conf->vary_headers.v[i];
        bool bad = !*v;
        for (const char *p = v; *p; p++)
            bad |= *p <= ' ' || *p == ':' || *p == 127;
        if (bad) {
            pt_filter_errorf(errs, "vary_headers", v, false,
                             "vary_headers: `%s` is not a header name", v);
            ok = false;
        }
    }
    return ok ? 0 : -1;
}

const struct pt_filter_def pt_filter_cache = {
    .name = "cache",
    .priority = 500,
    .fields = cache_fields,
    .config_size = sizeof(struct cache_conf),
    .compile = cache_compile,
    .state_size = sizeof(struct cache_state),
    .on_request = cache_on_request,
    .on_response_head = cache_on_response_head,
    .on_response_body = cache_on_response_body,
    .on_log = cache_on_log,
    .on_upstream_failure = cache_on_upstream_failure,
};
