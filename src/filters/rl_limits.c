/*
 * rl_limits.c — the limit arithmetic of rl_table.h: compiling a limit's
 * parameters, and deciding one request against GCRA or sliding-window
 * state. Pure functions: the local table (rl_table.c) and the cluster
 * script (which repeats them in Lua) both lean on them, and the unit
 * tests drive them with a hand-held clock.
 *
 * Integer arithmetic throughout; products of an interval and a capacity
 * are taken in 128 bits, so no rate or burst wraps.
 */
#include "filters/rl_table.h"

#include <errno.h>

#define NS_PER_MS 1000000ull

typedef unsigned __int128 u128;

/* A bucket whose refill time C × T does not fit here is refused: 2^62 ns
 * is 146 years, and keeping TAT below 2^63 keeps every sum in range. */
#define RL_MAX_BUCKET_NS (1ull << 62)

static uint64_t ceil_div(u128 a, uint64_t b)
{
    return (uint64_t)((a + b - 1) / b);
}

int pt_rl_params_init(struct pt_rl_params *p)
{
    if (p->count == 0)
        return -EINVAL;
    if (p->period_ms != 1000 && p->period_ms != 60000 && p->period_ms != 3600000 &&
        p->period_ms != 86400000)
        return -EINVAL;
    if (p->burst > UINT64_MAX - p->count)
        return -EINVAL;
    p->capacity = p->count + p->burst;
    uint64_t period_ns = p->period_ms * NS_PER_MS;
    p->interval_ns = period_ns / p->count;
    if (p->interval_ns == 0)
        p->interval_ns = 1;
    switch (p->algorithm) {
    case PT_RL_GCRA:
        if ((u128)p->capacity * p->interval_ns > RL_MAX_BUCKET_NS)
            return -EINVAL;
        return 0;
    case PT_RL_SLIDING_WINDOW:
        return p->capacity > PT_RL_SW_MAX_COUNT ? -EINVAL : 0;
    }
    return -EINVAL;
}

/*
 * GCRA. `after` is how far the theoretical arrival time would sit ahead
 * of now once this request is charged; the bucket holds C × T of it. The
 * bucket is full again when TAT has passed (reset), and a refused request
 * fits once `after` has shrunk to C × T (retry).
 */
bool pt_rl_gcra_decide(const struct pt_rl_params *p, uint64_t tat, uint64_t now_ns,
                       uint64_t *new_tat, struct pt_rl_result *r)
{
    uint64_t t = p->interval_ns;
    u128 bucket = (u128)p->capacity * t;
    uint64_t base = tat > now_ns ? tat : now_ns;
    u128 after = (u128)(base - now_ns) + t;

    r->limit = p->capacity;
    r->no_cell = false;
    if (after <= bucket) {
        *new_tat = base > UINT64_MAX - t ? UINT64_MAX : base + t;
        r->admitted = true;
        r->remaining = (uint64_t)((bucket - after) / t);
        r->reset_ms = ceil_div(after, NS_PER_MS);
        r->retry_ms = 0;
        return true;
    }
    *new_tat = tat;
    r->admitted = false;
    r->remaining = 0;
    r->reset_ms = ceil_div(base - now_ns, NS_PER_MS);
    r->retry_ms = ceil_div(after - bucket, NS_PER_MS);
    if (r->retry_ms == 0)
        r->retry_ms = 1;
    return false;
}

/*
 * The earliest offset into a window (from `from` to the window's length
 * w) at which prev × (w - e) + need × w <= c × w holds, given need <= c;
 * w when only the window's end satisfies it.
 */
static uint64_t sw_first_fit(uint64_t prev, uint64_t need, uint64_t c, uint64_t w, uint64_t from)
{
    if (prev == 0)
        return from;
    /* prev × (w - e) <= (c - need) × w  ⇔  w - e <= floor((c - need) × w / prev) */
    uint64_t slack = (uint64_t)(((u128)(c - need) * w) / prev);
    uint64_t e = slack >= w ? 0 : w - slack;
    return e > from ? e : from;
}

/*
 * Sliding window. With elapsed e into the current window of length W,
 * the estimate is prev × (W - e) / W + cur; the request fits when the
 * estimate with it counted stays within C, compared multiplied out by W
 * so nothing rounds. A refused request either fits later in this window
 * (as prev's share decays) or, when cur alone fills it, in the next
 * window, where this window's count becomes the decaying prev.
 */
bool pt_rl_sw_decide(const struct pt_rl_params *p, uint64_t prev, uint64_t cur,
                     uint64_t now_wall_ms, struct pt_rl_result *r)
{
    uint64_t w = p->period_ms, c = p->capacity;
    uint64_t e = now_wall_ms % w;
    u128 held = (u128)prev * (w - e); /* prev's share, times W */
    u128 room = (u128)c * w;

    r->limit = c;
    r->no_cell = false;
    r->reset_ms = w - e;
    if (held + (u128)(cur + 1) * w <= room) {
        r->admitted = true;
        /* how many more would fit now: room - held - (cur + 1) × W, in whole W */
        r->remaining = (uint64_t)((room - held) / w) - (cur + 1);
        r->retry_ms = 0;
        return true;
    }
    r->admitted = false;
    r->remaining = 0;
    uint64_t wait;
    if (cur + 1 <= c) {
        /* fits later in this window, once prev has decayed enough */
        wait = sw_first_fit(prev, cur + 1, c, w, e) - e;
    } else {
        /* next window: prev' = cur, cur' = 0 (and if even that is too
         * much, the window after, where both have aged out) */
        wait = (w - e) + sw_first_fit(cur, 1, c, w, 0);
    }
    r->retry_ms = wait == 0 ? 1 : wait;
    return false;
}
