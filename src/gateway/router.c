/*
 * router.c — the compiled router's lookup. Contract and match order:
 * router.h; the compiled form it reads: router_int.h; how that form is
 * built: router_build.c.
 *
 * Lookup (any worker thread, lock-free, no allocation after the first
 * regex use on a thread):
 *
 *  1. One right-to-left pass over the host's labels (case-folded hashes,
 *     chained) yields the hash of the whole host (exact bucket) and of each
 *     ".suffix" at a label boundary (wildcard buckets; the longest hit wins,
 *     shorter ones follow through links). Buckets are visited exact →
 *     wildcards longest first → host-less: host specificity dominates.
 *  2. In each bucket, path kinds in specificity order: exact path (one
 *     probe), templates (trie DFS; every terminal reached yields its first
 *     passing candidate and the one with most literal segments, then
 *     tie-breaks, wins), prefixes (probes only at segment boundaries whose
 *     length some prefix of the bucket has; longest first, then links),
 *     regexes in order, then path-less routes. The path's segments are
 *     hashed once per lookup (a small cache in the lookup context) and
 *     shared by all of these, and in every bucket visited.
 *  3. If nothing matched, a second walk of the same candidates ignores the
 *     method: the union of methods of routes that failed only on method
 *     makes a 405 (HEAD added when GET is there), otherwise 404. 404/405 are
 *     the rare path, so the common path never pays for this bookkeeping.
 *
 * A typical lookup is a handful of hash probes: about 85 ns with 1,000
 * routes and 130 ns with 10,000 on a 2-core VM (bench/mb_router.c).
 *
 * Regexes run with pcre2_jit_match when the pattern was JIT-compiled, on a
 * per-thread match data created on first use and freed at thread exit.
 */
#include "gateway/router_int.h"

#include "http/tokens.h"

#include <pthread.h>

