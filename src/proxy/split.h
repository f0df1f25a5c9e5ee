/*
 * split.h — a route's traffic split between upstreams (canary): the
 * sides and their weights, how a user sticks to one side, and the pure
 * functions that map a key or a random number onto a side.
 *
 * Layout: the sides are kept in upstream-name order, whatever order the
 * file lists them in, and each owns the slice of [0, total) its weight
 * covers, one after the other. A number in [0, 2^64) maps to the point
 * ⌊x·total / 2^64⌋ and the side whose slice holds it, so a side of
 * weight 0 owns nothing and a stable key (pt_split_hash of the same bytes)
 * lands on the same side in every process and generation whose split has
 * the same sides and weights. With two sides, moving weight from one to
 * the other moves only the keys between the old and the new boundary,
 * all of them to the side that gained.
 *
 * Ownership: a split and its sides live in the generation's arena; the
 * upstream pointers point into the same generation.
 */
#ifndef PT_PROXY_SPLIT_H
#define PT_PROXY_SPLIT_H

#include "core/common.h"
#include "proxy/upstream_types.h"

#define PT_SPLIT_WEIGHT_MAX 10000

/* routes[].sticky: where a user's key comes from. */
enum pt_sticky {
    PT_STICKY_NONE = 0, /* every request is drawn at random by weight */
    PT_STICKY_HEADER,   /* header:NAME */
    PT_STICKY_COOKIE,   /* cookie:NAME; set by the gateway when missing */
};

struct pt_split_side {
    const struct pt_upstream *up;
    uint32_t weight; /* 0..PT_SPLIT_WEIGHT_MAX */
};

struct pt_route_split {
    struct pt_split_side *sides; /* by upstream name */
    uint32_t nsides;
    uint64_t total; /* sum of the weights; > 0 */
    enum pt_sticky sticky;
    pt_slice sticky_name;     /* header or cookie name (sticky != NONE) */
    pt_slice override_header; /* routes[].override_header; len 0: off */
};

/* A 64-bit hash of `key`, the same on every machine and in every process
 * (FNV-1a over the bytes, then a finalising mix so that keys differing in
 * their last byte spread over the whole range). */
uint64_t pt_split_hash(pt_slice key);

/* The side that owns x (a hash or a uniform random number). */
const struct pt_upstream *pt_split_side_at(const struct pt_route_split *s, uint64_t x);

/* The side whose upstream is called `name` (exact), or NULL. */
const struct pt_upstream *pt_split_named(const struct pt_route_split *s, pt_slice name);

#endif
