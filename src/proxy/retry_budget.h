/*
 * retry_budget.h — the retry budget of an upstream (Finagle's model):
 * over the last 10 s, retries may be at most `budget` × requests, and at
 * least 10 retries a second are allowed whatever the ratio, so a quiet
 * upstream still gets its retries.
 *
 * Shared by every worker through the upstream's cell (state.h): ten
 * one-second buckets per counter, each one 64-bit atomic packing the
 * second it counts (high 32 bits, monotonic seconds) and its count (low
 * 32). A bucket from an older second is reset lazily by the first writer
 * of the new one (a CAS), so there is no timer and no lock. Readers sum
 * the buckets whose second lies in the window.
 *
 * Cost: one relaxed fetch-add per request of an upstream with retries
 * (`attempts` > 1), and a short CAS loop plus a 20-word read per retry.
 * Upstreams without retries never touch it.
 */
#ifndef PT_PROXY_RETRY_BUDGET_H
#define PT_PROXY_RETRY_BUDGET_H

#include "core/common.h"

#include <stdatomic.h>

#define PT_RETRY_WINDOW_S 10u  /* seconds in the window */
#define PT_RETRY_MIN_PER_S 10u /* retries a second allowed whatever the ratio */

struct pt_retry_budget {
    _Atomic uint64_t requests[PT_RETRY_WINDOW_S]; /* (second << 32) | count */
    _Atomic uint64_t retries[PT_RETRY_WINDOW_S];
};

/* Counts one request (its first attempt) in second `now_s`. */
void pt_retry_budget_request(struct pt_retry_budget *b, uint64_t now_s);

/* Asks for one retry in second `now_s`: true (and counted) when retries
 * in the window stay under `ratio` × requests in it, or when fewer than
 * PT_RETRY_MIN_PER_S retries were made in this second. */
bool pt_retry_budget_take(struct pt_retry_budget *b, double ratio, uint64_t now_s);

/* Requests and retries counted in the window ending at `now_s`. */
void pt_retry_budget_window(const struct pt_retry_budget *b, uint64_t now_s, uint64_t *requests,
                            uint64_t *retries);

#endif
