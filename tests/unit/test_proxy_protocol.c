/*
 * test_proxy_protocol.c — the PROXY protocol header parser (v1 text, v2
 * binary) and the address ranges of `proxy_protocol_from`: valid headers
 * give their addresses, every prefix of a valid header is incomplete (never
 * an error, never complete early), and broken ones fail as soon as a byte
 * rules them out.
 */
#include "core/cidr.h"
#include "core/common.h"
#include "http/proxy_protocol.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>

static const char sig[12] = "\r\n\r\n\0\r\nQUIT\n";

/* The text of an address and port, "1.2.3.4:56" or "[::1]:56". */
static const char *show(const struct sockaddr_storage *ss)
{
    static char out[80];
    char a[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
        snprintf(out, sizeof(out), "%s:%u", a, ntohs(s->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
        snprintf(out, sizeof(out), "[%s]:%u", a, ntohs(s->sin6_port));
    } else {
        snprintf(out, sizeof(out), "family %d", ss->ss_family);
    }
    return out;
}

/* Every strict prefix of a valid header is incomplete. */
static void check_prefixes(int line, const char *buf, size_t len)
{
    struct pt_pp_header h;
    for (size_t i = 0; i < len; i++) {
        int r = pt_pp_parse(buf, i, &h);
        CHECK_MSG(r == PT_PP_INCOMPLETE, "line %d: prefix of %zu bytes gave %d", line, i, r);
    }
}

/* A complete header of `len` bytes (and bytes after it left alone). */
static void expect_ok(int line, const char *buf, size_t len, bool local, const char *src,
                      const char *dst)
{
    struct pt_pp_header h;
    check_prefixes(line, buf, len);
    char *more = malloc(len + 16);
    memcpy(more, buf, len);
    memcpy(more + len, "GET / HTTP/1.1\r\n", 16);
    for (int pass = 0; pass < 2; pass++) {
        memset(&h, 0xaa, sizeof(h));
        int r = pt_pp_parse(more, len + (pass ? 16 : 0), &h);
        CHECK_MSG(r == (int)len, "line %d: got %d, want %zu", line, r, len);
        if (r != (int)len)
            continue;
        CHECK_MSG(h.local == local, "line %d: local %d", line, h.local);
        if (!local) {
            CHECK_MSG(strcmp(show(&h.src), src) == 0, "line %d: src %s", line, show(&h.src));
            CHECK_MSG(strcmp(show(&h.dst), dst) == 0, "line %d: dst %s", line, show(&h.dst));
        }
    }
    free(more);
}

static void expect_error(int line, const char *buf, size_t len)
{
    struct pt_pp_header h;
    int r = pt_pp_parse(buf, len, &h);
    CHECK_MSG(r == PT_PP_ERROR, "line %d: got %d, want an error", line, r);
}

#define OK1(s, src, dst) expect_ok(__LINE__, s, strlen(s), false, src, dst)
#define ERR1(s) expect_error(__LINE__, s, strlen(s))

static void test_v1(void)
{
    OK1("PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", "192.0.2.1:56324", "198.51.100.2:443");
    OK1("PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", "0.0.0.0:0", "255.255.255.255:65535");
    OK1("PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n", "[2001:db8::1]:1", "[2001:db8::2]:2");
    OK1("PROXY TCP6 ::ffff:10.1.2.3 ::1 80 8080\r\n", "[::ffff:10.1.2.3]:80", "[::1]:8080");
    expect_ok(__LINE__, "PROXY UNKNOWN\r\n", 15, true, NULL, NULL);
    const char *unk = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
    expect_ok(__LINE__, unk, strlen(unk), true, NULL, NULL);
    /* The longest TCP6 line (104 bytes; UNKNOWN lines reach 107, below). */
    const char *longest = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    CHECK_EQ_INT(strlen(longest), 104);
    OK1(longest, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
        "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");

    /* Garbage and near misses, failing at once. */
    ERR1("GET / HTTP/1.1\r\n");
    ERR1("G");
    ERR1("proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    ERR1("PROXY\r\n");
    ERR1("PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n");
    ERR1("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n");
    ERR1("PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n");
    ERR1("PROXY TCP4 ::1 ::1 1 2\r\n");
    ERR1("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n");
    ERR1("PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n");
    ERR1("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1 \r\n");
    ERR1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x01\r\n");
    ERR1("PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n");
    ERR1("PROXY UNKNOWNX\r\n");
    /* No CRLF within 107 bytes: overlong, whatever follows. */
    char over[200];
    memset(over, 'a', sizeof(over));
    memcpy(over, "PROXY UNKNOWN ", 14);
    struct pt_pp_header h;
    CHECK_EQ_INT(pt_pp_parse(over, PT_PP_V1_MAX - 2, &h), PT_PP_INCOMPLETE);
    CHECK_EQ_INT(pt_pp_parse(over, PT_PP_V1_MAX - 1, &h), PT_PP_ERROR); /* no room for CRLF */
    CHECK_EQ_INT(pt_pp_parse(over, sizeof(over), &h), PT_PP_ERROR);
    memcpy(over + PT_PP_V1_MAX - 1, "\r\n", 2); /* CRLF at 108 bytes: one too many */
    CHECK_EQ_INT(pt_pp_parse(over, PT_PP_V1_MAX + 1, &h), PT_PP_ERROR);
    memcpy(over + PT_PP_V1_MAX - 2, "\r\n", 2); /* at 107 bytes: fine */
    CHECK_EQ_INT(pt_pp_parse(over, PT_PP_V1_MAX, &h), PT_PP_V1_MAX);
    CHECK(h.local);
}

/* A v2 header: signature, version/command, family, length, then body. */
static size_t v2(char *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t n)
{
    memcpy(out, sig, 12);
    out[12] = (char)ver_cmd;
    out[13] = (char)fam;
    out[14] = (char)(n >> 8);
    out[15] = (char)(n & 0xff);
    memcpy(out + 16, body, n);
    return 16 + n;
}

static const uint8_t addr4[12] = {192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb};

static void test_v2_valid(void)
{
    char b[600];
    size_t n = v2(b, 0x21, 0x11, addr4, sizeof(addr4));
    expect_ok(__LINE__, b, n, false, "192.0.2.1:56324", "198.51.100.2:443");

    uint8_t a6[36] = {0x20, 0x01, 0x0d,     0xb8, [15] = 1, 0x20, 0x01,
                      0x0d, 0xb8, [31] = 2, 0x00, 0x50,     0x1f, 0x90};
    n = v2(b, 0x21, 0x21, a6, sizeof(a6));
    expect_ok(__LINE__, b, n, false, "[2001:db8::1]:80", "[2001:db8::2]:8080");

    /* With TLVs after the addresses: ALPN "h2", an AWS VPC endpoint id, a
     * NOOP of length 0. */
    uint8_t tl[12 + 5 + 3 + 25 + 3];
    memcpy(tl, addr4, 12);
    size_t k = 12;
    memcpy(tl + k, "\x01\x00\x02h2", 5), k += 5;
    memcpy(tl + k, "\xea\x00\x16\x01vpce-08d2bf15fac5001c9", 25), k += 25;
    memcpy(tl + k, "\x04\x00\x00", 3), k += 3;
    n = v2(b, 0x21, 0x11, tl, k);
    expect_ok(__LINE__, b, n, false, "192.0.2.1:56324", "198.51.100.2:443");

    /* LOCAL (a balancer's health check): no address, whatever the family
     * byte and the block say. */
    n = v2(b, 0x20, 0x00, "", 0);
    expect_ok(__LINE__, b, n, true, NULL, NULL);
    n = v2(b, 0x20, 0x11, addr4, sizeof(addr4));
    expect_ok(__LINE__, b, n, true, NULL, NULL);
    n = v2(b, 0x20, 0x77, "\xff", 1);
    expect_ok(__LINE__, b, n, true, NULL, NULL);
    /* PROXY with UNSPEC, or a UNIX socket: the socket's peer stands. */
    n = v2(b, 0x21, 0x00, "", 0);
    expect_ok(__LINE__, b, n, true, NULL, NULL);
    uint8_t paths[216] = {'/', 'a'};
    n = v2(b, 0x21, 0x31, paths, sizeof(paths));
    expect_ok(__LINE__, b, n, true, NULL, NULL);
}

static void test_v2_invalid(void)
{
    char b[600];
    size_t n;
    /* The signature, wrong at any byte, fails at that byte. */
    for (size_t i = 0; i < 12; i++) {
        n = v2(b, 0x21, 0x11, addr4, sizeof(addr4));
        b[i] ^= 0x20;
        expect_error(__LINE__, b, i + 1);
        expect_error(__LINE__, b, n);
    }
    /* Version: only 2. */
    for (int ver = 0; ver < 16; ver++) {
        if (ver == 2)
            continue;
        n = v2(b, (uint8_t)(ver << 4 | 1), 0x11, addr4, sizeof(addr4));
        expect_error(__LINE__, b, 13);
        expect_error(__LINE__, b, n);
    }
    /* Command: LOCAL (0) or PROXY (1) only. */
    for (int cmd = 2; cmd < 16; cmd++) {
        n = v2(b, (uint8_t)(0x20 | cmd), 0x11, addr4, sizeof(addr4));
        expect_error(__LINE__, b, 13);
        expect_error(__LINE__, b, n);
    }
    /* Family under PROXY: UDP and unknown values refused at byte 14. */
    const uint8_t bad_fam[] = {0x01, 0x10, 0x12, 0x13, 0x22, 0x32, 0x41, 0xff};
    for (size_t i = 0; i < sizeof(bad_fam); i++) {
        n = v2(b, 0x21, bad_fam[i], addr4, sizeof(addr4));
        expect_error(__LINE__, b, 14);
        expect_error(__LINE__, b, n);
    }
    /* Lengths that lie: shorter than the family's addresses. */
    n = v2(b, 0x21, 0x11, addr4, 11);
    expect_error(__LINE__, b, 16);
    expect_error(__LINE__, b, n);
    n = v2(b, 0x21, 0x21, addr4, 12);
    expect_error(__LINE__, b, n);
    n = v2(b, 0x21, 0x31, addr4, 12);
    expect_error(__LINE__, b, n);
    /* ... or a TLV that runs past the end, or a stray byte or two. */
    uint8_t tl[12 + 5];
    memcpy(tl, addr4, 12);
    memcpy(tl + 12, "\x01\x00\x03h2", 5);
    n = v2(b, 0x21, 0x11, tl, sizeof(tl));
    expect_error(__LINE__, b, n);
    n = v2(b, 0x21, 0x11, tl, 13);
    expect_error(__LINE__, b, n);
    n = v2(b, 0x21, 0x11, tl, 14);
    expect_error(__LINE__, b, n);
    /* Longer than what came: incomplete, however much else follows it
     * is not the parser's to judge (the header timer is). */
    n = v2(b, 0x21, 0x11, addr4, sizeof(addr4));
    b[14] = 0x01; /* claims 268 bytes */
    struct pt_pp_header h;
    CHECK_EQ_INT(pt_pp_parse(b, n, &h), PT_PP_INCOMPLETE);
    /* The largest length: complete once all of it is here. */
    size_t big = 16 + 65535;
    char *m = calloc(1, big);
    v2(m, 0x21, 0x11, addr4, sizeof(addr4));
    m[14] = (char)0xff;
    m[15] = (char)0xff;
    /* The rest is one TLV of 65535 - 12 - 3 bytes. */
    m[28] = 0x04;
    m[29] = (char)((65535 - 15) >> 8);
    m[30] = (char)((65535 - 15) & 0xff);
    CHECK_EQ_INT(pt_pp_parse(m, big - 1, &h), PT_PP_INCOMPLETE);
    CHECK_EQ_INT(pt_pp_parse(m, big, &h), (int)big);
    free(m);
}

/* Random bytes: never a crash, never a count past the input; any byte but
 * 'P' and CR first fails at once. */
static void test_garbage(void)
{
    uint64_t seed = 0x9e3779b97f4a7c15ull;
    char b[256];
    struct pt_pp_header h;
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(seed % sizeof(b));
        for (size_t i = 0; i < n; i++) {
            seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
            b[i] = (char)seed;
        }
        if (round % 3 == 0 && n >= 12)
            memcpy(b, sig, 12);
        else if (round % 3 == 1 && n >= 6)
            memcpy(b, "PROXY ", 6);
        int r = pt_pp_parse(b, n, &h);
        CHECK(r == PT_PP_ERROR || r == PT_PP_INCOMPLETE || (r > 0 && (size_t)r <= n));
        if (n && b[0] != 'P' && b[0] != '\r')
            CHECK(r == PT_PP_ERROR);
    }
    CHECK_EQ_INT(pt_pp_parse("", 0, &h), PT_PP_INCOMPLETE);
    CHECK_EQ_INT(pt_pp_parse("\x16\x03\x01", 3, &h), PT_PP_ERROR); /* a TLS hello */
    CHECK_EQ_INT(pt_pp_parse("PRI * HTTP/2.0", 14, &h), PT_PP_ERROR);
}

static bool in(const char *cidr, const char *addr)
{
    struct pt_cidr c;
    const char *why;
    if (pt_cidr_parse(cidr, &c, &why) < 0)
        return false;
    struct sockaddr_storage ss = {0};
    if (inet_pton(AF_INET, addr, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
        ss.ss_family = AF_INET;
    } else {
        ss.ss_family = AF_INET6;
        inet_pton(AF_INET6, addr, &((struct sockaddr_in6 *)&ss)->sin6_addr);
    }
    struct pt_ip ip;
    return pt_ip_from_sockaddr(&ss, &ip) && pt_cidr_has(&c, &ip);
}

static void test_cidr(void)
{
    CHECK(in("10.0.0.0/8", "10.255.1.2"));
    CHECK(!in("10.0.0.0/8", "11.0.0.1"));
    CHECK(!in("10.0.0.0/8", "127.0.0.1"));
    CHECK(in("127.0.0.1", "127.0.0.1"));
    CHECK(!in("127.0.0.1", "127.0.0.2"));
    CHECK(in("0.0.0.0/0", "203.0.113.9"));
    CHECK(in("192.168.0.0/23", "192.168.1.200"));
    CHECK(!in("192.168.0.0/23", "192.168.2.1"));
    CHECK(in("10.0.0.0/8", "::ffff:10.1.2.3")); /* v4-mapped */
    CHECK(!in("10.0.0.0/8", "2001:db8::1"));
    CHECK(in("2001:db8::/32", "2001:db8:ffff::1"));
    CHECK(!in("2001:db8::/32", "2001:db9::1"));
    CHECK(!in("2001:db8::/32", "10.0.0.1"));
    CHECK(in("::/0", "::1"));
    CHECK(in("fe80::/10", "febf::1"));
    CHECK(!in("fe80::/10", "fec0::1"));
    struct pt_cidr c;
    const char *why = NULL;
    const char *bad[] = {"",           "10.0.0.0/",  "10.0.0.0/33", "10.0.0.0/08",
                         "10.0.0.1/8", "10.0.0.0/x", "10.0.0/8",    "host",
                         "::/129",     "::1/64",     "10.0.0.0/-1", "10.0.0.0/8/8"};
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++)
        CHECK_MSG(pt_cidr_parse(bad[i], &c, &why) < 0 && why, "`%s` parsed", bad[i]);
}

int main(void)
{
    test_v1();
    test_v2_valid();
    test_v2_invalid();
    test_garbage();
    test_cidr();
    return unit_report("proxy_protocol");
}
