/*
 * test_h1.c — the HTTP/1.1 head parser: a table of malformed and
 * smuggling-shaped requests with the status each must get, valid requests
 * and what the parser reports about them, incremental feeding, responses
 * and limits.
 *
 * Every table case is also fed prefix by prefix, with and without the
 * prev_len hint, to check that the verdict never depends on how the bytes
 * were split and that a prefix never gets a different error than the whole.
 */
#include "http/h1.h"
#include "unit.h"

#include <stdlib.h>

#define MAXH 16
static const struct pt_h1_limits lim = {
    .max_headers = MAXH, .max_header_bytes = 1024, .max_uri_bytes = 256};
static struct pt_h1_header hdrs[MAXH];

/* Parses from an exact-size heap copy, so a sanitizer build catches any
 * read past the end. The copy lives until the next call, so the slices in
 * the result can be inspected. */
static char *copy_of(const char *s, size_t n)
{
    static char *last;
    free(last);
    last = malloc(n ? n : 1);
    memcpy(last, s, n);
    return last;
}

static int parse_req_n(const char *s, size_t n, size_t prev, struct pt_h1_request *req,
                       const struct pt_h1_limits *l)
{
    return pt_h1_parse_request(copy_of(s, n), n, prev, req, hdrs, l);
}

static int parse_req(const char *s, struct pt_h1_request *req)
{
    return parse_req_n(s, strlen(s), 0, req, &lim);
}

static int parse_res_n(const char *s, size_t n, size_t prev, struct pt_h1_response *res)
{
    return pt_h1_parse_response(copy_of(s, n), n, prev, res, hdrs, &lim);
}

#define S(lit) lit, sizeof(lit) - 1
#define RQ "GET / HTTP/1.1\r\nHost: a\r\n"
#define PQ "POST / HTTP/1.1\r\nHost: a\r\n"

struct bad_case {
    const char *what;
    const char *msg;
    size_t len;
    int status;
};

