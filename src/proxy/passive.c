/*
 * passive.c — passive health (upstreams.*.health_check.passive): outlier
 * ejection from real traffic, in the shared target cells (proxy/state.h).
 *
 * The outbound client reports every attempt's outcome per target
 * (pt_state_record_call); a target whose failure streak reaches
 * `consecutive_failures` is ejected by the worker that saw it:
 *
 *   - for eject_for × 2^(k-1), at most 10 × eject_for, where k counts
 *     ejections in a row; k goes back to 0 once the target has taken
 *     traffic for 10 × eject_for (the longest ejection) without being
 *     ejected again;
 *   - unless that would put more than max_ejected_percent of the
 *     upstream's targets out at once, or leave it no usable target
 *     (active health counted too): ejection alone never empties an
 *     upstream. The streak goes on, and a later failure tries again;
 *     the first failure of the streak to find no room logs it (once per
 *     streak: the cell's held_logged).
 *
 * Races: the count-then-eject runs under the upstream cell's `ejecting`
 * try-lock (a worker that finds it taken skips: the next failure tries
 * again), and the ejection itself is one compare-and-swap of
 * ejected_until_ms, whose winner logs it. An ejection ends by time alone
 * (pt_state_usable compares ejected_until_ms with the clock); the control
 * thread's sweep notices the end and logs the return.
 */
#include "core/log.h"
#include "proxy/state.h"

#define MAX_FACTOR 10u /* the longest ejection, in eject_for */

static uint64_t ejection_ms(const struct pt_health_passive *p, uint32_t k)
{
    uint64_t cap = p->eject_for_ms * MAX_FACTOR;
    if (k == 0 || k > 4) /* 2^4 = 16 > 10: capped */
        return cap;
    uint64_t d = p->eject_for_ms << (k - 1);
    return d < cap ? d : cap;
}

/* Whether ejecting `s` keeps the upstream within max_ejected_percent and
 * leaves it a usable target. */
static bool room_to_eject(const struct pt_target_state *s, const struct pt_upstream *u,
                          uint64_t now_ms, uint32_t *out_now)
{
    uint32_t out = 0, usable_others = 0;
    for (uint32_t i = 0; i < u->ntargets; i++) {
        const struct pt_target_state *t = u->targets[i].state;
        if (t == s)
            continue;
        if (t && atomic_load_explicit(&t->ejected_until_ms, memory_order_relaxed) > now_ms)
            out++;
        else if (pt_state_usable(t, now_ms))
            usable_others++;
    }
    *out_now = out;
    return usable_others > 0 &&
           (uint64_t)(out + 1) * 100u <= (uint64_t)u->passive.max_ejected_percent * u->ntargets;
}

bool pt_passive_on_streak(struct pt_target_state *s, const struct pt_upstream *u, uint32_t streak,
                          uint64_t now_ms)
{
    const struct pt_health_passive *p = &u->passive;
    uint64_t until = atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed);
    if (until > now_ms)
        return false; /* out already: a call that started before the ejection */
    struct pt_upstream_state *us = u->state;
    if (us && atomic_exchange_explicit(&us->ejecting, true, memory_order_acquire))
        return false;
    bool ejected = false;
    uint32_t out = 0;
    if (!room_to_eject(s, u, now_ms, &out)) {
        /* Once per streak, not per failure: by whichever failure first
         * gets this far (the one at the threshold may have found the
         * try-lock taken). */
        if (!atomic_load_explicit(&s->held_logged, memory_order_relaxed) &&
            !atomic_exchange_explicit(&s->held_logged, true, memory_order_relaxed))
            pt_warn("upstream %s target %s not ejected after %u consecutive failures: %u of %u "
                    "targets out or unusable would pass max_ejected_percent %u",
                    u->name, s->address, streak, out + 1, u->ntargets, p->max_ejected_percent);
        goto out;
    }
    uint32_t k = atomic_load_explicit(&s->ejections, memory_order_relaxed);
    if (until == 0 || now_ms >= until + p->eject_for_ms * MAX_FACTOR)
        k = 0; /* first ejection, or one after a long healthy stretch */
    k++;
    uint64_t len = ejection_ms(p, k);
    if (!atomic_compare_exchange_strong_explicit(&s->ejected_until_ms, &until, now_ms + len,
                                                 memory_order_relaxed, memory_order_relaxed))
        goto out;
    atomic_store_explicit(&s->ejections, k, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->ejections_total, 1, memory_order_relaxed);
    atomic_store_explicit(&s->ejected, true, memory_order_relaxed);
    /* A fresh streak after the return: the failures that ejected it are
     * spent. */
    atomic_store_explicit(&s->traffic_fails, 0, memory_order_relaxed);
    atomic_store_explicit(&s->held_logged, false, memory_order_relaxed);
    pt_warn("upstream %s target %s ejected for %gs after %u consecutive failures (ejection %u in "
            "a row)",
            u->name, s->address, (double)len / 1000.0, streak, k);
    ejected = true;
out:
    if (us)
        atomic_store_explicit(&us->ejecting, false, memory_order_release);
    return ejected;
}

void pt_passive_sweep(const struct pt_upstream *u, uint64_t now_ms)
{
    for (uint32_t i = 0; i < u->ntargets; i++) {
        struct pt_target_state *s = u->targets[i].state;
        if (!s)
            continue;
        uint64_t until = atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed);
        if (until > now_ms)
            continue;
        if (atomic_load_explicit(&s->ejected, memory_order_relaxed) &&
            atomic_exchange_explicit(&s->ejected, false, memory_order_relaxed))
            pt_info("upstream %s target %s returned to rotation: its passive-health ejection "
                    "ended",
                    u->name, s->address);
        /* The repeat count, for the admin view: what the next ejection
         * would start from (pt_passive_on_streak decides the same). */
        if (until && u->passive.enabled && now_ms >= until + u->passive.eject_for_ms * MAX_FACTOR &&
            atomic_load_explicit(&s->ejections, memory_order_relaxed))
            atomic_store_explicit(&s->ejections, 0, memory_order_relaxed);
    }
}
