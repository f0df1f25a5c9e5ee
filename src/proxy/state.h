/*
 * state.h — per-target state that outlives config generations (DESIGN.md
 * §3, §6): health, active request counts and the health checker's
 * counters, keyed by stable names so that a reload which keeps a target
 * keeps its state.
 *
 * Keys: (upstream name, target address as written). A reload that renames
 * an upstream or rewrites an address ("localhost:9001" for
 * "127.0.0.1:9001") gets a fresh cell.
 *
 * Ownership and lifetime: the registry is an object the runtime owns and
 * only the control thread touches (get, put, attach, detach, free: no
 * locks). Each cell is refcounted: every generation whose targets point at
 * it holds one reference per target. The runtime attaches a generation's
 * targets before publishing it and detaches them when it frees it, so a
 * cell lives exactly as long as some generation that a worker may still
 * use references it, and workers read `target->state` without any check
 * of its lifetime.
 *
 * Threads: the cell's fields are atomics. Workers add and remove active
 * requests (one relaxed fetch-add each way: the only read-modify-write on
 * the request path, which least_conn needs) and read health with a plain
 * relaxed load. The health checker writes health and its counters.
 */
#ifndef PT_PROXY_STATE_H
#define PT_PROXY_STATE_H

#include "proxy/breaker.h"
#include "proxy/retry_budget.h"
#include "proxy/upstream_types.h"

#include <stdatomic.h>

enum pt_health { PT_HEALTHY = 0, PT_UNHEALTHY = 1 };

struct pt_state_registry;

struct pt_target_state {
    /* Shared, lock-free. */
    _Atomic uint32_t active;     /* requests in flight to this target, all workers */
    _Atomic int health;          /* enum pt_health; written by the health checker */
    _Atomic uint32_t fails;      /* consecutive failed checks */
    _Atomic uint32_t successes;  /* consecutive passed checks */
    _Atomic uint64_t checks;     /* checks done, ever */
    _Atomic uint64_t changed_ms; /* wall-clock ms of the last health change (0: never) */
    _Atomic bool fresh; /* new in the latest attach: check at once (cleared by the checker) */
    /* Real traffic (the outbound client): failed calls in a row (connect
     * error, reset, timeout, invalid answer, 502/503/504), and all failed
     * calls. The base that passive health and the breaker read. (Call
     * totals are per-worker metrics: no shared write per success.) */
    _Atomic uint32_t traffic_fails;
    _Atomic uint64_t call_failures;
    /* Passive health (proxy/passive.c): out of rotation until this
     * monotonic ms (the end of the latest ejection, kept after it passed;
     * 0: never ejected); the repeat count k of the latest ejection (its
     * length is eject_for × 2^(k-1), at most 10×; back to 0 after a
     * healthy stretch of 10 × eject_for); ejections ever; and whether an
     * ejection is in force or not yet seen to end (cleared, and the
     * return logged, by whoever notices first: the control thread's
     * sweep). */
    _Atomic uint64_t ejected_until_ms;
    _Atomic uint32_t ejections;
    _Atomic uint64_t ejections_total;
    _Atomic bool ejected;
    /* The current streak was held back by max_ejected_percent (or the last
     * usable target) and that was logged: once per streak, cleared when
     * the streak ends or the target is ejected. */
    _Atomic bool held_logged;
    /* p2c_ewma: peak-EWMA of the time to the response head (ns) and when
     * it was last updated (monotonic ns). */
    _Atomic uint64_t ewma_ns;
    _Atomic uint64_t ewma_stamp_ns;
    /* Control thread only. */
    struct pt_state_registry *reg;
    uint32_t refs; /* targets of live generations pointing here */
    uint32_t hash;
    struct pt_target_state *next; /* registry bucket chain */
    char *upstream;               /* key, copied */
    char *address;                /* key, copied */
};

/* Per upstream, shared by every worker and kept across reloads: the
 * circuit breaker, the retry budget and the concurrency cap. Keyed by the
 * upstream's name; refcounted by the generations naming it, like target
 * cells. */
struct pt_upstream_state {
    _Atomic uint32_t active;    /* requests in flight (counted when max_concurrent is set) */
    _Atomic uint64_t overflows; /* requests refused by max_concurrent, ever */
    /* Passive health: a worker ejecting one of this upstream's targets
     * holds this (a try-lock, never waited on) while it counts the
     * targets already out, so two workers cannot both pass the
     * max_ejected_percent check. */
    _Atomic bool ejecting;
    /* The circuit breaker (proxy/breaker.h). */
    struct pt_breaker_state breaker;
    /* retries.budget: requests and retries per second over 10 s (only
     * upstreams with retries.attempts > 1 write it). */
    struct pt_retry_budget retry_budget;
    /* Control thread only. */
    struct pt_state_registry *reg;
    uint32_t refs;
    struct pt_upstream_state *next;
    char *name;
};

struct pt_state_registry *pt_state_registry_new(void);
/* Frees the registry and any cell still in it (all generations must have
 * been detached; cells left over are a bug, logged). NULL is a no-op. */
void pt_state_registry_free(struct pt_state_registry *reg);
/* Cells in the registry. */
uint32_t pt_state_registry_count(const struct pt_state_registry *reg);

/* Control thread. The cell for (upstream, address) with one more
 * reference, made (healthy, fresh) when there was none: *created says
 * which (may be NULL). NULL when out of memory. */
