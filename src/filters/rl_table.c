/*
 * rl_table.c — the process's local rate-limit cells (see rl_table.h for
 * the contract; docs/internals.md for the design in prose).
 *
 * A cell is {tag, state}, 16 bytes, and changes only by a 16-byte
 * compare-and-swap of both words. The tag is the limit key with its low
 * three bits replaced by the cell's kind, so any thread can read another
 * key's cell and tell whether it is idle:
 *
 *   kind 0      empty
 *   kind 1      gcra; state = TAT (monotonic ns), idle when TAT <= now
 *   kind 2..5   sliding window per second, minute, hour, day; state =
 *               [window mod 2^24 : 24][prev : 20][cur : 20], idle when
 *               the current window is not the stored one or the next
 *
 * Reading a cell is two 8-byte loads checked by re-reading the tag; a
 * torn read only makes the CAS that follows fail, and the CAS's failure
 * hands back the cell's true 16 bytes to retry with. A refusal (which
 * writes nothing) is confirmed by reading the refusing cells again: a
 * plain, tag-checked read, no locked instruction.
 *
 * Threads: any worker, no lock. Allocation: one mmap at creation, so
 * pages are touched only as keys arrive.
 */
#include "filters/rl_table.h"

#include "core/log.h"
#include "core/siphash.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#define NS_PER_MS 1000000ull
#define CELLS_PER_BUCKET 8u
#define CANDIDATES 16u
#define MAX_TAKE 16u
#define MIN_BUCKETS 2u

#define KIND_EMPTY 0u
#define KIND_GCRA 1u
#define KIND_SW_FIRST 2u /* 2 s, 3 m, 4 h, 5 d */
#define KIND_MASK 7ull

#define SW_WINDOW_BITS 24
#define SW_COUNT_BITS 20
#define SW_WINDOW_MASK ((1ull << SW_WINDOW_BITS) - 1)
#define SW_COUNT_MASK ((1ull << SW_COUNT_BITS) - 1)

/* How often a refusal may be decided again because a refusing cell
 * changed between the decision and its confirming read, before the
 * refusal stands as read. */
#define CONFIRM_ATTEMPTS 4

typedef union rl_cell {
    unsigned __int128 v;
    struct {
        uint64_t tag;
        uint64_t state;
    } w;
} rl_cell;

_Static_assert(sizeof(rl_cell) == 16, "a cell is 16 bytes");

struct pt_rl_table {
    rl_cell *cells; /* nbuckets × 8, 64-byte aligned (mmap) */
    uint64_t nbuckets, mask, max_keys;
    size_t map_bytes;
    uint8_t seed[16];     /* SipHash key for pt_rl_key */
    uint64_t bucket_salt; /* mixes tags into bucket numbers */
    atomic_uint refs;
    /* rare-path counters (relaxed) */
    atomic_uint_least64_t inserts, evictions, fail_opens;
    atomic_uint_least64_t last_warn_ns;
};

/* A key's two buckets. */
struct rl_where {
    uint64_t b1, b2;
};

static const uint64_t sw_period_ms[4] = {1000, 60000, 3600000, 86400000};

/* ---- cells ---- */

static inline rl_cell cell_read(rl_cell *c)
{
    rl_cell x;
    for (;;) {
        x.w.tag = __atomic_load_n(&c->w.tag, __ATOMIC_ACQUIRE);
        x.w.state = __atomic_load_n(&c->w.state, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&c->w.tag, __ATOMIC_ACQUIRE) == x.w.tag)
            return x;
    }
}

