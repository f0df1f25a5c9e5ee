/*
 * router_explain.c — why a request gets the route it gets (router.h,
 * pt_router_explain), for the admin API's /debug/match.
 *
 * The winner comes from the real lookup (pt_router_match). The
 * explanation evaluates every route's predicates one by one, straight
 * from the generation's match rules (not the compiled index), and orders
 * routes by the rules of router.h: host specificity for this request
 * (exact > longest wildcard > none), path specificity (exact > template
 * with more literal segments > longer prefix > regex > none), more
 * predicates, higher priority, file order. Runs on the control thread.
 */
#include "gateway/router.h"

#include <stdlib.h>
#include <strings.h>

const char *const pt_route_miss_names[] = {"matches", "host", "path", "method", "header", "query"};

static bool host_match(const char *pat, pt_slice host, int *rank)
{
    size_t n = strlen(pat);
    if (pat[0] == '*' && pat[1] == '.') {
        size_t sfx = n - 1; /* ".example.com" */
        if (host.len > sfx && strncasecmp(host.p + host.len - sfx, pat + 1, sfx) == 0) {
            *rank = 1000 + (int)sfx;
            return true;
        }
        return false;
    }
    if (host.len == n && strncasecmp(host.p, pat, n) == 0) {
        *rank = 1000000;
        return true;
    }
    return false;
}

/* The host rank of r for this request: > 0 when it matches (host-less
 * routes: 1), 0 when it does not. */
static int host_rank(const struct pt_route_match *m, pt_slice host)
{
    if (m->nhosts == 0)
        return 1;
    int best = 0;
    for (uint32_t i = 0; i < m->nhosts; i++) {
        int rk = 0;
        if (host_match(m->hosts[i], host, &rk) && rk > best)
            best = rk;
    }
    return best;
}

static bool seq(const char *a, const char *b, size_t n, bool fold)
{
    return fold ? strncasecmp(a, b, n) == 0 : memcmp(a, b, n) == 0;
}

/* One template segment against one path segment: `{name}` takes any
 * non-empty segment. */
static bool template_match(const char *t, pt_slice path, bool fold, int *literals)
{
    const char *p = path.p, *pe = path.p + path.len;
    *literals = 0;
    while (*t) {
        if (*t != '/' || p >= pe || *p != '/')
            return false;
        t++, p++;
        const char *te = strchr(t, '/');
        size_t tl = te ? (size_t)(te - t) : strlen(t);
        const char *se = memchr(p, '/', (size_t)(pe - p));
        size_t sl = se ? (size_t)(se - p) : (size_t)(pe - p);
        if (tl >= 2 && t[0] == '{' && t[tl - 1] == '}') {
            if (sl == 0)
                return false;
        } else if (tl != sl || !seq(t, p, tl, fold)) {
            return false;
        } else {
            (*literals)++;
        }
        t += tl, p += sl;
    }
    return p == pe;
}

/* Whether the path matches, and its specificity rank. */
static bool path_match(const struct pt_route_match *m, pt_slice path, long *rank)
{
    bool fold = m->case_insensitive;
    if (m->path) {
        *rank = 4000000;
        size_t n = strlen(m->path);
        return path.len == n && seq(path.p, m->path, n, fold);
    }
    if (m->path_template) {
        int lit = 0;
        bool ok = template_match(m->path_template, path, fold, &lit);
        *rank = 3000000 + lit;
        return ok;
    }
    if (m->path_prefix) {
        size_t n = strlen(m->path_prefix);
        *rank = 2000000 + (long)n;
        if (path.len < n || !seq(path.p, m->path_prefix, n, fold))
            return false;
        return path.len == n || m->path_prefix[n - 1] == '/' || path.p[n] == '/';
    }
    if (m->path_regex) {
        *rank = 1000000;
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(m->regex, NULL);
        if (!md)
            return false;
        int rc = pcre2_match(m->regex, (PCRE2_SPTR)path.p, path.len, 0, 0, md, NULL);
        pcre2_match_data_free(md);
        return rc >= 0;
    }
    *rank = 0;
    return true;
}

static bool value_ok(const struct pt_kv_match *kv, pt_slice v)
{
    if (!kv->re)
        return v.len == strlen(kv->value) && memcmp(v.p, kv->value, v.len) == 0;
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(kv->re, NULL);
    if (!md)
        return false;
    int rc = pcre2_match(kv->re, (PCRE2_SPTR)v.p, v.len, 0, 0, md, NULL);
    pcre2_match_data_free(md);
    return rc >= 0;
}

