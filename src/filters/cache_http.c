/*
 * cache_http.c — the RFC 9111 rules the cache filter applies
 * (cache_int.h): Cache-Control parsing, HTTP dates, freshness, ETag
 * matching. Pure functions.
 */
#include "filters/cache_int.h"

#include "http/tokens.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static pt_slice trim(pt_slice s)
{
    while (s.len && is_ows(s.p[0])) {
        s.p++;
        s.len--;
    }
    while (s.len && is_ows(s.p[s.len - 1]))
        s.len--;
    return s;
}

static bool name_is(pt_slice n, const char *lit)
{
    size_t l = strlen(lit);
    return n.len == l && strncasecmp(n.p, lit, l) == 0;
}

/* delta-seconds: digits only; saturates (RFC 9111 §1.2.2). */
static bool delta_seconds(pt_slice v, uint64_t *out)
{
    if (v.len >= 2 && v.p[0] == '"' && v.p[v.len - 1] == '"') {
        v.p++;
        v.len -= 2;
    }
    if (!v.len)
        return false;
    uint64_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        n = n > 100000000000ull ? n : n * 10 + (uint64_t)(v.p[i] - '0');
    }
    *out = n;
    return true;
}

static void directive(struct pt_cc *cc, pt_slice d)
{
    const char *eq = memchr(d.p, '=', d.len);
    pt_slice name = trim(eq ? (pt_slice){d.p, (size_t)(eq - d.p)} : d);
    pt_slice val = eq ? trim((pt_slice){eq + 1, d.len - (size_t)(eq - d.p) - 1}) : (pt_slice){0};
    if (name_is(name, "no-store"))
        cc->no_store = true;
    else if (name_is(name, "no-cache"))
        cc->no_cache = true; /* with field names too: we treat it as the whole response */
    else if (name_is(name, "private"))
        cc->private_ = true;
    else if (name_is(name, "public"))
        cc->public_ = true;
    else if (name_is(name, "must-revalidate") || name_is(name, "proxy-revalidate"))
        cc->must_revalidate = true;
    else if (name_is(name, "max-age"))
        cc->has_max_age = delta_seconds(val, &cc->max_age_s);
    else if (name_is(name, "s-maxage"))
        cc->has_s_maxage = delta_seconds(val, &cc->s_maxage_s);
}

void pt_cc_parse(struct pt_headers *h, struct pt_cc *out)
{
    *out = (struct pt_cc){0};
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token != PT_TOK_CACHE_CONTROL)
            continue;
        const char *p = f->value.p, *end = p + f->value.len;
        while (p < end) {
            const char *s = p;
            bool quoted = false;
            while (p < end && (quoted || *p != ',')) {
                if (*p == '"')
                    quoted = !quoted;
                else if (*p == '\\' && quoted && p + 1 < end)
                    p++;
                p++;
            }
            pt_slice d = trim((pt_slice){s, (size_t)(p - s)});
            if (d.len)
                directive(out, d);
            if (p < end)
                p++; /* the comma */
        }
    }
}

bool pt_http_date_parse(pt_slice v, int64_t *out)
{
    char buf[64];
    v = trim(v);
    if (v.len == 0 || v.len >= sizeof(buf))
        return false;
    memcpy(buf, v.p, v.len);
    buf[v.len] = 0;
    static const char *const fmts[] = {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                       "%a %b %e %H:%M:%S %Y"};
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        struct tm tm;
        memset(&tm, 0, sizeof(tm));
        const char *end = strptime(buf, fmts[i], &tm);
        if (end && *end == 0) {
            *out = (int64_t)timegm(&tm);
            return true;
        }
    }
    return false;
}

static bool header_date(struct pt_headers *h, int token, int64_t *out)
{
    struct pt_hfield *f = pt_headers_find_token(h, token);
    return f && pt_http_date_parse(f->value, out);
}

uint64_t pt_cache_freshness_ms(struct pt_headers *h, const struct pt_cc *cc, bool *explicit_)
{
    *explicit_ = true;
    if (cc->has_s_maxage)
        return cc->s_maxage_s * 1000;
    if (cc->has_max_age)
        return cc->max_age_s * 1000;
    struct pt_hfield *ex = pt_headers_find(h, PT_SLICE("Expires"));
    if (ex) {
        int64_t exp, date;
        if (!pt_http_date_parse(ex->value, &exp))
            return 0; /* an invalid Expires means already expired (§5.3) */
        if (!header_date(h, PT_TOK_DATE, &date))
            date = (int64_t)time(NULL);
        return exp > date ? (uint64_t)(exp - date) * 1000 : 0;
    }
    *explicit_ = false;
    return 0;
}

static pt_slice opaque(pt_slice t)
{
    t = trim(t);
    if (t.len >= 2 && t.p[0] == 'W' && t.p[1] == '/') {
        t.p += 2;
        t.len -= 2;
    }
    return t;
}

bool pt_cache_etag_match(pt_slice inm, pt_slice etag)
{
    if (!etag.len)
        return pt_slice_eq(trim(inm), PT_SLICE("*"));
    pt_slice want = opaque(etag);
    const char *p = inm.p, *end = inm.p + inm.len;
    while (p < end) {
        const char *s = p;
        while (p < end && *p != ',')
            p++;
        pt_slice t = trim((pt_slice){s, (size_t)(p - s)});
        if (pt_slice_eq(t, PT_SLICE("*")) || pt_slice_eq(opaque(t), want))
            return true;
        if (p < end)
            p++;
    }
    return false;
}