/* On failure *expected holds the cell's current 16 bytes. */
static inline bool cell_cas(rl_cell *c, rl_cell *expected, uint64_t tag, uint64_t state)
{
    rl_cell want;
    want.w.tag = tag;
    want.w.state = state;
    return __atomic_compare_exchange_n(&c->v, &expected->v, want.v, false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static inline rl_cell *cand(struct pt_rl_table *t, struct rl_where wh, unsigned i)
{
    uint64_t b = i < CELLS_PER_BUCKET ? wh.b1 : wh.b2;
    return &t->cells[b * CELLS_PER_BUCKET + (i & (CELLS_PER_BUCKET - 1))];
}

static struct rl_where where_of(const struct pt_rl_table *t, uint64_t tag)
{
    uint64_t h = pt_mix64((tag & ~KIND_MASK) ^ t->bucket_salt);
    struct rl_where wh = {h & t->mask, (h >> 32 ^ pt_mix64(h)) & t->mask};
    if (wh.b2 == wh.b1)
        wh.b2 = wh.b1 ^ 1;
    return wh;
}

static unsigned kind_of(const struct pt_rl_params *p)
{
    if (p->algorithm == PT_RL_GCRA)
        return KIND_GCRA;
    for (unsigned i = 0; i < 4; i++)
        if (sw_period_ms[i] == p->period_ms)
            return KIND_SW_FIRST + i;
    return KIND_GCRA; /* pt_rl_params_init admits no other period */
}

static inline uint64_t tag_of(uint64_t key, unsigned kind)
{
    return (key & ~KIND_MASK) | kind;
}

static inline uint64_t sw_pack(uint64_t window, uint64_t prev, uint64_t cur)
{
    return (window & SW_WINDOW_MASK) << (2 * SW_COUNT_BITS) |
           (prev & SW_COUNT_MASK) << SW_COUNT_BITS | (cur & SW_COUNT_MASK);
}

/* A sliding-window state seen from now: the counts of the previous and
 * the current window, the current window's number (mod 2^24), and how
 * many windows ago the state was written (mod 2^24). */
struct sw_view {
    uint64_t prev, cur, window, age;
};

static struct sw_view sw_view_of(unsigned kind, uint64_t state, uint64_t now_wall_ms)
{
    struct sw_view v = {0, 0, (now_wall_ms / sw_period_ms[kind - KIND_SW_FIRST]) & SW_WINDOW_MASK,
                        0};
    uint64_t stored = state >> (2 * SW_COUNT_BITS);
    uint64_t sprev = (state >> SW_COUNT_BITS) & SW_COUNT_MASK, scur = state & SW_COUNT_MASK;
    v.age = (v.window - stored) & SW_WINDOW_MASK;
    if (v.age == 0) {
        v.prev = sprev;
        v.cur = scur;
    } else if (v.age == 1) {
        v.prev = scur;
    }
    return v;
}

/* The state of a cell nobody has charged: idle by construction. */
static uint64_t fresh_state(unsigned kind, uint64_t now_wall_ms)
{
    if (kind == KIND_GCRA)
        return 0;
    uint64_t window = now_wall_ms / sw_period_ms[kind - KIND_SW_FIRST];
    return sw_pack(window - 2, 0, 0);
}

/* Whether a non-empty cell is idle (its state is a fresh cell's), and for
 * how long it has been (ms), so the longest-idle one is evicted first. */
static bool cell_idle(rl_cell v, uint64_t now_ns, uint64_t now_wall_ms, uint64_t *idle_ms)
{
    unsigned kind = (unsigned)(v.w.tag & KIND_MASK);
    if (kind == KIND_GCRA) {
        if (v.w.state > now_ns)
            return false;
        *idle_ms = (now_ns - v.w.state) / NS_PER_MS;
        return true;
    }
    /* now_wall_ms 0: the take has no sliding-window limit and read no
     * UTC clock, so it cannot tell whether a window is over */
    if (kind < KIND_SW_FIRST || kind >= KIND_SW_FIRST + 4 || now_wall_ms == 0)
        return false;
    struct sw_view sv = sw_view_of(kind, v.w.state, now_wall_ms);
    if (sv.age < 2)
        return false;
    uint64_t w = sw_period_ms[kind - KIND_SW_FIRST];
    *idle_ms = now_wall_ms % w + (sv.age - 2) * w;
    return true;
}

/* Adds one cell's consumption to another's (duplicate-insert merge). */
static uint64_t state_combine(unsigned kind, uint64_t kept, uint64_t other, uint64_t now_ns,
                              uint64_t now_wall_ms)
{
    if (kind == KIND_GCRA) {
        uint64_t base = kept > now_ns ? kept : now_ns;
        uint64_t debt = other > now_ns ? other - now_ns : 0;
        return base > UINT64_MAX - debt ? UINT64_MAX : base + debt;
    }
    struct sw_view a = sw_view_of(kind, kept, now_wall_ms);
    struct sw_view b = sw_view_of(kind, other, now_wall_ms);
    uint64_t prev = PT_MIN(a.prev + b.prev, SW_COUNT_MASK);
    uint64_t cur = PT_MIN(a.cur + b.cur, SW_COUNT_MASK);
    return sw_pack(a.window, prev, cur);
}

/* ---- finding a key's cell ---- */

enum claim_result { CLAIM_FOUND, CLAIM_INSERTED, CLAIM_RACE, CLAIM_FULL };

/*
 * One scan of a key's 16 candidates: the first cell holding the tag
 * (FOUND, *cell and *seen set); else gives the tag, with `state`, to the
 * first empty candidate of the emptier bucket, else to the longest-idle
 * candidate (INSERTED); RACE when
 * that CAS lost; FULL when every candidate is live.
 */
static enum claim_result rl_claim(struct pt_rl_table *t, struct rl_where wh, uint64_t tag,
                                  uint64_t state, uint64_t now_ns, uint64_t now_wall_ms,
                                  rl_cell **cell, rl_cell *seen)
{
    rl_cell *empty[2] = {NULL, NULL}, *victim = NULL;
    rl_cell empty_v[2] = {{0}, {0}}, victim_v = {0};
    unsigned nempty[2] = {0, 0};
    uint64_t best_idle = 0;
    for (unsigned i = 0; i < CANDIDATES; i++) {
        rl_cell *c = cand(t, wh, i);
        rl_cell v = cell_read(c);
        unsigned b = i / CELLS_PER_BUCKET;
        uint64_t idle_ms;
        if (v.w.tag == tag) {
            *cell = c;
            *seen = v;
            return CLAIM_FOUND;
        }
        if (v.w.tag == 0) {
            if (nempty[b]++ == 0) {
                empty[b] = c;
                empty_v[b] = v;
            }
        } else if (cell_idle(v, now_ns, now_wall_ms, &idle_ms) &&
                   (!victim || idle_ms > best_idle)) {
            victim = c;
            victim_v = v;
            best_idle = idle_ms;
        }
    }
    /* an empty cell in the emptier bucket (the first bucket on a tie),
     * which keeps the two buckets level; else the longest-idle cell */
    unsigned b = nempty[1] > nempty[0];
    rl_cell *target = empty[b] ? empty[b] : victim;
    rl_cell expect = empty[b] ? empty_v[b] : victim_v;
    if (!target)
        return CLAIM_FULL;
    if (!cell_cas(target, &expect, tag, state))
        return CLAIM_RACE;
    atomic_fetch_add_explicit(&t->inserts, 1, memory_order_relaxed);
    if (!empty[b])
        atomic_fetch_add_explicit(&t->evictions, 1, memory_order_relaxed);
    *cell = target;
    seen->w.tag = tag;
    seen->w.state = state;
    return CLAIM_INSERTED;
}

/* Adds `state` (a cell just emptied by a merge) into the key's first
 * cell, giving the key a cell again if it has none any more. */
static void rl_merge(struct pt_rl_table *t, struct rl_where wh, uint64_t tag, uint64_t now_ns,
                     uint64_t now_wall_ms);

static void rl_carry(struct pt_rl_table *t, struct rl_where wh, uint64_t tag, uint64_t state,
                     uint64_t now_ns, uint64_t now_wall_ms)
{
    unsigned kind = (unsigned)(tag & KIND_MASK);
    for (;;) {
        rl_cell *c;
        rl_cell v;
        switch (rl_claim(t, wh, tag, state, now_ns, now_wall_ms, &c, &v)) {
        case CLAIM_INSERTED:
            /* a fresh insert of the key may have raced this one */
            rl_merge(t, wh, tag, now_ns, now_wall_ms);
            return;
        case CLAIM_FULL: /* every candidate live: the state has no home */
            return;
        case CLAIM_RACE:
            continue;
        case CLAIM_FOUND:
            break;
        }
        for (;;) {
            uint64_t merged = state_combine(kind, v.w.state, state, now_ns, now_wall_ms);
            if (cell_cas(c, &v, tag, merged))
                return;
            if (v.w.tag != tag)
                break; /* the cell went away: find the key again */
        }
    }
}

/* After an insert: while the key holds two cells (another worker inserted
 * it at the same time), empty the later one and add its consumption to
 * the first. Emptying is one CAS from the exact value read, so exactly
 * one thread carries each emptied state.
 *
 * Both racing inserters do insert-CAS, then scan. The full fence keeps
 * each scan's loads after its own CAS's store on any memory model (a
 * store-load order, which acquire/release does not give), so at least
 * one of the two sees the other's cell. */
static void rl_merge(struct pt_rl_table *t, struct rl_where wh, uint64_t tag, uint64_t now_ns,
                     uint64_t now_wall_ms)
{
    atomic_thread_fence(memory_order_seq_cst);
    for (;;) {
        rl_cell *other = NULL;
        rl_cell ov = {0};
        bool kept = false;
        for (unsigned i = 0; i < CANDIDATES && !other; i++) {
            rl_cell *c = cand(t, wh, i);
            rl_cell v = cell_read(c);
            if (v.w.tag != tag)
                continue;
            if (kept) {
                other = c;
                ov = v;
            }
            kept = true;
        }
        if (!other)
            return;
        if (cell_cas(other, &ov, 0, 0))
            rl_carry(t, wh, tag, ov.w.state, now_ns, now_wall_ms);
    }
}

/* The key's first cell, or NULL. */
static rl_cell *rl_lookup(struct pt_rl_table *t, struct rl_where wh, uint64_t tag, rl_cell *seen)
{
    for (unsigned i = 0; i < CANDIDATES; i++) {
        rl_cell *c = cand(t, wh, i);
        *seen = cell_read(c);
        if (seen->w.tag == tag)
            return c;
    }
    return NULL;
}

/* The key's cell (inserted fresh when missing), or NULL when every
 * candidate is live. */
static rl_cell *rl_find(struct pt_rl_table *t, struct rl_where wh, uint64_t tag, uint64_t now_ns,
                        uint64_t now_wall_ms, rl_cell *seen)
{
    uint64_t fresh = fresh_state((unsigned)(tag & KIND_MASK), now_wall_ms);
    for (;;) {
        rl_cell *c;
        switch (rl_claim(t, wh, tag, fresh, now_ns, now_wall_ms, &c, seen)) {
        case CLAIM_FOUND:
            return c;
        case CLAIM_INSERTED:
            rl_merge(t, wh, tag, now_ns, now_wall_ms);
            continue; /* the first cell holding the key is its cell */
        case CLAIM_RACE:
            continue;
        case CLAIM_FULL:
            return NULL;
        }
    }
}

/* ---- deciding and charging ---- */

/* One limit's decision on one cell state: the state after charging it
 * in *next (unchanged on a refusal). */
static bool cell_decide(const struct pt_rl_params *p, unsigned kind, uint64_t state,
                        uint64_t now_ns, uint64_t now_wall_ms, uint64_t *next,
                        struct pt_rl_result *r)
{
    if (kind == KIND_GCRA)
        return pt_rl_gcra_decide(p, state, now_ns, next, r);
    struct sw_view v = sw_view_of(kind, state, now_wall_ms);
    bool ok = pt_rl_sw_decide(p, v.prev, v.cur, now_wall_ms, r);
    *next = ok ? sw_pack(v.window, v.prev, v.cur + 1) : state;
    return ok;
}

/* A limit admits without a cell: the answer of a fresh cell. Counted
 * once the whole request is admitted (rl_count_fail_opens). */
static void rl_fail_open(const struct pt_rl_params *p, unsigned kind, uint64_t now_ns,
                         uint64_t now_wall_ms, struct pt_rl_result *r)
{
    uint64_t next;
    cell_decide(p, kind, fresh_state(kind, now_wall_ms), now_ns, now_wall_ms, &next, r);
    r->no_cell = true;
}

/* An admitted request: each of its limits that had no cell is one
 * fail-open (a request another limit refused, or a decision taken again,
 * counts nothing). Warns at most once a second. */
static void rl_count_fail_opens(struct pt_rl_table *t, uint32_t n, const struct pt_rl_result *out,
                                uint64_t now_ns)
{
    uint64_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        k += out[i].no_cell;
    if (pt_likely(k == 0))
        return;
    uint64_t total = atomic_fetch_add_explicit(&t->fail_opens, k, memory_order_relaxed) + k;
    uint64_t last = atomic_load_explicit(&t->last_warn_ns, memory_order_relaxed);
    if ((last == 0 || now_ns - last >= 1000 * NS_PER_MS) &&
        atomic_compare_exchange_strong_explicit(&t->last_warn_ns, &last, now_ns ? now_ns : 1,
                                                memory_order_relaxed, memory_order_relaxed))
        pt_warn("rate_limit: local table full (all 16 candidate cells of a key live): request "
                "admitted without a limit; %llu such limit checks so far; raise "
                "rate_limit_store.max_keys (now %llu)",
                (unsigned long long)total, (unsigned long long)t->max_keys);
}

/* What was charged to one limit, to give it back. */
struct rl_charge {
    rl_cell *cell;
    uint64_t tag;
    struct rl_where wh;
    uint64_t window; /* sliding: the window the charge went into */
};

/* Takes back one charge: GCRA TAT - T (harmless when TAT has already
 * passed), sliding one count from the window it went into. */
static void rl_refund(struct pt_rl_table *t, const struct pt_rl_params *p,
                      const struct rl_charge *ch, uint64_t now_ns, uint64_t now_wall_ms)
{
    unsigned kind = (unsigned)(ch->tag & KIND_MASK);
    rl_cell *c = ch->cell;
    rl_cell v = cell_read(c);
    for (;;) {
        if (v.w.tag != ch->tag && !(c = rl_lookup(t, ch->wh, ch->tag, &v)))
            return; /* the key's cell is gone (merged, or idle and evicted) */
        uint64_t next;
        if (kind == KIND_GCRA) {
            next = v.w.state > p->interval_ns ? v.w.state - p->interval_ns : 0;
        } else {
            uint64_t stored = v.w.state >> (2 * SW_COUNT_BITS);
            uint64_t prev = (v.w.state >> SW_COUNT_BITS) & SW_COUNT_MASK;
            uint64_t cur = v.w.state & SW_COUNT_MASK;
            if (stored == ch->window && cur > 0)
                cur--;
            else if (stored == ((ch->window + 1) & SW_WINDOW_MASK) && prev > 0)
                prev--;
            else
                return;
            next = sw_pack(stored, prev, cur);
        }
        if (cell_cas(c, &v, ch->tag, next))
            return;
    }
}

/* One limit of a take: where its key lives and what was read there. */
struct rl_slot {
    struct rl_charge ch;
    unsigned kind;
    rl_cell seen;
};

/* Finds every limit's cell and decides on what it holds, writing
 * nothing. Limits without a cell are answered fail-open. */
static bool rl_decide_all(struct pt_rl_table *t, const struct pt_rl_params *const *lims,
                          const uint64_t *keys, uint32_t n, uint64_t now_ns, uint64_t now_wall_ms,
                          struct rl_slot *s, struct pt_rl_result *out)
{
    bool ok = true;
    for (uint32_t i = 0; i < n; i++) {
        s[i].kind = kind_of(lims[i]);
        s[i].ch.tag = tag_of(keys[i], s[i].kind);
        s[i].ch.wh = where_of(t, s[i].ch.tag);
        s[i].ch.cell = rl_find(t, s[i].ch.wh, s[i].ch.tag, now_ns, now_wall_ms, &s[i].seen);
        if (!s[i].ch.cell) {
            rl_fail_open(lims[i], s[i].kind, now_ns, now_wall_ms, &out[i]);
            continue;
        }
        uint64_t next;
        ok &=
            cell_decide(lims[i], s[i].kind, s[i].seen.w.state, now_ns, now_wall_ms, &next, &out[i]);
    }
    return ok;
}

/* A refusal stands when every refusing cell still holds what was read:
 * a tag-checked read of each (no write: refusals are the flood's path,
 * and a locked CAS would bounce the cell's line between workers). */
static bool rl_refusal_confirmed(uint32_t n, struct rl_slot *s, const struct pt_rl_result *out)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!s[i].ch.cell || out[i].admitted)
            continue;
        rl_cell v = cell_read(s[i].ch.cell);
        if (v.w.tag != s[i].seen.w.tag || v.w.state != s[i].seen.w.state)
            return false;
    }
    return true;
}