static bool header_ok(const struct pt_headers *h, const struct pt_kv_match *kv)
{
    size_t n = strlen(kv->name);
    for (uint32_t i = 0; h && i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (!f->dead && f->name.len == n && strncasecmp(f->name.p, kv->name, n) == 0)
            return value_ok(kv, f->value);
    }
    return false;
}

static bool query_ok(pt_slice q, const struct pt_kv_match *kv)
{
    size_t kl = strlen(kv->name);
    const char *p = q.p, *end = q.p + q.len;
    while (q.len && p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *kend = eq ? eq : amp;
        if ((size_t)(kend - p) == kl && memcmp(p, kv->name, kl) == 0)
            return value_ok(kv,
                            eq ? (pt_slice){eq + 1, (size_t)(amp - eq - 1)} : (pt_slice){amp, 0});
        if (amp == end)
            break;
        p = amp + 1;
    }
    return false;
}

struct ranked {
    struct pt_route_explain e;
    int host;
    long path;
    uint32_t npred;
};

static void evaluate(const struct pt_route *r, const struct pt_route_input *in, struct ranked *o)
{
    const struct pt_route_match *m = &r->match;
    o->e = (struct pt_route_explain){r, PT_MISS_NONE, NULL};
    o->host = host_rank(m, in->host);
    o->npred = (m->methods != 0) + m->nheaders + m->nquery;
    bool path_ok = path_match(m, in->path, &o->path);
    uint32_t methods = m->methods;
    if (methods & (1u << PT_METHOD_GET))
        methods |= 1u << PT_METHOD_HEAD;
    if (!o->host)
        o->e.miss = PT_MISS_HOST;
    else if (!path_ok)
        o->e.miss = PT_MISS_PATH;
    else if (methods && !(methods & (1u << in->method_id)))
        o->e.miss = PT_MISS_METHOD;
    for (uint32_t i = 0; !o->e.miss && i < m->nheaders; i++)
        if (!header_ok(in->headers, &m->headers[i]))
            o->e.miss = PT_MISS_HEADER, o->e.what = m->headers[i].name;
    for (uint32_t i = 0; !o->e.miss && i < m->nquery; i++)
        if (!query_ok(in->query, &m->query[i]))
            o->e.miss = PT_MISS_QUERY, o->e.what = m->query[i].name;
}

static int ranked_cmp(const void *pa, const void *pb)
{
    const struct ranked *a = pa, *b = pb;
    if ((a->host > 0) != (b->host > 0))
        return a->host > 0 ? -1 : 1;
    if (a->host != b->host)
        return a->host > b->host ? -1 : 1;
    if (a->path != b->path)
        return a->path > b->path ? -1 : 1;
    if (a->npred != b->npred)
        return a->npred > b->npred ? -1 : 1;
    if (a->e.route->priority != b->e.route->priority)
        return a->e.route->priority > b->e.route->priority ? -1 : 1;
    return a->e.route->index < b->e.route->index ? -1 : a->e.route->index > b->e.route->index;
}

size_t pt_router_explain(const struct pt_generation *g, const struct pt_route_input *in,
                         struct pt_route_result *res, struct pt_route_explain **out)
{
    pt_router_match(g->router, in, res);
    *out = NULL;
    struct ranked *rs = calloc(g->nroutes ? g->nroutes : 1, sizeof(*rs));
    struct pt_route_explain *ex = calloc(g->nroutes ? g->nroutes : 1, sizeof(*ex));
    if (!rs || !ex) {
        free(rs);
        free(ex);
        return SIZE_MAX;
    }
    for (uint32_t i = 0; i < g->nroutes; i++)
        evaluate(&g->routes[i], in, &rs[i]);
    qsort(rs, g->nroutes, sizeof(*rs), ranked_cmp);
    size_t n = 0;
    for (uint32_t i = 0; i < g->nroutes; i++) {
        if (res->route && rs[i].e.route == res->route)
            break;
        if (rs[i].e.miss != PT_MISS_NONE)
            ex[n++] = rs[i].e;
    }
    /* Routes with another host are never weighed; they are listed after
     * the winner's rivals so that a host typo shows. */
    for (uint32_t i = 0; res->route && i < g->nroutes; i++)
        if (rs[i].host == 0) /* sorted after every route the winner beat */
            ex[n++] = rs[i].e;
    free(rs);
    *out = ex;
    return n;
}
