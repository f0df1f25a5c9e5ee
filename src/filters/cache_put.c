/*
 * cache_put.c — what the cache stores of a response (cache_int.h): the
 * cacheability verdict (RFC 9111 §3), the fields kept, the Vary values,
 * and the entry a 304 revalidation makes. Used by the request path
 * (cache.c) and the background refresh (cache_refresh.c) alike. Pure
 * functions: slices point into the response and the caller's slots.
 */
#include "filters/cache_int.h"

#include "http/tokens.h"

#include <string.h>

bool pt_cache_status_cacheable(int s)
{
    return s == 200 || s == 203 || s == 204 || s == 301 || s == 404 || s == 410;
}

bool pt_cache_field_skipped(const struct pt_hfield *f)
{
    if (f->dead || (pt_token_flags[f->token] & PT_TF_HOP))
        return true;
    switch (f->token) {
    case PT_TOK_CONTENT_LENGTH:
    case PT_TOK_CONTENT_TYPE:
    case PT_TOK_X_REQUEST_ID:
    case PT_TOK_SET_COOKIE:
        return true;
    default:
        break;
    }
    static const char *const other[] = {"age", "x-cache", "server-timing"};
    for (size_t i = 0; i < PT_ARRAY_LEN(other); i++)
        if (pt_slice_ieq_cstr(f->name, other[i]))
            return true;
    return false;
}

uint64_t pt_cache_age_field(struct pt_headers *h)
{
    struct pt_hfield *f = pt_headers_find(h, PT_SLICE("Age"));
    uint64_t a = 0;
    for (size_t i = 0; f && i < f->value.len && f->value.p[i] >= '0' && f->value.p[i] <= '9'; i++)
        a = a > 1000000000ull ? a : a * 10 + (uint64_t)(f->value.p[i] - '0');
    return a;
}

uint64_t pt_cache_response_freshness(struct pt_headers *h, const struct cache_conf *conf,
                                     struct pt_cc *cc)
{
    pt_cc_parse(h, cc);
    /* override_ttl stores what must be revalidated (no-cache, max-age=0)
     * for ttl; what must not be stored or shared never is */
    if (cc->no_store || cc->private_ || (cc->no_cache && !conf->override_ttl))
        return 0;
    if (pt_headers_find_token(h, PT_TOK_SET_COOKIE))
        return 0;
    bool explicit_;
    uint64_t f = pt_cache_freshness_ms(h, cc, &explicit_);
    if (conf->override_ttl || !explicit_)
        f = conf->ttl_ms;
    return f;
}

/* The response's Vary names, with the request's values (false: `Vary: *`
 * or more than PT_CACHE_MAX_VARY). Names are matched case-insensitively
 * later, so they are kept as sent. */
static bool put_vary(struct pt_cache_put *p, struct pt_cache_put_slots *sl, struct pt_headers *h,
                     pt_cache_field_fn field, void *ud)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token != PT_TOK_VARY)
            continue;
        const char *c = f->value.p, *end = c + f->value.len;
        while (c < end) {
            while (c < end && (*c == ' ' || *c == '\t' || *c == ','))
                c++;
            const char *s = c;
            while (c < end && *c != ',' && *c != ' ' && *c != '\t')
                c++;
            if (c == s)
                continue;
            pt_slice name = {s, (size_t)(c - s)};
            if (pt_slice_eq(name, PT_SLICE("*")) || n == PT_CACHE_MAX_VARY)
                return false;
            sl->vnames[n] = name;
            sl->vvalues[n] = field(ud, name);
            n++;
        }
    }
    p->vary_names = sl->vnames;
    p->vary_values = sl->vvalues;
    p->nvary = n;
    return true;
}

bool pt_cache_put_head(struct pt_cache_put *p, struct pt_cache_put_slots *sl, struct pt_headers *h,
                       pt_cache_field_fn field, void *ud)
{
    if (!put_vary(p, sl, h, field, ud))
        return false;
    uint32_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (pt_cache_field_skipped(f))
            continue;
        if (n == PT_CACHE_MAX_FIELDS)
            return false;
        sl->names[n] = f->name;
        sl->values[n] = f->value;
        n++;
    }
    p->names = sl->names;
    p->values = sl->values;
    p->nfields = n;
    struct pt_hfield *ct = pt_headers_find_token(h, PT_TOK_CONTENT_TYPE);
    p->ctype = ct ? ct->value : (pt_slice){"", 0};
    struct pt_hfield *et = pt_headers_find_token(h, PT_TOK_ETAG);
    p->etag = et ? et->value : (pt_slice){"", 0};
    struct pt_hfield *lm = pt_headers_find_token(h, PT_TOK_LAST_MODIFIED);
    p->last_modified = lm ? lm->value : (pt_slice){"", 0};
    return true;
}

/* Fields a 304 does not update (RFC 9111 §3.2: framing, and those the
 * cache keeps for itself). */
static bool not_updated(const struct pt_hfield *f)
{
    return pt_cache_field_skipped(f) || f->token == PT_TOK_CONTENT_ENCODING ||
           f->token == PT_TOK_VARY;
}

void pt_cache_put_revalidated(struct pt_cache_put *p, struct pt_cache_put_slots *sl, pt_slice *body,
                              const struct pt_cache_entry *e, struct pt_headers *h304,
                              const struct cache_conf *conf, uint64_t now_ms)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < e->nfields; i++) {
        bool replaced = false;
        for (uint32_t j = 0; j < h304->n && !replaced; j++)
            replaced = !not_updated(&h304->f[j]) && pt_slice_ieq(h304->f[j].name, e->names[i]);
        if (replaced)
            continue;
        sl->names[n] = e->names[i];
        sl->values[n] = e->values[i];
        n++;
    }
    for (uint32_t j = 0; j < h304->n && n < PT_CACHE_MAX_FIELDS; j++) {
        const struct pt_hfield *f = &h304->f[j];
        if (not_updated(f))
            continue;
        sl->names[n] = f->name;
        sl->values[n] = f->value;
        n++;
    }
    struct pt_cc cc;
    uint64_t fresh = pt_cache_response_freshness(h304, conf, &cc);
    if (fresh == 0 && !cc.no_store && !cc.no_cache && !cc.private_)
        fresh = e->fresh_ms; /* the 304 says nothing: the stored lifetime again */
    struct pt_hfield *et = pt_headers_find_token(h304, PT_TOK_ETAG);
    struct pt_hfield *lm = pt_headers_find_token(h304, PT_TOK_LAST_MODIFIED);
    *body = e->body;
    *p = (struct pt_cache_put){
        .key = e->key,
        .route = e->route,
        .path = e->path,
        .status = e->status,
        .nfields = n,
        .names = sl->names,
        .values = sl->values,
        .ctype = e->ctype,
        .body = body,
        .nbody = 1,
        .body_len = body->len,
        .etag = et ? et->value : e->etag,
        .last_modified = lm ? lm->value : e->last_modified,
        .nvary = e->nvary,
        .vary_names = e->vary_names,
        .vary_values = e->vary_values,
        .now_ms = now_ms,
        .age0_s = pt_cache_age_field(h304),
        .fresh_ms = fresh,
        .swr_ms = cc.must_revalidate ? 0 : conf->swr_ms,
        .sie_ms = cc.must_revalidate ? 0 : conf->sie_ms,
    };
}