/* A limit that admitted a request another limit refused: its answer
 * without the charge that did not happen (one more remaining; GCRA's
 * reset from the TAT as it was). */
static void rl_uncharged(const struct rl_slot *s, uint64_t now_ns, struct pt_rl_result *r)
{
    if (!r->admitted)
        return;
    if (r->remaining < r->limit)
        r->remaining++;
    if (s->kind == KIND_GCRA) {
        uint64_t tat = s->ch.cell ? s->seen.w.state : 0;
        r->reset_ms = tat > now_ns ? (tat - now_ns + NS_PER_MS - 1) / NS_PER_MS : 0;
    }
}

/* Charges one limit with a CAS loop, deciding again on the cell's fresh
 * state each time. False when it now refuses (another worker took the
 * last token between the decision and the charge). */
static bool rl_charge(struct pt_rl_table *t, const struct pt_rl_params *p, struct rl_slot *s,
                      uint64_t now_ns, uint64_t now_wall_ms, struct pt_rl_result *r)
{
    rl_cell v = s->seen;
    for (;;) {
        if (v.w.tag != s->ch.tag) {
            s->ch.cell = rl_find(t, s->ch.wh, s->ch.tag, now_ns, now_wall_ms, &v);
            if (!s->ch.cell) {
                rl_fail_open(p, s->kind, now_ns, now_wall_ms, r);
                return true;
            }
        }
        uint64_t next;
        s->seen = v;
        if (!cell_decide(p, s->kind, v.w.state, now_ns, now_wall_ms, &next, r))
            return false;
        if (cell_cas(s->ch.cell, &v, s->ch.tag, next)) {
            s->ch.window = next >> (2 * SW_COUNT_BITS);
            return true;
        }
    }
}

