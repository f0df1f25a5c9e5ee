/*
 * test_websocket.c — the RFC 6455 handshake values: the RFC's own
 * example accept value, key validation, and made keys that validate.
 */
#include "http/websocket.h"
#include "unit.h"

static void test_accept_rfc_example(void)
{
    char out[29];
    /* RFC 6455 §1.3 */
    pt_ws_accept(PT_SLICE("dGhlIHNhbXBsZSBub25jZQ=="), out);
    CHECK_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_key_valid(void)
{
    CHECK(pt_ws_key_valid(PT_SLICE("dGhlIHNhbXBsZSBub25jZQ==")));
    CHECK(!pt_ws_key_valid(PT_SLICE("dGhlIHNhbXBsZSBub25jZQ=")));  /* short */
    CHECK(!pt_ws_key_valid(PT_SLICE("dGhlIHNhbXBsZSBub25jZR=="))); /* non-zero pad bits */
    CHECK(!pt_ws_key_valid(PT_SLICE("dGhlIHNhbXBsZSBub25j*Q=="))); /* not base64 */
    CHECK(!pt_ws_key_valid(PT_SLICE("dGhlIHNhbXBsZSBub25jZQAA"))); /* no padding */
    CHECK(!pt_ws_key_valid(PT_SLICE("")));
}

static void test_made_keys_validate(void)
{
    uint64_t a = 0x0123456789abcdefull, b = 0xfedcba9876543210ull;
    for (int i = 0; i < 1000; i++) {
        char key[25];
        pt_ws_make_key(a, b, key);
        CHECK_MSG(pt_ws_key_valid((pt_slice){key, strlen(key)}), "%s", key);
        a = a * 6364136223846793005ull + 1442695040888963407ull;
        b ^= a >> 7;
    }
}

int main(void)
{
    test_accept_rfc_example();
    test_key_valid();
    test_made_keys_validate();
    return unit_report("websocket");
}
