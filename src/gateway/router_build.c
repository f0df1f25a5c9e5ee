/*
 * router_build.c — compiles a generation's routes into the router that
 * router.c looks up. Contract: router.h; the compiled form: router_int.h.
 *
 * Build (control thread, once per generation; the router lives in g->arena,
 * only short-lived build scratch is malloc'd and freed before returning):
 *
 *  - Every route becomes a `struct rt`: effective method mask (GET implies
 *    HEAD), header/query predicates with interned header tokens, template
 *    segments, regex group names, and its predicate count.
 *  - Every (route, host) pair becomes a placement in a host bucket: one
 *    bucket per distinct exact host, one per distinct wildcard suffix
 *    (".example.com"), one for host-less routes. Placements are sorted by
 *    (bucket, path kind, path key, then the tie-breaks of router.h: more
 *    predicates, higher priority, file order). Each run of equal keys is
 *    therefore already a candidate list in match order, and a lookup takes
 *    the first candidate of a list whose predicates hold.
 *  - Lists are indexed so that a lookup never scans unrelated routes:
 *      exact host, wildcard suffix → `hosts` hash table;
 *      exact path, prefix          → `paths` hash table keyed by (bucket, kind, string);
 *      template                    → a segment trie per bucket: literal edges in the
 *                                    `edges` hash table keyed by (node, segment), at most
 *                                    one {param} edge per node, a list per terminal node;
 *      regex, no path             → one list per bucket, tried in order.
 *    Routes with `case_sensitive: false` get the same exact, prefix and
 *    template indexes a second time, keyed lowercase and probed with
 *    case-folded hashes; router.c merges both in match order. A bucket
 *    without such routes (the common case) never pays for them.
 *  - Fallback chains are resolved at build time. A prefix P that matches a
 *    path agrees with that path on every byte before |P|, so which shorter
 *    prefixes also match is a property of P alone: each prefix entry links
 *    to the next shorter matching prefix of its bucket. Likewise each
 *    wildcard bucket links to the next shorter wildcard that is a suffix of
 *    it. A lookup finds the longest hit and then follows links.
 */
#include "gateway/router_int.h"

#include "http/tokens.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- key hashes and tables, build side ---- */

/* Build-side key hashes; lookups compute the same states incrementally.
 * Case-insensitive keys are stored lowercase, so folding changes nothing
 * here; it is passed for symmetry with the lookup. */
static uint64_t path_hash(const char *p, size_t n, bool fold)
{
    uint64_t h = PATH_SEED;
    for (size_t s = 0;;) {
        size_t e = next_slash(p, s, n);
        h = chain(h, piece_hash(p + s, e - s, fold));
        if (e == n)
            return h;
        s = e + 1;
    }
}

/* Labels chained right to left, so host suffixes are prefixes of the chain. */
static uint64_t host_hash(const char *p, size_t n)
{
    uint64_t h = HOST_SEED;
    for (size_t e = n;;) {
        size_t s = e;
        while (s > 0 && p[s - 1] != '.')
            s--;
        h = chain(h, piece_hash(p + s, e - s, true));
        if (s == 0)
            return h;
        e = s - 1;
    }
}

static void lenmap_add(struct lenmap *m, size_t len)
{
    if (len >= 256)
        m->longer = true;
    else
        m->bits[len >> 6] |= 1ull << (len & 63);
}
/* Build only: the table was sized for every key, so a free slot exists. */
static void htab_put(struct htab *t, uint64_t h, uint32_t owner, const char *key, size_t len,
                     const void *val)
{
    size_t i = h & t->mask;
    while (t->e[i].val)
        i = (i + 1) & t->mask;
    t->e[i] = (struct hent){h, key, (uint32_t)len, owner, val};
}

static int htab_init(struct htab *t, struct pt_arena *a, size_t nkeys)
{
    size_t cap = 8;
    while (cap < nkeys * 2)
        cap <<= 1;
    t->e = pt_arena_zalloc(a, cap * sizeof(*t->e));
    t->mask = cap - 1;
    return t->e ? 0 : -1;
}
static bool is_jit(const pcre2_code *re)
{
    size_t sz = 0;
    return pcre2_pattern_info(re, PCRE2_INFO_JITSIZE, &sz) == 0 && sz > 0;
}
/* ---- build ---- */