bool pt_rl_table_take(struct pt_rl_table *t, const struct pt_rl_params *const *lims,
                      const uint64_t *keys, uint32_t n, uint64_t now_ns, uint64_t now_wall_ms,
                      struct pt_rl_result *out)
{
    struct rl_slot s[MAX_TAKE];
    if (n > MAX_TAKE)
        n = MAX_TAKE; /* the filter compiles at most 16 limits a route */
    for (int attempt = 0;; attempt++) {
        if (rl_decide_all(t, lims, keys, n, now_ns, now_wall_ms, s, out))
            break;
        if (attempt + 1 >= CONFIRM_ATTEMPTS || rl_refusal_confirmed(n, s, out)) {
            for (uint32_t i = 0; i < n; i++)
                rl_uncharged(&s[i], now_ns, &out[i]);
            return false;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        if (!s[i].ch.cell)
            continue;
        if (rl_charge(t, lims[i], &s[i], now_ns, now_wall_ms, &out[i]))
            continue;
        for (uint32_t j = 0; j < n; j++) {
            if (j < i && s[j].ch.cell && !out[j].no_cell)
                rl_refund(t, lims[j], &s[j].ch, now_ns, now_wall_ms);
            rl_uncharged(&s[j], now_ns, &out[j]);
        }
        return false;
    }
    rl_count_fail_opens(t, n, out, now_ns);
    return true;
}

/* ---- keys ---- */

uint64_t pt_rl_key(const struct pt_rl_table *t, const pt_slice *parts, uint32_t nparts)
{
    struct pt_siphash h;
    pt_siphash_init(&h, t->seed);
    for (uint32_t i = 0; i < nparts; i++) {
        uint8_t len[8];
        uint64_t l = parts[i].len;
        for (unsigned b = 0; b < 8; b++)
            len[b] = (uint8_t)(l >> (8 * b));
        pt_siphash_update(&h, len, sizeof len);
        pt_siphash_update(&h, parts[i].p, parts[i].len);
    }
    uint64_t k = pt_siphash_final(&h);
    return k ? k : 1;
}

/* ---- the table's life ---- */

struct pt_rl_table *pt_rl_table_new(uint64_t max_keys)
{
    uint64_t nbuckets = MIN_BUCKETS;
    uint64_t want = (max_keys + CELLS_PER_BUCKET - 1) / CELLS_PER_BUCKET;
    while (nbuckets < want) {
        if (nbuckets > (SIZE_MAX / sizeof(rl_cell) / CELLS_PER_BUCKET) / 2)
            return NULL;
        nbuckets <<= 1;
    }
    struct pt_rl_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->map_bytes = (size_t)(nbuckets * CELLS_PER_BUCKET * sizeof(rl_cell));
    /* NORESERVE: pages are touched only as keys arrive, so a large table
     * is not refused by the kernel's overcommit heuristic up front. */
    void *m = mmap(NULL, t->map_bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
        free(t);
        return NULL;
    }
    t->cells = m; /* page-aligned, so every bucket is on its own two cache lines */
    t->nbuckets = nbuckets;
    t->mask = nbuckets - 1;
    t->max_keys = max_keys;
    uint8_t salt[8];
    if (getrandom(t->seed, sizeof t->seed, 0) != (ssize_t)sizeof t->seed ||
        getrandom(salt, sizeof salt, 0) != (ssize_t)sizeof salt) {
        /* no entropy: still a working table, with a guessable layout */
        uint64_t x = pt_now_ns() ^ (uint64_t)(uintptr_t)t;
        for (unsigned i = 0; i < sizeof t->seed; i++)
            t->seed[i] = (uint8_t)(pt_mix64(x + i) >> 7);
        memcpy(salt, t->seed, sizeof salt);
    }
    memcpy(&t->bucket_salt, salt, sizeof salt);
    atomic_init(&t->refs, 1);
    return t;
}

void pt_rl_table_ref(struct pt_rl_table *t)
{
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
}

void pt_rl_table_unref(struct pt_rl_table *t)
{
    if (!t || atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) != 1)
        return;
    munmap(t->cells, t->map_bytes);
    free(t);
}

