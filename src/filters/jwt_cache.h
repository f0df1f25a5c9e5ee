/*
 * jwt_cache.h — the verified-token cache: a token that verified once
 * skips the signature check until it expires.
 *
 * Keyed by SHA-256 of the token (the token itself is never stored), so a
 * lookup is one hash and one short lock. Each entry holds its validity
 * window [not_before, expire_at) in wall-clock seconds (the token's nbf
 * and exp with the clock skew applied: the caller re-checks it against
 * now on every hit), which provider verified it and with which key set
 * (a hit is ignored once that provider's keys changed, so a key removed
 * from a JWKS stops its tokens at the next refresh), and the outcome as
 * an opaque blob (what goes upstream).
 *
 * Shared by every worker: 16 shards, each a chained hash table plus an
 * LRU list under its own mutex, held only to find, link or unlink an
 * entry and copy its blob (no allocation and no crypto under a lock but
 * the one malloc of an insert). Bounded by a byte budget split evenly
 * over the shards; inserting past a shard's share evicts from its LRU
 * tail; an expired entry a lookup meets is dropped.
 *
 * Ownership: one cache per compiled jwt filter config, created on the
 * control thread at compile time and freed with its generation's arena
 * (pt_arena_defer), when no worker can still use it.
 */
#ifndef PT_FILTERS_JWT_CACHE_H
#define PT_FILTERS_JWT_CACHE_H

#include "core/arena.h"

#define PT_JWT_CACHE_KEY 32

struct pt_jwt_cache;

struct pt_jwt_cached {
    int64_t not_before; /* wall seconds: valid from (nbf - skew; INT64_MIN: no nbf) */
    int64_t expire_at;  /* wall seconds: valid until (exp + skew) */
    uint32_t provider;  /* index of the provider that verified it */
    uint64_t set_seq;   /* that provider's key set then */
    pt_slice blob;      /* the outcome */
};

/* A cache of at most `budget` bytes (entries and blobs). NULL when out of
 * memory. */
struct pt_jwt_cache *pt_jwt_cache_new(size_t budget);
/* pt_arena_defer-compatible. */
void pt_jwt_cache_free(void *cache);

/* The entry for `key` valid at `now_s`: *out with its blob copied into
 * `a`. An expired entry is dropped. false: miss (or out of memory). */
bool pt_jwt_cache_get(struct pt_jwt_cache *c, const uint8_t key[PT_JWT_CACHE_KEY], int64_t now_s,
                      struct pt_arena *a, struct pt_jwt_cached *out);
/* Inserts (or replaces) the entry; silently drops it when it would not
 * fit or memory is short. */
void pt_jwt_cache_put(struct pt_jwt_cache *c, const uint8_t key[PT_JWT_CACHE_KEY],
                      const struct pt_jwt_cached *v);

/* Entries and bytes held, summed over shards (for tests and logs). */
void pt_jwt_cache_usage(struct pt_jwt_cache *c, size_t *entries, size_t *bytes);

#endif
