/*
 * router.h — the compiled router (DESIGN.md §4).
 *
 * Built once per generation from its routes; lookups are lock-free and
 * allocation-free. Structure: host table (exact hosts hashed, wildcard
 * suffixes longest first, then host-less routes) → per-host path index
 * (exact paths hashed, prefixes in a segment trie, templates in a segment
 * trie with {param} edges, regexes in order) → predicates (methods,
 * headers, query).
 *
 * Match order (deterministic, documented in docs/configuration.md):
 *   1. host specificity: exact host > longest wildcard > no host;
 *   2. path specificity: exact path > template (more literal segments
 *      first) > longest prefix > regex > no path;
 *   3. more predicates (methods, headers, query) before fewer;
 *   4. higher `priority` first;
 *   5. file order.
 * The first candidate in that order whose every predicate matches wins.
 * When none matches but some route matched all but its methods, the result
 * is 405 with the union of those routes' methods (for Allow); else 404.
 */
#ifndef PT_GATEWAY_ROUTER_H
#define PT_GATEWAY_ROUTER_H

#include "gateway/generation.h"
#include "http/headers.h"

#define PT_ROUTE_MAX_PARAMS 16

/* The Host value (or :authority) as the router takes it: without its
 * port (`api:8080`, `[::1]:8080` → `[::1]`) and one trailing dot
 * ("api.example.com." is the same name). */
static inline pt_slice pt_router_host(pt_slice host)
{
    for (size_t i = host.len; i > 0; i--) {
        if (host.p[i - 1] == ':') {
            host.len = i - 1;
            break;
        }
        if (host.p[i - 1] == ']')
            break;
    }
    if (host.len > 1 && host.p[host.len - 1] == '.')
        host.len--;
    return host;
}

struct pt_route_input {
    pt_slice host;  /* Host without port, any case */
    pt_slice path;  /* raw path, no query */
    pt_slice query; /* raw query, no '?' */
    int method_id;
    const struct pt_headers *headers;
    /* Match any method (a CORS preflight routed by host and path alone,
     * exchange.c); false on every ordinary lookup. */
    bool any_method;
};

struct pt_route_result {
    const struct pt_route *route; /* NULL when status is 404/405 */
    int status;                   /* 0 on match, 404 or 405 */
    uint32_t allow_methods;       /* for 405: bitmask of 1u << enum pt_method */
    uint32_t nparams;
    pt_slice param_names[PT_ROUTE_MAX_PARAMS];
    pt_slice param_values[PT_ROUTE_MAX_PARAMS]; /* slices into input.path */
};

/* Builds the router in the generation's arena; on error writes `err` and
 * returns NULL. */
struct pt_router *pt_router_build(struct pt_generation *g, char *err, size_t errlen);

/* Looks a request up. Returns 0 when a route matched, else 404 or 405. */
int pt_router_match(const struct pt_router *r, const struct pt_route_input *in,
                    struct pt_route_result *out);

/* Why a route did not match a request (pt_router_explain). */
enum pt_route_miss {
    PT_MISS_NONE, /* it matches */
    PT_MISS_HOST,
    PT_MISS_PATH,
    PT_MISS_METHOD,
    PT_MISS_HEADER,
    PT_MISS_QUERY,
};
extern const char *const pt_route_miss_names[];

struct pt_route_explain {
    const struct pt_route *route;
    enum pt_route_miss miss;
    const char *what; /* the header or query parameter that failed */
};

/*
 * For the admin API's /debug/match (control thread; slow and allocating
 * on purpose, never on the request path): the lookup's result (*res, as
 * pt_router_match), and every route the router weighs before the winner
 * (all routes when none wins), in match order, each with the first
 * predicate it fails (host, path, method, then headers and query in the
 * order written). Routes whose host does not match come after those whose
 * host does. *out is malloc'd (the caller frees it); returns its length,
 * or SIZE_MAX when out of memory.
 */
size_t pt_router_explain(const struct pt_generation *g, const struct pt_route_input *in,
                         struct pt_route_result *res, struct pt_route_explain **out);

#endif