/* Header names: both sides any case (a header name is not stored lowered). */
static inline bool ieq_ascii(const char *a, const char *b, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (lower8(load64(a + i)) != lower8(load64(b + i)))
            return false;
    for (; i < n; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return false;
    return true;
}

/* ---- per-thread PCRE2 match data ---- */

static __thread pcre2_match_data *tls_md;
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static bool md_key_ok;

static void md_free(void *p)
{
    pcre2_match_data_free(p);
}

static void md_key_make(void)
{
    md_key_ok = pthread_key_create(&md_key, md_free) == 0;
}

/* Room for group 0 plus PT_ROUTE_MAX_PARAMS groups; predicates with more
 * groups still match (pcre2 returns 0: "ovector too small"). */
static pcre2_match_data *thread_md(void)
{
    if (pt_likely(tls_md != NULL))
        return tls_md;
    pthread_once(&md_once, md_key_make);
    tls_md = pcre2_match_data_create(PT_ROUTE_MAX_PARAMS + 1, NULL);
    /* Registered so a worker thread that exits frees its match data. */
    if (tls_md && md_key_ok)
        pthread_setspecific(md_key, tls_md);
    return tls_md;
}

static int re_exec(pcre2_code *re, bool jit, pt_slice s, pcre2_match_data **mdp)
{
    pcre2_match_data *md = thread_md();
    if (!md)
        return -1;
    *mdp = md;
    PCRE2_SPTR subj = (PCRE2_SPTR)(s.p ? s.p : "");
    if (jit)
        return pcre2_jit_match(re, subj, s.len, 0, 0, md, NULL);
    return pcre2_match(re, subj, s.len, 0, 0, md, NULL);
}

static bool re_matches(pcre2_code *re, bool jit, pt_slice s)
{
    pcre2_match_data *md;
    return re_exec(re, jit, s, &md) >= 0;
}

/* ---- lookup ---- */

/* The path's '/'-separated pieces, hashed once per lookup and shared by
 * the exact, template and prefix indexes of every bucket visited. Piece 0
 * is what precedes the leading '/'. Pieces past the cache are recomputed
 * when asked for (only paths deeper than PIECE_CACHE segments). */
#define PIECE_CACHE 16

struct piece {
    size_t end;     /* offset of the '/' that ends it, or path length */
    uint64_t hash;  /* piece_hash of the piece */
    uint64_t chain; /* chain of pieces 0..this: the hash of path[0..end) */
};

struct mctx {
    const struct pt_router *r;
    const struct pt_route_input *in;
    struct pt_route_result *out;
    uint32_t mbit;   /* 1u << method, 0 for an out-of-range id */
    bool allow_pass; /* second walk: collect methods instead of matching */
    uint32_t allow;
    uint32_t ncached;             /* pieces 0..ncached-1 are in pc[] */
    struct piece pc[PIECE_CACHE]; /* not zeroed: only [0, ncached) is read */
};

/* Piece `idx`, which starts at offset `start`; `prev_chain` is the chain
 * up to piece idx-1 (PATH_SEED for piece 0). Callers ask in order, so the
 * cache fills contiguously. */
static inline struct piece get_piece(struct mctx *m, uint32_t idx, size_t start,
                                     uint64_t prev_chain)
{
    if (idx < m->ncached)
        return m->pc[idx];
    pt_slice path = m->in->path;
    struct piece pc;
    pc.end = next_slash(path.p, start, path.len);
    pc.hash = piece_hash(path.p + start, pc.end - start, false);
    pc.chain = chain(prev_chain, pc.hash);
    if (idx == m->ncached && idx < PIECE_CACHE)
        m->pc[m->ncached++] = pc;
    return pc;
}

static bool walk(struct mctx *m, const struct bucket *exact, const struct bucket *wild);

int pt_router_match(const struct pt_router *r, const struct pt_route_input *in,
                    struct pt_route_result *out)
{
    out->route = NULL;
    out->status = 0;
    out->allow_methods = 0;
    out->nparams = 0;

    /* Field by field: a designated initializer would zero the piece cache. */
    struct mctx m;
    m.r = r;
    m.in = in;
    m.out = out;
    m.mbit = in->any_method                               ? ~0u
             : (in->method_id >= 0 && in->method_id < 32) ? 1u << in->method_id
                                                          : 0;
    m.allow_pass = false;
    m.allow = 0;
    m.ncached = 0;

    /* Step 1: host buckets. */
    const struct bucket *exact = NULL, *wild = NULL;
    if (r->has_hosts && in->host.len) {
        const char *hp = in->host.p;
        size_t n = in->host.len;
        uint64_t h = HOST_SEED;
        for (size_t e = n;;) {
            size_t s = e;
            while (s > 0 && hp[s - 1] != '.')
                s--;
            h = chain(h, piece_hash(hp + s, e - s, true));
            if (s == 0)
                break;
            /* h now covers hp[s..n): the wildcard key "." + that needs a
             * non-empty label before its dot (s - 1 ≥ 1). Going leftwards,
             * each hit is longer than the previous. */
            if (s >= 2 && r->has_wild && lenmap_has(&r->wild_lens, n - s + 1)) {
                const struct bucket *b = htab_get(&r->hosts, hash_fin(h, HOST_WILD), HOST_WILD,
                                                  hp + s - 1, n - s + 1, true);
                if (b)
                    wild = b;
            }
            e = s - 1;
        }
        exact = htab_get(&r->hosts, hash_fin(h, HOST_EXACT), HOST_EXACT, hp, n, true);
    }

    if (walk(&m, exact, wild))
        return 0;

    m.allow_pass = true;
    walk(&m, exact, wild);
    out->nparams = 0;
    if (m.allow) {
        uint32_t allow = m.allow;
        if (allow & (1u << PT_METHOD_GET))
            allow |= 1u << PT_METHOD_HEAD;
        out->allow_methods = allow;
        out->status = 405;
        return 405;
    }
    out->status = 404;
    return 404;
}

static bool header_pred(const struct pt_headers *h, const struct kvpred *p)
{
    if (!h)
        return false;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead)
            continue;
        /* Tokens are interned, so two known tokens compare by number;
         * otherwise fall back to the name. */
        bool same =
            (p->token != PT_TOK_UNKNOWN && f->token != PT_TOK_UNKNOWN)
                ? f->token == p->token
                : f->name.len == p->name.len && ieq_ascii(f->name.p, p->name.p, p->name.len);
        if (same)
            return p->re ? re_matches(p->re, p->jit, f->value) : pt_slice_eq(f->value, p->value);
    }
    return false; /* a missing header fails the predicate */
}

/* First occurrence of `key` in a raw query; no percent-decoding ('+' is
 * literal); "k" without '=' has an empty value. */