enum { K_EXACT, K_TEMPLATE, K_PREFIX, K_REGEX, K_NONE };

/* One (route, host) pair with its path key; build scratch. */
struct placement {
    struct bucket *bucket;
    int kind;
    bool fold;       /* match.case_sensitive: false; key is lowercase */
    const char *key; /* exact path, prefix, or normalized template ("{}" per param) */
    size_t klen;
    const struct rt *rt;
};

struct pending_prefix {
    struct pentry *e;
    const struct bucket *b;
    bool fold;
    const char *key;
    size_t klen;
};

struct builder {
    struct pt_generation *g;
    struct pt_arena *a;
    struct pt_router *r;
    char *err;
    size_t errlen;
    struct bucket *buckets;
    uint32_t nbuckets;
    uint32_t nnodes;
    const char **tkeys; /* normalized template per route */
};

__attribute__((format(printf, 3, 4))) static void *
fail(struct builder *bd, const struct pt_route *rt, const char *fmt, ...);

static int compile_routes(struct builder *bd, struct rt *rts, size_t *nhosts, size_t *nplace,
                          size_t *nsegs);
static size_t place_routes(struct builder *bd, const struct rt *rts, struct placement *pl);
static int index_lists(struct builder *bd, const struct placement *pl, size_t np,
                       struct cand *backing, struct pending_prefix *prefixes, size_t *nprefix);
static void link_prefixes(const struct pt_router *r, const struct pending_prefix *prefixes,
                          size_t nprefix);
static void link_wildcards(struct pt_router *r);
static int compile_route(struct builder *bd, const struct pt_route *src, uint32_t order,
                         struct rt *c);
static struct bucket *host_bucket(struct builder *bd, const struct pt_route *src, const char *host);
static int placement_cmp(const void *pa, const void *pb);
static const struct tnode *trie_insert(struct builder *bd, struct bucket *b, bool fold,
                                       const char *key, size_t klen, struct clist list);

struct pt_router *pt_router_build(struct pt_generation *g, char *err, size_t errlen)
{
    struct builder bd = {.g = g, .a = &g->arena, .err = err, .errlen = errlen};
    struct placement *pl = NULL;
    struct pending_prefix *prefixes = NULL;
    struct pt_router *result = NULL;
    struct pt_router *r = pt_arena_zalloc(bd.a, sizeof(*r));
    struct rt *rts = pt_arena_zalloc(bd.a, sizeof(*rts) * (g->nroutes ? g->nroutes : 1));
    bd.tkeys = pt_arena_zalloc(bd.a, sizeof(*bd.tkeys) * (g->nroutes ? g->nroutes : 1));
    if (!r || !rts || !bd.tkeys) {
        fail(&bd, NULL, "out of memory");
        goto out;
    }
    bd.r = r;

    /* Sizes first, so every table is allocated once at its final size. */
    size_t nhosts, nplace, nsegs;
    if (compile_routes(&bd, rts, &nhosts, &nplace, &nsegs) < 0)
        goto out;
    bd.buckets = pt_arena_zalloc(bd.a, sizeof(*bd.buckets) * (nhosts + 1));
    pl = malloc(sizeof(*pl) * (nplace ? nplace : 1));
    prefixes = malloc(sizeof(*prefixes) * (nplace ? nplace : 1));
    struct cand *backing = pt_arena_alloc(bd.a, sizeof(*backing) * (nplace ? nplace : 1));
    if (!bd.buckets || !pl || !prefixes || !backing || htab_init(&r->hosts, bd.a, nhosts) < 0 ||
        htab_init(&r->paths, bd.a, nplace) < 0 || htab_init(&r->edges, bd.a, nsegs) < 0) {
        fail(&bd, NULL, "out of memory");
        goto out;
    }