uint64_t pt_rl_table_max_keys(const struct pt_rl_table *t)
{
    return t->max_keys;
}

void pt_rl_table_counters(const struct pt_rl_table *t, struct pt_rl_stats *out)
{
    out->slots = t->nbuckets * CELLS_PER_BUCKET;
    out->live = 0;
    out->inserts = atomic_load_explicit(&t->inserts, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&t->evictions, memory_order_relaxed);
    out->fail_opens = atomic_load_explicit(&t->fail_opens, memory_order_relaxed);
}

void pt_rl_table_stats(struct pt_rl_table *t, struct pt_rl_stats *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now_wall_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / NS_PER_MS;
    uint64_t now_ns = pt_now_ns();
    uint64_t slots = t->nbuckets * CELLS_PER_BUCKET, live = 0;
    for (uint64_t i = 0; i < slots; i++) {
        rl_cell v = cell_read(&t->cells[i]);
        uint64_t idle_ms;
        if (v.w.tag != 0 && !cell_idle(v, now_ns, now_wall_ms, &idle_ms))
            live++;
    }
    out->slots = slots;
    out->live = live;
    out->inserts = atomic_load_explicit(&t->inserts, memory_order_relaxed);
    out->evictions = atomic_load_explicit(&t->evictions, memory_order_relaxed);
    out->fail_opens = atomic_load_explicit(&t->fail_opens, memory_order_relaxed);
}
