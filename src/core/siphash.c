/*
 * siphash.c — SipHash-2-4 (see siphash.h), written from the paper's
 * description: four 64-bit words of state, two SipRounds per 8-byte
 * message word, four after the final word that carries the length.
 */
#include "core/siphash.h"

static inline uint64_t rotl64(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline void sip_round(struct pt_siphash *s)
{
    s->v0 += s->v1;
    s->v1 = rotl64(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = rotl64(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = rotl64(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = rotl64(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = rotl64(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = rotl64(s->v2, 32);
}

/* One message word: xor into v3, two rounds (the "2" of 2-4), xor into v0. */
static inline void sip_compress(struct pt_siphash *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

void pt_siphash_init(struct pt_siphash *s, const uint8_t key[16])
{
    uint64_t k0 = load_le64(key), k1 = load_le64(key + 8);
    /* "somepseudorandomlygeneratedbytes" */
    s->v0 = k0 ^ 0x736f6d6570736575ull;
    s->v1 = k1 ^ 0x646f72616e646f6dull;
    s->v2 = k0 ^ 0x6c7967656e657261ull;
    s->v3 = k1 ^ 0x7465646279746573ull;
    s->tail = 0;
    s->length = 0;
}

void pt_siphash_update(struct pt_siphash *s, const void *data, size_t len)
{
    const uint8_t *p = data;
    unsigned have = (unsigned)(s->length & 7);
    s->length += len;
    /* finish a partial word first */
    while (have != 0 && len > 0) {
        s->tail |= (uint64_t)*p++ << (8 * have);
        len--;
        if (++have == 8) {
            sip_compress(s, s->tail);
            s->tail = 0;
            have = 0;
        }
    }
    for (; len >= 8; p += 8, len -= 8)
        sip_compress(s, load_le64(p));
    for (unsigned i = 0; i < len; i++)
        s->tail |= (uint64_t)p[i] << (8 * i);
}

uint64_t pt_siphash_final(struct pt_siphash *s)
{
    /* the last word: the remaining bytes, the length mod 256 on top */
    sip_compress(s, s->tail | (s->length << 56));
    s->v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(s);
    return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

uint64_t pt_siphash24(const uint8_t key[16], const void *data, size_t len)
{
    struct pt_siphash s;
    pt_siphash_init(&s, key);
    pt_siphash_update(&s, data, len);
    return pt_siphash_final(&s);
}
