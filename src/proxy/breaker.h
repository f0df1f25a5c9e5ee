/*
 * breaker.h — the circuit breaker of one upstream (upstreams.*.
 * circuit_breaker): Hystrix's three states over a rolling window of
 * request outcomes, shared by every worker through the upstream's cell
 * (proxy/state.h) and kept across reloads.
 *
 *   CLOSED    requests pass; each outcome is counted in the window. When
 *             failures/requests ≥ error_rate with requests ≥ min_requests
 *             in the window, the failing worker opens it.
 *   OPEN      requests are refused at once (the caller answers 503 with
 *             Retry-After) until open_for has passed, then the first
 *             admission (or the control thread's tick) makes it
 *   HALF_OPEN exactly half_open_requests probes pass; it closes (window
 *             cleared) when all of them succeed and reopens on any
 *             failure. Other requests are refused meanwhile.
 *
 * The window is PT_BREAKER_BUCKETS time buckets of window/10 each: a
 * bucket holds its slice number (epoch) and one 64-bit word of counts
 * (requests low, failures high), so recording an outcome is one relaxed
 * load and one fetch-add. A bucket found holding an old slice is reset
 * lazily by whoever CASes its epoch to now's (an outcome racing that reset
 * may be lost: the window is a rate, not an audit). Any epoch other than
 * now's is stale for counting, and only the last PT_BREAKER_BUCKETS
 * slices up to now are read, so a bucket holding a "future" epoch (made
 * with a smaller slice before a reload) never blocks the window.
 *
 * The cell outlives reloads: the buckets remember the slice they were
 * made with, and pt_breaker_reconf (the control thread, before a
 * generation whose window differs is published) clears them, since
 * epochs of another slice size mean nothing in the new one. The phase is
 * kept.
 *
 * Every state change is made by one compare-and-swap, and only its
 * winner logs it. Times are monotonic ms (the loop's clock); nothing
 * here reads a clock, so tests drive it with a fake one.
 *
 * Threads: any; all fields are atomics. No allocation, no locks.
 */
#ifndef PT_PROXY_BREAKER_H
#define PT_PROXY_BREAKER_H

#include "proxy/upstream_types.h"

#include <stdatomic.h>

enum pt_breaker_phase { PT_BREAKER_CLOSED = 0, PT_BREAKER_OPEN, PT_BREAKER_HALF_OPEN };

#define PT_BREAKER_BUCKETS 10u

struct pt_breaker_bucket {
    _Atomic uint64_t epoch;  /* the window slice counted here (now / slice + 1; 0: none) */
    _Atomic uint64_t counts; /* requests (low 32 bits) and failures (high 32 bits) */
};

struct pt_breaker_state {
    _Atomic int phase;              /* enum pt_breaker_phase */
    _Atomic uint64_t since_ms;      /* monotonic ms of the latest change (0: never changed) */
    _Atomic uint64_t open_until_ms; /* OPEN: when probes may start */
    _Atomic uint32_t probes;        /* HALF_OPEN: probes let through */
    _Atomic uint32_t probes_ok;     /* HALF_OPEN: of them, succeeded */
    _Atomic uint64_t opened;        /* times opened (reopenings included), ever */
    _Atomic uint64_t slice_ms;      /* the slice the buckets count in (0: not set yet) */
    struct pt_breaker_bucket buckets[PT_BREAKER_BUCKETS];
};

enum pt_breaker_verdict {
    PT_BREAKER_PASS = 0, /* closed: go, report the outcome */
    PT_BREAKER_PROBE,    /* half-open: go as a probe, report the outcome as a probe */
    PT_BREAKER_REFUSE,   /* open (or half-open with its probes out): answer 503 */
};

/* Whether a request may go upstream now. On REFUSE, *retry_after_s is the
 * whole seconds (≥ 1) until probes may start. */
enum pt_breaker_verdict pt_breaker_admit(struct pt_breaker_state *b,
                                         const struct pt_breaker_conf *c, const char *name,
                                         uint64_t now_ms, uint32_t *retry_after_s);

/* The final outcome of an admitted request (`probe`: it was admitted as
 * one). May open, close or reopen the breaker. */
void pt_breaker_record(struct pt_breaker_state *b, const struct pt_breaker_conf *c,
                       const char *name, uint64_t now_ms, bool ok, bool probe);

/* An admitted probe ended with no outcome of the upstream's making (the
 * client left, no target, the gateway's own limits): its slot goes back
 * so another request can probe. */
void pt_breaker_release_probe(struct pt_breaker_state *b);

/* Control thread, periodically: OPEN → HALF_OPEN once open_for has
 * passed, so the change is logged and shown even with no traffic. */
void pt_breaker_tick(struct pt_breaker_state *b, const struct pt_breaker_conf *c, const char *name,
                     uint64_t now_ms);

/* Control thread, before a generation with conf `c` is published: when
 * the window's slice differs from the one the buckets were made with, the
 * buckets are cleared (the phase and its times are kept). Returns true
 * when it cleared them. */
bool pt_breaker_reconf(struct pt_breaker_state *b, const struct pt_breaker_conf *c);

/* Requests and failures in the window ending at now_ms. */
void pt_breaker_window(const struct pt_breaker_state *b, const struct pt_breaker_conf *c,
                       uint64_t now_ms, uint64_t *requests, uint64_t *failures);

static inline enum pt_breaker_phase pt_breaker_phase(const struct pt_breaker_state *b)
{
    return (enum pt_breaker_phase)atomic_load_explicit(&b->phase, memory_order_relaxed);
}

extern const char *const pt_breaker_phase_names[3]; /* "closed", "open", "half_open" */

#endif
