/*
 * admission.h — one request's way past its upstream's gate
 * (upstreams.*.circuit_breaker): the max_concurrent slot, then the
 * breaker's verdict, and afterwards the request's one outcome for the
 * breaker and the slot given back. Every caller that sends a request of
 * its own to an upstream uses it the same way: the proxied request
 * (gateway/exchange.c) and each BFF fan-out call (exchange_filters.c).
 *
 * The breaker counts requests (one final outcome each), where passive
 * health counts attempts per target (client.c). An upstream without a
 * circuit_breaker section costs one branch.
 *
 * Threads: any worker; the upstream's cell (proxy/state.h) is atomics.
 * No allocation, no lock.
 */
#ifndef PT_PROXY_ADMISSION_H
#define PT_PROXY_ADMISSION_H

#include "proxy/client.h"
#include "proxy/state.h"

/* What an admitted request holds until it is settled. Zeroed: nothing. */
struct pt_admission {
    uint8_t breaker_owed; /* 0: none, 1: a request's outcome, 2: a probe's */
    bool slot;            /* one of the upstream's max_concurrent slots */
};

enum pt_admit {
    PT_ADMIT_OK = 0,
    PT_ADMIT_CONCURRENCY, /* max_concurrent requests are in flight */
    PT_ADMIT_BREAKER,     /* the breaker is open (or half-open with its probes out) */
};

/* The gate of an upstream with a circuit_breaker section (pt_admit). */
enum pt_admit pt_admit_gate(const struct pt_upstream *u, struct pt_admission *a, uint64_t now_ms,
                            uint32_t *retry_after_s);

/* max_concurrent, then the breaker. On a refusal nothing is held, and
 * *retry_after_s is the whole seconds until the breaker lets probes
 * through (0: no hint, the concurrency limit). now_ms: monotonic. Inline:
 * an upstream without a breaker costs the caller one branch, no call. */
static inline enum pt_admit pt_admit(const struct pt_upstream *u, struct pt_admission *a,
                                     uint64_t now_ms, uint32_t *retry_after_s)
{
    if (pt_likely(!u->breaker.enabled) || !u->state) {
        *retry_after_s = 0;
        return PT_ADMIT_OK;
    }
    return pt_admit_gate(u, a, now_ms, retry_after_s);
}

/* The refusal's text for errors and logs. */
const char *pt_admit_text(enum pt_admit r);

/* The request's final outcome for the breaker, once (later calls are
 * no-ops): 1 the upstream answered well, 0 it failed, -1 nothing the
 * upstream did (client gone, no target, the gateway's own limits): a
 * probe's slot goes back. */
void pt_admission_outcome(const struct pt_upstream *u, struct pt_admission *a, uint64_t now_ms,
                          int result);

/* The outcome a call's end means: a status in failure_statuses, a connect
 * error, reset or timeout fail (0); an answer otherwise succeeds (1); no
 * target, the gateway's own limits or a stalled client body are none of
 * the upstream's doing (-1). fail NONE: `status` is the answer's. */
int pt_admission_result(const struct pt_upstream *u, enum pt_call_fail fail, int status);

/* Settles what pt_admit took: a breaker outcome still owed is none of the
 * upstream's doing (-1), and the slot goes back. Idempotent. */
void pt_admission_end(const struct pt_upstream *u, struct pt_admission *a, uint64_t now_ms);

#endif
