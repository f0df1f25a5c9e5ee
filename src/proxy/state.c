/*
 * state.c — see state.h. The registry is a chained hash table keyed by
 * (upstream, address), grown by doubling; only the control thread reads or
 * changes its structure, so it needs no lock. Cells are malloc'd one by
 * one and never move: workers hold pointers to them through targets.
 */
#include "proxy/state.h"

#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

struct pt_state_registry {
    struct pt_upstream_state *upstreams; /* few: a list */
    struct pt_target_state **buckets;
    uint32_t nbuckets; /* power of two */
    uint32_t count;
};

#define INITIAL_BUCKETS 64u

/* FNV-1a over "upstream\0address". */
static uint32_t key_hash(const char *upstream, const char *address)
{
    uint32_t h = 2166136261u;
    for (const char *p = upstream;; p++) {
        h = (h ^ (unsigned char)*p) * 16777619u;
        if (!*p)
            break;
    }
    for (const char *p = address; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct pt_state_registry *pt_state_registry_new(void)
{
    struct pt_state_registry *reg = calloc(1, sizeof(*reg));
    if (!reg)
        return NULL;
    reg->buckets = calloc(INITIAL_BUCKETS, sizeof(*reg->buckets));
    if (!reg->buckets) {
        free(reg);
        return NULL;
    }
    reg->nbuckets = INITIAL_BUCKETS;
    return reg;
}

static void cell_free(struct pt_target_state *s)
{
    free(s->upstream);
    free(s->address);
    free(s);
}

void pt_state_registry_free(struct pt_state_registry *reg)
{
    if (!reg)
        return;
    for (uint32_t i = 0; i < reg->nbuckets; i++) {
        for (struct pt_target_state *s = reg->buckets[i], *next; s; s = next) {
            next = s->next;
            pt_warn("state: %s %s still referenced %u times at shutdown", s->upstream, s->address,
                    s->refs);
            cell_free(s);
        }
    }
    for (struct pt_upstream_state *u = reg->upstreams, *next; u; u = next) {
        next = u->next;
        pt_warn("state: upstream %s still referenced %u times at shutdown", u->name, u->refs);
        free(u->name);
        free(u);
    }
    free(reg->buckets);
    free(reg);
}

uint32_t pt_state_registry_count(const struct pt_state_registry *reg)
{
    return reg->count;
}

static struct pt_target_state **bucket_of(struct pt_state_registry *reg, uint32_t hash)
{
    return &reg->buckets[hash & (reg->nbuckets - 1)];
}

struct pt_target_state *pt_state_target_find(struct pt_state_registry *reg, const char *upstream,
                                             const char *address)
{
    uint32_t h = key_hash(upstream, address);
    for (struct pt_target_state *s = *bucket_of(reg, h); s; s = s->next)
        if (s->hash == h && strcmp(s->upstream, upstream) == 0 && strcmp(s->address, address) == 0)
            return s;
    return NULL;
}

/* Doubles the table when it holds more cells than buckets. A failed grow
 * only makes chains longer. */
static void maybe_grow(struct pt_state_registry *reg)
{
    if (reg->count < reg->nbuckets)
        return;
    uint32_t n = reg->nbuckets * 2;
    struct pt_target_state **nb = calloc(n, sizeof(*nb));
    if (!nb)
        return;
    for (uint32_t i = 0; i < reg->nbuckets; i++) {
        for (struct pt_target_state *s = reg->buckets[i], *next; s; s = next) {
            next = s->next;
            struct pt_target_state **b = &nb[s->hash & (n - 1)];
            s->next = *b;
            *b = s;
        }
    }
    free(reg->buckets);
    reg->buckets = nb;
    reg->nbuckets = n;
}

struct pt_target_state *pt_state_target_get(struct pt_state_registry *reg, const char *upstream,
                                            const char *address, bool *created)
{
    struct pt_target_state *s = pt_state_target_find(reg, upstream, address);
    if (created)
        *created = s == NULL;
    if (s) {
        s->refs++;
        return s;
    }
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->upstream = strdup(upstream);
    s->address = strdup(address);
    if (!s->upstream || !s->address) {
        cell_free(s);
        return NULL;
    }
    /* Healthy until a check says otherwise (a target nobody checks must
     * take traffic), and fresh so the checker looks at it at once. */
    atomic_init(&s->health, PT_HEALTHY);
    atomic_init(&s->fresh, true);
    s->reg = reg;
    s->refs = 1;
    s->hash = key_hash(upstream, address);
    maybe_grow(reg);
    struct pt_target_state **b = bucket_of(reg, s->hash);
    s->next = *b;
    *b = s;
    reg->count++;
    return s;
}

void pt_state_target_put(struct pt_target_state *s)
{
    if (!s || --s->refs > 0)
        return;
    struct pt_state_registry *reg = s->reg;
    for (struct pt_target_state **pp = bucket_of(reg, s->hash); *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    reg->count--;
    cell_free(s);
}

struct pt_upstream_state *pt_state_upstream_find(struct pt_state_registry *reg, const char *name)
{
    for (struct pt_upstream_state *u = reg->upstreams; u; u = u->next)
        if (strcmp(u->name, name) == 0)
            return u;
    return NULL;
}

struct pt_upstream_state *pt_state_upstream_get(struct pt_state_registry *reg, const char *name)
{
    struct pt_upstream_state *u = pt_state_upstream_find(reg, name);
    if (u) {
        u->refs++;
        return u;
    }
    u = calloc(1, sizeof(*u));
    if (!u || !(u->name = strdup(name))) {
        free(u);
        return NULL;
    }
    u->reg = reg;
    u->refs = 1;
    u->next = reg->upstreams;
    reg->upstreams = u;
    return u;
}

void pt_state_upstream_put(struct pt_upstream_state *u)
{
    if (!u || --u->refs > 0)
        return;
    for (struct pt_upstream_state **pp = &u->reg->upstreams; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    }
    free(u->name);
    free(u);
}

int pt_state_attach_upstreams(struct pt_state_registry *reg, struct pt_upstream *ups, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (!ups[i].state && !(ups[i].state = pt_state_upstream_get(reg, ups[i].name))) {
            pt_state_detach_upstreams(ups, n);
            return -ENOMEM;
        }
        /* Before publishing: buckets counted with another window size
         * would misread in this generation's (the phase is kept). */
        if (ups[i].breaker.enabled && pt_breaker_reconf(&ups[i].state->breaker, &ups[i].breaker))
            pt_info("upstream %s circuit breaker window is now %gs: its counts start over",
                    ups[i].name, (double)ups[i].breaker.window_ms / 1000.0);
        for (uint32_t t = 0; t < ups[i].ntargets; t++) {
            struct pt_target *tg = &ups[i].targets[t];
            if (tg->state)
                continue; /* attached already */
            tg->state = pt_state_target_get(reg, ups[i].name, tg->address, NULL);
            if (!tg->state) {
                pt_state_detach_upstreams(ups, n);
                return -ENOMEM;
            }
        }
    }
    return 0;
}

void pt_state_detach_upstreams(struct pt_upstream *ups, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        pt_state_upstream_put(ups[i].state);
        ups[i].state = NULL;
        for (uint32_t t = 0; t < ups[i].ntargets; t++) {
            struct pt_target *tg = &ups[i].targets[t];
            pt_state_target_put(tg->state);
            tg->state = NULL;
        }
    }
}

bool pt_state_set_health(struct pt_target_state *s, enum pt_health h, const char *why)
{
    /* An exchange, not load + store: with two writers (an active checker
     * and, later, passive checks from workers) exactly one sees the
     * change and logs it. */
    int old = atomic_exchange_explicit(&s->health, (int)h, memory_order_relaxed);
    if (old == (int)h)
        return false;
    atomic_store_explicit(&s->changed_ms, wall_ms(), memory_order_relaxed);
    pt_info("upstream %s target %s is now %s%s%s", s->upstream, s->address,
            h == PT_HEALTHY ? "healthy" : "unhealthy", why ? ": " : "", why ? why : "");
    return true;
}

bool pt_state_record_check(struct pt_target_state *s, bool ok, uint32_t rise, uint32_t fall,
                           const char *why)
{
    atomic_fetch_add_explicit(&s->checks, 1, memory_order_relaxed);
    atomic_store_explicit(&s->fresh, false, memory_order_relaxed);
    if (ok) {
        atomic_store_explicit(&s->fails, 0, memory_order_relaxed);
        uint32_t n = atomic_fetch_add_explicit(&s->successes, 1, memory_order_relaxed) + 1;
        return n >= (rise ? rise : 1) && pt_state_set_health(s, PT_HEALTHY, why);
    }
    atomic_store_explicit(&s->successes, 0, memory_order_relaxed);
    uint32_t n = atomic_fetch_add_explicit(&s->fails, 1, memory_order_relaxed) + 1;
    return n >= (fall ? fall : 1) && pt_state_set_health(s, PT_UNHEALTHY, why);
}
