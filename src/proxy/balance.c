/*
 * balance.c — see balance.h.
 */
#include "proxy/balance.h"

#include "proxy/hash_ring.h"

#include <math.h>

static bool tried(const struct pt_pick *p, uint32_t i)
{
    for (uint32_t k = 0; k < p->navoid; k++)
        if (p->avoid[k] == i)
            return true;
    return false;
}

/* A target's weight for this pick: 0 when it takes no traffic now. */
static int weight_now(const struct pt_target *t, uint64_t now_ms)
{
    return pt_state_usable(t->state, now_ms) ? t->weight : 0;
}

uint32_t pt_rr_pick(struct pt_rr_state *st, const struct pt_upstream *u, uint64_t now_ms)
{
    /* Smooth weighted round-robin: every pick adds each target's weight to
     * its current value, chooses the largest, and subtracts the total from
     * it. Weights 3:1 give a a b a, a a b a, ... — spread, not bursts.
     * Targets out of rotation weigh nothing for as long as they are. */
    int total = 0, best = -1;
    uint32_t bi = 0;
    for (uint32_t i = 0; i < u->ntargets; i++) {
        int wgt = weight_now(&u->targets[i], now_ms);
        if (wgt == 0)
            continue;
        st->current[i] += wgt;
        total += wgt;
        if (best < 0 || st->current[i] > st->current[bi]) {
            bi = i;
            best = 0;
        }
    }
    if (total == 0)
        return UINT32_MAX;
    st->current[bi] -= total;
    return bi;
}

/* Weighted random over usable targets, skipping `p`'s tried ones when
 * `skip_tried`. */
static uint32_t weighted(const struct pt_upstream *u, uint64_t r, uint64_t now_ms,
                         const struct pt_pick *p, bool skip_tried)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < u->ntargets; i++)
        if (!skip_tried || !tried(p, i))
            total += (uint64_t)weight_now(&u->targets[i], now_ms);
    if (total == 0)
        return UINT32_MAX;
    uint64_t x = r % total;
    for (uint32_t i = 0; i < u->ntargets; i++) {
        if (skip_tried && tried(p, i))
            continue;
        uint64_t wgt = (uint64_t)weight_now(&u->targets[i], now_ms);
        if (x < wgt)
            return i;
        x -= wgt;
    }
    return UINT32_MAX;
}

uint32_t pt_weighted_pick(const struct pt_upstream *u, uint64_t r, uint64_t now_ms)
{
    static const struct pt_pick none = {0};
    return weighted(u, r, now_ms, &none, false);
}

/* ---- helpers of the load-aware policies ---- */

/* The next number of a splitmix64 stream seeded by the pick's `rand`. */
static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Usable now, and untried when `skip_tried`. */
static bool candidate(const struct pt_upstream *u, const struct pt_pick *p, uint32_t i,
                      bool skip_tried)
{
    return weight_now(&u->targets[i], p->now_ms) > 0 && !(skip_tried && tried(p, i));
}

/* ---- least_conn ---- */

/* Fewest requests in flight per weight (all workers' counts, from the
 * cells), compared by cross-multiplying. Ties go to one of the tied at
 * random in proportion to weight (reservoir sampling), so idle targets
 * share by weight and workers reading the same counts do not all herd
 * onto the same target. */
static uint32_t least_conn(const struct pt_upstream *u, const struct pt_pick *p, bool skip_tried)
{
    uint64_t rs = p->rand;
    uint32_t best = UINT32_MAX;
    uint64_t ba = 0, bw = 1, tied_w = 0;
    for (uint32_t i = 0; i < u->ntargets; i++) {
        if (!candidate(u, p, i, skip_tried))
            continue;
        uint64_t a = pt_state_active(u->targets[i].state), w = (uint64_t)u->targets[i].weight;
        if (best == UINT32_MAX || a * bw < ba * w) {
            best = i, ba = a, bw = w, tied_w = w;
        } else if (a * bw == ba * w) {
            tied_w += w;
            if (next_rand(&rs) % tied_w < w)
                best = i, ba = a, bw = w;
        }
    }
    return best;
}

/* ---- p2c_ewma ---- */

/* Peak-EWMA's decay time (Finagle's and Linkerd's default). */
#define EWMA_TAU_NS 10e9
/* The cost of a target with no latency sample yet while a request to it
 * is in flight: wait for that first answer before sending more (1000 s,
 * times the load, so several such targets still spread by load). */
#define EWMA_UNKNOWN_BUSY_NS 1e12

void pt_balance_observe(struct pt_target_state *s, uint64_t sample_ns, uint64_t now_ns)
{
    if (!s)
        return;
    if (sample_ns == 0)
        sample_ns = 1; /* 0 means "no sample yet" */
    uint64_t old = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    uint64_t v = sample_ns;
    if (old && sample_ns <= old) {
        /* Below the peak: decay toward the sample by the time since the
         * last one, w = e^(-dt/tau). A peak is taken at once. */
        uint64_t stamp = atomic_load_explicit(&s->ewma_stamp_ns, memory_order_relaxed);
        double dt = now_ns > stamp ? (double)(now_ns - stamp) : 0.0;
        double w = exp(-dt / EWMA_TAU_NS);
        v = (uint64_t)((double)old * w + (double)sample_ns * (1.0 - w));
        if (v == 0)
            v = 1;
    }
    /* Plain stores: two workers racing lose one sample, no more. */
    atomic_store_explicit(&s->ewma_ns, v, memory_order_relaxed);
    atomic_store_explicit(&s->ewma_stamp_ns, now_ns, memory_order_relaxed);
}