    size_t np = place_routes(&bd, rts, pl);
    if (np == SIZE_MAX)
        goto out;
    /* Sorted placements: each run of equal (bucket, kind, key) is one
     * candidate list already in match order. */
    qsort(pl, np, sizeof(*pl), placement_cmp);
    size_t nprefix = 0;
    if (index_lists(&bd, pl, np, backing, prefixes, &nprefix) < 0)
        goto out;
    link_prefixes(r, prefixes, nprefix);
    link_wildcards(r);

    result = r;
out:
    free(pl);
    free(prefixes);
    return result;
}

/* Compiles every route into rts[] and counts what the tables must hold:
 * hosts, (route, host) placements, template segments over placements. */
static int compile_routes(struct builder *bd, struct rt *rts, size_t *nhosts, size_t *nplace,
                          size_t *nsegs)
{
    const struct pt_generation *g = bd->g;
    *nhosts = *nplace = *nsegs = 0;
    for (uint32_t i = 0; i < g->nroutes; i++) {
        if (compile_route(bd, &g->routes[i], i, &rts[i]) < 0)
            return -1;
        uint32_t nh = g->routes[i].match.nhosts;
        *nhosts += nh;
        *nplace += nh ? nh : 1;
        *nsegs += (size_t)rts[i].ntsegs * (nh ? nh : 1);
    }
    return 0;
}

/* Placements: every route once per host (or once, host-less). Returns how
 * many, or SIZE_MAX when a host is refused. */
static size_t place_routes(struct builder *bd, const struct rt *rts, struct placement *pl)
{
    const struct pt_generation *g = bd->g;
    size_t np = 0;
    for (uint32_t i = 0; i < g->nroutes; i++) {
        const struct pt_route *src = &g->routes[i];
        const struct pt_route_match *mt = &src->match;
        int kind = K_NONE;
        const char *key = "";
        if (mt->path)
            kind = K_EXACT, key = mt->path;
        else if (mt->path_template)
            kind = K_TEMPLATE, key = bd->tkeys[i];
        else if (mt->path_prefix)
            kind = K_PREFIX, key = mt->path_prefix;
        else if (mt->path_regex)
            kind = K_REGEX;
        bool fold =
            mt->case_insensitive && (kind == K_EXACT || kind == K_TEMPLATE || kind == K_PREFIX);
        if (fold) {
            char *low = pt_arena_strndup(bd->a, key, strlen(key));
            if (!low) {
                fail(bd, src, "out of memory");
                return SIZE_MAX;
            }
            for (char *q = low; *q; q++)
                *q = (char)lower((unsigned char)*q);
            key = low;
        }
        uint32_t nh = mt->nhosts ? mt->nhosts : 1;
        for (uint32_t j = 0; j < nh; j++) {
            struct bucket *b = host_bucket(bd, src, mt->nhosts ? mt->hosts[j] : NULL);
            if (!b)
                return SIZE_MAX;
            pl[np++] = (struct placement){b, kind, fold, key, strlen(key), &rts[i]};
        }
    }
    return np;
}

/* An exact-path or prefix list goes into the `paths` table; a prefix is
 * also queued for its fallback link. */
static int index_path(struct builder *bd, const struct placement *p, struct clist list,
                      struct pending_prefix *prefixes, size_t *nprefix)
{
    struct bucket *b = p->bucket;
    struct pentry *e = pt_arena_zalloc(bd->a, sizeof(*e));
    if (!e) {
        fail(bd, NULL, "out of memory");
        return -1;
    }
    e->list = list;
    e->len = p->klen;
    int kind = p->kind == K_EXACT ? PATH_EXACT : PATH_PREFIX;
    uint32_t owner = b->id * PATH_KINDS + (uint32_t)(p->fold ? kind + PATH_EXACT_CI : kind);
    htab_put(&bd->r->paths, hash_fin(path_hash(p->key, p->klen, p->fold), owner), owner, p->key,
             p->klen, e);
    if (p->kind == K_EXACT) {
        *(p->fold ? &b->has_exact_ci : &b->has_exact) = true;
        lenmap_add(p->fold ? &b->exact_ci_lens : &b->exact_lens, p->klen);
    } else {
        *(p->fold ? &b->has_prefix_ci : &b->has_prefix) = true;
        size_t *max = p->fold ? &b->max_prefix_ci : &b->max_prefix;
        *max = PT_MAX(*max, p->klen);
        lenmap_add(p->fold ? &b->prefix_ci_lens : &b->prefix_lens, p->klen);
        prefixes[(*nprefix)++] = (struct pending_prefix){e, b, p->fold, p->key, p->klen};
    }
    b->has_ci |= p->fold;
    return 0;
}

