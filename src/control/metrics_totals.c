/*
 * metrics_totals.c — series maps, summing a generation's per-worker blocks
 * into them, and merging (folding a retired generation, and building a
 * scrape). See metrics_text.h.
 */
#include "control/metrics_text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static int map_rehash(struct pt_mx_map *m, uint32_t nindex)
{
    uint32_t *idx = calloc(nindex, sizeof(*idx));
    if (!idx)
        return -ENOMEM;
    for (uint32_t i = 0; i < m->n; i++) {
        uint32_t h = hash_key(m->keys[i]) & (nindex - 1);
        while (idx[h])
            h = (h + 1) & (nindex - 1);
        idx[h] = i + 1;
    }
    free(m->index);
    m->index = idx;
    m->nindex = nindex;
    return 0;
}

static int map_grow(struct pt_mx_map *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 64;
    char **k = realloc(m->keys, cap * sizeof(*k));
    if (!k)
        return -ENOMEM;
    m->keys = k;
    uint64_t *v = realloc(m->vals, (size_t)cap * m->width * sizeof(*v));
    if (!v)
        return -ENOMEM;
    m->vals = v;
    /* cap only once the index has room for it: a failed rehash leaves the
     * map as it was (n == cap: the next add tries again). */
    if (map_rehash(m, cap * 2) < 0)
        return -ENOMEM;
    m->cap = cap;
    return 0;
}

int pt_mx_map_add(struct pt_mx_map *m, const char *key, const uint64_t *vals)
{
    if (m->n == m->cap && map_grow(m) < 0)
        return -ENOMEM;
    uint32_t h = hash_key(key) & (m->nindex - 1);
    for (; m->index[h]; h = (h + 1) & (m->nindex - 1)) {
        uint32_t i = m->index[h] - 1;
        if (strcmp(m->keys[i], key) == 0) {
            for (uint32_t j = 0; j < m->width; j++)
                m->vals[(size_t)i * m->width + j] += vals[j];
            return 0;
        }
    }
    char *k = strdup(key);
    if (!k)
        return -ENOMEM;
    uint32_t i = m->n++;
    m->keys[i] = k;
    memcpy(&m->vals[(size_t)i * m->width], vals, m->width * sizeof(*vals));
    m->index[h] = i + 1;
    return 0;
}

void pt_mx_map_free(struct pt_mx_map *m)
{
    for (uint32_t i = 0; i < m->n; i++)
        free(m->keys[i]);
    free(m->keys);
    free(m->vals);
    free(m->index);
    uint32_t w = m->width;
    memset(m, 0, sizeof(*m));
    m->width = w;
}

static bool is_histogram(enum pt_mx_family f)
{
    return f == PT_MXF_REQUEST_TIME || f == PT_MXF_OVERHEAD || f == PT_MXF_FILTER_TIME ||
           f == PT_MXF_UP_TIME;
}

void pt_mx_set_init(struct pt_mx_set *s)
{
    memset(s, 0, sizeof(*s));
    for (int f = 0; f < PT_MXF_N; f++)
        s->f[f].width = is_histogram((enum pt_mx_family)f) ? PT_HIST_WORDS : 1;
}

void pt_mx_set_free(struct pt_mx_set *s)
{
    for (int f = 0; f < PT_MXF_N; f++)
        pt_mx_map_free(&s->f[f]);
}

int pt_mx_set_merge(struct pt_mx_set *to, const struct pt_mx_set *from)
{
    for (int f = 0; f < PT_MXF_N; f++) {
        const struct pt_mx_map *m = &from->f[f];
        for (uint32_t i = 0; i < m->n; i++)
            if (pt_mx_map_add(&to->f[f], m->keys[i], &m->vals[(size_t)i * m->width]) < 0)
                return -ENOMEM;
    }
    return 0;
}

size_t pt_mx_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"') {
            out[o++] = '\\';
            out[o++] = *s;
        } else if (*s == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *s;
        }
    }
    out[o] = 0;
    return o;
}

/* ---- summing one generation's blocks ---- */