double pt_balance_ewma_cost(const struct pt_target *t, uint64_t now_ns)
{
    const struct pt_target_state *s = t->state;
    uint32_t active = pt_state_active(s);
    double load = (double)(active + 1) / (double)(t->weight > 0 ? t->weight : 1);
    if (!s)
        return load;
    uint64_t e = atomic_load_explicit(&s->ewma_ns, memory_order_relaxed);
    if (e == 0) /* never answered: try it, one request at a time */
        return active ? EWMA_UNKNOWN_BUSY_NS * load : 0.0;
    /* Decayed to now: a target nobody sent to since a slow answer (or a
     * failure's penalty) becomes worth a try again in time. */
    uint64_t stamp = atomic_load_explicit(&s->ewma_stamp_ns, memory_order_relaxed);
    double dt = now_ns > stamp ? (double)(now_ns - stamp) : 0.0;
    return (double)e * exp(-dt / EWMA_TAU_NS) * load;
}

/* The candidate that a number x < (total weight of candidates but
 * `except`) falls on. */
static uint32_t draw(const struct pt_upstream *u, const struct pt_pick *p, bool skip_tried,
                     uint64_t x, uint32_t except)
{
    for (uint32_t i = 0; i < u->ntargets; i++) {
        if (i == except || !candidate(u, p, i, skip_tried))
            continue;
        uint64_t w = (uint64_t)u->targets[i].weight;
        if (x < w)
            return i;
        x -= w;
    }
    return UINT32_MAX;
}

/* Power of two choices: two distinct candidates drawn at random by
 * weight, the cheaper by pt_balance_ewma_cost wins. Two reads of shared
 * cells per pick, whatever the number of targets. */
static uint32_t p2c_ewma(const struct pt_upstream *u, const struct pt_pick *p, bool skip_tried)
{
    uint64_t total = 0;
    uint32_t n = 0;
    for (uint32_t i = 0; i < u->ntargets; i++)
        if (candidate(u, p, i, skip_tried)) {
            total += (uint64_t)u->targets[i].weight;
            n++;
        }
    if (n == 0)
        return UINT32_MAX;
    uint64_t rs = p->rand;
    uint32_t a = draw(u, p, skip_tried, next_rand(&rs) % total, UINT32_MAX);
    if (n == 1 || a == UINT32_MAX)
        return a;
    uint32_t b =
        draw(u, p, skip_tried, next_rand(&rs) % (total - (uint64_t)u->targets[a].weight), a);
    if (b == UINT32_MAX)
        return a;
    uint64_t now_ns = p->now_ms * 1000000u;
    return pt_balance_ewma_cost(&u->targets[b], now_ns) <
                   pt_balance_ewma_cost(&u->targets[a], now_ns)
               ? b
               : a;
}

/* ---- consistent_hash ---- */

/* The owner of the first point at or after the key's hash that is a
 * candidate: a target out of rotation is walked past, so only its keys
 * move (to the owners of the points after its own). */
static uint32_t ring_pick(const struct pt_upstream *u, const struct pt_pick *p, bool skip_tried)
{
    const struct pt_hash_ring *r = u->ring;
    bool any = false;
    for (uint32_t i = 0; i < u->ntargets && !any; i++)
        any = candidate(u, p, i, skip_tried);
    if (!any)
        return UINT32_MAX;
    uint32_t at = pt_hash_ring_find(r, pt_hash64(p->key.p, p->key.len, 0));
    uint32_t last = UINT32_MAX;
    for (uint32_t k = 0; k < r->n; k++) {
        uint32_t i = r->points[at].target;
        if (i != last && candidate(u, p, i, skip_tried))
            return i;
        last = i;
        if (++at == r->n)
            at = 0;
    }
    return UINT32_MAX;
}

/* ---- the entry point ---- */

const char *pt_balance_name(enum pt_balance b)
{
    switch (b) {
    case PT_BALANCE_ROUND_ROBIN:
        return "round_robin";
    case PT_BALANCE_LEAST_CONN:
        return "least_conn";
    case PT_BALANCE_P2C_EWMA:
        return "p2c_ewma";
    case PT_BALANCE_CONSISTENT_HASH:
        return "consistent_hash";
    }
    return "round_robin";
}

typedef uint32_t (*policy_fn)(const struct pt_upstream *u, const struct pt_pick *p,
                              bool skip_tried);

static uint32_t round_robin(const struct pt_upstream *u, const struct pt_pick *p, bool skip_tried)
{
    /* A retry: another usable target at random by weight (the round's
     * state is for first tries). */
    if (skip_tried)
        return weighted(u, p->rand, p->now_ms, p, true);
    return p->rr ? pt_rr_pick(p->rr, u, p->now_ms) : pt_weighted_pick(u, p->rand, p->now_ms);
}

uint32_t pt_balance_pick(const struct pt_upstream *u, const struct pt_pick *p)
{
    if (u->ntargets == 0)
        return UINT32_MAX;
    policy_fn f = round_robin;
    switch (u->balance) {
    case PT_BALANCE_ROUND_ROBIN:
        break;
    case PT_BALANCE_LEAST_CONN:
        f = least_conn;
        break;
    case PT_BALANCE_P2C_EWMA:
        f = p2c_ewma;
        break;
    case PT_BALANCE_CONSISTENT_HASH:
        /* No key value (or no ring): round robin. */
        if (p->key.len && u->ring)
            f = ring_pick;
        break;
    }
    if (p->navoid) {
        /* A retry: another usable target when there is one. */
        uint32_t i = f(u, p, true);
        if (i != UINT32_MAX)
            return i;
    }
    return f(u, p, false);
}
