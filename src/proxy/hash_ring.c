/*
 * hash_ring.c — see hash_ring.h.
 */
#include "proxy/hash_ring.h"

#include <stdlib.h>

#define GOLDEN 0x9e3779b97f4a7c15ull

static inline uint64_t rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

uint64_t pt_hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = pt_mix64(seed + GOLDEN) ^ ((uint64_t)len * GOLDEN);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = rotl(h ^ pt_mix64(w), 29) * GOLDEN + 0x632be59bd9b4e019ull;
        p += 8;
        len -= 8;
    }
    uint64_t w = 0;
    for (size_t i = 0; i < len; i++)
        w |= (uint64_t)p[i] << (8 * i);
    h = rotl(h ^ pt_mix64(w ^ 0xa0761d6478bd642full), 29) * GOLDEN;
    return pt_mix64(h);
}

static int by_hash(const void *a, const void *b)
{
    const struct pt_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    /* Equal hashes (2^-64 per pair): the lower index first, so the ring
     * is the same whatever qsort does. */
    return x->target < y->target ? -1 : x->target > y->target;
}

/* Points a target gets: its weight × points per weight unit, scaled so the
 * ring stays under the cap, never none. */
static uint32_t points_of(int weight, uint64_t total_weight)
{
    uint64_t per = PT_RING_POINTS_PER_WEIGHT;
    if (total_weight * per > PT_RING_MAX_POINTS) {
        uint64_t n = (uint64_t)weight * PT_RING_MAX_POINTS / total_weight;
        return n ? (uint32_t)n : 1;
    }
    return (uint32_t)((uint64_t)weight * per);
}

struct pt_hash_ring *pt_hash_ring_build(struct pt_arena *a, const struct pt_upstream *u)
{
    if (u->ntargets == 0)
        return NULL;
    uint64_t total_weight = 0;
    for (uint32_t i = 0; i < u->ntargets; i++)
        total_weight += (uint64_t)(u->targets[i].weight > 0 ? u->targets[i].weight : 1);
    uint64_t n = 0;
    for (uint32_t i = 0; i < u->ntargets; i++)
        n += points_of(u->targets[i].weight > 0 ? u->targets[i].weight : 1, total_weight);
    struct pt_hash_ring *r = pt_arena_zalloc(a, sizeof(*r));
    struct pt_ring_point *pts = pt_arena_alloc(a, sizeof(*pts) * n);
    if (!r || !pts)
        return NULL;
    uint32_t k = 0;
    for (uint32_t i = 0; i < u->ntargets; i++) {
        const struct pt_target *t = &u->targets[i];
        uint32_t np = points_of(t->weight > 0 ? t->weight : 1, total_weight);
        size_t alen = strlen(t->address);
        /* Replica j of a target sits at hash(address, j): the same place
         * in every generation that names the target the same way. */
        for (uint32_t j = 0; j < np; j++)
            pts[k++] = (struct pt_ring_point){pt_hash64(t->address, alen, j), i};
    }
    qsort(pts, k, sizeof(*pts), by_hash);
    r->points = pts;
    r->n = k;
    return r;
}

uint32_t pt_hash_ring_find(const struct pt_hash_ring *r, uint64_t h)
{
    uint32_t lo = 0, hi = r->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->n ? 0 : lo;
}