/* Sums a histogram over workers: words[0..PT_HIST_BOUNDS] are bucket
 * counts, words[PT_HIST_BOUNDS + 1] the sum in ns. False when empty. */
static bool hist_sum(uint64_t *out, const struct pt_hist *const *h, uint32_t n)
{
    memset(out, 0, PT_HIST_WORDS * sizeof(*out));
    uint64_t count = 0;
    for (uint32_t w = 0; w < n; w++) {
        for (uint32_t b = 0; b <= PT_HIST_BOUNDS; b++) {
            uint64_t v = pt_ctr_get(&h[w]->n[b]);
            out[b] += v;
            count += v;
        }
        out[PT_HIST_BOUNDS + 1] += pt_ctr_get(&h[w]->sum_ns);
    }
    return count > 0;
}

struct labels {
    char route[256];
    char text[1024];
};

static int add_counter(struct pt_mx_set *s, enum pt_mx_family f, const char *key, uint64_t v)
{
    return v ? pt_mx_map_add(&s->f[f], key, &v) : 0;
}

static int add_hist(struct pt_mx_set *s, enum pt_mx_family f, const char *key,
                    const struct pt_hist *const *h, uint32_t n)
{
    uint64_t words[PT_HIST_WORDS];
    return hist_sum(words, h, n) ? pt_mx_map_add(&s->f[f], key, words) : 0;
}

static int add_codes(struct pt_mx_set *s, const struct pt_generation *g, uint32_t r,
                     const char *route)
{
    const struct pt_gen_metrics *m = g->metrics;
    char up[256], key[1024];
    int e = 0;
    for (uint32_t w = 0; w < m->nworkers && e == 0; w++) {
        const struct pt_route_mx *rm = &m->w[w].routes[r];
        for (uint32_t i = 0; i < PT_CODE_SLOTS && e == 0; i++) {
            uint32_t k = atomic_load_explicit(&rm->codes[i].key, memory_order_acquire);
            uint64_t v = k ? pt_ctr_get(&rm->codes[i].n) : 0;
            if (!v)
                continue;
            uint32_t u1 = k >> 10;
            pt_mx_escape(up, sizeof(up),
                         u1 && u1 <= g->nupstreams ? g->upstreams[u1 - 1].name : "");
            snprintf(key, sizeof(key), "route=\"%s\",upstream=\"%s\",code=\"%u\"", route, up,
                     k & 1023u);
            e = add_counter(s, PT_MXF_REQUESTS, key, v);
        }
        for (uint32_t c = 0; c < 6 && e == 0; c++) {
            snprintf(key, sizeof(key), "route=\"%s\",upstream=\"\",code=\"%uxx\"", route, c);
            e = add_counter(s, PT_MXF_REQUESTS, key, pt_ctr_get(&rm->codes_other[c]));
        }
        for (uint32_t i = 0; i < PT_NOTE_SLOTS && e == 0; i++) {
            const char *nk = atomic_load_explicit(&rm->notes[i].key, memory_order_acquire);
            if (!nk)
                continue;
            const char *nv = atomic_load_explicit(&rm->notes[i].value, memory_order_relaxed);
            snprintf(key, sizeof(key), "route=\"%s\",filter=\"%s\",result=\"%s\"", route, nk, nv);
            e = add_counter(s, PT_MXF_NOTES, key, pt_ctr_get(&rm->notes[i].n));
            /* the cache filter's note is its own family as well */
            if (e == 0 && strcmp(nk, "cache") == 0) {
                snprintf(key, sizeof(key), "route=\"%s\",result=\"%s\"", route, nv);
                e = add_counter(s, PT_MXF_CACHE, key, pt_ctr_get(&rm->notes[i].n));
            }
        }
    }
    return e;
}

/* What an auth filter's outcome means for portico_auth_results_total. */
static const char *const auth_result[PT_FOUT_N] = {"allow", "deny", "error", NULL};

