/*
 * router.c — the compiled router. Contract and match order: router.h.
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
 *  - Fallback chains are resolved at build time. A prefix P that matches a
 *    path agrees with that path on every byte before |P|, so which shorter
 *    prefixes also match is a property of P alone: each prefix entry links
 *    to the next shorter matching prefix of its bucket. Likewise each
 *    wildcard bucket links to the next shorter wildcard that is a suffix of
 *    it. A lookup finds the longest hit and then follows links.
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
#include "gateway/router.h"

#include "http/tokens.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- compiled routes and the index ---- */

struct kvpred {
    pt_slice name;
    int token; /* header token, PT_TOK_UNKNOWN when not interned */
    pt_slice value;
    pcre2_code *re; /* non-NULL: regex predicate */
    bool jit;
};

/* One segment of a path template: a literal, or a {param} (lit = name). */
struct tseg {
    pt_slice lit;
    bool param;
};

struct rt {
    const struct pt_route *route;
    uint32_t methods; /* effective mask (GET implies HEAD); 0 = any */
    uint32_t npred;   /* (methods != 0) + headers + query: "more predicates first" */
    int priority;
    uint32_t index; /* file order */
    uint32_t order; /* position in g->routes: final, total tie-break */
    const struct kvpred *headers, *query;
    uint32_t nheaders, nquery;
    const struct tseg *tsegs; /* template segments */
    uint32_t ntsegs;
    pcre2_code *re; /* path regex */
    bool jit;
    const pt_slice *group_names; /* regex params: group 1..ngroups */
    uint32_t ngroups;
};

/* A list entry carries what decides most lookups (the method mask, and
 * whether anything else must be checked), so a typical match reads only
 * the list, not the compiled route behind it. */
struct cand {
    const struct pt_route *route;
    const struct rt *rt;
    uint32_t methods; /* == rt->methods */
    bool simple;      /* no headers, query or path regex: the method decides */
};

struct clist {
    const struct cand *v;
    uint32_t n;
};

/* An exact-path or prefix entry of one bucket. */
struct pentry {
    struct clist list;
    const struct pentry *parent; /* prefix: next shorter prefix that also matches */
};

struct tnode {
    uint32_t id;
    uint32_t nliterals; /* literal segments on the way here (terminal specificity) */
    uint32_t max_lit;   /* most literal segments of any terminal below: DFS pruning */
    const struct tnode *param;
    struct clist term;
};

/* Lengths some key has, so a lookup skips probes that cannot hit. */
struct lenmap {
    uint64_t bits[4]; /* lengths 0..255 */
    bool longer;      /* some key is ≥ 256 bytes */
};

struct bucket {
    uint32_t id;
    bool has_exact, has_prefix;
    size_t max_prefix;                     /* longest prefix length in this bucket */
    struct lenmap exact_lens, prefix_lens; /* per bucket: most probes never happen */
    const struct tnode *troot;             /* NULL when no templates */
    struct clist regex, any;               /* path regexes; routes without a path */
    const struct bucket *wparent;          /* wildcard: next shorter matching wildcard */
};

struct hent {
    uint64_t hash;
    const char *key;
    uint32_t len;
    uint32_t owner;  /* disambiguates equal strings: bucket/kind or trie node */
    const void *val; /* NULL = empty slot */
};

struct htab {
    struct hent *e;
    size_t mask;
};

enum { HOST_EXACT = 0, HOST_WILD = 1 };
enum { PATH_EXACT = 0, PATH_PREFIX = 1 };

struct pt_router {
    struct htab hosts, paths, edges;
    const struct bucket *none; /* host-less routes, NULL when none */
    bool has_hosts, has_wild;
    struct lenmap wild_lens;
};

/* ---- hashing ----
 *
 * Keys are hashed piece by piece: a path is split at '/', a host at '.',
 * each piece gets a word-at-a-time hash and the pieces are chained. So the
 * hash of every prefix of a path at a segment boundary (and of every
 * suffix of a host at a label boundary) is an intermediate state of one
 * pass, and a trie edge's hash is just its piece's hash. Byte-serial
 * hashes (FNV) cost ~4 cycles a byte in their multiply chain; this costs
 * one multiply per 8 bytes plus one per piece. */

#define K1 0x9e3779b97f4a7c15ull
#define K2 0xc2b2ae3d27d4eb4full
#define K3 0x165667b19e3779f9ull
#define PATH_SEED 0x27d4eb2f165667c5ull
#define HOST_SEED 0x94d049bb133111ebull

static inline uint64_t rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

/* Lowercases the ASCII letters of eight bytes at once (bytes ≥ 0x80 are
 * left alone): a byte gets 0x20 only when it lies in 'A'..'Z'. */
