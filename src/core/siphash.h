/*
 * siphash.h — SipHash-2-4 (Aumasson and Bernstein, 2012): a keyed 64-bit
 * hash for table keys an outsider chooses (rate-limit keys), so nobody
 * can aim many keys at one bucket without knowing the secret key.
 *
 * One-shot (pt_siphash24) or streaming (init, update any number of times,
 * final) with the same result for the same bytes however they are split.
 * The state lives on the caller's stack; nothing allocates.
 */
#ifndef PT_CORE_SIPHASH_H
#define PT_CORE_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

struct pt_siphash {
    uint64_t v0, v1, v2, v3;
    uint64_t tail;   /* bytes not yet compressed, little-endian */
    uint64_t length; /* bytes seen so far */
};

/* key: 16 bytes, k0 and k1 little-endian as in the paper. */
void pt_siphash_init(struct pt_siphash *s, const uint8_t key[16]);
void pt_siphash_update(struct pt_siphash *s, const void *data, size_t len);
uint64_t pt_siphash_final(struct pt_siphash *s);

uint64_t pt_siphash24(const uint8_t key[16], const void *data, size_t len);

#endif
