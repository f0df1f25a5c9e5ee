/*
 * balance.c — see balance.h.
 */
#include "proxy/balance.h"

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
    return weighted(u, r, now_ms, NULL, false);
}

uint32_t pt_balance_pick(const struct pt_upstream *u, const struct pt_pick *p)
{
    if (u->ntargets == 0)
        return UINT32_MAX;
    if (p->navoid) {
        /* A retry: another usable target when there is one. */
        uint32_t i = weighted(u, p->rand, p->now_ms, p, true);
        if (i != UINT32_MAX)
            return i;
    }
    return p->rr ? pt_rr_pick(p->rr, u, p->now_ms) : pt_weighted_pick(u, p->rand, p->now_ms);
}
