/*
 * consumers.h — the generation's consumers (top-level `consumers:`) and
 * the API-key table key_auth looks callers up in.
 *
 * A consumer is a name, its groups and how many API keys it has. Keys are
 * never kept: the loader hashes each raw key with SHA-256 as it reads it
 * (a `sha256:<64 hex>` entry is taken as the digest itself) and only the
 * 32-byte digests go into the table. A request's key is hashed the same
 * way and looked up by digest: open addressing over a power-of-two array
 * at most half full, the slot chosen by the digest's first bytes (already
 * uniform), each probed slot compared in constant time (CRYPTO_memcmp).
 * A lookup is one SHA-256 of the presented key plus, on average, about
 * one slot compare; it allocates nothing.
 *
 * Ownership: the loader (control/config_consumers.c) builds the table in
 * the generation's arena; it is read-only once the generation is
 * published and dies with it, so a reload that adds a consumer or rotates
 * a key takes effect on the first request that pins the new generation.
 * Workers only call pt_consumers_find and pt_key_digest.
 */
#ifndef PT_FILTERS_CONSUMERS_H
#define PT_FILTERS_CONSUMERS_H

#include "core/arena.h"

#include <stdint.h>

#define PT_KEY_DIGEST_LEN 32 /* SHA-256 */

struct pt_consumer {
    pt_slice name;          /* unique in the generation */
    const pt_slice *groups; /* as written, duplicates dropped */
    uint32_t ngroups;
    uint32_t nkeys; /* API keys (digests) in the table for it */
};

struct pt_consumer_slot {
    uint8_t digest[PT_KEY_DIGEST_LEN];
    const struct pt_consumer *consumer; /* NULL: an empty slot */
};

struct pt_consumers {
    struct pt_consumer *v; /* in file order */
    uint32_t n;
    struct pt_consumer_slot *slots; /* NULL when there are no keys */
    uint32_t mask;                  /* slots - 1 (a power of two) */
    uint32_t nkeys;
    /* By name, for lookups on workers (mtls_auth): open addressing over a
     * power-of-two array at most half full; NULL when there are no
     * consumers (pt_consumers_index_names). */
    const struct pt_consumer **byname;
    uint32_t name_mask;
};

/* SHA-256 of a key, into out. Allocates nothing (safe on workers). */
void pt_key_digest(const void *key, size_t len, uint8_t out[PT_KEY_DIGEST_LEN]);

/* `sha256:` followed by exactly 64 hex digits (either case) into out.
 * 1: it was one; 0: the text does not start with `sha256:` (a raw key);
 * -1: it starts with `sha256:` but the rest is not 64 hex digits. */
int pt_key_digest_parse(const char *text, uint8_t out[PT_KEY_DIGEST_LEN]);

/* Sizes the key table for `max_keys` keys in `a` (consumers are added to
 * t->v by the caller). 0 or -ENOMEM. */
int pt_consumers_init_keys(struct pt_consumers *t, struct pt_arena *a, uint32_t max_keys);

/* Adds a digest for `c`. 0; -EEXIST when the digest is in the table
 * already (*owner then names who has it); -ENOSPC past max_keys. */
int pt_consumers_add_key(struct pt_consumers *t, const struct pt_consumer *c,
                         const uint8_t digest[PT_KEY_DIGEST_LEN], const struct pt_consumer **owner);

/* The consumer whose key has this digest, or NULL (also for t NULL). */
const struct pt_consumer *pt_consumers_find(const struct pt_consumers *t,
                                            const uint8_t digest[PT_KEY_DIGEST_LEN]);

/* Indexes t->v[0..n) by name in `a`, once every consumer is added (the
 * loader, after the keys). 0 or -ENOMEM. */
int pt_consumers_index_names(struct pt_consumers *t, struct pt_arena *a);

/* The consumer called exactly `name`, or NULL (also for t NULL or before
 * pt_consumers_index_names): a hash and about one compare; allocates
 * nothing (safe on workers). */
const struct pt_consumer *pt_consumers_named(const struct pt_consumers *t, pt_slice name);

/* The consumer called `name`, or NULL. A linear scan: load time only. */
const struct pt_consumer *pt_consumers_by_name(const struct pt_consumers *t, pt_slice name);

#endif
