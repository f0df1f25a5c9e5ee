/*
 * hash_ring.h — consistent hashing for `balance: consistent_hash`.
 *
 * A ring of 64-bit points: each target owns points in proportion to its
 * weight, placed by hashing (its address as written, replica number), so
 * a target's points depend on nothing but itself. A key hashes to a spot
 * on the ring and goes to the owner of the first point at or after it.
 * Hence the properties the balancer promises:
 *   - adding a target moves only the keys that land on its new points
 *     (about weight/total of them), all to it; removing one moves only
 *     its own keys;
 *   - a target out of rotation (unhealthy, ejected) is walked past: its
 *     keys go to the owner of the next point, everyone else's stay.
 *
 * Built once per generation at config load, in the generation's arena;
 * read-only afterwards, so workers look it up without any
 * synchronisation. A lookup is one hash of the key and a binary search.
 */
#ifndef PT_PROXY_HASH_RING_H
#define PT_PROXY_HASH_RING_H

#include "core/arena.h"
#include "proxy/upstream_types.h"

/* Points per unit of weight, and the cap on a ring's points (weights are
 * scaled down past it, each target keeping at least one point). */
#define PT_RING_POINTS_PER_WEIGHT 1000u
#define PT_RING_MAX_POINTS 131072u

struct pt_ring_point {
    uint64_t hash;
    uint32_t target; /* index into the upstream's targets */
};

struct pt_hash_ring {
    struct pt_ring_point *points; /* sorted by hash */
    uint32_t n;
};

/* A 64-bit hash of `len` bytes (seeded): well mixed in every bit, for
 * ring points and request keys. */
uint64_t pt_hash64(const void *data, size_t len, uint64_t seed);

/* The ring of u's targets (their `address` and `weight`), in `a`; NULL
 * when out of memory or when u has no targets. */
struct pt_hash_ring *pt_hash_ring_build(struct pt_arena *a, const struct pt_upstream *u);

/* Index of the first point at or after `h` (wrapping to 0). */
uint32_t pt_hash_ring_find(const struct pt_hash_ring *r, uint64_t h);

#endif
