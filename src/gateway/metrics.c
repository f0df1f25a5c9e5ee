/*
 * metrics.c — histogram buckets, the per-worker blocks of a generation and
 * the small open tables (see metrics.h). Allocation happens here only, on
 * the control thread, before the generation is published.
 */
#include "gateway/metrics.h"

#include "gateway/generation.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint64_t pt_hist_bound_ns[PT_HIST_BOUNDS] = {
    50000ull,      100000ull,      250000ull,      500000ull,      1000000ull,
    2500000ull,    5000000ull,     10000000ull,    25000000ull,    50000000ull,
    100000000ull,  250000000ull,   500000000ull,   1000000000ull,  2500000000ull,
    5000000000ull, 10000000000ull, 25000000000ull, 60000000000ull,
};

const char *const pt_hist_bound_text[PT_HIST_BOUNDS] = {
    "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",   "0.25",   "0.5",     "1",      "2.5",   "5",      "10",    "25",   "60",
};

const char *const pt_filter_outcome_names[PT_FOUT_N] = {"pass", "reject", "error", "respond"};

uint32_t pt_hist_bucket(uint64_t ns)
{
    /* A binary search over 19 bounds: five compares. */
    uint32_t lo = 0, hi = PT_HIST_BOUNDS;
    while (lo < hi) {
        uint32_t mid = (lo + hi) / 2;
        if (ns <= pt_hist_bound_ns[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void pt_hist_observe(struct pt_hist *h, uint64_t ns)
{
    pt_ctr_add(&h->n[pt_hist_bucket(ns)], 1);
    pt_ctr_add(&h->sum_ns, ns);
}

static size_t line_up(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

struct pt_gen_metrics *pt_gen_metrics_new(const struct pt_generation *g, uint32_t nworkers)
{
    if (nworkers == 0)
        nworkers = 1;
    struct pt_gen_metrics *m = calloc(1, sizeof(*m) + nworkers * sizeof(m->w[0]));
    if (!m)
        return NULL;
    m->nworkers = nworkers;
    m->nroutes = g->nroutes;
    m->nupstreams = g->nupstreams;
    m->filter_base = calloc(g->nroutes ? g->nroutes : 1, sizeof(uint32_t));
    if (!m->filter_base)
        goto fail;
    for (uint32_t r = 0; r < g->nroutes; r++) {
        m->filter_base[r] = m->nfilters;
        m->nfilters += g->routes[r].chain.n_all;
    }
    size_t rs = line_up(sizeof(struct pt_route_mx) * m->nroutes);
    size_t fs = line_up(sizeof(struct pt_filter_mx) * m->nfilters);
    size_t us = line_up(sizeof(struct pt_upstream_mx) * m->nupstreams);
    size_t total = line_up(rs + fs + us + 64);
    for (uint32_t i = 0; i < nworkers; i++) {
        /* Zeroed memory is a valid state for every _Atomic integer and
         * pointer here (all lock-free on the platforms we build for). */
        char *p = aligned_alloc(64, total);
        if (!p)
            goto fail;
        memset(p, 0, total);
        m->w[i].mem = p;
        m->w[i].routes = (struct pt_route_mx *)p;
        m->w[i].filters = (struct pt_filter_mx *)(p + rs);
        m->w[i].upstreams = (struct pt_upstream_mx *)(p + rs + fs);
    }
    return m;
fail:
    pt_gen_metrics_free(m);
    return NULL;
}

void pt_gen_metrics_free(struct pt_gen_metrics *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->nworkers; i++)
        free(m->w[i].mem);
    free(m->filter_base);
    free(m);
}

void pt_mx_count_code(struct pt_route_mx *r, uint32_t upstream_plus1, int status)
{
    if (status < 0 || status > 999)
        status = 0;
    uint32_t key = (upstream_plus1 << 10) | (uint32_t)status;
    if (key == 0)
        key = 1u << 10; /* (no upstream, status 0) cannot be the empty key */
    /* Start where the key hashes, walk at most the whole table. */
    uint32_t h = (key * 2654435761u) >> 28;
    for (uint32_t i = 0; i < PT_CODE_SLOTS; i++) {
        struct pt_code_slot *s = &r->codes[(h + i) % PT_CODE_SLOTS];
        uint32_t k = atomic_load_explicit(&s->key, memory_order_relaxed);
        if (k == key) {
            pt_ctr_add(&s->n, 1);
            return;
        }
        if (k == 0) {
            /* Key first, count after: a reader that sees the key with a
             * zero count skips it this time. */
            atomic_store_explicit(&s->key, key, memory_order_release);
            atomic_store_explicit(&s->n, 1, memory_order_release);
            return;
        }
    }
    pt_ctr_add(&r->codes_other[status / 100 < 6 ? status / 100 : 0], 1);
}

void pt_mx_count_note(struct pt_route_mx *r, const char *key, const char *value)
{
    for (uint32_t i = 0; i < PT_NOTE_SLOTS; i++) {
        struct pt_note_slot *s = &r->notes[i];
        const char *k = atomic_load_explicit(&s->key, memory_order_relaxed);
        if (!k) {
            atomic_store_explicit(&s->value, value, memory_order_relaxed);
            atomic_store_explicit(&s->key, key, memory_order_release);
            atomic_store_explicit(&s->n, 1, memory_order_release);
            return;
        }
        /* Static strings: the same note is the same pointer, but compare
         * the text so two copies of a literal still meet. */
        const char *v = atomic_load_explicit(&s->value, memory_order_relaxed);
        if ((k == key || strcmp(k, key) == 0) && (v == value || strcmp(v, value) == 0)) {
            pt_ctr_add(&s->n, 1);
            return;
        }
    }
    /* Full: more distinct notes than one route's filters make; dropped. */
}

uint8_t pt_conn_counts_slot(struct pt_conn_counts *c, const char *name)
{
    uint32_t n = atomic_load_explicit(&c->n, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++)
        if (strcmp(c->slot[i].name, name) == 0)
            return (uint8_t)i;
    if (n == PT_CONN_LISTENERS)
        return PT_CONN_LISTENERS - 1;
    snprintf(c->slot[n].name, sizeof(c->slot[n].name), "%s",
             n == PT_CONN_LISTENERS - 1 ? "other" : name);
    atomic_store_explicit(&c->n, n + 1, memory_order_release);
    return (uint8_t)n;
}
