/*
 * consumers.c — the API-key digest table (see consumers.h).
 */
/* The digest runs on workers for every key_auth request. OpenSSL 3's EVP
 * interface allocates a provider context on every digest (even with a
 * reused EVP_MD_CTX), while the low-level SHA-256 functions hash on a
 * stack context with the same assembly and allocate nothing; they are
 * deprecated in 3.0 but present, so this file alone opts back in. */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "filters/consumers.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <errno.h>
#include <string.h>

void pt_key_digest(const void *key, size_t len, uint8_t out[PT_KEY_DIGEST_LEN])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, key, len);
    SHA256_Final(out, &c);
    OPENSSL_cleanse(&c, sizeof(c)); /* it held the key */
}

int pt_key_digest_parse(const char *text, uint8_t out[PT_KEY_DIGEST_LEN])
{
    static const char prefix[] = "sha256:";
    if (strncmp(text, prefix, sizeof(prefix) - 1) != 0)
        return 0;
    const char *h = text + sizeof(prefix) - 1;
    if (strlen(h) != 2 * PT_KEY_DIGEST_LEN)
        return -1;
    for (size_t i = 0; i < PT_KEY_DIGEST_LEN; i++) {
        int hi = pt_hexval(h[2 * i]), lo = pt_hexval(h[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 1;
}

int pt_consumers_init_keys(struct pt_consumers *t, struct pt_arena *a, uint32_t max_keys)
{
    t->slots = NULL;
    t->mask = 0;
    t->nkeys = 0;
    if (max_keys == 0)
        return 0;
    /* At most half full: a miss (an unknown key) ends at an empty slot
     * after about two probes. */
    uint64_t cap = 4;
    while (cap < 2 * (uint64_t)max_keys)
        cap <<= 1;
    if (cap > UINT32_MAX / 2)
        return -ENOMEM;
    t->slots = pt_arena_zalloc(a, sizeof(*t->slots) * cap);
    if (!t->slots)
        return -ENOMEM;
    t->mask = (uint32_t)cap - 1;
    return 0;
}

/* The digest is SHA-256 output: its first bytes are as good as any hash. */
static uint32_t slot_of(const uint8_t d[PT_KEY_DIGEST_LEN], uint32_t mask)
{
    uint32_t h;
    memcpy(&h, d, sizeof(h));
    return h & mask;
}

int pt_consumers_add_key(struct pt_consumers *t, const struct pt_consumer *c,
                         const uint8_t digest[PT_KEY_DIGEST_LEN], const struct pt_consumer **owner)
{
    if (!t->slots || t->nkeys >= (t->mask + 1) / 2)
        return -ENOSPC;
    for (uint32_t i = slot_of(digest, t->mask);; i = (i + 1) & t->mask) {
        struct pt_consumer_slot *s = &t->slots[i];
        if (!s->consumer) {
            memcpy(s->digest, digest, PT_KEY_DIGEST_LEN);
            s->consumer = c;
            t->nkeys++;
            return 0;
        }
        if (memcmp(s->digest, digest, PT_KEY_DIGEST_LEN) == 0) {
            if (owner)
                *owner = s->consumer;
            return -EEXIST;
        }
    }
}

const struct pt_consumer *pt_consumers_find(const struct pt_consumers *t,
                                            const uint8_t digest[PT_KEY_DIGEST_LEN])
{
    if (!t || !t->slots)
        return NULL;
    /* Terminates: the table is never more than half full. */
    for (uint32_t i = slot_of(digest, t->mask);; i = (i + 1) & t->mask) {
        const struct pt_consumer_slot *s = &t->slots[i];
        if (!s->consumer)
            return NULL;
        if (CRYPTO_memcmp(s->digest, digest, PT_KEY_DIGEST_LEN) == 0)
            return s->consumer;
    }
}

const struct pt_consumer *pt_consumers_by_name(const struct pt_consumers *t, pt_slice name)
{
    for (uint32_t i = 0; t && i < t->n; i++)
        if (pt_slice_eq(t->v[i].name, name))
            return &t->v[i];
    return NULL;
}

/* FNV-1a: names come from the config, and a lookup's name from a
 * certificate the client CA signed, so nobody picks colliding names to
 * slow the table down. */
static uint32_t name_hash(pt_slice s)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < s.len; i++)
        h = (h ^ (unsigned char)s.p[i]) * 16777619u;
    return h;
}

int pt_consumers_index_names(struct pt_consumers *t, struct pt_arena *a)
{
    t->byname = NULL;
    t->name_mask = 0;
    if (t->n == 0)
        return 0;
    uint64_t cap = 4;
    while (cap < 2 * (uint64_t)t->n)
        cap <<= 1;
    if (cap > UINT32_MAX / 2)
        return -ENOMEM;
    const struct pt_consumer **v = pt_arena_zalloc(a, sizeof(*v) * cap);
    if (!v)
        return -ENOMEM;
    uint32_t mask = (uint32_t)cap - 1;
    for (uint32_t k = 0; k < t->n; k++) {
        const struct pt_consumer *c = &t->v[k];
        if (!c->name.len)
            continue;
        /* Names are unique (the loader refuses a duplicate); keep the
         * first should one slip through. */
        uint32_t i = name_hash(c->name) & mask;
        while (v[i] && !pt_slice_eq(v[i]->name, c->name))
            i = (i + 1) & mask;
        if (!v[i])
            v[i] = c;
    }
    t->byname = v;
    t->name_mask = mask;
    return 0;
}

const struct pt_consumer *pt_consumers_named(const struct pt_consumers *t, pt_slice name)
{
    if (!t || !t->byname || !name.len)
        return NULL;
    /* Terminates: the array is never more than half full. */
    for (uint32_t i = name_hash(name) & t->name_mask;; i = (i + 1) & t->name_mask) {
        const struct pt_consumer *c = t->byname[i];
        if (!c)
            return NULL;
        if (pt_slice_eq(c->name, name))
            return c;
    }
}
