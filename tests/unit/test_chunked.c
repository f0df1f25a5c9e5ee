/*
 * test_chunked.c — the chunked transfer coding scanner, in-place decoder
 * and trailer stripper: valid bodies (with extensions, trailers and a
 * following pipelined message) decode to the right payload, and strip to
 * the same framing without trailer fields, however the input is split;
 * malformed framing is refused however it is split, in every mode.
 */
#include "http/h1.h"
#include "unit.h"

#include <stdlib.h>

#define S(lit) lit, sizeof(lit) - 1

struct good_case {
    const char *what;
    const char *body; /* chunked body, possibly followed by other bytes */
    size_t len;
    size_t body_len;     /* bytes that belong to the chunked body */
    const char *payload; /* decoded payload */
    size_t payload_len;
    const char *stripped; /* the body without trailer fields; NULL: none to drop */
    size_t stripped_len;
};

static const struct good_case good[] = {
    {"empty body", S("0\r\n\r\n"), 5, S(""), NULL, 0},
    {"one chunk", S("5\r\nhello\r\n0\r\n\r\n"), 15, S("hello"), NULL, 0},
    {"two chunks", S("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), 26, S("hello world"), NULL, 0},
    {"upper hex", S("A\r\n0123456789\r\n0\r\n\r\n"), 20, S("0123456789"), NULL, 0},
    {"lower hex", S("a\r\n0123456789\r\n0\r\n\r\n"), 20, S("0123456789"), NULL, 0},
    {"leading zeros", S("0005\r\nhello\r\n000\r\n\r\n"), 20, S("hello"), NULL, 0},
    {"16 digits", S("0000000000000001\r\nx\r\n0\r\n\r\n"), 26, S("x"), NULL, 0},
    {"extension", S("5;name=value\r\nhello\r\n0\r\n\r\n"), 26, S("hello"), NULL, 0},
    {"bare extension", S("5;flag\r\nhello\r\n0;last\r\n\r\n"), 25, S("hello"), NULL, 0},
    {"extension with BWS", S("5 ; a = b ;c\r\nhello\r\n0\r\n\r\n"), 26, S("hello"), NULL, 0},
    {"quoted extension", S("5;a=\"x; \\\"y\\\"\"\r\nhello\r\n0\r\n\r\n"), 28, S("hello"), NULL, 0},
    {"two extensions", S("3;a=1;b=\"\"\r\nabc\r\n0\r\n\r\n"), 22, S("abc"), NULL, 0},
    {"trailers", S("3\r\nabc\r\n0\r\nX-Sum: 1234\r\nX-Empty:\r\n\r\n"), 36, S("abc"),
     S("3\r\nabc\r\n0\r\n\r\n")},
    {"trailer after extension", S("1;e=\"q\"\r\nA\r\n0;l\r\nT:v\r\n\r\nNEXT"), 24, S("A"),
     S("1;e=\"q\"\r\nA\r\n0;l\r\n\r\n")},
    {"CRLF inside data", S("4\r\n\r\n\r\n\r\n0\r\n\r\n"), 14, S("\r\n\r\n"), NULL, 0},
    {"binary data", S("3\r\n\0\xff\n\r\n0\r\n\r\n"), 13, S("\0\xff\n"), NULL, 0},
    {"pipelined after", S("1\r\nA\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), 11, S("A"), NULL, 0},
};

/* Feeds `len` bytes in pieces cut at `cuts` (ascending offsets), the way a
 * proxy would as reads arrive. Decodes or strips per `mode`, concatenating
 * what is kept into `out`. Returns total consumed, or -1. */
enum feed_mode { SCAN, DECODE, STRIP };

static long feed(const char *in, size_t len, const size_t *cuts, size_t ncuts, enum feed_mode mode,
                 char *out, size_t *out_len, bool *done)
{
    struct pt_chunked c;
    pt_chunked_init(&c);
    size_t pos = 0, total = 0;
    *out_len = 0;
    *done = false;
    for (size_t i = 0; i <= ncuts && !*done; i++) {
        size_t stop = i < ncuts ? cuts[i] : len;
        size_t n = stop - pos;
        char *piece = malloc(n ? n : 1); /* exact size: overreads show under ASan */
        memcpy(piece, in + pos, n);
        ssize_t r;
        if (mode != SCAN) {
            size_t w = 0;
            r = mode == DECODE ? pt_chunked_decode(&c, piece, n, &w, done)
                               : pt_chunked_strip(&c, piece, n, &w, done);
            if (r >= 0) {
                CHECK(w <= (size_t)r);
                memcpy(out + *out_len, piece, w);
                *out_len += w;
            }
        } else {
            r = pt_chunked_scan(&c, piece, n, done);
        }
        free(piece);
        if (r < 0)
            return -1;
        CHECK((size_t)r <= n);
        /* Fewer bytes than offered only when the body ended. */
        CHECK((size_t)r == n || *done);
        total += (size_t)r;
        pos = stop;
    }
    return (long)total;
}

static void check_good(const struct good_case *g, const size_t *cuts, size_t ncuts, const char *how)
{
    static char out[256];
    size_t out_len;
    bool done;
    size_t plen = g->payload_len;
    long r = feed(g->body, g->len, cuts, ncuts, SCAN, out, &out_len, &done);
    CHECK_MSG(r == (long)g->body_len && done, "%s scan %s: %ld done %d", g->what, how, r, done);
    r = feed(g->body, g->len, cuts, ncuts, DECODE, out, &out_len, &done);
    CHECK_MSG(r == (long)g->body_len && done, "%s decode %s: %ld", g->what, how, r);
    CHECK_MSG(out_len == plen && memcmp(out, g->payload, plen) == 0, "%s decode %s payload",
              g->what, how);
    const char *want = g->stripped ? g->stripped : g->body;
    size_t want_len = g->stripped ? g->stripped_len : g->body_len;
    r = feed(g->body, g->len, cuts, ncuts, STRIP, out, &out_len, &done);
    CHECK_MSG(r == (long)g->body_len && done, "%s strip %s: %ld", g->what, how, r);
    CHECK_MSG(out_len == want_len && memcmp(out, want, want_len) == 0, "%s strip %s output",
              g->what, how);
}

static void test_good(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(good); i++) {
        const struct good_case *g = &good[i];
        check_good(g, NULL, 0, "whole");
        /* Split once at every offset. */
        for (size_t k = 0; k <= g->len; k++)
            check_good(g, &k, 1, "split");
        /* Split twice at every pair of offsets. */
        for (size_t a = 0; a <= g->len; a++)
            for (size_t b = a; b <= g->len; b++)
                check_good(g, (size_t[]){a, b}, 2, "split twice");
        /* One byte at a time. */
        size_t cuts[64];
        for (size_t k = 0; k < g->len; k++)
            cuts[k] = k + 1;
        check_good(g, cuts, g->len, "bytewise");
    }
}

/* Malformed bodies: refused whole, split at every offset and bytewise. An
 * incomplete prefix of a bad body may only wait, never succeed. */
struct bad_case {
    const char *what;
    const char *body;
    size_t len;
};

static const struct bad_case bad[] = {
    {"0x prefix", S("0x5\r\nhello\r\n0\r\n\r\n")},
    {"plus sign", S("+5\r\nhello\r\n0\r\n\r\n")},
    {"minus sign", S("-5\r\nhello\r\n0\r\n\r\n")},
    {"leading space", S(" 5\r\nhello\r\n0\r\n\r\n")},
    {"trailing space", S("5 \r\nhello\r\n0\r\n\r\n")},
    {"trailing tab", S("5\t\r\nhello\r\n0\r\n\r\n")},
    {"empty size", S("\r\nhello\r\n0\r\n\r\n")},
    {"17 digits", S("00000000000000005\r\nhello\r\n0\r\n\r\n")},
    {"overflow 2^64", S("10000000000000000\r\n")},
    {"over 2^62", S("4000000000000001\r\n")},
    {"non-hex digit", S("5g\r\nhello\r\n0\r\n\r\n")},
    {"bare LF after size", S("5\nhello\r\n0\r\n\r\n")},
    {"bare CR after size", S("5\rhello\r\n0\r\n\r\n")},
    {"data longer than size", S("5\r\nhello!\r\n0\r\n\r\n")},
    {"data shorter than size", S("5\r\nhell\r\n0\r\n\r\n")},
    {"bare LF after data", S("5\r\nhello\n0\r\n\r\n")},
    {"no CRLF after data", S("5\r\nhello0\r\n\r\n")},
    {"bare LF at the end", S("0\r\n\n")},
    {"bare LF in last-chunk", S("0\n\r\n")},
    {"empty extension", S("5;\r\nhello\r\n0\r\n\r\n")},
    {"extension name not token", S("5;a@b\r\nhello\r\n0\r\n\r\n")},
    {"extension empty value", S("5;a=\r\nhello\r\n0\r\n\r\n")},
    {"extension BWS before CR", S("5;a \r\nhello\r\n0\r\n\r\n")},
    {"extension value BWS before CR", S("5;a=b \r\nhello\r\n0\r\n\r\n")},
    {"unterminated quote", S("5;a=\"b\r\nhello\r\n0\r\n\r\n")},
    {"CTL in quoted value", S("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n")},
    {"text after quoted value", S("5;a=\"b\"c\r\nhello\r\n0\r\n\r\n")},
    {"extension without semicolon", S("5 a\r\nhello\r\n0\r\n\r\n")},
    {"trailer obs-fold", S("0\r\nX: a\r\n b\r\n\r\n")},
    {"trailer space before colon", S("0\r\nX : a\r\n\r\n")},
    {"trailer empty name", S("0\r\n: a\r\n\r\n")},
    {"trailer no colon", S("0\r\nX\r\n\r\n")},
    {"trailer NUL", S("0\r\nX: a\0b\r\n\r\n")},
    {"trailer bare LF", S("0\r\nX: a\n\r\n")},
    {"trailer bare CR", S("0\r\nX: a\rb\r\n\r\n")},
    {"final CR without LF", S("0\r\n\rX")},
};

static void check_bad(const struct bad_case *b, const size_t *cuts, size_t ncuts, const char *how)
{
    static char out[256];
    size_t out_len;
    bool done;
    CHECK_MSG(feed(b->body, b->len, cuts, ncuts, SCAN, out, &out_len, &done) == -1, "%s scan %s",
              b->what, how);
    CHECK_MSG(feed(b->body, b->len, cuts, ncuts, DECODE, out, &out_len, &done) == -1,
              "%s decode %s", b->what, how);
    CHECK_MSG(feed(b->body, b->len, cuts, ncuts, STRIP, out, &out_len, &done) == -1, "%s strip %s",
              b->what, how);
}

static void test_bad(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        const struct bad_case *b = &bad[i];
        check_bad(b, NULL, 0, "whole");
        for (size_t k = 0; k <= b->len; k++)
            check_bad(b, &k, 1, "split");
        size_t cuts[64];
        for (size_t k = 0; k < b->len; k++)
            cuts[k] = k + 1;
        check_bad(b, cuts, b->len, "bytewise");
        /* A prefix never completes successfully. */
        for (size_t k = 0; k < b->len; k++) {
            struct pt_chunked c;
            bool done;
            pt_chunked_init(&c);
            ssize_t r = pt_chunked_scan(&c, b->body, k, &done);
            CHECK_MSG(r == -1 || !done, "%s prefix %zu", b->what, k);
        }
    }
    /* An error sticks: later calls keep failing. */
    struct pt_chunked c;
    bool done;
    pt_chunked_init(&c);
    CHECK_EQ_INT(pt_chunked_scan(&c, "x", 1, &done), -1);
    CHECK_EQ_INT(pt_chunked_scan(&c, "0\r\n\r\n", 5, &done), -1);
    CHECK(!done);
    printf("chunked: %zu valid and %zu malformed bodies checked\n", PT_ARRAY_LEN(good),
           PT_ARRAY_LEN(bad));
}

static void test_limits_and_large(void)
{
    struct pt_chunked c;
    bool done;

    /* The largest allowed size (2^62) is accepted and counted down. */
    pt_chunked_init(&c);
    CHECK_EQ_INT(pt_chunked_scan(&c, S("4000000000000000\r\n"), &done), 18);
    CHECK(!done && c.remaining == (1ull << 62));
    char data[4096];
    memset(data, 'z', sizeof data);
    CHECK_EQ_INT(pt_chunked_scan(&c, data, sizeof data, &done), (ssize_t)sizeof data);
    CHECK(c.remaining == (1ull << 62) - sizeof data);

    /* A size line full of extensions is bounded. */
    static char line[8192];
    size_t n = 0;
    line[n++] = '1';
    while (n < sizeof line - 8) {
        memcpy(line + n, ";a=b", 4);
        n += 4;
    }
    pt_chunked_init(&c);
    CHECK_EQ_INT(pt_chunked_scan(&c, line, n, &done), -1);

    /* So is the trailer section. */
    static char trailers[32768];
    n = 0;
    memcpy(trailers, "0\r\n", 3);
    n = 3;
    while (n < sizeof trailers - 16) {
        memcpy(trailers + n, "X-T: abcdefghi\r\n", 16);
        n += 16;
    }
    pt_chunked_init(&c);
    CHECK_EQ_INT(pt_chunked_scan(&c, trailers, n, &done), -1);

    /* A realistic body: 64 chunks of 1000 bytes, decoded in place. */
    static char body[80000], expect[64000];
    n = 0;
    for (int i = 0; i < 64; i++) {
        n += pt_chunked_size_line(body + n, 1000);
        for (int j = 0; j < 1000; j++)
            body[n + (size_t)j] = expect[i * 1000 + j] = (char)('a' + (i + j) % 26);
        n += 1000;
        memcpy(body + n, "\r\n", 2);
        n += 2;
    }
    n += pt_chunked_size_line(body + n, 0);
    memcpy(body + n, "\r\n", 2);
    n += 2;
    size_t out_len;
    pt_chunked_init(&c);
    CHECK_EQ_INT(pt_chunked_decode(&c, body, n, &out_len, &done), (ssize_t)n);
    CHECK(done && out_len == sizeof expect && memcmp(body, expect, sizeof expect) == 0);
    /* After the end, nothing more is consumed. */
    CHECK_EQ_INT(pt_chunked_scan(&c, "5\r\n", 3, &done), 0);
    CHECK(done);
}

static void test_size_line(void)
{
    char out[20];
    CHECK_EQ_INT(pt_chunked_size_line(out, 0), 3);
    CHECK(memcmp(out, "0\r\n", 3) == 0);
    CHECK_EQ_INT(pt_chunked_size_line(out, 255), 4);
    CHECK(memcmp(out, "ff\r\n", 4) == 0);
    CHECK_EQ_INT(pt_chunked_size_line(out, 4096), 6);
    CHECK(memcmp(out, "1000\r\n", 6) == 0);
    CHECK_EQ_INT(pt_chunked_size_line(out, SIZE_MAX), 18);
    CHECK(memcmp(out, "ffffffffffffffff\r\n", 18) == 0);
    /* What we write, we read back. */
    for (size_t n = 1; n < 70000; n = n * 3 + 1) {
        struct pt_chunked c;
        bool done;
        pt_chunked_init(&c);
        size_t k = pt_chunked_size_line(out, n);
        CHECK_EQ_INT(pt_chunked_scan(&c, out, k, &done), (ssize_t)k);
        CHECK_EQ_INT(c.remaining, n);
    }
}

int main(void)
{
    test_good();
    test_bad();
    test_limits_and_large();
    test_size_line();
    return unit_report("chunked");
}
