/*
 * admission.c — see admission.h.
 */
#include "proxy/admission.h"

static void release_slot(const struct pt_upstream *u, struct pt_admission *a)
{
    if (a->slot) {
        a->slot = false;
        atomic_fetch_sub_explicit(&u->state->active, 1, memory_order_relaxed);
    }
}

enum pt_admit pt_admit_gate(const struct pt_upstream *u, struct pt_admission *a, uint64_t now_ms,
                            uint32_t *retry_after_s)
{
    struct pt_upstream_state *us = u->state;
    *retry_after_s = 0;
    if (u->breaker.max_concurrent) {
        uint32_t n = atomic_fetch_add_explicit(&us->active, 1, memory_order_relaxed) + 1;
        if (n > u->breaker.max_concurrent) {
            atomic_fetch_sub_explicit(&us->active, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&us->overflows, 1, memory_order_relaxed);
            return PT_ADMIT_CONCURRENCY;
        }
        a->slot = true;
    }
    uint32_t retry_after = 1;
    enum pt_breaker_verdict v =
        pt_breaker_admit(&us->breaker, &u->breaker, u->name, now_ms, &retry_after);
    if (v == PT_BREAKER_REFUSE) {
        release_slot(u, a);
        *retry_after_s = retry_after;
        return PT_ADMIT_BREAKER;
    }
    a->breaker_owed = v == PT_BREAKER_PROBE ? 2 : 1;
    return PT_ADMIT_OK;
}

const char *pt_admit_text(enum pt_admit r)
{
    switch (r) {
    case PT_ADMIT_CONCURRENCY:
        return "upstream concurrency limit";
    case PT_ADMIT_BREAKER:
        return "circuit breaker open";
    case PT_ADMIT_OK:
        break;
    }
    return "admitted";
}

void pt_admission_outcome(const struct pt_upstream *u, struct pt_admission *a, uint64_t now_ms,
                          int result)
{
    uint8_t owed = a->breaker_owed;
    if (pt_likely(!owed))
        return;
    a->breaker_owed = 0;
    struct pt_breaker_state *b = &u->state->breaker;
    if (result < 0) {
        if (owed == 2)
            pt_breaker_release_probe(b);
        return;
    }
    pt_breaker_record(b, &u->breaker, u->name, now_ms, result > 0, owed == 2);
}

int pt_admission_result(const struct pt_upstream *u, enum pt_call_fail fail, int status)
{
    switch (fail) {
    case PT_CALL_FAIL_NONE:
        return !pt_status_in(&u->failure_statuses, status);
    case PT_CALL_FAIL_NO_TARGET:
    case PT_CALL_FAIL_RESOURCES:
    case PT_CALL_FAIL_BODY_STALL:
        return -1;
    default:
        return 0;
    }
}

void pt_admission_end(const struct pt_upstream *u, struct pt_admission *a, uint64_t now_ms)
{
    pt_admission_outcome(u, a, now_ms, -1);
    release_slot(u, a);
}