/* Turns each run of equal (bucket, kind, key) in the sorted placements
 * into a candidate list in `backing` and files it where its kind is
 * looked up. */
static int index_lists(struct builder *bd, const struct placement *pl, size_t np,
                       struct cand *backing, struct pending_prefix *prefixes, size_t *nprefix)
{
    size_t used = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i;
        struct clist list = {backing + used, 0};
        for (; j < np && pl[j].bucket == pl[i].bucket && pl[j].kind == pl[i].kind &&
               pl[j].fold == pl[i].fold && pl[j].klen == pl[i].klen &&
               memcmp(pl[j].key, pl[i].key, pl[i].klen) == 0;
             j++) {
            /* A route listing the same host twice lands here twice. */
            const struct rt *c = pl[j].rt;
            if (list.n && backing[used - 1].rt == c)
                continue;
            backing[used++] =
                (struct cand){c->route, c, c->methods, !c->re && !c->nheaders && !c->nquery};
            list.n++;
        }
        struct bucket *b = pl[i].bucket;
        switch (pl[i].kind) {
        case K_EXACT:
        case K_PREFIX:
            if (index_path(bd, &pl[i], list, prefixes, nprefix) < 0)
                return -1;
            break;
        case K_TEMPLATE:
            if (!trie_insert(bd, b, pl[i].fold, pl[i].key, pl[i].klen, list)) {
                fail(bd, NULL, "out of memory");
                return -1;
            }
            break;
        case K_REGEX:
            b->regex = list;
            break;
        default:
            b->any = list;
            break;
        }
        i = j;
    }
    return 0;
}

/* Prefix fallback links: the longest shorter prefix of the same bucket
 * that matches the prefix itself matches every path it matches. */
static void link_prefixes(const struct pt_router *r, const struct pending_prefix *prefixes,
                          size_t nprefix)
{
    for (size_t i = 0; i < nprefix; i++) {
        const struct pending_prefix *pp = &prefixes[i];
        if (pp->klen > 1)
            pp->e->parent = pt_router_prefix_longest(r, pp->b, NULL, (pt_slice){pp->key, pp->klen},
                                                     pp->klen - 1, pp->fold);
    }
}

/* Wildcard fallback links: the next shorter wildcard suffix of this one. */
static void link_wildcards(struct pt_router *r)
{
    for (size_t i = 0; i < r->hosts.mask + 1; i++) {
        const struct hent *he = &r->hosts.e[i];
        if (!he->val || he->owner != HOST_WILD)
            continue;
        struct bucket *b = (struct bucket *)he->val;
        for (size_t k = 1; k < he->len; k++) {
            if (he->key[k] != '.')
                continue;
            const char *suf = he->key + k;
            size_t slen = he->len - k;
            uint64_t h = hash_fin(host_hash(suf + 1, slen - 1), HOST_WILD);
            const struct bucket *p = htab_get(&r->hosts, h, HOST_WILD, suf, slen, true);
            if (p) {
                b->wparent = p;
                break;
            }
        }
    }
}

/* Writes "route NAME: message" into the caller's buffer; returns NULL so
 * callers can `return fail(...)`. */
static void *fail(struct builder *bd, const struct pt_route *rt, const char *fmt, ...)
{
    if (!bd->err || !bd->errlen)
        return NULL;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (rt && rt->name)
        snprintf(bd->err, bd->errlen, "route %s: %s", rt->name, msg);
    else if (rt)
        snprintf(bd->err, bd->errlen, "route #%u: %s", rt->index, msg);
    else
        snprintf(bd->err, bd->errlen, "router: %s", msg);
    return NULL;
}

