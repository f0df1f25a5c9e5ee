/*
 * retry_budget.c — see retry_budget.h.
 */
#include "proxy/retry_budget.h"

#define SEC_OF(v) ((v) >> 32)
#define COUNT_OF(v) ((v)&0xffffffffu)

/* Adds `delta` (+1 or -1) to the bucket of `now_s`, resetting it when it
 * holds an older second. Returns the count before the add (0 after a
 * reset). A -1 on a bucket that moved on to another second is dropped. */
static uint32_t bucket_add(_Atomic uint64_t *cell, uint64_t now_s, int delta)
{
    uint64_t sec = now_s & 0xffffffffu;
    uint64_t v = atomic_load_explicit(cell, memory_order_relaxed);
    for (;;) {
        uint64_t nv;
        uint32_t before;
        if (SEC_OF(v) != sec) {
            if (delta < 0)
                return 0;
            before = 0;
            nv = sec << 32 | 1u;
        } else {
            before = (uint32_t)COUNT_OF(v);
            if (delta < 0 && before == 0)
                return 0;
            nv = delta > 0 ? v + 1 : v - 1;
        }
        if (atomic_compare_exchange_weak_explicit(cell, &v, nv, memory_order_relaxed,
                                                  memory_order_relaxed))
            return before;
    }
}

/* The sum of the buckets whose second lies in (now_s - window, now_s]. */
static uint64_t window_sum(const _Atomic uint64_t *cells, uint64_t now_s)
{
    uint64_t sec = now_s & 0xffffffffu, sum = 0;
    for (uint32_t i = 0; i < PT_RETRY_WINDOW_S; i++) {
        uint64_t v = atomic_load_explicit(&cells[i], memory_order_relaxed);
        if (((sec - SEC_OF(v)) & 0xffffffffu) < PT_RETRY_WINDOW_S)
            sum += COUNT_OF(v);
    }
    return sum;
}

void pt_retry_budget_request(struct pt_retry_budget *b, uint64_t now_s)
{
    _Atomic uint64_t *cell = &b->requests[now_s % PT_RETRY_WINDOW_S];
    uint64_t v = atomic_load_explicit(cell, memory_order_relaxed);
    /* The common case is one plain fetch-add: the bucket is this second's. */
    if (pt_likely(SEC_OF(v) == (now_s & 0xffffffffu)))
        atomic_fetch_add_explicit(cell, 1, memory_order_relaxed);
    else
        bucket_add(cell, now_s, +1);
}

bool pt_retry_budget_take(struct pt_retry_budget *b, double ratio, uint64_t now_s)
{
    _Atomic uint64_t *cell = &b->retries[now_s % PT_RETRY_WINDOW_S];
    /* Reserve first, then judge with the reservation counted: two workers
     * racing for the last retry cannot both get it. */
    uint32_t before = bucket_add(cell, now_s, +1);
    if (before < PT_RETRY_MIN_PER_S)
        return true;
    uint64_t reqs = window_sum(b->requests, now_s);
    uint64_t rets = window_sum(b->retries, now_s);
    if ((double)rets <= ratio * (double)reqs)
        return true;
    bucket_add(cell, now_s, -1);
    return false;
}

void pt_retry_budget_window(const struct pt_retry_budget *b, uint64_t now_s, uint64_t *requests,
                            uint64_t *retries)
{
    *requests = window_sum(b->requests, now_s);
    *retries = window_sum(b->retries, now_s);
}
