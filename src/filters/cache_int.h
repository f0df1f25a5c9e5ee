/*
 * cache_int.h — private to the cache filter (cache.c): the HTTP caching
 * rules of RFC 9111 it needs (cache_http.c): Cache-Control directives,
 * HTTP dates, freshness lifetime, and conditional request matching, pure
 * functions over header tables; what a response stores (cache_put.c);
 * and the background refresh (cache_refresh.c).
 */
#ifndef PT_FILTERS_CACHE_INT_H
#define PT_FILTERS_CACHE_INT_H

#include "filters/cache_store.h"
#include "filters/filter.h"
#include "http/headers.h"

struct cache_conf {
    uint64_t ttl_ms;
    bool override_ttl;
    struct pt_strlist vary_headers;
    bool per_consumer;
    uint64_t lock_timeout_ms;
    uint64_t swr_ms;
    uint64_t sie_ms;
    uint64_t max_object_bytes;
};

/* The Cache-Control directives the cache acts on (request or response). */
struct pt_cc {
    bool no_store, no_cache, private_, public_, must_revalidate;
    bool has_max_age, has_s_maxage;
    uint64_t max_age_s, s_maxage_s;
};

/* Parses every Cache-Control field of h (comma lists, quoted values;
 * unknown directives ignored). */
void pt_cc_parse(struct pt_headers *h, struct pt_cc *out);

/* An HTTP-date (IMF-fixdate, RFC 850 or asctime) as seconds since the
 * epoch; false when it does not parse. */
bool pt_http_date_parse(pt_slice v, int64_t *out);

/* The response's freshness lifetime in ms (RFC 9111 §4.2.1): s-maxage,
 * max-age, else Expires minus Date. *explicit_ false when the response
 * says nothing (the config ttl then applies). */
uint64_t pt_cache_freshness_ms(struct pt_headers *h, const struct pt_cc *cc, bool *explicit_);

/* Whether an If-None-Match value matches an entity tag (weak comparison,
 * RFC 9110 §13.1.2; "*" matches any). */
bool pt_cache_etag_match(pt_slice if_none_match, pt_slice etag);

/* ---- cache_put.c: what a response stores ---- */

/* Room for a put's field and Vary slices (the request arena, or the stack). */
struct pt_cache_put_slots {
    pt_slice names[PT_CACHE_MAX_FIELDS], values[PT_CACHE_MAX_FIELDS];
    pt_slice vnames[PT_CACHE_MAX_VARY], vvalues[PT_CACHE_MAX_VARY];
};

bool pt_cache_status_cacheable(int status);
/* The response's Age field in seconds (0: none or not a number). */
uint64_t pt_cache_age_field(struct pt_headers *h);
/* The response's freshness lifetime under conf (ms), or 0 when it must not
 * be stored: no-store, private, no-cache (unless override_ttl), Set-Cookie,
 * or nothing to go by and no ttl. */
uint64_t pt_cache_response_freshness(struct pt_headers *h, const struct cache_conf *conf,
                                     struct pt_cc *cc);
/* The stored fields, Content-Type, validators and Vary (the request's
 * values through `field`) of response h into p, slices into h and `slots`.
 * False when it cannot be stored (`Vary: *`, too many fields). */
bool pt_cache_put_head(struct pt_cache_put *p, struct pt_cache_put_slots *slots,
                       struct pt_headers *h, pt_cache_field_fn field, void *ud);
/* A 304 to our revalidation (RFC 9111 §4.3.4): the entry with the 304's
 * fields replacing its own of the same name, fresh again from now. */
void pt_cache_put_revalidated(struct pt_cache_put *p, struct pt_cache_put_slots *slots,
                              pt_slice *body, const struct pt_cache_entry *e,
                              struct pt_headers *h304, const struct cache_conf *conf,
                              uint64_t now_ms);
/* A response field that is not stored (per-hop, per-request or ours). */
bool pt_cache_field_skipped(const struct pt_hfield *f);

/* ---- cache_refresh.c: the background refresh ---- */

/*
 * Starts the refresh of the stale entry e (key/hash, whose flight `seq`
 * the caller holds): a detached call (svc->call_detached) to the route's
 * upstream with the request's fields and e's validators, which stores the
 * answer, ends the flight and wakes its waiters when it completes,
 * whatever happens to the request. 0: the flight is the refresh's now;
 * -errno: not started, the flight still the caller's.
 */
int pt_cache_refresh_start(struct pt_filter_ctx *ctx, const struct cache_conf *conf,
                           struct pt_cache_store *store, struct pt_cache_entry *e, pt_slice key,
                           uint64_t hash, uint64_t seq);

#endif