static bool query_find(pt_slice q, pt_slice key, pt_slice *val)
{
    const char *p = q.p, *end = q.p + q.len;
    while (q.len && p <= end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        const char *kend = eq ? eq : amp;
        if ((size_t)(kend - p) == key.len && memcmp(p, key.p, key.len) == 0) {
            *val = eq ? (pt_slice){eq + 1, (size_t)(amp - eq - 1)} : (pt_slice){amp, 0};
            return true;
        }
        if (amp == end)
            break;
        p = amp + 1;
    }
    return false;
}

static bool query_pred(pt_slice q, const struct kvpred *p)
{
    pt_slice v;
    if (!query_find(q, p->name, &v))
        return false;
    return p->re ? re_matches(p->re, p->jit, v) : pt_slice_eq(v, p->value);
}

/* Runs a path regex; on a match in the first walk, its groups become the
 * result's params. */
static bool path_regex(const struct rt *c, struct mctx *m)
{
    pcre2_match_data *md;
    pt_slice path = m->in->path;
    int rc = re_exec(c->re, c->jit, path, &md);
    if (rc < 0)
        return false;
    if (m->allow_pass)
        return true;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    struct pt_route_result *out = m->out;
    for (uint32_t g = 1; g <= c->ngroups; g++) {
        PCRE2_SIZE s = ov[2 * g], e = ov[2 * g + 1];
        out->param_names[g - 1] = c->group_names[g - 1];
        /* An unset optional group is an empty param, so numbering stays stable. */
        out->param_values[g - 1] = ((int)g < rc && s != PCRE2_UNSET) ? (pt_slice){path.p + s, e - s}
                                                                     : (pt_slice){path.p, 0};
    }
    out->nparams = c->ngroups;
    return true;
}

/* The heart of every list: is this candidate the answer? In the allow pass
 * it answers "did it fail only on the method?" and records its methods. */
static bool cand_ok(const struct rt *c, struct mctx *m)
{
    bool method_ok = !c->methods || (c->methods & m->mbit);
    if (m->allow_pass ? method_ok : !method_ok)
        return false; /* allow pass: it failed on something else in the first walk */
    if (c->re && !path_regex(c, m))
        return false;
    for (uint32_t i = 0; i < c->nheaders; i++)
        if (!header_pred(m->in->headers, &c->headers[i]))
            goto fail;
    for (uint32_t i = 0; i < c->nquery; i++)
        if (!query_pred(m->in->query, &c->query[i]))
            goto fail;
    if (m->allow_pass) {
        m->allow |= c->methods;
        return false;
    }
    return true;
fail:
    m->out->nparams = 0; /* a failed regex candidate may have left params */
    return false;
}

static inline bool cand_try(const struct cand *c, struct mctx *m)
{
    if (c->simple) {
        bool method_ok = !c->methods || (c->methods & m->mbit);
        if (m->allow_pass && !method_ok)
            m->allow |= c->methods;
        return method_ok && !m->allow_pass;
    }
    return cand_ok(c->rt, m);
}

static bool list_try(const struct clist *l, struct mctx *m)
{
    for (uint32_t i = 0; i < l->n; i++) {
        if (cand_try(&l->v[i], m)) {
            m->out->route = l->v[i].route;
            return true;
        }
    }
    return false;
}

struct tbest {
    const struct rt *rt;
    uint32_t nliterals;
};

static void template_terminal(const struct tnode *n, struct mctx *m, struct tbest *best)
{
    for (uint32_t i = 0; i < n->term.n; i++) {
        const struct rt *c = n->term.v[i].rt;
        if (!cand_try(&n->term.v[i], m))
            continue;
        if (!best->rt || n->nliterals > best->nliterals ||
            (n->nliterals == best->nliterals && rt_cmp(c, best->rt) < 0))
            *best = (struct tbest){c, n->nliterals};
        return; /* the list is sorted: later ones lose to this one */
    }
}

/* Depth-first over the path's pieces from piece `idx` at offset `start`
 * (start > len: every segment is consumed). Literal edges go first, but
 * the winner is decided by literal count, not by visit order, since
 * "/a/{x}/{y}" is found before "/{p}/b/c". */
