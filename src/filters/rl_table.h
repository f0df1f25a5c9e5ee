/*
 * rl_table.h — the local rate-limit cells, shared by every worker and
 * kept across reloads (DESIGN.md §6), and the limit arithmetic that the
 * cluster script repeats in Lua.
 *
 * Limits (shared/CONFIG.md): `rate: N/period` with `burst: B` is a bucket
 * of C = N + B tokens refilled at N per period.
 *
 *   gcra            the token bucket as a theoretical arrival time (TAT):
 *                   emission interval T = period / N; a request at `now` is
 *                   admitted when max(TAT, now) + T - now <= C × T, and then
 *                   TAT = max(TAT, now) + T. Exact.
 *   sliding_window  counters of the current and the previous aligned
 *                   window (UTC-aligned: calendar seconds, minutes, hours,
 *                   days); the estimate prev × (W - elapsed) / W + cur must
 *                   stay below C. Never more than C in one aligned window;
 *                   error bound in docs/configuration.md.
 *
 * The table: a fixed array of 16-byte cells {key tag, state}, allocated
 * once (max_keys rounded up), in buckets of 8 cells (two cache lines).
 * A key (a 64-bit keyed hash of route, limit and key value) may live in
 * any of the 16 cells of its two buckets. Every change to a cell is one
 * 16-byte compare-and-swap of tag and state together, so a cell handed to
 * another key can never take a charge meant for the old one; no lock
 * anywhere. A cell is *idle* when its state is the same as a fresh cell's
 * (GCRA: TAT <= now; sliding window: both windows over), so evicting an
 * idle cell never changes a decision; a new key takes an empty cell, else
 * the least recently used idle one among its 16. When all 16 are live the
 * request is admitted without a cell (fail-open), counted and logged.
 * Two workers inserting the same new key at once may briefly make two
 * cells; the later insert sees the other and merges one into the other
 * (GCRA debts and window counts add exactly), so no charge is lost.
 *
 * Ownership: the runtime creates the table from the first config
 * (`rate_limit_store.max_keys`) and every generation holds a reference;
 * a reload that changes max_keys makes a new, empty table. Workers only
 * call pt_rl_table_take and pt_rl_key.
 */
#ifndef PT_FILTERS_RL_TABLE_H
#define PT_FILTERS_RL_TABLE_H

#include "core/common.h"

#include <stdatomic.h>

#define PT_RL_DEFAULT_MAX_KEYS (1u << 20)
/* The largest table: 2^28 cells, 4 GiB (reserved, touched as keys come). */
#define PT_RL_MAX_MAX_KEYS (1ull << 28)
/* sliding_window counts at most this many requests per window. */
#define PT_RL_SW_MAX_COUNT ((1u << 20) - 1)

enum pt_rl_algorithm { PT_RL_GCRA = 0, PT_RL_SLIDING_WINDOW = 1 };

/* One limit's parameters, compiled from `{rate, burst, algorithm}`. */
struct pt_rl_params {
    enum pt_rl_algorithm algorithm;
    uint64_t count;       /* N */
    uint64_t burst;       /* B */
    uint64_t period_ms;   /* 1000, 60000, 3600000 or 86400000 */
    uint64_t capacity;    /* C = N + B */
    uint64_t interval_ns; /* gcra: T = period / N, in ns (rounded down, ≥ 1) */
};

/* Fills the derived fields from algorithm, count, burst and period_ms.
 * -EINVAL when they are out of range: count 0, a period other than the
 * four above, N + B overflowing, a sliding window above
 * PT_RL_SW_MAX_COUNT, or a gcra bucket whose refill C × T exceeds 2^62 ns
 * (146 years). */
int pt_rl_params_init(struct pt_rl_params *p);

/* One limit's answer for one request: what the RateLimit-* fields and
 * Retry-After say. */
struct pt_rl_result {
    bool admitted;      /* this limit would admit (or did admit) the request */
    bool no_cell;       /* local only: no cell for the key (fail-open) */
    uint64_t limit;     /* C */
    uint64_t remaining; /* requests admitted right after this one, at this instant */
    uint64_t reset_ms;  /* until the bucket is full again (sliding: the window's end) */
    uint64_t retry_ms;  /* refused: until this request would be admitted */
};

/* ---- the arithmetic, also what the Lua script does (pure) ----
 * GCRA: times in ns on any clock that only goes forward; `tat` 0 is a
 * full bucket. Sliding window: `window` is now / period (UTC ms), `prev`
 * and `cur` the counts of windows window-1 and window. */
bool pt_rl_gcra_decide(const struct pt_rl_params *p, uint64_t tat, uint64_t now_ns,
                       uint64_t *new_tat, struct pt_rl_result *r);
bool pt_rl_sw_decide(const struct pt_rl_params *p, uint64_t prev, uint64_t cur,
                     uint64_t now_wall_ms, struct pt_rl_result *r);

/* ---- the shared table ---- */

struct pt_rl_table;

struct pt_rl_stats {
    uint64_t slots;      /* cells */
    uint64_t live;       /* cells holding state now (a scan: admin only) */
    uint64_t inserts;    /* new keys given a cell, ever */
    uint64_t evictions;  /* idle cells handed to a new key, ever */
    uint64_t fail_opens; /* requests admitted without a cell, ever */
};

/* A table of at least max_keys cells (one reference). NULL when out of
 * memory. */
struct pt_rl_table *pt_rl_table_new(uint64_t max_keys);
void pt_rl_table_ref(struct pt_rl_table *t);
/* Drops a reference; the last one frees the table. NULL is a no-op. */
void pt_rl_table_unref(struct pt_rl_table *t);
uint64_t pt_rl_table_max_keys(const struct pt_rl_table *t); /* as created */
void pt_rl_table_stats(struct pt_rl_table *t, struct pt_rl_stats *out);
/* The same without the scan (live stays 0): the counters only, for the
 * metrics scrape, which must stay cheap with any table size. */
void pt_rl_table_counters(const struct pt_rl_table *t, struct pt_rl_stats *out);

/* The key of one limit for one request: a keyed 64-bit hash (SipHash,
 * seeded per table) of the parts, each length-prefixed so ("ab","c") and
 * ("a","bc") differ. Never 0 (0 marks an empty cell). */
uint64_t pt_rl_key(const struct pt_rl_table *t, const pt_slice *parts, uint32_t nparts);

/*
 * One request against n limits (n ≤ 16) of one route: every limit is
 * checked before any is charged, and the request is charged to all of
 * them only when all admit, so a refusal costs nothing anywhere. Returns
 * true when admitted. out[i] is limit i's answer (on a refusal, the
 * refusing limits have admitted = false and a retry_ms; the others
 * answer as they stand, without the charge that did not happen). A limit
 * whose key gets no cell (every candidate live) admits with no_cell set;
 * when the request is admitted, the table counts each such limit once in
 * fail_opens.
 * now_ns: monotonic (gcra); now_wall_ms: UTC (sliding windows), or 0
 * when no limit of the take is a sliding window (the caller then need
 * not read the UTC clock; no sliding-window cell counts as idle then).
 */
bool pt_rl_table_take(struct pt_rl_table *t, const struct pt_rl_params *const *lims,
                      const uint64_t *keys, uint32_t n, uint64_t now_ns, uint64_t now_wall_ms,
                      struct pt_rl_result *out);

#endif
