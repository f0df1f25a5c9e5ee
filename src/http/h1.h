/*
 * h1.h — strict, incremental, zero-copy HTTP/1.1 parser (RFC 9112).
 *
 * Contract (one sentence, picohttpparser-style): pt_h1_parse_request() and
 * pt_h1_parse_response() return the length of the message head when it is
 * complete and valid, PT_H1_INCOMPLETE when more bytes are needed, or
 * PT_H1_ERROR with msg->error_status / msg->error_reason set.
 *
 * Every slice points into the caller's buffer: the caller keeps the buffer
 * alive and unmoved while it uses them. The parser never allocates. It may
 * be called again on the same buffer after more bytes arrive (it re-parses
 * from the start; `prev_len` lets it skip re-scanning for the end of the
 * head).
 */
#ifndef PT_HTTP_H1_H
#define PT_HTTP_H1_H

#include "core/common.h"
#include "http/tokens.h"

#include <sys/types.h>

enum {
    PT_H1_ERROR = -1,
    PT_H1_INCOMPLETE = -2,
};

/* One header field as received: name as sent (use `token` to compare),
 * value with leading/trailing OWS removed. */
struct pt_h1_header {
    pt_slice name;
    pt_slice value;
    int token; /* enum pt_token, PT_TOK_UNKNOWN when not interned */
};

struct pt_h1_limits {
    size_t max_headers;      /* > this many fields → 431 */
    size_t max_header_bytes; /* head (request line + fields) longer → 431 */
    size_t max_uri_bytes;    /* request-target longer → 414 */
};

/* Framing and connection facts derived while parsing; shared by requests
 * and responses. */
struct pt_h1_framing {
    int64_t content_length; /* -1 when absent */
    bool chunked;           /* Transfer-Encoding: chunked (final coding) */
    bool keep_alive;        /* after version + Connection: close/keep-alive */
    bool upgrade;           /* Upgrade header present (and Connection: upgrade) */
};

struct pt_h1_request {
    pt_slice method;
    int method_id;        /* enum pt_method */
    pt_slice target;      /* request-target as sent */
    pt_slice path;        /* origin-form path (target up to '?'); for
                             absolute-form, the path part of the URI */
    pt_slice query;       /* after '?', without it; len 0 when absent */
    int minor_version;    /* 0 or 1 */
    pt_slice host;        /* Host header value (or authority of absolute-form) */
    bool expect_continue; /* Expect: 100-continue */
    struct pt_h1_framing framing;
    struct pt_h1_header *headers; /* caller-provided array */
    size_t num_headers;
    int error_status;         /* on PT_H1_ERROR: 400, 414, 431, 501, 505 */
    const char *error_reason; /* static string, for logs and error bodies */
};

struct pt_h1_response {
    int minor_version;
    int status; /* 100..999 */
    pt_slice reason;
    struct pt_h1_framing framing;
    struct pt_h1_header *headers;
    size_t num_headers;
    int error_status; /* on PT_H1_ERROR: 502 */
    const char *error_reason;
};

/*
 * Parses a request head from buf[0..len). `headers` has room for
 * lim->max_headers entries. Rejections (all → PT_H1_ERROR):
 *   400: bad method token, bad target, bare CR or bare LF, obs-fold,
 *        whitespace before ':' , empty or non-token field name, CTL/NUL in
 *        a value, CL together with TE, differing/invalid/overflowing
 *        Content-Length, TE on HTTP/1.0, chunked not last, missing or
 *        duplicate Host on 1.1. (Upgrade, h2c included, parses: the
 *        gateway strips it as hop-by-hop and never forwards it.)
 *   501: Transfer-Encoding other than chunked (e.g. gzip, chunked).
 *   505: HTTP version other than 1.0/1.1.
 *   414/431: limits.
 */
int pt_h1_parse_request(const char *buf, size_t len, size_t prev_len, struct pt_h1_request *req,
                        struct pt_h1_header *headers, const struct pt_h1_limits *lim);

/* Parses a response head. Same strictness; any violation → 502. */
int pt_h1_parse_response(const char *buf, size_t len, size_t prev_len, struct pt_h1_response *res,
                         struct pt_h1_header *headers, const struct pt_h1_limits *lim);

/*
 * Chunked transfer coding, incremental. The scanner validates framing and
 * finds where the body ends without changing the bytes, so a proxy can
 * forward chunked bodies verbatim. Rejects: sizes with 0x/sign/space,
 * overflow (> 2^62), bad chunk extensions, missing CRLF after data, bare LF,
 * malformed trailers (same rules as header fields).
 */
struct pt_chunked {
    int state;          /* internal */
    uint64_t remaining; /* bytes left in the current chunk's data */
    uint64_t line_len;  /* bytes of the current size/trailer line (bounded) */
    uint64_t size_digits;
};

void pt_chunked_init(struct pt_chunked *c);

/* Scans buf[0..len). Returns how many bytes belong to the chunked body
 * (≤ len; fewer than len only when the body ended inside buf), or -1 on a
 * framing error. Sets *done when the last-chunk and trailer section were
 * consumed. */
ssize_t pt_chunked_scan(struct pt_chunked *c, const char *buf, size_t len, bool *done);

/* Decodes in place: like scan, but compacts the payload bytes to the front
 * of buf and reports their count in *out_len. Same return value as scan. */
ssize_t pt_chunked_decode(struct pt_chunked *c, char *buf, size_t len, size_t *out_len, bool *done);

/* Keeps the chunked framing but drops the trailer section's field lines:
 * like decode, compacts what is kept (size lines, data, CRLFs, the
 * last-chunk and the final CRLF) to the front of buf and reports its count
 * in *out_len. A proxy that does not forward trailers sends that. */
ssize_t pt_chunked_strip(struct pt_chunked *c, char *buf, size_t len, size_t *out_len, bool *done);

/* Writes a chunk-size line ("%zx\r\n") for n bytes into out (≥ 18 bytes);
 * returns its length. */
size_t pt_chunked_size_line(char *out, size_t n);

#endif