static int compile_kv(struct builder *bd, const struct pt_route *src, const struct pt_kv_match *in,
                      uint32_t n, bool header, const struct kvpred **outp)
{
    struct kvpred *v = pt_arena_zalloc(bd->a, sizeof(*v) * (n ? n : 1));
    if (!v)
        return fail(bd, src, "out of memory"), -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!in[i].name || !in[i].name[0] || (!in[i].value && !in[i].re))
            return fail(bd, src, "%s predicate %u has no name or value",
                        header ? "header" : "query", i),
                   -1;
        v[i].name = (pt_slice){in[i].name, strlen(in[i].name)};
        /* Interned here rather than trusted from the loader, so hand-built
         * generations and loaded ones behave the same. */
        v[i].token = header ? pt_token_lookup(v[i].name.p, v[i].name.len) : PT_TOK_UNKNOWN;
        if (in[i].re) {
            v[i].re = in[i].re;
            v[i].jit = is_jit(in[i].re);
        } else {
            v[i].value = (pt_slice){in[i].value, strlen(in[i].value)};
        }
    }
    *outp = v;
    return 0;
}

/* Splits "/a/{id}/b" into segments, checks that braces enclose whole
 * segments, and produces the normalized key "/a/{}/b" that makes
 * templates differing only in param names share one trie terminal. */
static int compile_template(struct builder *bd, const struct pt_route *src, struct rt *c,
                            const char **normp)
{
    const char *t = src->match.path_template;
    size_t tlen = strlen(t);
    if (tlen == 0 || t[0] != '/')
        return fail(bd, src, "path_template must start with '/'"), -1;
    uint32_t nseg = 1;
    for (size_t i = 1; i < tlen; i++)
        nseg += t[i] == '/';
    struct tseg *segs = pt_arena_zalloc(bd->a, sizeof(*segs) * nseg);
    char *norm = pt_arena_alloc(bd->a, tlen + 1);
    if (!segs || !norm)
        return fail(bd, src, "out of memory"), -1;
    size_t pos = 1, nlen = 0;
    uint32_t k = 0, nparams = 0;
    norm[nlen++] = '/';
    for (;;) {
        const char *s = t + pos;
        const char *slash = memchr(s, '/', tlen - pos);
        size_t slen = slash ? (size_t)(slash - s) : tlen - pos;
        bool has_brace = memchr(s, '{', slen) || memchr(s, '}', slen);
        if (has_brace) {
            if (slen < 3 || s[0] != '{' || s[slen - 1] != '}' || memchr(s + 1, '{', slen - 2) ||
                memchr(s + 1, '}', slen - 2))
                return fail(bd, src, "path_template: a {param} must be a whole segment: \"%.*s\"",
                            (int)slen, s),
                       -1;
            if (++nparams > PT_ROUTE_MAX_PARAMS)
                return fail(bd, src, "path_template: more than %d params", PT_ROUTE_MAX_PARAMS), -1;
            segs[k++] = (struct tseg){{s + 1, slen - 2}, true};
            memcpy(norm + nlen, "{}", 2);
            nlen += 2;
        } else {
            segs[k++] = (struct tseg){{s, slen}, false};
            memcpy(norm + nlen, s, slen);
            nlen += slen;
        }
        if (!slash)
            break;
        norm[nlen++] = '/';
        pos += slen + 1;
    }
    norm[nlen] = 0;
    c->tsegs = segs;
    c->ntsegs = k;
    *normp = norm;
    return 0;
}

