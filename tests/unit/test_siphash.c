/*
 * test_siphash.c — SipHash-2-4 against the reference outputs published
 * with the paper (key 00 01 .. 0f, message 00 01 .. of each length), and
 * the streaming form against the one-shot form for every split.
 */
#include "core/common.h"
#include "core/siphash.h"
#include "unit.h"

struct vector {
    unsigned len;
    uint64_t out;
};

/* Entries of the reference implementation's vectors (64-bit output). */
static const struct vector vectors[] = {
    {0, 0x726fdb47dd0e0e31ull},  {1, 0x74f839c593dc67fdull},  {2, 0x0d6c8009d9a94f5aull},
    {7, 0xab0200f58b01d137ull},  {8, 0x93f5f5799a932462ull},  {9, 0x9e0082df0ba9e4b0ull},
    {15, 0xa129ca6149be45e5ull}, {16, 0x3f2acc7f57c29bdbull}, {31, 0x32d892fad841c342ull},
    {32, 0x7127512f72f27cceull}, {63, 0x958a324ceb064572ull},
};

static uint8_t key[16], msg[64];

static void test_reference_vectors(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(vectors); i++) {
        uint64_t h = pt_siphash24(key, msg, vectors[i].len);
        CHECK_MSG(h == vectors[i].out, "len %u: %016llx", vectors[i].len, (unsigned long long)h);
    }
}

static void test_streaming_matches_one_shot(void)
{
    int bad = 0;
    for (unsigned len = 0; len <= 64; len++) {
        uint64_t want = pt_siphash24(key, msg, len);
        for (unsigned a = 0; a <= len; a++) {
            for (unsigned b = a; b <= len; b++) {
                struct pt_siphash s;
                pt_siphash_init(&s, key);
                pt_siphash_update(&s, msg, a);
                pt_siphash_update(&s, msg + a, b - a);
                pt_siphash_update(&s, msg + b, len - b);
                if (pt_siphash_final(&s) != want)
                    bad++;
            }
        }
    }
    CHECK_EQ_INT(bad, 0);
}

static void test_key_changes_output(void)
{
    uint8_t other[16];
    memcpy(other, key, sizeof other);
    other[15] ^= 1;
    CHECK(pt_siphash24(key, msg, 10) != pt_siphash24(other, msg, 10));
}

int main(void)
{
    for (unsigned i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (unsigned i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    test_reference_vectors();
    test_streaming_matches_one_shot();
    test_key_changes_output();
    return unit_report("siphash");
}
