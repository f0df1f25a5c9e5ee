/*
 * balance.h — which target of an upstream a call goes to.
 *
 * One entry point, pt_balance_pick(), for every policy of
 * upstreams.*.balance. A target is a candidate when it is usable (healthy
 * by the active checks, not ejected by the passive ones: state.h) and not
 * one the request already tried (a retry goes elsewhere when it can).
 * Lock-free: shared inputs are the target cells' relaxed atomics.
 *
 * Policies (upstreams.*.balance), every one weighted:
 *   round_robin      smooth weighted round-robin, per worker;
 *   least_conn       fewest requests in flight per weight, counted across
 *                    all workers in the cells; ties at random by weight;
 *   p2c_ewma         two candidates drawn at random by weight, the one
 *                    with the lower peak-EWMA latency × (active + 1) /
 *                    weight wins (pt_balance_observe feeds the EWMA);
 *   consistent_hash  the request's key on a ring (hash_ring.h), walking
 *                    past targets out of rotation; no key: round robin.
 */
#ifndef PT_PROXY_BALANCE_H
#define PT_PROXY_BALANCE_H

#include "proxy/state.h"

/* Smooth weighted round-robin state (per worker, per upstream). */
struct pt_rr_state {
    int *current; /* one per target */
    uint32_t n;
};

/* Targets a request tried already (the most a retry policy allows). */
#define PT_MAX_ATTEMPTS 10

struct pt_pick {
    struct pt_rr_state *rr; /* per-worker round-robin state; NULL: weighted random */
    uint64_t rand;          /* randomness for this pick */
    uint64_t now_ms;        /* monotonic: ejections end by it */
    pt_slice key;           /* consistent_hash: the request's key (len 0: none) */
    const uint32_t *avoid;  /* target indices tried already */
    uint32_t navoid;
};

/* The picked target's index, or UINT32_MAX when no target is usable. When
 * every usable target was tried, one of them is picked again. */
uint32_t pt_balance_pick(const struct pt_upstream *u, const struct pt_pick *p);

/* Smooth weighted round-robin over usable targets (UINT32_MAX: none);
 * `st` must have been sized for u->ntargets. */
uint32_t pt_rr_pick(struct pt_rr_state *st, const struct pt_upstream *u, uint64_t now_ms);
/* A target index in proportion to the weights of usable targets, from a
 * random r (UINT32_MAX: none). */
uint32_t pt_weighted_pick(const struct pt_upstream *u, uint64_t r, uint64_t now_ms);

/* A policy's name as configured ("round_robin", ...). */
const char *pt_balance_name(enum pt_balance b);

/* p2c_ewma: one latency sample of a target (ns, from asking for a
 * connection to the response head; a failure's penalty), at monotonic
 * `now_ns`. Peak-EWMA: a sample above the average replaces it, one below
 * pulls it down with weight 1 - e^(-dt/10 s). Relaxed stores; any worker;
 * NULL is a no-op. */
void pt_balance_observe(struct pt_target_state *s, uint64_t sample_ns, uint64_t now_ns);
/* p2c_ewma: a target's cost now: its EWMA decayed to `now_ns` × (active
 * + 1) / weight. No sample yet: 0 when nothing is in flight to it (try
 * it), very high otherwise (wait for its first answer). */
double pt_balance_ewma_cost(const struct pt_target *t, uint64_t now_ns);

#endif
