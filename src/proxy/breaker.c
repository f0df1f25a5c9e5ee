/*
 * breaker.c — see breaker.h.
 */
#include "proxy/breaker.h"

#include "core/log.h"

const char *const pt_breaker_phase_names[3] = {"closed", "open", "half_open"};

#define COUNT_REQ 1ull
#define COUNT_FAIL (1ull << 32)

static uint64_t slice_ms(const struct pt_breaker_conf *c)
{
    uint64_t s = c->window_ms / PT_BREAKER_BUCKETS;
    return s ? s : 1;
}

static uint64_t epoch_of(const struct pt_breaker_conf *c, uint64_t now_ms)
{
    return now_ms / slice_ms(c) + 1;
}

/* Counts one outcome in the bucket of now's slice, moving the bucket to
 * that slice first when it holds any other: an old one, or one "in the
 * future" (counted with another slice size by a generation that is
 * still draining after a reload). */
static void count(struct pt_breaker_state *b, const struct pt_breaker_conf *c, uint64_t now_ms,
                  bool ok)
{
    uint64_t ep = epoch_of(c, now_ms);
    struct pt_breaker_bucket *bk = &b->buckets[ep % PT_BREAKER_BUCKETS];
    uint64_t have = atomic_load_explicit(&bk->epoch, memory_order_relaxed);
    if (have != ep && atomic_compare_exchange_strong_explicit(
                          &bk->epoch, &have, ep, memory_order_relaxed, memory_order_relaxed))
        atomic_store_explicit(&bk->counts, 0, memory_order_relaxed);
    /* A worker whose clock lags a little may add to the next slice's
     * bucket: the window is off by one outcome, not wrong. */
    atomic_fetch_add_explicit(&bk->counts, ok ? COUNT_REQ : COUNT_REQ | COUNT_FAIL,
                              memory_order_relaxed);
}

bool pt_breaker_reconf(struct pt_breaker_state *b, const struct pt_breaker_conf *c)
{
    uint64_t s = slice_ms(c);
    uint64_t had = atomic_load_explicit(&b->slice_ms, memory_order_relaxed);
    if (had == s)
        return false;
    atomic_store_explicit(&b->slice_ms, s, memory_order_relaxed);
    for (uint32_t i = 0; i < PT_BREAKER_BUCKETS; i++) {
        atomic_store_explicit(&b->buckets[i].epoch, 0, memory_order_relaxed);
        atomic_store_explicit(&b->buckets[i].counts, 0, memory_order_relaxed);
    }
    return had != 0; /* 0: a new cell, nothing was counted yet */
}

void pt_breaker_window(const struct pt_breaker_state *b, const struct pt_breaker_conf *c,
                       uint64_t now_ms, uint64_t *requests, uint64_t *failures)
{
    uint64_t ep = epoch_of(c, now_ms), req = 0, fail = 0;
    for (uint32_t i = 0; i < PT_BREAKER_BUCKETS; i++) {
        const struct pt_breaker_bucket *bk = &b->buckets[i];
        uint64_t e = atomic_load_explicit(&bk->epoch, memory_order_relaxed);
        /* Only the slices of the window ending now: an epoch past now's
         * was counted with another slice size (see count). */
        if (e == 0 || e > ep || e + PT_BREAKER_BUCKETS <= ep)
            continue;
        uint64_t n = atomic_load_explicit(&bk->counts, memory_order_relaxed);
        req += n & 0xffffffffu;
        fail += n >> 32;
    }
    *requests = req;
    *failures = fail;
}

static void clear_window(struct pt_breaker_state *b)
{
    for (uint32_t i = 0; i < PT_BREAKER_BUCKETS; i++)
        atomic_store_explicit(&b->buckets[i].counts, 0, memory_order_relaxed);
}

/* CLOSED or HALF_OPEN (`from`) → OPEN. open_until is stored before the
 * swap, so no worker ever sees OPEN with a stale deadline (a losing
 * opener stores almost the same one). True for the winner. */
static bool open_from(struct pt_breaker_state *b, const struct pt_breaker_conf *c, uint64_t now_ms,
                      int from)
{
    atomic_store_explicit(&b->open_until_ms, now_ms + c->open_for_ms, memory_order_relaxed);
    int expect = from;
    if (!atomic_compare_exchange_strong_explicit(&b->phase, &expect, PT_BREAKER_OPEN,
                                                 memory_order_acq_rel, memory_order_relaxed))
        return false;
    /* Nobody counts probes while it is open: reset them for the next
     * half-open phase, which is open_for away. */
    atomic_store_explicit(&b->probes, 0, memory_order_relaxed);
    atomic_store_explicit(&b->probes_ok, 0, memory_order_relaxed);
    atomic_store_explicit(&b->since_ms, now_ms, memory_order_relaxed);
    atomic_fetch_add_explicit(&b->opened, 1, memory_order_relaxed);
    return true;
}

/* OPEN → HALF_OPEN once open_for has passed. */
static void maybe_half_open(struct pt_breaker_state *b, const struct pt_breaker_conf *c,
                            const char *name, uint64_t now_ms)
{
    if (now_ms < atomic_load_explicit(&b->open_until_ms, memory_order_relaxed))
        return;
    int expect = PT_BREAKER_OPEN;
    if (atomic_compare_exchange_strong_explicit(&b->phase, &expect, PT_BREAKER_HALF_OPEN,
                                                memory_order_acq_rel, memory_order_relaxed)) {
        atomic_store_explicit(&b->since_ms, now_ms, memory_order_relaxed);
        pt_info("upstream %s circuit breaker half-open: letting %u probe request%s through", name,
                c->half_open_requests, c->half_open_requests == 1 ? "" : "s");
    }
}

