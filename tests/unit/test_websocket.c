/*
 * test_websocket.c — the RFC 6455 handshake values: the RFC's own
 * example accept value, key validation, made keys that validate, and
 * which 101 heads count as a real switch to WebSocket.
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

#define F(n, v)                                                                                    \
    {                                                                                              \
        PT_SLICE(n), PT_SLICE(v), pt_token_lookup(n, sizeof(n) - 1)                                \
    }

static void test_switch_valid(void)
{
    pt_slice key = PT_SLICE("dGhlIHNhbXBsZSBub25jZQ==");
    struct pt_h1_header ok[] = {F("Connection", "Upgrade"), F("Upgrade", "WebSocket"),
                                F("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")};
    CHECK(pt_ws_switch_valid(ok, 3, key));
    struct pt_h1_header listed[] = {F("upgrade", "foo/2, websocket"),
                                    F("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")};
    CHECK(pt_ws_switch_valid(listed, 2, key));
    CHECK(!pt_ws_switch_valid(ok + 1, 2, PT_SLICE("AAAAAAAAAAAAAAAAAAAAAA=="))); /* other key */
    CHECK(!pt_ws_switch_valid(ok, 2, key));                                      /* no accept */
    struct pt_h1_header no_upgrade[] = {F("Connection", "Upgrade"),
                                        F("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")};
    CHECK(!pt_ws_switch_valid(no_upgrade, 2, key));
    struct pt_h1_header h2c[] = {F("Upgrade", "h2c"),
                                 F("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")};
    CHECK(!pt_ws_switch_valid(h2c, 2, key));
    struct pt_h1_header prefix[] = {F("Upgrade", "websocketx"),
                                    F("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")};
    CHECK(!pt_ws_switch_valid(prefix, 2, key));
    /* Two Accept fields, the right one and another: refused (a proxy
     * must not pick one). */
    struct pt_h1_header twice[] = {F("Upgrade", "websocket"),
                                   F("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
                                   F("Sec-WebSocket-Accept", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=")};
    CHECK(!pt_ws_switch_valid(twice, 3, key));
    struct pt_h1_header truncated[] = {F("Upgrade", "websocket"),
                                       F("Sec-WebSocket-Accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xO")};
    CHECK(!pt_ws_switch_valid(truncated, 2, key));
}

int main(void)
{
    test_accept_rfc_example();
    test_key_valid();
    test_made_keys_validate();
    test_switch_valid();
    return unit_report("websocket");
}