static int add_filters(struct pt_mx_set *s, const struct pt_generation *g, uint32_t r,
                       const char *route)
{
    const struct pt_gen_metrics *m = g->metrics;
    const struct pt_chain *ch = &g->routes[r].chain;
    const struct pt_hist *h[m->nworkers];
    char key[1024];
    int e = 0;
    for (uint32_t i = 0; i < ch->n_all && e == 0; i++) {
        const struct pt_filter_def *d = ch->all[i].def;
        uint32_t fi = m->filter_base[r] + i;
        for (uint32_t w = 0; w < m->nworkers; w++)
            h[w] = &m->w[w].filters[fi].time;
        snprintf(key, sizeof(key), "route=\"%s\",filter=\"%s\"", route, d->name);
        e = add_hist(s, PT_MXF_FILTER_TIME, key, h, m->nworkers);
        for (int o = 0; o < PT_FOUT_N && e == 0; o++) {
            uint64_t v = 0;
            for (uint32_t w = 0; w < m->nworkers; w++)
                v += pt_ctr_get(&m->w[w].filters[fi].outcome[o]);
            snprintf(key, sizeof(key), "route=\"%s\",filter=\"%s\",outcome=\"%s\"", route, d->name,
                     pt_filter_outcome_names[o]);
            e = add_counter(s, PT_MXF_FILTER_OUT, key, v);
            if (e == 0 && d->auth && auth_result[o]) {
                snprintf(key, sizeof(key), "route=\"%s\",filter=\"%s\",result=\"%s\"", route,
                         d->name, auth_result[o]);
                e = add_counter(s, PT_MXF_AUTH, key, v);
            }
            if (e == 0 && o == PT_FOUT_REJECT && strcmp(d->name, "rate_limit") == 0) {
                snprintf(key, sizeof(key), "route=\"%s\"", route);
                e = add_counter(s, PT_MXF_RL_REJECTED, key, v);
            }
        }
    }
    return e;
}

static int add_routes(struct pt_mx_set *s, const struct pt_generation *g)
{
    const struct pt_gen_metrics *m = g->metrics;
    const struct pt_hist *h[m->nworkers];
    char route[256], key[300];
    int e = 0;
    for (uint32_t r = 0; r < m->nroutes && e == 0; r++) {
        pt_mx_escape(route, sizeof(route), g->routes[r].name);
        snprintf(key, sizeof(key), "route=\"%s\"", route);
        for (uint32_t w = 0; w < m->nworkers; w++)
            h[w] = &m->w[w].routes[r].request;
        e = add_hist(s, PT_MXF_REQUEST_TIME, key, h, m->nworkers);
        for (uint32_t w = 0; w < m->nworkers; w++)
            h[w] = &m->w[w].routes[r].overhead;
        if (e == 0)
            e = add_hist(s, PT_MXF_OVERHEAD, key, h, m->nworkers);
        if (e == 0)
            e = add_codes(s, g, r, route);
        if (e == 0)
            e = add_filters(s, g, r, route);
    }
    return e;
}

int pt_mx_set_add_generation(struct pt_mx_set *s, const struct pt_generation *g)
{
    const struct pt_gen_metrics *m = g->metrics;
    if (!m || m->nworkers == 0)
        return 0;
    int e = add_routes(s, g);
    const struct pt_hist *h[m->nworkers];
    char up[256], key[300];
    for (uint32_t u = 0; u < m->nupstreams && e == 0; u++) {
        pt_mx_escape(up, sizeof(up), g->upstreams[u].name);
        snprintf(key, sizeof(key), "upstream=\"%s\"", up);
        uint64_t retries = 0, budget = 0;
        for (uint32_t w = 0; w < m->nworkers; w++) {
            h[w] = &m->w[w].upstreams[u].time;
            retries += pt_ctr_get(&m->w[w].upstreams[u].retries);
            budget += pt_ctr_get(&m->w[w].upstreams[u].budget_exhausted);
        }
        e = add_hist(s, PT_MXF_UP_TIME, key, h, m->nworkers);
        if (e == 0)
            e = add_counter(s, PT_MXF_RETRIES, key, retries);
        if (e == 0)
            e = add_counter(s, PT_MXF_BUDGET, key, budget);
    }
    return e;
}
