/*
 * common.h — the few definitions every floor shares: byte slices,
 * branch hints, container_of, array sizes.
 *
 * Ownership: a pt_slice never owns its bytes; it borrows them from a
 * buffer or arena whose lifetime the caller guarantees.
 */
#ifndef PT_CORE_COMMON_H
#define PT_CORE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A borrowed run of bytes (not NUL-terminated). */
typedef struct pt_slice {
    const char *p;
    size_t len;
} pt_slice;

#define PT_SLICE(lit) ((pt_slice){(lit), sizeof(lit) - 1})
#define PT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define pt_likely(x) __builtin_expect(!!(x), 1)
#define pt_unlikely(x) __builtin_expect(!!(x), 0)
#define pt_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define PT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define PT_MAX(a, b) ((a) > (b) ? (a) : (b))

/* The value of one hex digit, or -1. */
static inline int pt_hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* A 64-bit finalizer (xor-shift, odd multiply; the constants of
 * MurmurHash3's public-domain fmix64): every input bit reaches every
 * output bit. */
static inline uint64_t pt_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* xorshift64*: a fast PRNG for ids, jitter and sampling (unique, not
 * unpredictable). *state must start non-zero. */
static inline uint64_t pt_xorshift64s(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline bool pt_slice_eq(pt_slice a, pt_slice b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static inline bool pt_slice_eq_cstr(pt_slice a, const char *s)
{
    size_t n = strlen(s);
    return a.len == n && memcmp(a.p, s, n) == 0;
}

/* ASCII case-insensitive comparison (header names, hosts). */
bool pt_slice_ieq(pt_slice a, pt_slice b);
bool pt_slice_ieq_cstr(pt_slice a, const char *s);

/* Monotonic milliseconds / nanoseconds (vDSO clock_gettime). */
uint64_t pt_now_ms(void);
uint64_t pt_now_ns(void);

#endif
