/*
 * cache_int.h — private to the cache filter (cache.c): the HTTP caching
 * rules of RFC 9111 it needs (cache_http.c): Cache-Control directives,
 * HTTP dates, freshness lifetime, and conditional request matching.
 * Pure functions over header tables; no state.
 */
#ifndef PT_FILTERS_CACHE_INT_H
#define PT_FILTERS_CACHE_INT_H

#include "http/headers.h"

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

#endif
