/*
 * split.c — see split.h.
 */
#include "proxy/split.h"

uint64_t pt_split_hash(pt_slice key)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a 64 offset basis */
    for (size_t i = 0; i < key.len; i++) {
        h ^= (unsigned char)key.p[i];
        h *= 0x100000001b3ull; /* FNV-1a 64 prime */
    }
    /* FNV's last multiply leaves the high bits, which pick the side,
     * weakly dependent on the last bytes ("user-1" vs "user-2"): mix every
     * bit into every other. */
    return pt_mix64(h);
}

const struct pt_upstream *pt_split_side_at(const struct pt_route_split *s, uint64_t x)
{
    /* ⌊x·total / 2^64⌋ from the high 32 bits: total ≤ 2^32 keeps the
     * product in 64 bits, and 32 bits of resolution is far finer than
     * any weight. */
    uint64_t point = ((x >> 32) * s->total) >> 32;
    uint64_t edge = 0;
    for (uint32_t i = 0; i < s->nsides; i++) {
        edge += s->sides[i].weight;
        if (point < edge)
            return s->sides[i].up;
    }
    /* Unreachable with total = Σ weights > 0; the last side that takes
     * traffic, to be safe. */
    for (uint32_t i = s->nsides; i > 0; i--)
        if (s->sides[i - 1].weight)
            return s->sides[i - 1].up;
    return s->sides[0].up;
}

const struct pt_upstream *pt_split_named(const struct pt_route_split *s, pt_slice name)
{
    for (uint32_t i = 0; i < s->nsides; i++)
        if (pt_slice_eq_cstr(name, s->sides[i].up->name))
            return s->sides[i].up;
    return NULL;
}
