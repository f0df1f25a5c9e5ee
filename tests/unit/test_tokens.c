/*
 * test_tokens.c — the interned header-name and method tables: every token
 * round-trips in any case, near-misses stay unknown, flags are right.
 */
#include "http/tokens.h"
#include "unit.h"

#include <ctype.h>

/* Writes `name` with letters in the case pattern chosen by `mode`:
 * 0 lower, 1 upper, 2 alternating, 3 alternating the other way. */
static void recase(char *out, const pt_slice name, int mode)
{
    for (size_t i = 0; i < name.len; i++) {
        int c = (unsigned char)name.p[i];
        bool up = mode == 1 || (mode == 2 && i % 2 == 0) || (mode == 3 && i % 2 == 1);
        out[i] = (char)(up ? toupper(c) : tolower(c));
    }
}

static void test_round_trip(void)
{
    for (int id = 1; id < PT_TOK__COUNT; id++) {
        pt_slice name = pt_token_names[id];
        char buf[64];
        CHECK(name.len > 0 && name.len < sizeof buf);
        for (int mode = 0; mode < 4; mode++) {
            recase(buf, name, mode);
            CHECK_MSG(pt_token_lookup(buf, name.len) == id, "%.*s mode %d", (int)name.len, name.p,
                      mode);
        }
        /* A prefix or an extension of a known name is not that name. */
        CHECK(pt_token_lookup(name.p, name.len - 1) != id);
        memcpy(buf, name.p, name.len);
        buf[name.len] = 'x';
        CHECK(pt_token_lookup(buf, name.len + 1) != id);
        /* The canonical names are lowercase. */
        for (size_t i = 0; i < name.len; i++)
            CHECK(!isupper((unsigned char)name.p[i]));
    }
    CHECK_EQ_INT(pt_token_lookup("Host", 4), PT_TOK_HOST);
    CHECK_EQ_INT(pt_token_lookup("CONTENT-LENGTH", 14), PT_TOK_CONTENT_LENGTH);
    CHECK_EQ_INT(pt_token_lookup("Transfer-Encoding", 17), PT_TOK_TRANSFER_ENCODING);
    CHECK_EQ_INT(pt_token_lookup("te", 2), PT_TOK_TE);
    CHECK_EQ_INT(pt_token_lookup("HTTP2-Settings", 14), PT_TOK_HTTP2_SETTINGS);
    CHECK_EQ_INT(pt_token_lookup("Proxy-Authorization", 19), PT_TOK_PROXY_AUTHORIZATION);
}

static void test_unknown(void)
{
    static const char *const unknown[] = {
        "x-custom",  "hos",       "hostt", "content_length", "content-lengthx", "transfer-encodin",
        "Connectio", "keepalive", "x",     "x-forwarded",    "user-agent2",     "tee",
        "accept-",
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(unknown); i++)
        CHECK_MSG(pt_token_lookup(unknown[i], strlen(unknown[i])) == PT_TOK_UNKNOWN, "%s",
                  unknown[i]);
    CHECK_EQ_INT(pt_token_lookup("", 0), PT_TOK_UNKNOWN);
    /* Bytes that equal a name's byte only after "| 0x20" must not match:
     * CR|0x20 is '-', '@'|0x20 is '`', 0xC8|0x20 is 0xE8. */
    CHECK_EQ_INT(pt_token_lookup("content\rlength", 14), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("CONTENT\rLENGTH", 14), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("keep\ralive", 10), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("te\r", 3), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("user\x0d"
                                 "agent",
                                 10),
                 PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("\xc8ost", 4), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("hos\xd4", 4), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("Host\0", 5), PT_TOK_UNKNOWN);
    CHECK_EQ_INT(pt_token_lookup("x-forwarded-for ", 16), PT_TOK_UNKNOWN);
}

static void test_flags(void)
{
    static const int hop[] = {
        PT_TOK_CONNECTION,
        PT_TOK_KEEP_ALIVE,
        PT_TOK_TRANSFER_ENCODING,
        PT_TOK_TE,
        PT_TOK_TRAILER,
        PT_TOK_UPGRADE,
        PT_TOK_PROXY_CONNECTION,
        PT_TOK_PROXY_AUTHENTICATE,
        PT_TOK_PROXY_AUTHORIZATION,
        PT_TOK_HTTP2_SETTINGS,
    };
    int nhop = 0;
    for (size_t i = 0; i < PT_ARRAY_LEN(hop); i++)
        CHECK_MSG(pt_token_flags[hop[i]] & PT_TF_HOP, "%s", pt_token_names[hop[i]].p);
    for (int id = 1; id < PT_TOK__COUNT; id++)
        nhop += (pt_token_flags[id] & PT_TF_HOP) != 0;
    CHECK_EQ_INT(nhop, (int)PT_ARRAY_LEN(hop));
    CHECK(!(pt_token_flags[PT_TOK_HOST] & PT_TF_HOP));
    CHECK(pt_token_flags[PT_TOK_HOST] & PT_TF_SINGLE);
    CHECK(!(pt_token_flags[PT_TOK_CONTENT_LENGTH] & PT_TF_HOP));
    CHECK(!(pt_token_flags[PT_TOK_AUTHORIZATION] & PT_TF_HOP));
    CHECK(!(pt_token_flags[PT_TOK_COOKIE] & PT_TF_HOP));
    CHECK_EQ_INT(pt_token_flags[PT_TOK_UNKNOWN], 0);
    CHECK_EQ_INT(pt_token_names[PT_TOK_UNKNOWN].len, 0);
}

static void test_methods(void)
{
    for (int m = 1; m < PT_METHOD__COUNT; m++) {
        pt_slice name = pt_method_names[m];
        CHECK_EQ_INT(pt_method_lookup(name.p, name.len), m);
        char lower[16];
        for (size_t i = 0; i < name.len; i++)
            lower[i] = (char)tolower((unsigned char)name.p[i]);
        /* Methods are case-sensitive. */
        CHECK_EQ_INT(pt_method_lookup(lower, name.len), PT_METHOD_OTHER);
        CHECK(pt_method_lookup(name.p, name.len - 1) != m);
    }
    CHECK(pt_slice_eq_cstr(pt_method_names[PT_METHOD_GET], "GET"));
    CHECK(pt_slice_eq_cstr(pt_method_names[PT_METHOD_OPTIONS], "OPTIONS"));
    CHECK_EQ_INT(pt_method_lookup("CONNECT", 7), PT_METHOD_CONNECT);
    CHECK_EQ_INT(pt_method_lookup("PURGE", 5), PT_METHOD_OTHER);
    CHECK_EQ_INT(pt_method_lookup("GETS", 4), PT_METHOD_OTHER);
    CHECK_EQ_INT(pt_method_lookup("", 0), PT_METHOD_OTHER);
}

int main(void)
{
    test_round_trip();
    test_unknown();
    test_flags();
    test_methods();
    return unit_report("tokens");
}
