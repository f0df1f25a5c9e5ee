/*
 * exchange_split.c — which side of a route's split (canary) a request
 * goes to, right after routing. In order:
 *   1. override_header, when the route configures it and the request
 *      carries it naming an upstream of the split: that side (weight 0
 *      included, so a canary can be tried before it takes traffic); any
 *      other value is ignored;
 *   2. the sticky key (header value, or cookie value) present and not
 *      empty: pt_split_hash of it, so the same user lands on the same side
 *      in every worker, process and generation with the same weights;
 *      with `cookie:NAME` and no such cookie, the gateway makes a random
 *      id, picks with it like any key, and sets it on the response;
 *   3. otherwise a weighted random draw (the worker's PRNG).
 * The chosen upstream becomes ex->up: the call, the balancer, the
 * timeouts and the access log's `upstream` all follow it.
 *
 * Cost: a route without `split` never comes here (one branch in route()).
 * With one, a header lookup or two, an FNV pass over the key and a walk
 * over the sides; only a made cookie allocates (its Set-Cookie value, in
 * the request arena).
 */
#include "gateway/exchange_int.h"

#include "http/cookie.h"
#include "http/h1_write.h"

static const char hex[] = "0123456789abcdef";

/* A sticky cookie for a client that has none: a random id (64 bits, hex)
 * as the key, and its Set-Cookie value kept for every response this
 * exchange makes. Returns the id, or an empty slice when out of memory. */
static pt_slice make_cookie(struct pt_exchange *ex, pt_slice name)
{
    static const char attrs[] = "; Path=/; HttpOnly; SameSite=Lax";
    size_t len = name.len + 1 + 16 + sizeof(attrs) - 1;
    char *v = pt_arena_alloc(ex->arena, len);
    if (!v)
        return (pt_slice){0};
    memcpy(v, name.p, name.len);
    v[name.len] = '=';
    char *id = v + name.len + 1;
    uint64_t x = pt_worker_random(ex->w);
    for (int i = 0; i < 16; i++)
        id[i] = hex[(x >> (i * 4)) & 15];
    memcpy(id + 16, attrs, sizeof(attrs) - 1);
    ex->set_cookie = (pt_slice){v, len};
    /* For gateway-made responses from here on (a filter's 401, a 502);
     * an upstream response's head is rebuilt and gets it in
     * response_head(). */
    if (pt_headers_add(&ex->resph, ex->arena, PT_SLICE("Set-Cookie"), ex->set_cookie) != 0)
        return (pt_slice){0};
    return (pt_slice){id, 16};
}

/* The request's sticky key; empty when there is none to use. */
static pt_slice sticky_key(struct pt_exchange *ex, const struct pt_route_split *s, bool *oom)
{
    pt_slice key = {0};
    if (s->sticky == PT_STICKY_HEADER) {
        const struct pt_hfield *f = pt_headers_find(&ex->reqh, s->sticky_name);
        if (f)
            key = f->value;
    } else if (s->sticky == PT_STICKY_COOKIE) {
        if (!pt_cookie_find(&ex->reqh, s->sticky_name, &key) || key.len == 0) {
            key = make_cookie(ex, s->sticky_name);
            *oom = key.len == 0;
        }
    }
    return key;
}

bool pt_exchange_pick_side(struct pt_exchange *ex)
{
    const struct pt_route_split *s = ex->route->split;
    if (s->override_header.len) {
        const struct pt_hfield *f = pt_headers_find(&ex->reqh, s->override_header);
        const struct pt_upstream *up = f ? pt_split_named(s, f->value) : NULL;
        if (up) {
            ex->up = up;
            return true;
        }
    }
    bool oom = false;
    pt_slice key = s->sticky ? sticky_key(ex, s, &oom) : (pt_slice){0};
    if (oom)
        return false;
    uint64_t x = key.len ? pt_split_hash(key) : pt_worker_random(ex->w);
    ex->up = pt_split_side_at(s, x);
    return true;
}