static uint32_t seconds_until(uint64_t when_ms, uint64_t now_ms)
{
    uint64_t left = when_ms > now_ms ? when_ms - now_ms : 0;
    uint64_t s = (left + 999) / 1000;
    return s ? (uint32_t)PT_MIN(s, (uint64_t)UINT32_MAX) : 1;
}

enum pt_breaker_verdict pt_breaker_admit(struct pt_breaker_state *b,
                                         const struct pt_breaker_conf *c, const char *name,
                                         uint64_t now_ms, uint32_t *retry_after_s)
{
    int phase = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (pt_likely(phase == PT_BREAKER_CLOSED))
        return PT_BREAKER_PASS;
    if (phase == PT_BREAKER_OPEN) {
        uint64_t until = atomic_load_explicit(&b->open_until_ms, memory_order_relaxed);
        if (now_ms < until) {
            *retry_after_s = seconds_until(until, now_ms);
            return PT_BREAKER_REFUSE;
        }
        maybe_half_open(b, c, name, now_ms);
        phase = atomic_load_explicit(&b->phase, memory_order_acquire);
        if (phase != PT_BREAKER_HALF_OPEN) {
            /* Reopened or closed under us: ask again once. */
            if (phase == PT_BREAKER_CLOSED)
                return PT_BREAKER_PASS;
            *retry_after_s = seconds_until(
                atomic_load_explicit(&b->open_until_ms, memory_order_relaxed), now_ms);
            return PT_BREAKER_REFUSE;
        }
    }
    /* HALF_OPEN: a load first, so refused requests do not keep adding. */
    *retry_after_s = 1;
    if (atomic_load_explicit(&b->probes, memory_order_relaxed) >= c->half_open_requests)
        return PT_BREAKER_REFUSE;
    uint32_t n = atomic_fetch_add_explicit(&b->probes, 1, memory_order_relaxed);
    if (n >= c->half_open_requests) {
        pt_breaker_release_probe(b);
        return PT_BREAKER_REFUSE;
    }
    return PT_BREAKER_PROBE;
}

void pt_breaker_release_probe(struct pt_breaker_state *b)
{
    /* Never below zero: a release racing a reopening (which resets the
     * count) costs at most one extra probe, never a stuck breaker. */
    uint32_t n = atomic_load_explicit(&b->probes, memory_order_relaxed);
    while (n > 0 && atomic_load_explicit(&b->phase, memory_order_relaxed) == PT_BREAKER_HALF_OPEN &&
           !atomic_compare_exchange_weak_explicit(&b->probes, &n, n - 1, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

static void record_probe(struct pt_breaker_state *b, const struct pt_breaker_conf *c,
                         const char *name, uint64_t now_ms, bool ok)
{
    if (atomic_load_explicit(&b->phase, memory_order_acquire) != PT_BREAKER_HALF_OPEN)
        return; /* reopened by another probe already */
    if (!ok) {
        if (open_from(b, c, now_ms, PT_BREAKER_HALF_OPEN))
            pt_warn("upstream %s circuit breaker reopened for %gs: a half-open probe failed", name,
                    (double)c->open_for_ms / 1000.0);
        return;
    }
    uint32_t n = atomic_fetch_add_explicit(&b->probes_ok, 1, memory_order_relaxed) + 1;
    if (n < c->half_open_requests)
        return;
    clear_window(b); /* before the swap: no pre-opening failure survives it */
    int expect = PT_BREAKER_HALF_OPEN;
    if (atomic_compare_exchange_strong_explicit(&b->phase, &expect, PT_BREAKER_CLOSED,
                                                memory_order_acq_rel, memory_order_relaxed)) {
        atomic_store_explicit(&b->since_ms, now_ms, memory_order_relaxed);
        pt_info("upstream %s circuit breaker closed: %u probe request%s succeeded", name, n,
                n == 1 ? "" : "s");
    }
}

void pt_breaker_record(struct pt_breaker_state *b, const struct pt_breaker_conf *c,
                       const char *name, uint64_t now_ms, bool ok, bool probe)
{
    if (probe) {
        record_probe(b, c, name, now_ms, ok);
        return;
    }
    count(b, c, now_ms, ok);
    if (ok || atomic_load_explicit(&b->phase, memory_order_relaxed) != PT_BREAKER_CLOSED)
        return;
    /* A failure while closed: is the window over the threshold? */
    uint64_t req, fail;
    pt_breaker_window(b, c, now_ms, &req, &fail);
    if (req < c->min_requests || (double)fail < c->error_rate * (double)req)
        return;
    if (open_from(b, c, now_ms, PT_BREAKER_CLOSED))
        pt_warn("upstream %s circuit breaker open for %gs: %llu of %llu requests failed in the "
                "last %gs (error_rate %g, min_requests %u)",
                name, (double)c->open_for_ms / 1000.0, (unsigned long long)fail,
                (unsigned long long)req, (double)c->window_ms / 1000.0, c->error_rate,
                c->min_requests);
}

void pt_breaker_tick(struct pt_breaker_state *b, const struct pt_breaker_conf *c, const char *name,
                     uint64_t now_ms)
{
    if (atomic_load_explicit(&b->phase, memory_order_relaxed) == PT_BREAKER_OPEN)
        maybe_half_open(b, c, name, now_ms);
}