static void template_dfs(const struct tnode *n, uint32_t idx, size_t start, uint64_t prev_chain,
                         struct mctx *m, struct tbest *best)
{
    if (!m->allow_pass && best->rt && best->nliterals > n->max_lit)
        return;
    pt_slice path = m->in->path;
    if (start > path.len) {
        if (n->term.n)
            template_terminal(n, m, best);
        return;
    }
    struct piece pc = get_piece(m, idx, start, prev_chain);
    size_t slen = pc.end - start;
    uint64_t eh = pt_unlikely(n->fold) ? piece_hash(path.p + start, slen, true) : pc.hash;
    const struct tnode *child =
        htab_get(&m->r->edges, hash_fin(eh, n->id), n->id, path.p + start, slen, n->fold);
    if (child)
        template_dfs(child, idx + 1, pc.end + 1, pc.chain, m, best);
    if (n->param && slen > 0)
        template_dfs(n->param, idx + 1, pc.end + 1, pc.chain, m, best);
}

static bool template_try(const struct bucket *b, struct mctx *m)
{
    pt_slice path = m->in->path;
    if (!path.len || path.p[0] != '/')
        return false;
    struct tbest best = {NULL, 0};
    struct piece p0 = get_piece(m, 0, 0, PATH_SEED); /* the empty piece before '/' */
    if (b->troot)
        template_dfs(b->troot, 1, 1, p0.chain, m, &best);
    /* The same contest: most literal segments, then the tie-breaks. */
    if (b->troot_ci)
        template_dfs(b->troot_ci, 1, 1, p0.chain, m, &best);
    if (!best.rt)
        return false;
    /* Params: walk the winner's segments against the path once more. */
    struct pt_route_result *out = m->out;
    size_t pos = 1;
    uint32_t np = 0;
    for (uint32_t i = 0; i < best.rt->ntsegs; i++) {
        const char *s = path.p + pos;
        const char *slash = memchr(s, '/', path.len - pos);
        size_t slen = slash ? (size_t)(slash - s) : path.len - pos;
        if (best.rt->tsegs[i].param) {
            out->param_names[np] = best.rt->tsegs[i].lit;
            out->param_values[np] = (pt_slice){s, slen};
            np++;
        }
        pos += slen + 1;
    }
    out->nparams = np;
    out->route = best.rt->route;
    return true;
}

/* The longest prefix (at most `lim` bytes) of the path in bucket `b`
 * that matches at a segment boundary. `m` is NULL at build time, when
 * `path` is a prefix key looking for its fallback link. */
const struct pentry *pt_router_prefix_longest(const struct pt_router *r, const struct bucket *b,
                                              struct mctx *m, pt_slice path, size_t lim, bool fold)
{
    const struct pentry *best = NULL;
    uint32_t owner = b->id * PATH_KINDS + (fold ? PATH_PREFIX_CI : PATH_PREFIX);
    const struct lenmap *lens = fold ? &b->prefix_ci_lens : &b->prefix_lens;
    const char *p = path.p;
    uint64_t h = PATH_SEED;
    uint32_t idx = 0;
    for (size_t s = 0;; idx++) {
        struct piece pc;
        if (m && !fold) {
            pc = get_piece(m, idx, s, h);
        } else {
            pc.end = next_slash(p, s, path.len);
            pc.chain = chain(h, piece_hash(p + s, pc.end - s, fold));
        }
        size_t e = pc.end;
        if (e > lim)
            break;
        h = pc.chain;
        /* p[0..e) ends where a segment ends. An empty piece ("//") gives
         * the same string as the previous step's "ends in '/'" probe. */
        if (e > s && lenmap_has(lens, e)) {
            const struct pentry *x = htab_get(&r->paths, hash_fin(h, owner), owner, p, e, fold);
            if (x)
                best = x;
        }
        if (e == path.len)
            break;
        /* p[0..e+1) ends in '/': the form of a prefix that matches anything under it. */
        if (e + 1 <= lim && lenmap_has(lens, e + 1)) {
            uint64_t hs = chain(h, piece_hash(p, 0, false));
            const struct pentry *x =
                htab_get(&r->paths, hash_fin(hs, owner), owner, p, e + 1, fold);
            if (x)
                best = x;
        }
        s = e + 1;
    }
    return best;
}

/* Two candidate lists for one key (case-sensitive and -insensitive
 * routes), tried as one list: both are in match order. */
