/*
 * metrics_text.h — the control thread's side of the metrics (DESIGN.md §6):
 * summing the per-worker blocks of every live generation (gateway/
 * metrics.h), the process's retired totals that a freed generation's
 * counts are folded into, and the Prometheus text exposition (format
 * 0.0.4) that admin `GET /metrics` serves.
 *
 * Series are keyed by their label values (route, upstream, filter, code
 * ...), never by generation, so a counter carries on across reloads and
 * never goes backwards, and label sets stay bounded by the names the
 * configs have used.
 *
 * Threads: everything here runs on the control thread. Worker blocks are
 * only read (relaxed loads); a generation is folded only once no worker
 * can write it.
 */
#ifndef PT_CONTROL_METRICS_TEXT_H
#define PT_CONTROL_METRICS_TEXT_H

#include "gateway/worker.h"

/* ---- a family's series: label text → values ---- */

struct pt_mx_map {
    uint32_t width; /* values per series: 1 (counter) or PT_HIST_WORDS */
    uint32_t n, cap;
    char **keys;     /* rendered label text: route="a",code="200" */
    uint64_t *vals;  /* n × width */
    uint32_t *index; /* open addressing over keys: slot → series + 1 */
    uint32_t nindex;
};

/* Adds vals[0..width) to the series `key` (made on first use). 0 or
 * -ENOMEM. */
int pt_mx_map_add(struct pt_mx_map *m, const char *key, const uint64_t *vals);
void pt_mx_map_free(struct pt_mx_map *m);

/* The families kept per generation block and folded on retirement. */
enum pt_mx_family {
    PT_MXF_REQUESTS = 0, /* route, upstream, code */
    PT_MXF_REQUEST_TIME, /* route (histogram) */
    PT_MXF_OVERHEAD,     /* route (histogram) */
    PT_MXF_FILTER_TIME,  /* route, filter (histogram) */
    PT_MXF_FILTER_OUT,   /* route, filter, outcome */
    PT_MXF_AUTH,         /* route, filter, result */
    PT_MXF_RL_REJECTED,  /* route */
    PT_MXF_NOTES,        /* route, filter, result */
    PT_MXF_UP_TIME,      /* upstream (histogram) */
    PT_MXF_RETRIES,      /* upstream */
    PT_MXF_BUDGET,       /* upstream */
    PT_MXF_CACHE,        /* route, result (the cache filter's note) */
    PT_MXF_N
};

struct pt_mx_set {
    struct pt_mx_map f[PT_MXF_N];
};

void pt_mx_set_init(struct pt_mx_set *s);
void pt_mx_set_free(struct pt_mx_set *s);
/* Adds every series of `from` into `to`. 0 or -ENOMEM. */
int pt_mx_set_merge(struct pt_mx_set *to, const struct pt_mx_set *from);
/* Adds g's blocks (summed over workers) into s. 0 or -ENOMEM. */
int pt_mx_set_add_generation(struct pt_mx_set *s, const struct pt_generation *g);

/* Label value escaping (text format: \\, \", \n) into out (cap ≥ 2×len+1). */
size_t pt_mx_escape(char *out, size_t cap, const char *s);

/* ---- the scrape ---- */

struct pt_mx_scrape_in {
    const struct pt_generation *current;
    const struct pt_generation *const *live; /* every generation not yet freed */
    uint32_t nlive;
    const struct pt_worker *workers;
    int nworkers;
    uint64_t reloads_ok, reloads_failed;
};

/* The exposition text: retired totals plus every live generation, then
 * the state read now. A malloc'd block: `headroom` bytes left free (for
 * the caller's response head), then *len bytes of text. NULL when out of
 * memory. */
char *pt_mx_scrape(const struct pt_mx_set *retired, const struct pt_mx_scrape_in *in,
                   size_t headroom, size_t *len);

#endif