static const struct bad_case bad_requests[] = {
    /* framing: Content-Length and Transfer-Encoding */
    {"CL then TE", S(PQ "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {"TE then CL", S(PQ "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"), 400},
    {"TE with CL 0", S(PQ "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {"differing CL", S(PQ "Content-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400},
    {"differing CL list", S(PQ "Content-Length: 5, 6\r\n\r\n"), 400},
    {"CL list then differing CL", S(PQ "Content-Length: 5,5\r\nContent-Length: 7\r\n\r\n"), 400},
    {"negative CL", S(PQ "Content-Length: -1\r\n\r\n"), 400},
    {"signed CL", S(PQ "Content-Length: +5\r\n\r\n"), 400},
    {"empty CL", S(PQ "Content-Length:\r\n\r\n"), 400},
    {"blank CL", S(PQ "Content-Length:   \r\n\r\n"), 400},
    {"CL 2^64+1", S(PQ "Content-Length: 18446744073709551617\r\n\r\n"), 400},
    {"CL INT64_MAX+1", S(PQ "Content-Length: 9223372036854775808\r\n\r\n"), 400},
    {"CL hex", S(PQ "Content-Length: 0x10\r\n\r\n"), 400},
    {"CL two numbers", S(PQ "Content-Length: 1 2\r\n\r\n"), 400},
    {"CL trailing comma", S(PQ "Content-Length: 5,\r\n\r\n"), 400},
    {"CL leading comma", S(PQ "Content-Length: ,5\r\n\r\n"), 400},
    {"CL decimal", S(PQ "Content-Length: 5.0\r\n\r\n"), 400},
    {"CL with unit", S(PQ "Content-Length: 5b\r\n\r\n"), 400},
    {"TE on HTTP/1.0", S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {"chunked not last", S(PQ "Transfer-Encoding: chunked, gzip\r\n\r\n"), 400},
    {"no chunked", S(PQ "Transfer-Encoding: gzip\r\n\r\n"), 400},
    {"identity", S(PQ "Transfer-Encoding: identity\r\n\r\n"), 400},
    {"chunked then gzip lines",
     S(PQ "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n"), 400},
    {"chunked twice", S(PQ "Transfer-Encoding: chunked, chunked\r\n\r\n"), 400},
    {"chunked twice lines",
     S(PQ "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"), 400},
    {"TE empty element", S(PQ "Transfer-Encoding: chunked,\r\n\r\n"), 400},
    {"TE leading empty element", S(PQ "Transfer-Encoding: , chunked\r\n\r\n"), 400},
    {"xchunked", S(PQ "Transfer-Encoding: xchunked\r\n\r\n"), 400},
    {"chunked with parameter", S(PQ "Transfer-Encoding: chunked;q=1\r\n\r\n"), 400},
    {"quoted chunked", S(PQ "Transfer-Encoding: \"chunked\"\r\n\r\n"), 400},
    {"empty TE", S(PQ "Transfer-Encoding:\r\n\r\n"), 400},
    {"TE with vertical tab",
     S(PQ "Transfer-Encoding: \x0b"
          "chunked\r\n\r\n"),
     400},
    {"gzip then chunked", S(PQ "Transfer-Encoding: gzip, chunked\r\n\r\n"), 501},
    {"gzip then chunked lines",
     S(PQ "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"), 501},
    /* field syntax */
    {"obs-fold SP", S(RQ "X-A: b\r\n c\r\n\r\n"), 400},
    {"obs-fold HTAB", S(RQ "X-A: b\r\n\tc\r\n\r\n"), 400},
    {"obs-fold hides TE", S(PQ "X-A: b\r\n Transfer-Encoding: chunked\r\n\r\n"), 400},
    {"space before first field", S("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400},
    {"bare CR in value", S(RQ "X-A: b\rc\r\n\r\n"), 400},
    {"bare CR ends field", S(RQ "X-A: b\rX-B: c\r\n\r\n"), 400},
    {"bare LF ends field", S(RQ "X-A: b\n\r\n"), 400},
    {"bare LF ends request line", S("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400},
    {"bare LF ends head", S(RQ "\n"), 400},
    {"LF LF", S("GET / HTTP/1.1\n\n"), 400},
    {"CR CR LF", S(RQ "\r\r\n"), 400},
    {"bare CR after request line", S("GET / HTTP/1.1\r\rHost: a\r\n\r\n"), 400},
    {"space before colon", S(RQ "Content-Length : 5\r\n\r\n"), 400},
    {"tab before colon", S(RQ "Transfer-Encoding\t: chunked\r\n\r\n"), 400},
    {"space in name", S(RQ "X A: b\r\n\r\n"), 400},
    {"empty name", S(RQ ": b\r\n\r\n"), 400},
    {"no colon", S(RQ "X-A\r\n\r\n"), 400},
    {"at sign in name", S(RQ "X@A: b\r\n\r\n"), 400},
    {"slash in name", S(RQ "X/A: b\r\n\r\n"), 400},
    {"NUL in name", S(RQ "X\0A: b\r\n\r\n"), 400},
    {"non-ASCII name", S(RQ "H\xc3\xa9: b\r\n\r\n"), 400},
    {"NUL in value", S(RQ "X-A: b\0c\r\n\r\n"), 400},
    {"SOH in value", S(RQ "X-A: \x01\r\n\r\n"), 400},
    {"VT in value", S(RQ "X-A: b\x0b\r\n\r\n"), 400},
    {"FF in value",
     S(RQ "X-A: \x0c"
          "b\r\n\r\n"),
     400},
    {"ESC in value", S(RQ "X-A: b\x1b[0m\r\n\r\n"), 400},
    {"DEL in value", S(RQ "X-A: b\x7f\r\n\r\n"), 400},
    {"NUL in Host", S("GET / HTTP/1.1\r\nHost: a\0.evil\r\n\r\n"), 400},
    /* Host */
    {"missing Host", S("GET / HTTP/1.1\r\n\r\n"), 400},
    {"missing Host absolute-form", S("GET http://a/ HTTP/1.1\r\n\r\n"), 400},
    {"duplicate Host", S(RQ "Host: b\r\n\r\n"), 400},
    {"duplicate Host same", S(RQ "Host: a\r\n\r\n"), 400},
    {"duplicate Host case", S("GET / HTTP/1.1\r\nhost: a\r\nHOST: b\r\n\r\n"), 400},
    {"duplicate Host 1.0", S("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400},
    {"Host with space", S("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400},
    {"Host with userinfo", S("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"), 400},
    {"Host with path", S("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400},
    {"Host port not digits", S("GET / HTTP/1.1\r\nHost: a:b\r\n\r\n"), 400},
    {"Host open IP literal", S("GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"), 400},
    /* RFC 9110 §4.2.1: an http URI with an empty host is invalid (nginx: 400). */
    {"empty Host", S("GET / HTTP/1.1\r\nHost:\r\n\r\n"), 400},
    {"Host with port only", S("GET / HTTP/1.1\r\nHost: :80\r\n\r\n"), 400},
    {"Host empty IP literal", S("GET / HTTP/1.1\r\nHost: []\r\n\r\n"), 400},
    {"absolute-form empty host", S("GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    /* Upgrade and Connection */
    {"Connection not a token", S(RQ "Connection: clo se\r\n\r\n"), 400},
    /* request line */
    {"HTTP/2.0", S("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505},
    {"h2 preface", S("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505},
    {"HTTP/1.2", S("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505},
    {"HTTP/0.9 version", S("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 505},
    {"HTTP/3.1", S("GET / HTTP/3.1\r\nHost: a\r\n\r\n"), 505},
    {"no version (0.9)", S("GET /\r\n\r\n"), 400},
    {"lowercase http", S("GET / http/1.1\r\nHost: a\r\n\r\n"), 400},
    {"short version", S("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400},
    {"long minor", S("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400},
    {"space after version", S("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400},
    {"double space after method", S("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"space in target", S("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"tab in target", S("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"tab separator", S("GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"high byte in target", S("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"DEL in target", S("GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"NUL in target", S("GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"fragment in target", S("GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"empty method", S(" / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"bad method char", S("GE(T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"star for GET", S("GET * HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"star-ish for OPTIONS", S("OPTIONS *x HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"relative target", S("GET foo HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"authority-form for GET", S("GET a.example:443 HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"CONNECT origin-form", S("CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"CONNECT without port", S("CONNECT a.example HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"CONNECT absolute-form", S("CONNECT http://a:443/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"absolute-form userinfo", S("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"absolute-form ftp", S("GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"absolute-form empty host", S("GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"absolute-form bad port", S("GET http://a:x/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"leading bare LF", S("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400},
    {"garbage", S("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"), 400},
};

/* Runs one message through every prefix, with and without the hint, and
 * returns the verdict on the whole. Checks that verdicts over growing
 * prefixes are INCOMPLETE... then one constant answer. */
static int feed_all_prefixes(const char *msg, size_t len, int *status, const char *what)
{
    struct pt_h1_request req;
    int settled = PT_H1_INCOMPLETE, settled_status = 0;
    size_t prev = 0;
    for (size_t k = 0; k <= len; k++) {
        int plain = parse_req_n(msg, k, 0, &req, &lim);
        int plain_status = plain == PT_H1_ERROR ? req.error_status : 0;
        int hinted = parse_req_n(msg, k, prev, &req, &lim);
        int hinted_status = hinted == PT_H1_ERROR ? req.error_status : 0;
        CHECK_MSG(plain == hinted && plain_status == hinted_status,
                  "%s: prefix %zu: %d/%d without hint, %d/%d with hint %zu", what, k, plain,
                  plain_status, hinted, hinted_status, prev);
        if (settled != PT_H1_INCOMPLETE)
            CHECK_MSG(plain == settled && plain_status == settled_status,
                      "%s: prefix %zu changed the verdict %d/%d -> %d/%d", what, k, settled,
                      settled_status, plain, plain_status);
        else if (plain != PT_H1_INCOMPLETE) {
            settled = plain;
            settled_status = plain_status;
        }
        if (plain == PT_H1_INCOMPLETE)
            prev = k;
    }
    *status = settled_status;
    return settled;
}

static void test_bad_requests(void)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(bad_requests); i++) {
        const struct bad_case *c = &bad_requests[i];
        struct pt_h1_request req;
        int rc = parse_req_n(c->msg, c->len, 0, &req, &lim);
        CHECK_MSG(rc == PT_H1_ERROR && req.error_status == c->status,
                  "%s: rc %d status %d, want %d", c->what, rc, req.error_status, c->status);
        CHECK_MSG(rc != PT_H1_ERROR || (req.error_reason && req.error_reason[0]), "%s", c->what);
        int status;
        CHECK_EQ_INT(feed_all_prefixes(c->msg, c->len, &status, c->what), PT_H1_ERROR);
        CHECK_MSG(status == c->status, "%s (fed in pieces): %d", c->what, status);
    }
    printf("h1: %zu malformed requests checked\n", PT_ARRAY_LEN(bad_requests));
}

static bool hdr_is(const struct pt_h1_header *h, const char *name, const char *value)
{
    return pt_slice_eq_cstr(h->name, name) && pt_slice_eq_cstr(h->value, value);
}

static void test_get(void)
{
    const char *m = "GET /api/v1/users?id=42&x=%20 HTTP/1.1\r\n"
                    "Host: api.example.com:8080\r\n"
                    "User-Agent:   curl/8.0  \r\n"
                    "X-Empty:\r\n"
                    "X-Tabs:\t v \t\r\n"
                    "X-Latin: caf\xe9\r\n"
                    "accept: */*\r\n"
                    "\r\n";
    struct pt_h1_request req;
    int rc = parse_req(m, &req);
    CHECK_EQ_INT(rc, (int)strlen(m));
    CHECK(pt_slice_eq_cstr(req.method, "GET"));
    CHECK_EQ_INT(req.method_id, PT_METHOD_GET);
    CHECK(pt_slice_eq_cstr(req.target, "/api/v1/users?id=42&x=%20"));
    CHECK(pt_slice_eq_cstr(req.path, "/api/v1/users"));
    CHECK(pt_slice_eq_cstr(req.query, "id=42&x=%20"));
    CHECK(pt_slice_eq_cstr(req.host, "api.example.com:8080"));
    CHECK_EQ_INT(req.minor_version, 1);
    CHECK_EQ_INT(req.num_headers, 6);
    CHECK(req.headers == hdrs);
    CHECK(hdr_is(&hdrs[0], "Host", "api.example.com:8080") && hdrs[0].token == PT_TOK_HOST);
    CHECK(hdr_is(&hdrs[1], "User-Agent", "curl/8.0") && hdrs[1].token == PT_TOK_USER_AGENT);
    CHECK(hdr_is(&hdrs[2], "X-Empty", "") && hdrs[2].token == PT_TOK_UNKNOWN);
    CHECK(hdr_is(&hdrs[3], "X-Tabs", "v"));
    CHECK(hdr_is(&hdrs[4], "X-Latin", "caf\xe9"));
    CHECK(hdr_is(&hdrs[5], "accept", "*/*") && hdrs[5].token == PT_TOK_ACCEPT);
    CHECK_EQ_INT(req.framing.content_length, -1);
    CHECK(!req.framing.chunked && req.framing.keep_alive && !req.framing.upgrade);
    CHECK(!req.expect_continue);

    /* A request with no query has an empty query slice. */
    CHECK(parse_req("GET /x HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    CHECK(pt_slice_eq_cstr(req.path, "/x") && req.query.len == 0);
    CHECK(parse_req("GET /x? HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    CHECK(pt_slice_eq_cstr(req.path, "/x") && req.query.len == 0);
    /* Extension methods are tokens; methods are case-sensitive. */
    CHECK(parse_req("PURGE /x HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    CHECK_EQ_INT(req.method_id, PT_METHOD_OTHER);
    CHECK(parse_req("get /x HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    CHECK_EQ_INT(req.method_id, PT_METHOD_OTHER);
    /* IP literals are hosts. */
    CHECK(parse_req("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", &req) > 0);
    CHECK(pt_slice_eq_cstr(req.host, "[::1]:8080"));
    /* Stray CRLFs before the request line are skipped. */
    const char *lead = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_EQ_INT(parse_req(lead, &req), (int)strlen(lead));
    CHECK(pt_slice_eq_cstr(req.method, "GET"));
}

static void test_post_bodies(void)
{
    struct pt_h1_request req;
    const char *m = "POST /submit HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    CHECK_EQ_INT(parse_req(m, &req), (int)strlen(m) - 5);
    CHECK_EQ_INT(req.framing.content_length, 5);
    CHECK(!req.framing.chunked);

    m = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\ncontent-length: 007\r\n\r\n";
    CHECK_EQ_INT(parse_req(m, &req), (int)strlen(m));
    CHECK_EQ_INT(req.framing.content_length, 7);

    m = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n";
    CHECK_EQ_INT(parse_req(m, &req), (int)strlen(m));
    CHECK_EQ_INT(req.framing.content_length, INT64_MAX);

    m = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    CHECK_EQ_INT(parse_req(m, &req), (int)(strstr(m, "\r\n\r\n") - m) + 4);
    CHECK(req.framing.chunked && req.framing.content_length == -1);

    m = "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n";
    CHECK(parse_req(m, &req) > 0);
    CHECK(req.expect_continue && req.method_id == PT_METHOD_PUT);
}

static void test_pipelined(void)
{
    const char *m = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                    "POST /two HTTP/1.1\r\nHost: b\r\nContent-Length: 0\r\n\r\n";
    struct pt_h1_request req;
    int first = parse_req(m, &req);
    CHECK_EQ_INT(first, (int)(strstr(m, "POST") - m));
    CHECK(pt_slice_eq_cstr(req.path, "/one") && pt_slice_eq_cstr(req.host, "a"));
    int second = parse_req(m + first, &req);
    CHECK_EQ_INT(second, (int)strlen(m + first));
    CHECK(pt_slice_eq_cstr(req.path, "/two") && pt_slice_eq_cstr(req.host, "b"));
    CHECK_EQ_INT(req.framing.content_length, 0);
    /* A second head that is garbage does not spoil the first. */
    const char *g = "GET / HTTP/1.1\r\nHost: a\r\n\r\nGARBAGE\x01\r\n";
    CHECK_EQ_INT(parse_req(g, &req), (int)(strstr(g, "GARB") - g));
}

static void test_target_forms(void)
{
    struct pt_h1_request req;
    CHECK(parse_req("GET http://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n", &req) >
          0);
    CHECK(pt_slice_eq_cstr(req.host, "Example.com:8080"));
    CHECK(pt_slice_eq_cstr(req.path, "/a/b") && pt_slice_eq_cstr(req.query, "x=1"));
    CHECK(parse_req("GET HTTPS://example.com HTTP/1.1\r\nHost: x\r\n\r\n", &req) > 0);
    CHECK(pt_slice_eq_cstr(req.host, "example.com") && pt_slice_eq_cstr(req.path, "/"));
    CHECK(parse_req("GET http://example.com?q HTTP/1.1\r\nHost: x\r\n\r\n", &req) > 0);
    CHECK(pt_slice_eq_cstr(req.path, "/") && pt_slice_eq_cstr(req.query, "q"));
    CHECK(parse_req("GET http://[::1]:80/p HTTP/1.1\r\nHost: x\r\n\r\n", &req) > 0);
    CHECK(pt_slice_eq_cstr(req.host, "[::1]:80") && pt_slice_eq_cstr(req.path, "/p"));

    CHECK(parse_req("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &req) > 0);
    CHECK_EQ_INT(req.method_id, PT_METHOD_OPTIONS);
    CHECK(pt_slice_eq_cstr(req.target, "*") && pt_slice_eq_cstr(req.path, "*"));

    CHECK(parse_req("CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n", &req) > 0);
    CHECK_EQ_INT(req.method_id, PT_METHOD_CONNECT);
    CHECK(pt_slice_eq_cstr(req.host, "db.example:5432") && req.path.len == 0);
}

static void test_connection(void)
{
    struct pt_h1_request req;
    CHECK(parse_req("GET / HTTP/1.0\r\n\r\n", &req) > 0);
    CHECK(!req.framing.keep_alive && req.minor_version == 0);
    CHECK(parse_req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req) > 0);
    CHECK(req.framing.keep_alive);
    CHECK(parse_req("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &req) > 0);
    CHECK(!req.framing.keep_alive);
    CHECK(parse_req(RQ "Connection: close\r\n\r\n", &req) > 0);
    CHECK(!req.framing.keep_alive);
    CHECK(parse_req(RQ "Connection: foo, , CLOSE\r\n\r\n", &req) > 0);
    CHECK(!req.framing.keep_alive);
    CHECK(parse_req(RQ "Connection: closed\r\n\r\n", &req) > 0);
    CHECK(req.framing.keep_alive);
    CHECK(parse_req(RQ "Connection: keep-alive\r\nConnection: close\r\n\r\n", &req) > 0);
    CHECK(!req.framing.keep_alive);
    CHECK(parse_req(RQ "Upgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n", &req) > 0);
    CHECK(req.framing.upgrade && req.framing.keep_alive);
    CHECK(parse_req(RQ "Upgrade: websocket\r\n\r\n", &req) > 0);
    CHECK(!req.framing.upgrade);
    CHECK(parse_req(RQ "Connection: upgrade\r\n\r\n", &req) > 0);
    CHECK(!req.framing.upgrade);
    /* h2c upgrades (curl --http2 on http://) parse; the gateway drops the
     * Upgrade field as hop-by-hop and answers in HTTP/1.1. */
    CHECK(parse_req(RQ "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                       "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
                    &req) > 0);
    CHECK(req.framing.upgrade && req.framing.keep_alive);
}

/* Byte by byte: INCOMPLETE on every proper prefix, the head length at the
 * end, with and without the hint. */
static void test_incremental(void)
{
    const char *m = "POST /api/orders?dry=1 HTTP/1.1\r\n"
                    "Host: shop.example\r\n"
                    "Content-Type: application/json\r\n"
                    "Content-Length: 2\r\n"
                    "Authorization: Bearer abc.def.ghi\r\n"
                    "\r\n";
    size_t n = strlen(m);
    struct pt_h1_request req;
    int wrong = 0;
    for (size_t k = 0; k < n; k++) {
        wrong += parse_req_n(m, k, 0, &req, &lim) != PT_H1_INCOMPLETE;
        wrong += parse_req_n(m, k, k ? k - 1 : 0, &req, &lim) != PT_H1_INCOMPLETE;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(parse_req_n(m, n, n - 1, &req, &lim), (int)n);
    CHECK_EQ_INT(req.framing.content_length, 2);
    CHECK_EQ_INT(req.num_headers, 4);
    int status;
    CHECK_EQ_INT(feed_all_prefixes(m, n, &status, "incremental POST"), (int)n);
    /* The hint is only a hint: a bogus one larger than len is ignored. */
    CHECK_EQ_INT(parse_req_n(m, n, n + 100, &req, &lim), (int)n);
}

static void test_limits(void)
{
    struct pt_h1_request req;
    char buf[4096];

    /* 414: target longer than max_uri_bytes (256). */
    int k = snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 255, 0);
    CHECK(parse_req_n(buf, (size_t)k, 0, &req, &lim) > 0);
    k = snprintf(buf, sizeof buf, "GET /%0*d HTTP/1.1\r\nHost: a\r\n\r\n", 256, 0);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 414);
    /* A request line that does not even fit the head limit: 414 at once. */
    k = snprintf(buf, sizeof buf, "GET /%0*d", 2000, 0);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 414);

    /* 431: one field more than max_headers (16). */
    k = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < MAXH - 1; i++)
        k += snprintf(buf + k, sizeof buf - (size_t)k, "X-%d: v\r\n", i);
    memcpy(buf + k, "\r\n", 3);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k + 2, 0, &req, &lim), k + 2);
    CHECK_EQ_INT(req.num_headers, MAXH);
    k += snprintf(buf + k, sizeof buf - (size_t)k, "X-last: v\r\n\r\n");
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);

    /* 431: head longer than max_header_bytes (1024), complete or not. */
    k = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %0*d\r\n\r\n", 990, 0);
    CHECK(k > 1024);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    CHECK_EQ_INT(parse_req_n(buf, 1025, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    /* Exactly max_header_bytes without the end is final too: a reader
     * whose buffer holds max_header_bytes can take no more (this used to
     * wait, and a full buffer then read 0 bytes and closed without 431). */
    CHECK_EQ_INT(parse_req_n(buf, 1024, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    CHECK_EQ_INT(parse_req_n(buf, 1023, 0, &req, &lim), PT_H1_INCOMPLETE);
    CHECK_EQ_INT(parse_req_n(buf, 1024, 1023, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    CHECK_EQ_INT(parse_req_n(buf, 1025, 1024, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    /* Exactly max_header_bytes is allowed. */
    k = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: %0*d\r\n\r\n", 1024 - 36, 0);
    CHECK_EQ_INT(k, 1024);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k, 0, &req, &lim), 1024);
    /* ...and the bytes after the head do not count. */
    memset(buf + k, 'x', 1000);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k + 1000, 0, &req, &lim), 1024);

    /* An endless run of empty lines ends in 431, not a wait. */
    for (int i = 0; i < 1100; i += 2)
        memcpy(buf + i, "\r\n", 2);
    CHECK_EQ_INT(parse_req_n(buf, 1100, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    /* When the URI limit is not what overflowed, an endless request line
     * is a too-large head: 431. */
    const struct pt_h1_limits wide_uri = {
        .max_headers = MAXH, .max_header_bytes = 1024, .max_uri_bytes = 100000};
    k = snprintf(buf, sizeof buf, "GET /%0*d", 2000, 0);
    CHECK_EQ_INT(parse_req_n(buf, (size_t)k, 0, &req, &wide_uri), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
    memset(buf, 'A', 2000); /* an endless method */
    CHECK_EQ_INT(parse_req_n(buf, 2000, 0, &req, &lim), PT_H1_ERROR);
    CHECK_EQ_INT(req.error_status, 431);
}

static void test_responses(void)
{
    struct pt_h1_response res;
    const char *m = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    size_t n = strlen(m);
    CHECK_EQ_INT(parse_res_n(m, n, 0, &res), (int)n - 5);
    CHECK_EQ_INT(res.status, 200);
    CHECK_EQ_INT(res.minor_version, 1);
    CHECK(pt_slice_eq_cstr(res.reason, "OK"));
    CHECK_EQ_INT(res.framing.content_length, 5);
    CHECK(res.framing.keep_alive && res.num_headers == 2);
    for (size_t k = 0; k < n - 5; k++)
        CHECK_EQ_INT(parse_res_n(m, k, k ? k - 1 : 0, &res), PT_H1_INCOMPLETE);

    m = "HTTP/1.1 404 Not  Found \r\n\r\n";
    CHECK_EQ_INT(parse_res_n(m, strlen(m), 0, &res), (int)strlen(m));
    CHECK(pt_slice_eq_cstr(res.reason, "Not  Found ") && res.status == 404);
    m = "HTTP/1.1 204\r\n\r\n";
    CHECK_EQ_INT(parse_res_n(m, strlen(m), 0, &res), (int)strlen(m));
    CHECK(res.status == 204 && res.reason.len == 0);
    m = "HTTP/1.1 200 \r\nTransfer-Encoding: chunked\r\n\r\n";
    CHECK_EQ_INT(parse_res_n(m, strlen(m), 0, &res), (int)strlen(m));
    CHECK(res.framing.chunked && res.reason.len == 0);
    m = "HTTP/1.0 200 OK\r\n\r\n";
    CHECK(parse_res_n(m, strlen(m), 0, &res) > 0);
    CHECK(!res.framing.keep_alive && res.minor_version == 0);
    m = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    CHECK(parse_res_n(m, strlen(m), 0, &res) > 0);
    CHECK(res.status == 101 && res.framing.upgrade);
    m = "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n";
    CHECK(parse_res_n(m, strlen(m), 0, &res) > 0);
    CHECK(res.status == 304 && res.framing.content_length == 100);
    m = "HTTP/1.1 200 OK\r\nConnection: close\r\nServer: x\r\nServer: y\r\n\r\n";
    CHECK(parse_res_n(m, strlen(m), 0, &res) > 0);
    CHECK(!res.framing.keep_alive && res.num_headers == 3);
    m = "HTTP/1.1 999 Whatever\r\n\r\n";
    CHECK(parse_res_n(m, strlen(m), 0, &res) > 0 && res.status == 999);

    static const struct bad_case bad[] = {
        {"CL+TE", S("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
         502},
        {"differing CL", S("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
         502},
        {"CL overflow", S("HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551617\r\n\r\n"), 502},
        {"CL empty", S("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"), 502},
        {"TE gzip", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"), 502},
        {"TE gzip, chunked", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 502},
        {"TE on 1.0", S("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), 502},
        {"two-digit status", S("HTTP/1.1 20 OK\r\n\r\n"), 502},
        {"four-digit status", S("HTTP/1.1 2000 OK\r\n\r\n"), 502},
        {"status 099", S("HTTP/1.1 099 X\r\n\r\n"), 502},
        {"status letters", S("HTTP/1.1 2x0 OK\r\n\r\n"), 502},
        {"HTTP/2", S("HTTP/2 200 OK\r\n\r\n"), 502},
        {"HTTP/1.2", S("HTTP/1.2 200 OK\r\n\r\n"), 502},
        {"ICY", S("ICY 200 OK\r\n\r\n"), 502},
        {"no status", S("HTTP/1.1\r\n\r\n"), 502},
        {"bare LF status line", S("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"), 502},
        {"bare LF field", S("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"), 502},
        {"obs-fold", S("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), 502},
        {"NUL in reason", S("HTTP/1.1 200 O\0K\r\n\r\n"), 502},
        {"space before colon", S("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"), 502},
        {"CTL in value", S("HTTP/1.1 200 OK\r\nX: \x01\r\n\r\n"), 502},
    };
    for (size_t i = 0; i < PT_ARRAY_LEN(bad); i++) {
        int rc = parse_res_n(bad[i].msg, bad[i].len, 0, &res);
        CHECK_MSG(rc == PT_H1_ERROR && res.error_status == 502, "%s: %d", bad[i].what, rc);
        /* A prefix either waits or already fails the same way. */
        for (size_t k = 0; k < bad[i].len; k++) {
            rc = parse_res_n(bad[i].msg, k, 0, &res);
            CHECK_MSG(rc == PT_H1_INCOMPLETE || (rc == PT_H1_ERROR && res.error_status == 502),
                      "%s prefix %zu: %d", bad[i].what, k, rc);
        }
    }

    /* Too many fields or too big a head is the upstream's fault: 502. */
    char buf[2048];
    int k = snprintf(buf, sizeof buf, "HTTP/1.1 200 OK\r\n");
    for (int i = 0; i < MAXH + 1; i++)
        k += snprintf(buf + k, sizeof buf - (size_t)k, "X-%d: v\r\n", i);
    k += snprintf(buf + k, sizeof buf - (size_t)k, "\r\n");
    CHECK_EQ_INT(parse_res_n(buf, (size_t)k, 0, &res), PT_H1_ERROR);
    CHECK_EQ_INT(res.error_status, 502);
    memset(buf, 'a', sizeof buf);
    memcpy(buf, "HTTP/1.1 200 OK\r\nX: ", 20);
    CHECK_EQ_INT(parse_res_n(buf, sizeof buf, 0, &res), PT_H1_ERROR);
    CHECK_EQ_INT(res.error_status, 502);
}

int main(void)
{
    test_bad_requests();
    test_get();
    test_post_bodies();
    test_pipelined();
    test_target_forms();
    test_connection();
    test_incremental();
    test_limits();
    test_responses();
    return unit_report("h1");
}