static inline uint64_t lower8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t low7 = x & (0x7f * ones);
    uint64_t ge_a = low7 + (0x80 - 'A') * ones;
    uint64_t gt_z = low7 + (0x80 - 'Z' - 1) * ones;
    uint64_t upper = ge_a & ~gt_z & ~x & (0x80 * ones);
    return x | (upper >> 2);
}

static inline uint64_t load64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t load32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Hash of one piece; `fold` hashes it lowercased (hosts). Short tails are
 * read with overlapping loads, never past the end. */
static inline uint64_t piece_hash(const char *p, size_t n, bool fold)
{
    uint64_t h = (uint64_t)n * K1;
    while (n > 8) {
        uint64_t w = fold ? lower8(load64(p)) : load64(p);
        h = rotl64((h ^ w) * K2, 29);
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n == 8)
        w = load64(p);
    else if (n >= 4)
        w = load32(p) | (load32(p + n - 4) << 32);
    else if (n)
        w = (uint64_t)(unsigned char)p[0] | (uint64_t)(unsigned char)p[n >> 1] << 8 |
            (uint64_t)(unsigned char)p[n - 1] << 16;
    if (fold)
        w = lower8(w);
    h = (h ^ w) * K3;
    return h ^ (h >> 32);
}

static inline uint64_t chain(uint64_t h, uint64_t piece)
{
    return (rotl64(h, 23) ^ piece) * K1;
}

static inline size_t next_slash(const char *p, size_t from, size_t n)
{
    while (from < n && p[from] != '/')
        from++;
    return from;
}