struct pt_target_state *pt_state_target_get(struct pt_state_registry *reg, const char *upstream,
                                            const char *address, bool *created);
/* The cell for (upstream, address) without taking a reference, or NULL. */
struct pt_target_state *pt_state_target_find(struct pt_state_registry *reg, const char *upstream,
                                             const char *address);
/* Control thread. Drops a reference; the last one frees the cell. */
void pt_state_target_put(struct pt_target_state *s);

/* Control thread. The upstream cell for `name` with one more reference
 * (made when there was none), or NULL when out of memory. */
struct pt_upstream_state *pt_state_upstream_get(struct pt_state_registry *reg, const char *name);
struct pt_upstream_state *pt_state_upstream_find(struct pt_state_registry *reg, const char *name);
void pt_state_upstream_put(struct pt_upstream_state *s);

/* Control thread. Points every upstream of `ups` at its cell, and every
 * target at its own (one reference each). 0, or -ENOMEM with nothing
 * attached. A kept upstream cell whose circuit breaker window changed has
 * its window's counts cleared here (pt_breaker_reconf), before the
 * generation is published. */
int pt_state_attach_upstreams(struct pt_state_registry *reg, struct pt_upstream *ups, uint32_t n);
/* Control thread. Drops the references attach took and clears
 * target->state. Idempotent; targets never attached are skipped. */
void pt_state_detach_upstreams(struct pt_upstream *ups, uint32_t n);

/* Sets a cell's health. True when it changed (then it is logged at info
 * with `why`, and changed_ms is stamped). Any thread. */
bool pt_state_set_health(struct pt_target_state *s, enum pt_health h, const char *why);

/* The health checker's bookkeeping for one check: counts it, keeps the
 * consecutive counters, clears `fresh`, and flips health after `rise`
 * passes in a row (to healthy) or `fall` failures in a row (to
 * unhealthy). True when health changed. */
bool pt_state_record_check(struct pt_target_state *s, bool ok, uint32_t rise, uint32_t fall,
                           const char *why);

/* ---- the request path: lock-free, NULL-tolerant ----
 * Every target of a running generation has a cell; NULL only reaches these
 * for a generation that was never attached (unit tests, `validate`), which
 * then counts as healthy and counts nothing. */

static inline void pt_state_active_inc(struct pt_target_state *s)
{
    if (pt_likely(s != NULL))
        atomic_fetch_add_explicit(&s->active, 1, memory_order_relaxed);
}

static inline void pt_state_active_dec(struct pt_target_state *s)
{
    if (pt_likely(s != NULL))
        atomic_fetch_sub_explicit(&s->active, 1, memory_order_relaxed);
}

static inline uint32_t pt_state_active(const struct pt_target_state *s)
{
    return s ? atomic_load_explicit(&s->active, memory_order_relaxed) : 0;
}

/* Passive health's slow path (proxy/passive.c): the failure that made a
 * streak of `streak` reached the threshold; ejects the target when the
 * upstream's max_ejected_percent allows. True when this call ejected it. */
bool pt_passive_on_streak(struct pt_target_state *s, const struct pt_upstream *u, uint32_t streak,
                          uint64_t now_ms);

/* Control thread, periodically: logs the return of targets whose
 * ejection ended, and resets their repeat count after a healthy stretch
 * (proxy/passive.c). */
void pt_passive_sweep(const struct pt_upstream *u, uint64_t now_ms);

/* A call's outcome, from the worker that made it (one per attempt, per
 * target): relaxed counters, and a store of 0 only when a failure streak
 * ends (no write per success). `u` is the target's upstream (its
 * passive health conf and its other targets, for the percent cap);
 * `now_ms` on the monotonic clock. A streak reaching
 * health_check.passive.consecutive_failures takes the slow path. */
static inline void pt_state_record_call(struct pt_target_state *s, bool ok,
                                        const struct pt_upstream *u, uint64_t now_ms)
{
    if (pt_unlikely(s == NULL))
        return;
    if (ok) {
        if (atomic_load_explicit(&s->traffic_fails, memory_order_relaxed)) {
            atomic_store_explicit(&s->traffic_fails, 0, memory_order_relaxed);
            if (atomic_load_explicit(&s->held_logged, memory_order_relaxed))
                atomic_store_explicit(&s->held_logged, false, memory_order_relaxed);
        }
        return;
    }
    atomic_fetch_add_explicit(&s->call_failures, 1, memory_order_relaxed);
    uint32_t n = atomic_fetch_add_explicit(&s->traffic_fails, 1, memory_order_relaxed) + 1;
    if (u && u->passive.enabled && n >= u->passive.consecutive_failures)
        pt_passive_on_streak(s, u, n, now_ms);
}

static inline bool pt_state_healthy(const struct pt_target_state *s)
{
    return !s || atomic_load_explicit(&s->health, memory_order_relaxed) == PT_HEALTHY;
}

/* Takes traffic now: healthy by the active checks and not ejected by the
 * passive ones (`now_ms` on the monotonic clock). */
static inline bool pt_state_usable(const struct pt_target_state *s, uint64_t now_ms)
{
    return !s || (atomic_load_explicit(&s->health, memory_order_relaxed) == PT_HEALTHY &&
                  atomic_load_explicit(&s->ejected_until_ms, memory_order_relaxed) <= now_ms);
}

#endif
