/*
 * metrics.h — per-worker, per-generation metric blocks (DESIGN.md §6:
 * "per-worker counters and histograms, summed by the main thread at
 * scrape time").
 *
 * At publish time the runtime gives a generation one block per worker
 * (pt_gen_metrics_new), sized by the generation: a slot per route, per
 * route×filter and per upstream. A request records into the block of the
 * generation it pinned and of its own worker, at its log phase. Each
 * counter has exactly one writer (its worker), so an increment is a
 * relaxed load and a relaxed store: no locked instruction, no lock, no
 * allocation. Readers (the control thread: scrape and fold) see whole
 * values, possibly a few increments behind.
 *
 * Ownership: the block belongs to the generation (pt_generation_free
 * frees it). The control thread folds a generation's counts into the
 * process's retired totals (control/metrics_text.c) just before it frees
 * the generation, when no worker can write it any more.
 *
 * Connections per listener are not per generation (a connection outlives
 * reloads): each worker counts them in its own pt_conn_counts.
 */
#ifndef PT_GATEWAY_METRICS_H
#define PT_GATEWAY_METRICS_H

#include "core/common.h"

#include <stdatomic.h>
#include <stdint.h>

struct pt_generation;

/* A relaxed single-writer add: the only way request-path code bumps a
 * counter. */
static inline void pt_ctr_add(_Atomic uint64_t *c, uint64_t v)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                          memory_order_relaxed);
}

static inline uint64_t pt_ctr_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ---- histograms: fixed log-spaced buckets, 1-2.5-5 per decade ---- */

/* Finite upper bounds: 50 µs … 60 s; bucket PT_HIST_BOUNDS is +Inf. */
#define PT_HIST_BOUNDS 19
extern const uint64_t pt_hist_bound_ns[PT_HIST_BOUNDS];
extern const char *const pt_hist_bound_text[PT_HIST_BOUNDS]; /* the `le` labels */

/* Counts per bucket (not cumulative: the scrape adds them up) and the sum
 * of observations in ns. The count is the sum of the buckets. */
struct pt_hist {
    _Atomic uint64_t n[PT_HIST_BOUNDS + 1];
    _Atomic uint64_t sum_ns;
};
#define PT_HIST_WORDS (PT_HIST_BOUNDS + 2)

/* The bucket of an observation of `ns`: the first bound ≥ ns. */
uint32_t pt_hist_bucket(uint64_t ns);
void pt_hist_observe(struct pt_hist *h, uint64_t ns);

/* ---- per route ---- */

/* Statuses seen on a route, per upstream: a small open table per route
 * and worker. A key is ((upstream index + 1) << 10) | status, 0 empty;
 * the writer stores the key before counting, the reader skips a count
 * of 0. Once the table is full, further (upstream, status) pairs are
 * counted by status class in `other` (exported as code="4xx" and so on
 * with upstream=""). */
#define PT_CODE_SLOTS 16
struct pt_code_slot {
    _Atomic uint32_t key;
    _Atomic uint64_t n;
};

/* Filter notes (filter.h: pt_filter_note, static strings, e.g.
 * "introspection"/"hit", "jwt_cache"/"miss", "rate_limit"/"fail_open"):
 * counted per route in a small open table like the codes. */
#define PT_NOTE_SLOTS 8
struct pt_note_slot {
    _Atomic(const char *) key;
    _Atomic(const char *) value;
    _Atomic uint64_t n;
};

struct pt_route_mx {
    struct pt_hist request;  /* whole request: head started → log phase */
    struct pt_hist overhead; /* the request minus its upstream time */
    struct pt_code_slot codes[PT_CODE_SLOTS];
    _Atomic uint64_t codes_other[6]; /* by status / 100 once codes[] is full */
    struct pt_note_slot notes[PT_NOTE_SLOTS];
};

/* What a request-phase filter did: ran and let the request on, answered
 * it (4xx: refused; 5xx: failed; other: answered), or failed (ERROR,
 * deadline). Response-only filters count as pass. */
enum pt_filter_outcome {
    PT_FOUT_PASS = 0,
    PT_FOUT_REJECT,
    PT_FOUT_ERROR,
    PT_FOUT_RESPOND,
    PT_FOUT_N
};
extern const char *const pt_filter_outcome_names[PT_FOUT_N];

struct pt_filter_mx {
    struct pt_hist time; /* time in the filter's hooks (+ its suspension) */
    _Atomic uint64_t outcome[PT_FOUT_N];
};

struct pt_upstream_mx {
    struct pt_hist time;               /* dispatch → response head (retries included) */
    _Atomic uint64_t retries;          /* attempts beyond the first */
    _Atomic uint64_t budget_exhausted; /* a retry refused by the retry budget */
};

/* One worker's block. Each array starts on its own cache line and the
 * whole block is one aligned allocation, so no two workers share a line. */
struct pt_worker_mx {
    struct pt_route_mx *routes;       /* [nroutes] */
    struct pt_filter_mx *filters;     /* [nfilters]: route r's at filter_base[r] */
    struct pt_upstream_mx *upstreams; /* [nupstreams] */
    void *mem;
};

struct pt_gen_metrics {
    uint32_t nworkers, nroutes, nupstreams, nfilters;
    uint32_t *filter_base; /* [nroutes] */
    struct pt_worker_mx w[];
};

/* Sizes blocks for g's routes, chains and upstreams, one per worker. NULL
 * when out of memory. */
struct pt_gen_metrics *pt_gen_metrics_new(const struct pt_generation *g, uint32_t nworkers);
void pt_gen_metrics_free(struct pt_gen_metrics *m);

/* The table helpers (also used by tests). */
void pt_mx_count_code(struct pt_route_mx *r, uint32_t upstream_plus1, int status);
void pt_mx_count_note(struct pt_route_mx *r, const char *key, const char *value);

/* ---- connections per listener (per worker, not per generation) ---- */

#define PT_CONN_LISTENERS 16
struct pt_conn_counts {
    _Atomic uint32_t n; /* slots in use; names before n (release) */
    struct {
        char name[32];
        _Atomic uint64_t opened, closed;
        /* TLS handshakes: full, resumed (tickets), failed (timeouts too) */
        _Atomic uint64_t tls_full, tls_resumed, tls_failed;
    } slot[PT_CONN_LISTENERS];
};

/* The slot of listener `name` on this worker (made on first use; the last
 * slot is shared by every name past PT_CONN_LISTENERS - 1). Worker only. */
uint8_t pt_conn_counts_slot(struct pt_conn_counts *c, const char *name);

#endif