/* Build-side key hashes; lookups compute the same states incrementally. */
static uint64_t path_hash(const char *p, size_t n)
{
    uint64_t h = PATH_SEED;
    for (size_t s = 0;;) {
        size_t e = next_slash(p, s, n);
        h = chain(h, piece_hash(p + s, e - s, false));
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

/* Mixes the owner in after the string hash, so the string part of a key
 * can be computed once and probed for several owners. */
static inline uint64_t hash_fin(uint64_t h, uint32_t owner)
{
    h ^= ((uint64_t)owner + 1) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    return h;
}

static inline bool lenmap_has(const struct lenmap *m, size_t len)
{
    if (len >= 256)
        return m->longer;
    return (m->bits[len >> 6] >> (len & 63)) & 1;
}

static void lenmap_add(struct lenmap *m, size_t len)
{
    if (len >= 256)
        m->longer = true;
    else
        m->bits[len >> 6] |= 1ull << (len & 63);
}

static inline bool ieq_lowered(const char *in, const char *low, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (lower8(load64(in + i)) != load64(low + i))
            return false;
    for (; i < n; i++)
        if (lower((unsigned char)in[i]) != (unsigned char)low[i])
            return false;
    return true;
}

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

/* Keys are short; an inline compare beats a call into libc's memcmp. */
static inline bool bytes_eq(const char *a, const char *b, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        if (load64(a + i) != load64(b + i))
            return false;
    for (; i < n; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

/* `fold`: compare case-insensitively (keys are stored lowercase). */
static inline const void *htab_get(const struct htab *t, uint64_t h, uint32_t owner,
                                   const char *key, size_t len, bool fold)
{
    if (!t->e)
        return NULL;
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const struct hent *e = &t->e[i];
        if (!e->val)
            return NULL;
        if (e->hash == h && e->owner == owner && e->len == len &&
            (fold ? ieq_lowered(key, e->key, len) : bytes_eq(key, e->key, len)))
            return e->val;
    }
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

static bool is_jit(const pcre2_code *re)
{
    size_t sz = 0;
    return pcre2_pattern_info(re, PCRE2_INFO_JITSIZE, &sz) == 0 && sz > 0;
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
    m.mbit = (in->method_id >= 0 && in->method_id < 32) ? 1u << in->method_id : 0;
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

/* Order inside one candidate list (router.h rules 3–5). */
static int rt_cmp(const struct rt *a, const struct rt *b)
{
    if (a->npred != b->npred)
        return a->npred > b->npred ? -1 : 1;
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    if (a->index != b->index)
        return a->index < b->index ? -1 : 1;
    if (a->order != b->order)
        return a->order < b->order ? -1 : 1;
    return 0;
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
    const struct tnode *child =
        htab_get(&m->r->edges, hash_fin(pc.hash, n->id), n->id, path.p + start, slen, false);
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
    template_dfs(b->troot, 1, 1, p0.chain, m, &best);
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
static const struct pentry *prefix_longest(const struct pt_router *r, const struct bucket *b,
                                           struct mctx *m, pt_slice path, size_t lim)
{
    const struct pentry *best = NULL;
    uint32_t owner = b->id * 2 + PATH_PREFIX;
    const char *p = path.p;
    uint64_t h = PATH_SEED;
    uint32_t idx = 0;
    for (size_t s = 0;; idx++) {
        struct piece pc;
        if (m) {
            pc = get_piece(m, idx, s, h);
        } else {
            pc.end = next_slash(p, s, path.len);
            pc.chain = chain(h, piece_hash(p + s, pc.end - s, false));
        }
        size_t e = pc.end;
        if (e > lim)
            break;
        h = pc.chain;
        /* p[0..e) ends where a segment ends. An empty piece ("//") gives
         * the same string as the previous step's "ends in '/'" probe. */
        if (e > s && lenmap_has(&b->prefix_lens, e)) {
            const struct pentry *x = htab_get(&r->paths, hash_fin(h, owner), owner, p, e, false);
            if (x)
                best = x;
        }
        if (e == path.len)
            break;
        /* p[0..e+1) ends in '/': the form of a prefix that matches anything under it. */
        if (e + 1 <= lim && lenmap_has(&b->prefix_lens, e + 1)) {
            uint64_t hs = chain(h, piece_hash(p, 0, false));
            const struct pentry *x =
                htab_get(&r->paths, hash_fin(hs, owner), owner, p, e + 1, false);
            if (x)
                best = x;
        }
        s = e + 1;
    }
    return best;
}

/* Step 2: one host bucket, path kinds in specificity order. */
static bool bucket_try(const struct bucket *b, struct mctx *m)
{
    const struct pt_router *r = m->r;
    pt_slice path = m->in->path;
    if (b->has_exact && lenmap_has(&b->exact_lens, path.len)) {
        uint64_t h = PATH_SEED;
        struct piece pc;
        uint32_t idx = 0;
        for (size_t s = 0;; s = pc.end + 1, idx++) {
            pc = get_piece(m, idx, s, h);
            h = pc.chain;
            if (pc.end == path.len)
                break;
        }
        uint32_t owner = b->id * 2 + PATH_EXACT;
        const struct pentry *e =
            htab_get(&r->paths, hash_fin(h, owner), owner, path.p, path.len, false);
        if (e && list_try(&e->list, m))
            return true;
    }
    if (b->troot && template_try(b, m))
        return true;
    if (b->has_prefix) {
        const struct pentry *e = prefix_longest(r, b, m, path, b->max_prefix);
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

/* ---- build ---- */

enum { K_EXACT, K_TEMPLATE, K_PREFIX, K_REGEX, K_NONE };

/* One (route, host) pair with its path key; build scratch. */
struct placement {
    struct bucket *bucket;
    int kind;
    const char *key; /* exact path, prefix, or normalized template ("{}" per param) */
    size_t klen;
    const struct rt *rt;
};

struct pending_prefix {
    struct pentry *e;
    const struct bucket *b;
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

static int compile_route(struct builder *bd, const struct pt_route *src, uint32_t order,
                         struct rt *c);
static struct bucket *host_bucket(struct builder *bd, const struct pt_route *src, const char *host);
static int placement_cmp(const void *pa, const void *pb);
static const struct tnode *trie_insert(struct builder *bd, struct bucket *b, const char *key,
                                       size_t klen, struct clist list);

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
    size_t nhosts = 0, nplace = 0, nsegs = 0;
    for (uint32_t i = 0; i < g->nroutes; i++) {
        if (compile_route(&bd, &g->routes[i], i, &rts[i]) < 0)
            goto out;
        uint32_t nh = g->routes[i].match.nhosts;
        nhosts += nh;
        nplace += nh ? nh : 1;
        nsegs += (size_t)rts[i].ntsegs * (nh ? nh : 1);
    }
    bd.buckets = pt_arena_zalloc(bd.a, sizeof(*bd.buckets) * (nhosts + 1));
    pl = malloc(sizeof(*pl) * (nplace ? nplace : 1));
    prefixes = malloc(sizeof(*prefixes) * (nplace ? nplace : 1));
    struct cand *backing = pt_arena_alloc(bd.a, sizeof(*backing) * (nplace ? nplace : 1));
    if (!bd.buckets || !pl || !prefixes || !backing || htab_init(&r->hosts, bd.a, nhosts) < 0 ||
        htab_init(&r->paths, bd.a, nplace) < 0 || htab_init(&r->edges, bd.a, nsegs) < 0) {
        fail(&bd, NULL, "out of memory");
        goto out;
    }

    /* Placements: every route once per host (or once, host-less). */
    size_t np = 0;
    for (uint32_t i = 0; i < g->nroutes; i++) {
        const struct pt_route *src = &g->routes[i];
        const struct pt_route_match *mt = &src->match;
        int kind = K_NONE;
        const char *key = "";
        if (mt->path)
            kind = K_EXACT, key = mt->path;
        else if (mt->path_template)
            kind = K_TEMPLATE, key = bd.tkeys[i];
        else if (mt->path_prefix)
            kind = K_PREFIX, key = mt->path_prefix;
        else if (mt->path_regex)
            kind = K_REGEX;
        uint32_t nh = mt->nhosts ? mt->nhosts : 1;
        for (uint32_t j = 0; j < nh; j++) {
            struct bucket *b = host_bucket(&bd, src, mt->nhosts ? mt->hosts[j] : NULL);
            if (!b)
                goto out;
            pl[np++] = (struct placement){b, kind, key, strlen(key), &rts[i]};
        }
    }

    /* Sorted placements: each run of equal (bucket, kind, key) is one
     * candidate list already in match order. */
    qsort(pl, np, sizeof(*pl), placement_cmp);
    size_t nprefix = 0, used = 0;
    for (size_t i = 0; i < np;) {
        size_t j = i;
        struct clist list = {backing + used, 0};
        for (; j < np && pl[j].bucket == pl[i].bucket && pl[j].kind == pl[i].kind &&
               pl[j].klen == pl[i].klen && memcmp(pl[j].key, pl[i].key, pl[i].klen) == 0;
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
        const char *key = pl[i].key;
        size_t klen = pl[i].klen;
        switch (pl[i].kind) {
        case K_EXACT:
        case K_PREFIX: {
            struct pentry *e = pt_arena_zalloc(bd.a, sizeof(*e));
            if (!e) {
                fail(&bd, NULL, "out of memory");
                goto out;
            }
            e->list = list;
            uint32_t owner = b->id * 2 + (pl[i].kind == K_EXACT ? PATH_EXACT : PATH_PREFIX);
            htab_put(&r->paths, hash_fin(path_hash(key, klen), owner), owner, key, klen, e);
            if (pl[i].kind == K_EXACT) {
                b->has_exact = true;
                lenmap_add(&b->exact_lens, klen);
            } else {
                b->has_prefix = true;
                b->max_prefix = PT_MAX(b->max_prefix, klen);
                lenmap_add(&b->prefix_lens, klen);
                prefixes[nprefix++] = (struct pending_prefix){e, b, key, klen};
            }
            break;
        }
        case K_TEMPLATE:
            if (!trie_insert(&bd, b, key, klen, list)) {
                fail(&bd, NULL, "out of memory");
                goto out;
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

    /* Prefix fallback links: the longest shorter prefix of the same bucket
     * that matches the prefix itself matches every path it matches. */
    for (size_t i = 0; i < nprefix; i++) {
        const struct pending_prefix *pp = &prefixes[i];
        if (pp->klen > 1)
            pp->e->parent =
                prefix_longest(r, pp->b, NULL, (pt_slice){pp->key, pp->klen}, pp->klen - 1);
    }

    /* Wildcard fallback links: the next shorter wildcard suffix of this one. */
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

    result = r;
out:
    free(pl);
    free(prefixes);
    return result;
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
    if (a->klen != b->klen)
        return a->klen < b->klen ? -1 : 1;
    int c = memcmp(a->key, b->key, a->klen);
    if (c)
        return c;
    return rt_cmp(a->rt, b->rt);
}

static struct tnode *new_node(struct builder *bd, uint32_t nliterals)
{
    struct tnode *n = pt_arena_zalloc(bd->a, sizeof(*n));
    if (n) {
        n->id = bd->nnodes++;
        n->nliterals = nliterals;
    }
    return n;
}

/* Inserts a normalized template ("{}" marks a param) into the bucket's
 * trie; the terminal node receives the run's candidate list. */
static const struct tnode *trie_insert(struct builder *bd, struct bucket *b, const char *key,
                                       size_t klen, struct clist list)
{
    struct pt_router *r = bd->r;
    if (!b->troot && !(b->troot = new_node(bd, 0)))
        return NULL;
    /* The nodes were allocated by this builder; the const is for workers. */
    struct tnode *n = (struct tnode *)b->troot;
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
            if (!n->param && !(n->param = new_node(bd, depth_lit)))
                return NULL;
            child = (struct tnode *)n->param;
        } else {
            depth_lit++;
            uint64_t h = hash_fin(piece_hash(s, slen, false), n->id);
            child = (struct tnode *)htab_get(&r->edges, h, n->id, s, slen, false);
            if (!child) {
                if (!(child = new_node(bd, depth_lit)))
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
