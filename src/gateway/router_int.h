/*
 * router_int.h — private to the router (router.c looks up, router_build.c
 * builds): the compiled routes, the index they are placed in, and the key
 * hashes both halves must compute identically. Nothing outside
 * src/gateway/router*.c includes this header; the contract is router.h.
 *
 * Ownership: everything here lives in the generation's arena and is
 * read-only once pt_router_build returns; workers only read it.
 */
#ifndef PT_GATEWAY_ROUTER_INT_H
#define PT_GATEWAY_ROUTER_INT_H

#include "gateway/router.h"

#include <string.h>

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
    size_t len;                  /* of the key: merges the two prefix chains */
};

struct tnode {
    uint32_t id;
    uint32_t nliterals; /* literal segments on the way here (terminal specificity) */
    uint32_t max_lit;   /* most literal segments of any terminal below: DFS pruning */
    const struct tnode *param;
    struct clist term;
    bool fold; /* a case-insensitive trie: edges keyed lowercase */
};

/* Lengths some key has, so a lookup skips probes that cannot hit. */
struct lenmap {
    uint64_t bits[4]; /* lengths 0..255 */
    bool longer;      /* some key is ≥ 256 bytes */
};

/* Routes with `case_sensitive: false` have their own exact, prefix and
 * template index in the bucket, keyed lowercase and probed with folded
 * hashes ("ci"); a bucket without any (has_ci false) never looks there. */
struct bucket {
    uint32_t id;
    bool has_exact, has_prefix;
    bool has_ci, has_exact_ci, has_prefix_ci;
    size_t max_prefix; /* longest prefix length in this bucket */
    size_t max_prefix_ci;
    struct lenmap exact_lens, prefix_lens; /* per bucket: most probes never happen */
    struct lenmap exact_ci_lens, prefix_ci_lens;
    const struct tnode *troot;    /* NULL when no templates */
    const struct tnode *troot_ci; /* case-insensitive templates */
    struct clist regex, any;      /* path regexes; routes without a path */
    const struct bucket *wparent; /* wildcard: next shorter matching wildcard */
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
/* A path key's owner in `paths`: bucket id * PATH_KINDS + kind. */
enum { PATH_EXACT = 0, PATH_PREFIX = 1, PATH_EXACT_CI = 2, PATH_PREFIX_CI = 3, PATH_KINDS = 4 };

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

/* Order inside one candidate list (router.h rules 3–5): the lookup's
 * template tie-break and the build's list sort must agree. */
static inline int rt_cmp(const struct rt *a, const struct rt *b)
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

struct mctx;

/* The longest prefix (at most `lim` bytes) of the path in bucket `b`
 * that matches at a segment boundary (router.c); `fold`: among the
 * case-insensitive prefixes. `m` is NULL at build time, when `path` is a
 * prefix key looking for its fallback link. */
const struct pentry *pt_router_prefix_longest(const struct pt_router *r, const struct bucket *b,
                                              struct mctx *m, pt_slice path, size_t lim, bool fold);

#endif