static bool list2_try(const struct clist *a, const struct clist *b, struct mctx *m)
{
    uint32_t i = 0, j = 0;
    while (i < a->n || j < b->n) {
        const struct cand *c = (j >= b->n || (i < a->n && rt_cmp(a->v[i].rt, b->v[j].rt) < 0))
                                   ? &a->v[i++]
                                   : &b->v[j++];
        if (cand_try(c, m)) {
            m->out->route = c->route;
            return true;
        }
    }
    return false;
}

static const struct clist no_list = {NULL, 0};

/* The exact-path entry of the path, case-folded or not. */
static const struct pentry *exact_probe(const struct bucket *b, struct mctx *m, bool fold)
{
    pt_slice path = m->in->path;
    uint64_t h = PATH_SEED;
    if (fold) {
        for (size_t s = 0;;) {
            size_t e = next_slash(path.p, s, path.len);
            h = chain(h, piece_hash(path.p + s, e - s, true));
            if (e == path.len)
                break;
            s = e + 1;
        }
    } else {
        struct piece pc;
        uint32_t idx = 0;
        for (size_t s = 0;; s = pc.end + 1, idx++) {
            pc = get_piece(m, idx, s, h);
            h = pc.chain;
            if (pc.end == path.len)
                break;
        }
    }
    uint32_t owner = b->id * PATH_KINDS + (fold ? PATH_EXACT_CI : PATH_EXACT);
    return htab_get(&m->r->paths, hash_fin(h, owner), owner, path.p, path.len, fold);
}

/* Step 2 for a bucket that holds case-insensitive routes: each path kind
 * looks in both indexes and merges what they give, in match order. */
static bool bucket_try_ci(const struct bucket *b, struct mctx *m)
{
    const struct pt_router *r = m->r;
    pt_slice path = m->in->path;
    const struct pentry *x = NULL, *y = NULL;
    if (b->has_exact && lenmap_has(&b->exact_lens, path.len))
        x = exact_probe(b, m, false);
    if (b->has_exact_ci && lenmap_has(&b->exact_ci_lens, path.len))
        y = exact_probe(b, m, true);
    if ((x || y) && list2_try(x ? &x->list : &no_list, y ? &y->list : &no_list, m))
        return true;
    if ((b->troot || b->troot_ci) && template_try(b, m))
        return true;
    x = b->has_prefix ? pt_router_prefix_longest(r, b, m, path, b->max_prefix, false) : NULL;
    y = b->has_prefix_ci ? pt_router_prefix_longest(r, b, m, path, b->max_prefix_ci, true) : NULL;
    while (x || y) {
        /* Longest first; two of one length are one candidate list. */
        const struct clist *lx = x && (!y || x->len >= y->len) ? &x->list : &no_list;
        const struct clist *ly = y && (!x || y->len >= x->len) ? &y->list : &no_list;
        if (list2_try(lx, ly, m))
            return true;
        if (lx != &no_list)
            x = x->parent;
        if (ly != &no_list)
            y = y->parent;
    }
    if (b->regex.n && list_try(&b->regex, m))
        return true;
    return b->any.n && list_try(&b->any, m);
}

/* Step 2: one host bucket, path kinds in specificity order. */
static bool bucket_try(const struct bucket *b, struct mctx *m)
{
    if (pt_unlikely(b->has_ci))
        return bucket_try_ci(b, m);
    const struct pt_router *r = m->r;
    pt_slice path = m->in->path;
    if (b->has_exact && lenmap_has(&b->exact_lens, path.len)) {
        const struct pentry *e = exact_probe(b, m, false);
        if (e && list_try(&e->list, m))
            return true;
    }
    if (b->troot && template_try(b, m))
        return true;
    if (b->has_prefix) {
        const struct pentry *e = pt_router_prefix_longest(r, b, m, path, b->max_prefix, false);
        for (; e; e = e->parent)
            if (list_try(&e->list, m))
                return true;
    }
    if (b->regex.n && list_try(&b->regex, m))
        return true;
    return b->any.n && list_try(&b->any, m);
}

static bool walk(struct mctx *m, const struct bucket *exact, const struct bucket *wild)
{
    if (exact && bucket_try(exact, m))
        return true;
    for (const struct bucket *b = wild; b; b = b->wparent)
        if (bucket_try(b, m))
            return true;
    return m->r->none && bucket_try(m->r->none, m);
}