/* Param names of a path regex: the group name, or its number. */
static int compile_regex(struct builder *bd, const struct pt_route *src, struct rt *c)
{
    uint32_t ngroups = 0, nnames = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_code *re = src->match.regex;
    if (pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &ngroups) != 0 ||
        pcre2_pattern_info(re, PCRE2_INFO_NAMECOUNT, &nnames) != 0 ||
        pcre2_pattern_info(re, PCRE2_INFO_NAMEENTRYSIZE, &esize) != 0 ||
        pcre2_pattern_info(re, PCRE2_INFO_NAMETABLE, &table) != 0)
        return fail(bd, src, "path_regex: cannot inspect the compiled pattern"), -1;
    if (ngroups > PT_ROUTE_MAX_PARAMS)
        return fail(bd, src, "path_regex: more than %d capture groups", PT_ROUTE_MAX_PARAMS), -1;
    pt_slice *names = pt_arena_zalloc(bd->a, sizeof(*names) * (ngroups ? ngroups : 1));
    if (!names)
        return fail(bd, src, "out of memory"), -1;
    for (uint32_t gi = 0; gi < ngroups; gi++) {
        char *num = pt_arena_sprintf(bd->a, "%u", gi + 1);
        if (!num)
            return fail(bd, src, "out of memory"), -1;
        names[gi] = (pt_slice){num, strlen(num)};
    }
    /* Name table entries: 2-byte big-endian group number, then the name. */
    for (uint32_t i = 0; i < nnames; i++) {
        PCRE2_SPTR e = table + (size_t)i * esize;
        uint32_t gnum = ((uint32_t)e[0] << 8) | e[1];
        if (gnum >= 1 && gnum <= ngroups)
            names[gnum - 1] = (pt_slice){(const char *)e + 2, strlen((const char *)e + 2)};
    }
    c->re = re;
    c->jit = is_jit(re);
    c->group_names = names;
    c->ngroups = ngroups;
    return 0;
}

static int compile_route(struct builder *bd, const struct pt_route *src, uint32_t order,
                         struct rt *c)
{
    const struct pt_route_match *mt = &src->match;
    int npaths = !!mt->path + !!mt->path_prefix + !!mt->path_template + !!mt->path_regex;
    if (npaths > 1)
        return fail(bd, src, "at most one of path, path_prefix, path_template, path_regex"), -1;
    c->route = src;
    c->priority = src->priority;
    c->index = src->index;
    c->order = order;
    c->methods = mt->methods;
    if (c->methods & (1u << PT_METHOD_GET))
        c->methods |= 1u << PT_METHOD_HEAD; /* HEAD is a GET without a body */
    c->npred = (mt->methods != 0) + mt->nheaders + mt->nquery;
    if (compile_kv(bd, src, mt->headers, mt->nheaders, true, &c->headers) < 0 ||
        compile_kv(bd, src, mt->query, mt->nquery, false, &c->query) < 0)
        return -1;
    c->nheaders = mt->nheaders;
    c->nquery = mt->nquery;
    if (mt->path && mt->path[0] != '/')
        return fail(bd, src, "path must start with '/'"), -1;
    if (mt->path_prefix && mt->path_prefix[0] != '/')
        return fail(bd, src, "path_prefix must start with '/'"), -1;
    if (mt->path_template && compile_template(bd, src, c, &bd->tkeys[order]) < 0)
        return -1;
    if (mt->path_regex) {
        if (!mt->regex)
            return fail(bd, src, "path_regex is not compiled"), -1;
        if (compile_regex(bd, src, c) < 0)
            return -1;
    }
    return 0;
}

/* The bucket for one host of a route (NULL host: the host-less bucket),
 * created on first use. Hosts are stored lowercase. */
