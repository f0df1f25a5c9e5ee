/*
 * balance.h — which target of an upstream a call goes to.
 *
 * One entry point, pt_balance_pick(), for every policy of
 * upstreams.*.balance. A target is a candidate when it is usable (healthy
 * by the active checks, not ejected by the passive ones: state.h) and not
 * one the request already tried (a retry goes elsewhere when it can).
 * Lock-free: shared inputs are the target cells' relaxed atomics.
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

#endif
