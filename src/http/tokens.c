/*
 * tokens.c — the interned header-name and method tables (see tokens.h).
 *
 * The names and flags come from the X-macro lists in tokens.h, so adding a
 * header there is the whole change. Lookup is on the parser's hot path (one
 * call per header field), so it is a small open-addressing hash keyed on
 * (length, first byte, last byte) followed by one case-insensitive compare;
 * it never allocates. The hash index is built once at program start from
 * the name table, which keeps the X-macro list the single source of truth.
 */
#include "http/tokens.h"

const pt_slice pt_token_names[PT_TOK__COUNT] = {[PT_TOK_UNKNOWN] = {"", 0},
#define PT_X(e, s, f) [PT_TOK_##e] = {s, sizeof(s) - 1},
                                                PT_TOKEN_LIST(PT_X)
#undef PT_X
};

const uint8_t pt_token_flags[PT_TOK__COUNT] = {
#define PT_X(e, s, f) [PT_TOK_##e] = (f),
    PT_TOKEN_LIST(PT_X)
#undef PT_X
};

const pt_slice pt_method_names[PT_METHOD__COUNT] = {[PT_METHOD_OTHER] = {"", 0},
#define PT_X(m) [PT_METHOD_##m] = {#m, sizeof(#m) - 1},
                                                    PT_METHOD_LIST(PT_X)
#undef PT_X
};

/* The index stores token ids in a byte; 128 slots keep the load factor
 * under 1/3 so a miss (the common case for x-custom headers) usually ends
 * on the first or second probe. */
#define INDEX_SLOTS 128u
_Static_assert(PT_TOK__COUNT < 256, "token ids must fit the uint8_t index");
_Static_assert(PT_TOK__COUNT * 3 < INDEX_SLOTS, "grow INDEX_SLOTS with the token list");

static uint8_t token_index[INDEX_SLOTS];

static inline unsigned char ascii_lower(unsigned char c)
{
    return (unsigned char)(c + ((unsigned char)(c - 'A') < 26u ? 32 : 0));
}

static inline unsigned hash_name(const char *name, size_t len)
{
    unsigned first = ascii_lower((unsigned char)name[0]);
    unsigned last = ascii_lower((unsigned char)name[len - 1]);
    return (first * 31u + last * 7u + (unsigned)len * 13u) & (INDEX_SLOTS - 1);
}

/* Lowercases the ASCII letters of eight bytes at once: a byte gets 0x20
 * added only when it lies in 'A'..'Z' (bytes ≥ 0x80 are left alone), so the
 * compare stays exact for arbitrary input, not only for token characters. */
static inline uint64_t lower8(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull;
    uint64_t low7 = x & (0x7f * ones);
    uint64_t ge_a = low7 + (0x80 - 'A') * ones;     /* bit 7 set where byte ≥ 'A' */
    uint64_t gt_z = low7 + (0x80 - 'Z' - 1) * ones; /* bit 7 set where byte > 'Z' */
    uint64_t upper = (ge_a & ~gt_z) & ~x & (0x80 * ones);
    return x | (upper >> 2);
}

static inline uint64_t load8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* `canon` is lowercase; `name` is any case. Same length assumed. */
static bool name_ieq(const char *name, const char *canon, size_t len)
{
    if (len >= 8) {
        size_t i = 0;
        for (; i + 8 <= len; i += 8)
            if (lower8(load8(name + i)) != load8(canon + i))
                return false;
        /* An overlapping last word covers the tail without a byte loop. */
        return i == len || lower8(load8(name + len - 8)) == load8(canon + len - 8);
    }
    for (size_t i = 0; i < len; i++)
        if (ascii_lower((unsigned char)name[i]) != (unsigned char)canon[i])
            return false;
    return true;
}

int pt_token_lookup(const char *name, size_t len)
{
    if (len == 0)
        return PT_TOK_UNKNOWN;
    for (unsigned slot = hash_name(name, len);; slot = (slot + 1) & (INDEX_SLOTS - 1)) {
        unsigned id = token_index[slot];
        if (id == PT_TOK_UNKNOWN)
            return PT_TOK_UNKNOWN;
        if (pt_token_names[id].len == len && name_ieq(name, pt_token_names[id].p, len))
            return (int)id;
    }
}

/* Runs before main() (and before any worker thread exists), so the index is
 * immutable by the time anyone reads it: no lock, no once-flag on the hot
 * path. The load factor assert above guarantees an empty slot exists. */
__attribute__((constructor)) static void build_token_index(void)
{
    for (unsigned id = 1; id < PT_TOK__COUNT; id++) {
        unsigned slot = hash_name(pt_token_names[id].p, pt_token_names[id].len);
        while (token_index[slot] != PT_TOK_UNKNOWN)
            slot = (slot + 1) & (INDEX_SLOTS - 1);
        token_index[slot] = (uint8_t)id;
    }
}

int pt_method_lookup(const char *name, size_t len)
{
    /* Nine short names: a length check rejects almost all of them before
     * memcmp runs, and GET (the common case) is first. */
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        if (pt_method_names[m].len == len && memcmp(pt_method_names[m].p, name, len) == 0)
            return m;
    return PT_METHOD_OTHER;
}