static struct bucket *host_bucket(struct builder *bd, const struct pt_route *src, const char *host)
{
    struct pt_router *r = bd->r;
    if (!host) {
        if (!r->none) {
            struct bucket *b = &bd->buckets[bd->nbuckets];
            b->id = bd->nbuckets++;
            r->none = b;
        }
        return (struct bucket *)r->none;
    }
    size_t n = strlen(host);
    uint32_t kind = HOST_EXACT;
    const char *key = host;
    if (host[0] == '*') {
        if (n < 3 || host[1] != '.')
            return fail(bd, src, "host \"%s\": a wildcard must look like *.example.com", host);
        kind = HOST_WILD;
        key = host + 1; /* ".example.com" */
        n -= 1;
    }
    if (n == 0 || memchr(key, '*', n))
        return fail(bd, src, "host \"%s\": '*' is only allowed as a leading \"*.\"", host);
    /* A wildcard's chain covers the labels after its leading '.'. */
    uint64_t h = hash_fin(kind == HOST_WILD ? host_hash(key + 1, n - 1) : host_hash(key, n), kind);
    struct bucket *b = (struct bucket *)htab_get(&r->hosts, h, kind, key, n, true);
    if (b)
        return b;
    char *low = pt_arena_strndup(bd->a, key, n);
    if (!low)
        return fail(bd, src, "out of memory");
    for (size_t i = 0; i < n; i++)
        low[i] = (char)lower((unsigned char)low[i]);
    b = &bd->buckets[bd->nbuckets];
    b->id = bd->nbuckets++;
    htab_put(&r->hosts, h, kind, low, n, b);
    r->has_hosts = true;
    if (kind == HOST_WILD) {
        r->has_wild = true;
        lenmap_add(&r->wild_lens, n);
    }
    return b;
}

static int placement_cmp(const void *pa, const void *pb)
{
    const struct placement *a = pa, *b = pb;
    if (a->bucket->id != b->bucket->id)
        return a->bucket->id < b->bucket->id ? -1 : 1;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->fold != b->fold)
        return a->fold ? 1 : -1;
    if (a->klen != b->klen)
        return a->klen < b->klen ? -1 : 1;
    int c = memcmp(a->key, b->key, a->klen);
    if (c)
        return c;
    return rt_cmp(a->rt, b->rt);
}

static struct tnode *new_node(struct builder *bd, uint32_t nliterals, bool fold)
{
    struct tnode *n = pt_arena_zalloc(bd->a, sizeof(*n));
    if (n) {
        n->id = bd->nnodes++;
        n->nliterals = nliterals;
        n->fold = fold;
    }
    return n;
}

/* Inserts a normalized template ("{}" marks a param) into the bucket's
 * trie; the terminal node receives the run's candidate list. */
static const struct tnode *trie_insert(struct builder *bd, struct bucket *b, bool fold,
                                       const char *key, size_t klen, struct clist list)
{
    struct pt_router *r = bd->r;
    const struct tnode **root = fold ? &b->troot_ci : &b->troot;
    if (!*root && !(*root = new_node(bd, 0, fold)))
        return NULL;
    b->has_ci |= fold;
    /* The nodes were allocated by this builder; the const is for workers. */
    struct tnode *n = (struct tnode *)*root;
    /* Literal segments of the whole template, for max_lit on the way down. */
    uint32_t nlit = 1;
    for (size_t i = 1; i < klen; i++)
        nlit += key[i] == '/';
    for (size_t i = 0; i + 1 < klen; i++)
        nlit -= key[i] == '{' && key[i + 1] == '}';
    n->max_lit = PT_MAX(n->max_lit, nlit);
    uint32_t depth_lit = 0;
    size_t pos = 1;
    for (;;) {
        const char *s = key + pos;
        const char *slash = memchr(s, '/', klen - pos);
        size_t slen = slash ? (size_t)(slash - s) : klen - pos;
        struct tnode *child;
        if (slen == 2 && s[0] == '{' && s[1] == '}') {
            if (!n->param && !(n->param = new_node(bd, depth_lit, fold)))
                return NULL;
            child = (struct tnode *)n->param;
        } else {
            depth_lit++;
            uint64_t h = hash_fin(piece_hash(s, slen, fold), n->id);
            child = (struct tnode *)htab_get(&r->edges, h, n->id, s, slen, fold);
            if (!child) {
                if (!(child = new_node(bd, depth_lit, fold)))
                    return NULL;
                htab_put(&r->edges, h, n->id, s, slen, child);
            }
        }
        n = child;
        n->max_lit = PT_MAX(n->max_lit, nlit);
        if (!slash)
            break;
        pos += slen + 1;
    }
    n->term = list;
    return n;
}
