/*
 * fuzz_h1.c — libFuzzer driver for the HTTP/1.1 parser, chunked codec and
 * path normaliser.
 *
 * Every input is parsed as a request, as a response, as a chunked body and
 * as a request path, and the properties the rest of the gateway relies on
 * are asserted:
 *   - every slice lies inside the bytes the head was parsed from;
 *   - the verdict on a buffer does not depend on how it was split, nor on
 *     the prev_len hint; a prefix never gets a different answer than the
 *     whole, once it has an answer;
 *   - errors carry a status the gateway can send;
 *   - chunked scan, decode and strip agree, whole or split;
 *   - path normalisation never grows a path and is stable.
 * Prefixes are parsed from exact-size heap copies so ASan sees overreads.
 */
#include "http/h1.h"
#include "http/path.h"

#include <stdlib.h>

#define MAXH 32

#define REQUIRE(cond)                                                                              \
    do {                                                                                           \
        if (!(cond))                                                                               \
            __builtin_trap();                                                                      \
    } while (0)

static struct pt_h1_header hdrs[MAXH];

static bool inside(pt_slice s, const char *base, size_t n)
{
    return s.p >= base && s.len <= n && s.p - base <= (ptrdiff_t)(n - s.len);
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static void check_headers(const struct pt_h1_header *h, size_t count, const char *base, size_t n,
                          const struct pt_h1_limits *lim)
{
    REQUIRE(count <= lim->max_headers);
    for (size_t i = 0; i < count; i++) {
        REQUIRE(inside(h[i].name, base, n) && h[i].name.len > 0);
        REQUIRE(inside(h[i].value, base, n));
        REQUIRE(!memchr(h[i].name.p, ':', h[i].name.len));
        REQUIRE(!memchr(h[i].value.p, '\r', h[i].value.len));
        REQUIRE(!memchr(h[i].value.p, '\n', h[i].value.len));
        REQUIRE(!memchr(h[i].value.p, '\0', h[i].value.len));
        if (h[i].value.len)
            REQUIRE(!is_ows(h[i].value.p[0]) && !is_ows(h[i].value.p[h[i].value.len - 1]));
        REQUIRE(h[i].token >= 0 && h[i].token < PT_TOK__COUNT);
        REQUIRE(h[i].token == pt_token_lookup(h[i].name.p, h[i].name.len));
    }
}

struct verdict {
    int rc, status;
};

static struct verdict parse_req(const uint8_t *data, size_t n, size_t prev,
                                const struct pt_h1_limits *lim)
{
    char *buf = malloc(n ? n : 1);
    memcpy(buf, data, n);
    struct pt_h1_request req;
    int rc = pt_h1_parse_request(buf, n, prev, &req, hdrs, lim);
    struct verdict v = {rc, 0};
    if (rc >= 0) {
        size_t hl = (size_t)rc;
        REQUIRE(hl > 0 && hl <= n && hl <= lim->max_header_bytes);
        REQUIRE(inside(req.method, buf, hl) && req.method.len > 0);
        REQUIRE(inside(req.target, buf, hl) && req.target.len > 0);
        REQUIRE(req.target.len <= lim->max_uri_bytes);
        REQUIRE(inside(req.path, buf, hl) || pt_slice_eq_cstr(req.path, "/"));
        REQUIRE(inside(req.query, buf, hl));
        REQUIRE(req.minor_version == 0 || req.minor_version == 1);
        REQUIRE(!req.host.p || inside(req.host, buf, hl));
        REQUIRE(req.minor_version == 0 || req.host.p);
        REQUIRE(!(req.framing.chunked && req.framing.content_length >= 0));
        REQUIRE(!req.framing.chunked || req.minor_version == 1);
        REQUIRE(req.headers == hdrs);
        check_headers(hdrs, req.num_headers, buf, hl, lim);
        REQUIRE(buf[hl - 1] == '\n' && buf[hl - 2] == '\r');
    } else if (rc == PT_H1_ERROR) {
        v.status = req.error_status;
        REQUIRE(v.status == 400 || v.status == 414 || v.status == 431 || v.status == 501 ||
                v.status == 505);
        REQUIRE(req.error_reason && req.error_reason[0]);
    } else {
        REQUIRE(rc == PT_H1_INCOMPLETE && n <= lim->max_header_bytes);
    }
    free(buf);
    return v;
}

static struct verdict parse_res(const uint8_t *data, size_t n, size_t prev,
                                const struct pt_h1_limits *lim)
{
    char *buf = malloc(n ? n : 1);
    memcpy(buf, data, n);
    struct pt_h1_response res;
    int rc = pt_h1_parse_response(buf, n, prev, &res, hdrs, lim);
    struct verdict v = {rc, 0};
    if (rc >= 0) {
        size_t hl = (size_t)rc;
        REQUIRE(hl > 0 && hl <= n && hl <= lim->max_header_bytes);
        REQUIRE(res.status >= 100 && res.status <= 999);
        REQUIRE(res.minor_version == 0 || res.minor_version == 1);
        REQUIRE(inside(res.reason, buf, hl));
        REQUIRE(!(res.framing.chunked && res.framing.content_length >= 0));
        check_headers(hdrs, res.num_headers, buf, hl, lim);
    } else if (rc == PT_H1_ERROR) {
        v.status = res.error_status;
        REQUIRE(v.status == 502 && res.error_reason);
    } else {
        REQUIRE(rc == PT_H1_INCOMPLETE && n <= lim->max_header_bytes);
    }
    free(buf);
    return v;
}

typedef struct verdict (*parse_fn)(const uint8_t *, size_t, size_t, const struct pt_h1_limits *);

/* Whole vs prefix k: same answer once the prefix has one, and the hint
 * never changes the answer. */
static void check_splits(parse_fn parse, const uint8_t *data, size_t size, size_t k,
                         const struct pt_h1_limits *lim)
{
    struct verdict whole = parse(data, size, 0, lim);
    struct verdict pre = parse(data, k, 0, lim);
    if (pre.rc == PT_H1_INCOMPLETE) {
        struct verdict hinted = parse(data, size, k, lim);
        REQUIRE(hinted.rc == whole.rc && hinted.status == whole.status);
    } else {
        REQUIRE(pre.rc == whole.rc && pre.status == whole.status);
    }
    /* A complete head is self-delimiting. */
    if (whole.rc > 0) {
        struct verdict exact = parse(data, (size_t)whole.rc, 0, lim);
        REQUIRE(exact.rc == whole.rc);
    }
}

struct chunk_result {
    ssize_t consumed; /* -1 on error */
    bool done;
    size_t out_len;
};

enum chunk_mode { SCAN, DECODE, STRIP };

/* Scans, decodes or strips data in two pieces cut at k. What decode and
 * strip keep goes to out. */
static struct chunk_result run_chunked(const uint8_t *data, size_t size, size_t k,
                                       enum chunk_mode mode, char *out)
{
    struct pt_chunked c;
    struct chunk_result res = {0, false, 0};
    pt_chunked_init(&c);
    size_t cut[2] = {k, size};
    size_t pos = 0;
    for (int i = 0; i < 2 && !res.done; i++) {
        size_t n = cut[i] - pos;
        char *piece = malloc(n ? n : 1);
        memcpy(piece, data + pos, n);
        ssize_t r;
        if (mode != SCAN) {
            size_t w = 0;
            r = mode == DECODE ? pt_chunked_decode(&c, piece, n, &w, &res.done)
                               : pt_chunked_strip(&c, piece, n, &w, &res.done);
            if (r >= 0) {
                REQUIRE(w <= (size_t)r);
                memcpy(out + res.out_len, piece, w);
                res.out_len += w;
            }
        } else {
            r = pt_chunked_scan(&c, piece, n, &res.done);
        }
        free(piece);
        if (r < 0) {
            res.consumed = -1;
            return res;
        }
        REQUIRE((size_t)r <= n && ((size_t)r == n || res.done));
        res.consumed += r;
        pos = cut[i];
    }
    return res;
}

static void check_chunked(const uint8_t *data, size_t size, size_t k)
{
    char *out_whole = malloc(size + 1), *out_split = malloc(size + 1);
    struct chunk_result scan = run_chunked(data, size, size, SCAN, NULL);
    struct chunk_result scan_split = run_chunked(data, size, k, SCAN, NULL);
    REQUIRE(scan.consumed == scan_split.consumed && scan.done == scan_split.done);
    /* Decode and strip agree with scan on framing, and with themselves
     * however the input is cut. */
    for (enum chunk_mode m = DECODE; m <= STRIP; m++) {
        struct chunk_result whole = run_chunked(data, size, size, m, out_whole);
        struct chunk_result split = run_chunked(data, size, k, m, out_split);
        REQUIRE(scan.consumed == whole.consumed && scan.done == whole.done);
        REQUIRE(whole.consumed == split.consumed && whole.done == split.done);
        if (whole.consumed >= 0) {
            REQUIRE(whole.out_len <= (size_t)whole.consumed);
            REQUIRE(whole.out_len == split.out_len);
            REQUIRE(memcmp(out_whole, out_split, whole.out_len) == 0);
        }
    }
    free(out_whole);
    free(out_split);
}

/* The input as a request path: normalising never grows it, never leaves
 * the buffer, gives a path again, is stable, and the quick check never
 * says "nothing to do" when there was. */
static void check_path(const uint8_t *data, size_t size)
{
    char *p = malloc(size ? size : 1), *again = malloc(size ? size : 1);
    memcpy(p, data, size);
    bool merge = size && (data[size - 1] & 1);
    bool needs = pt_path_needs_normalize(p, size, merge);
    long r = pt_path_normalize(p, size, merge);
    REQUIRE(needs || (r == (long)size && memcmp(p, data, size) == 0));
    if (r >= 0) {
        REQUIRE((size_t)r <= size);
        if (size && data[0] == '/') {
            REQUIRE(r > 0 && p[0] == '/');
            memcpy(again, p, (size_t)r);
            REQUIRE(pt_path_normalize(again, (size_t)r, merge) == r);
            REQUIRE(memcmp(again, p, (size_t)r) == 0);
        }
    }
    free(p);
    free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Two sets of limits: roomy ones, and tight ones so the 414/431 paths
     * and the view cut-off are exercised at every offset too. */
    const struct pt_h1_limits roomy = {
        .max_headers = MAXH, .max_header_bytes = 8192, .max_uri_bytes = 2048};
    const struct pt_h1_limits tight = {
        .max_headers = 3, .max_header_bytes = size / 2 + 8, .max_uri_bytes = 16};
    size_t k = size ? (size_t)data[size - 1] * 7919u % (size + 1) : 0;

    check_splits(parse_req, data, size, k, &roomy);
    check_splits(parse_req, data, size, k, &tight);
    check_splits(parse_res, data, size, k, &roomy);
    check_splits(parse_res, data, size, k, &tight);
    check_chunked(data, size, k);
    check_path(data, size);
    return 0;
}
