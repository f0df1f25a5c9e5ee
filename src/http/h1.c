/*
 * h1.c — the strict, incremental, zero-copy HTTP/1.1 parser and chunked
 * codec (contract in h1.h).
 *
 * How it stays both strict and incremental: a head is parsed line by line
 * from the start of the buffer every call. A line is judged only once its
 * LF is in the buffer; a violation found inside a line whose LF has not
 * arrived yet reports INCOMPLETE (see fail()). So the verdict on a buffer
 * depends only on its complete lines, which is what makes the `prev_len`
 * shortcut exact: when the new bytes hold no LF, no new line completed and
 * the answer is the previous one (INCOMPLETE).
 *
 * The parser looks at no more than max_header_bytes of the buffer (the
 * "view"). A head that does not end inside the view is too large (431, or
 * 414 when the view ends inside an over-long target) however many bytes
 * follow, so a call costs at most the limit, not what a client sent.
 */
#include "http/h1.h"

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Character classes (RFC 9110 §5.6.2 token, §5.5 field-value, RFC 3986
 * host/port characters). One table keeps every per-byte decision a load. */
enum {
    C_TCHAR = 1,  /* token character */
    C_HOST = 2,   /* reg-name / IP-literal / port character (no '@', '/') */
    C_VCHAR = 4,  /* visible ASCII 0x21..0x7e: allowed in a request-target */
    C_VALUE = 8,  /* field-value byte: HTAB, SP, VCHAR, obs-text */
    C_QDTEXT = 16 /* quoted-string text: value bytes except '"' and '\' */
};
#define CV (C_VCHAR | C_VALUE | C_QDTEXT)
#define CT (CV | C_TCHAR)
#define CH (CV | C_HOST)
#define CTH (CT | C_HOST)
static const uint8_t cclass[256] = {
    ['\t'] = C_VALUE | C_QDTEXT,
    [' '] = C_VALUE | C_QDTEXT,
    ['!'] = CTH,
    ['"'] = C_VCHAR | C_VALUE,
    ['#'] = CT,
    ['$'] = CTH,
    ['%'] = CTH,
    ['&'] = CTH,
    ['\''] = CTH,
    ['('] = CH,
    [')'] = CH,
    ['*'] = CTH,
    ['+'] = CTH,
    [','] = CH,
    ['-'] = CTH,
    ['.'] = CTH,
    ['/'] = CV,
    ['0' ... '9'] = CTH,
    [':'] = CH,
    [';'] = CH,
    ['<'] = CV,
    ['='] = CH,
    ['>'] = CV,
    ['?'] = CV,
    ['@'] = CV,
    ['A' ... 'Z'] = CTH,
    ['['] = CH,
    ['\\'] = C_VCHAR | C_VALUE,
    [']'] = CH,
    ['^'] = CT,
    ['_'] = CTH,
    ['`'] = CT,
    ['a' ... 'z'] = CTH,
    ['{'] = CV,
    ['|'] = CT,
    ['}'] = CV,
    ['~'] = CTH,
    [0x80 ... 0xff] = C_VALUE | C_QDTEXT,
};
#undef CV
#undef CT
#undef CH
#undef CTH

static inline bool is_class(char c, unsigned cls)
{
    return cclass[(uint8_t)c] & cls;
}
static inline bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}
static inline bool is_digit(char c)
{
    return (unsigned)(c - '0') < 10u;
}

_Static_assert(PT_TOK__COUNT <= 64, "the seen-token set is one uint64_t");

/* Parse state shared by requests and responses. */
struct parser {
    const char *buf, *end; /* the view: at most max_header_bytes */
    bool truncated;        /* the buffer goes on past the view */
    bool is_request;
    bool in_fields;   /* start line done */
    bool long_target; /* an unfinished target is already over max_uri_bytes */
    int minor;
    struct pt_h1_header *headers;
    size_t max_headers, n;
    struct pt_h1_framing *fr;
    int rc, status;
    const char *reason;
    uint64_t seen; /* set of tokens seen, for duplicate checks */
    pt_slice host; /* Host field value */
    bool te_seen, te_last_chunked, te_other;
    unsigned te_chunked; /* how many times chunked was listed */
    bool cl_seen, conn_close, conn_keep_alive, conn_upgrade, upgrade_seen, expect_continue;
};

static const char *incomplete(struct parser *ps)
{
    ps->rc = PT_H1_INCOMPLETE;
    return NULL;
}

/* Reports a violation at `at`, but only when the line holding it is
 * complete: until its LF arrives the line is still "being received" and
 * the verdict must not depend on how the bytes were split. */
static const char *fail(struct parser *ps, const char *at, int status, const char *reason)
{
    if (!memchr(at, '\n', (size_t)(ps->end - at)))
        return incomplete(ps);
    ps->rc = PT_H1_ERROR;
    ps->status = status;
    ps->reason = reason;
    return NULL;
}

/* First byte at or after p that cannot be part of a request-target
 * (≤ 0x20, DEL, ≥ 0x80), or end. */
static const char *scan_target(const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i lo = _mm_set1_epi8(0x21), del = _mm_set1_epi8(0x7f);
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        /* Signed compare: bytes ≥ 0x80 are negative, so "< 0x21" catches them too. */
        __m128i bad = _mm_or_si128(_mm_cmplt_epi8(v, lo), _mm_cmpeq_epi8(v, del));
        unsigned m = (unsigned)_mm_movemask_epi8(bad);
        if (m)
            return p + __builtin_ctz(m);
    }
#endif
    while (p < end && is_class(*p, C_VCHAR))
        p++;
    return p;
}

/* First byte at or after p that cannot be part of a field value (a CTL
 * other than HTAB, or DEL; CR ends a well-formed line), or end. Values are
 * the bulk of a head, so this is the loop that sets the parser's speed. */
static const char *scan_value(const char *p, const char *end)
{
#ifdef __SSE2__
    const __m128i c1f = _mm_set1_epi8(0x1f), tab = _mm_set1_epi8('\t'), del = _mm_set1_epi8(0x7f);
    for (; end - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
        __m128i ctl = _mm_cmpeq_epi8(_mm_min_epu8(v, c1f), v); /* unsigned v ≤ 0x1f */
        ctl = _mm_andnot_si128(_mm_cmpeq_epi8(v, tab), ctl);
        ctl = _mm_or_si128(ctl, _mm_cmpeq_epi8(v, del));
        unsigned m = (unsigned)_mm_movemask_epi8(ctl);
        if (m)
            return p + __builtin_ctz(m);
    }
#endif
    while (p < end && is_class(*p, C_VALUE))
        p++;
    return p;
}

static bool ieq(const char *p, size_t n, const char *lower_lit)
{
    return pt_slice_ieq((pt_slice){p, n}, (pt_slice){lower_lit, strlen(lower_lit)});
}

/* uri-host [ ":" port ] (RFC 3986 §3.2.2): reg-name characters or an
 * IP-literal in brackets. No userinfo ('@'), path or whitespace, so a Host
 * can never smuggle a second target into routing. The host is never empty
 * (RFC 9110 §4.2.1: an http URI with an empty host is invalid), so `Host:`
 * and `Host: :80` are refused like any other bad host. */
static bool valid_authority(const char *p, size_t n, bool need_port)
{
    const char *e = p + n, *h = p;
    if (h < e && *h == '[') {
        for (h++; h < e && *h != ']'; h++)
            if (!is_class(*h, C_HOST) || *h == '[')
                return false;
        if (h == e || h == p + 1)
            return false;
        h++;
    } else {
        for (; h < e && *h != ':'; h++)
            if (!is_class(*h, C_HOST) || *h == '[' || *h == ']')
                return false;
        if (h == p)
            return false;
    }
    if (h == e)
        return !need_port;
    if (*h++ != ':' || (need_port && h == e))
        return false;
    for (; h < e; h++)
        if (!is_digit(*h))
            return false;
    return true;
}

static void split_path_query(struct pt_h1_request *req, const char *p, size_t n)
{
    const char *q = memchr(p, '?', n);
    if (q) {
        req->path = (pt_slice){p, (size_t)(q - p)};
        req->query = (pt_slice){q + 1, n - (size_t)(q - p) - 1};
    } else {
        req->path = (pt_slice){p, n};
        req->query = (pt_slice){p + n, 0};
    }
}

/* Sorts the request-target into its four forms (RFC 9112 §3.2); returns
 * NULL or why it is refused. */
static const char *classify_target(struct pt_h1_request *req)
{
    const char *t = req->target.p;
    size_t n = req->target.len;

    /* A fragment is never part of a request-target; a router and an
     * upstream could disagree on where the path ends. */
    if (memchr(t, '#', n))
        return "fragment in request-target";
    if (req->method_id == PT_METHOD_CONNECT) {
        if (!valid_authority(t, n, true))
            return "CONNECT needs an authority-form target";
        req->host = req->target;
        req->path = (pt_slice){t, 0};
        req->query = (pt_slice){t + n, 0};
        return NULL;
    }
    if (t[0] == '/') {
        split_path_query(req, t, n);
        return NULL;
    }
    if (n == 1 && t[0] == '*') {
        if (req->method_id != PT_METHOD_OPTIONS)
            return "'*' target is only for OPTIONS";
        req->path = req->target;
        req->query = (pt_slice){t + 1, 0};
        return NULL;
    }
    size_t skip = n > 7 && ieq(t, 7, "http://") ? 7 : n > 8 && ieq(t, 8, "https://") ? 8 : 0;
    if (!skip)
        return "invalid request-target";
    const char *a = t + skip, *e = t + n, *s = a;
    while (s < e && *s != '/' && *s != '?')
        s++;
    if (s == a || !valid_authority(a, (size_t)(s - a), false))
        return "invalid authority in absolute-form target";
    req->host = (pt_slice){a, (size_t)(s - a)};
    if (s < e && *s == '/') {
        split_path_query(req, s, (size_t)(e - s));
    } else {
        /* "http://h" and "http://h?q" have an empty path, which means "/".
         * This is the one slice that does not point into the buffer. */
        req->path = PT_SLICE("/");
        req->query = s < e ? (pt_slice){s + 1, (size_t)(e - s - 1)} : (pt_slice){e, 0};
    }
    return NULL;
}

/* method SP request-target SP HTTP-version CRLF, after optional empty
 * lines (RFC 9112 §2.2: a stray CRLF after a previous body is ignored). */
static const char *parse_request_line(struct parser *ps, const char *p, struct pt_h1_request *req,
                                      const struct pt_h1_limits *lim)
{
    const char *end = ps->end;
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;

    const char *m = p;
    while (p < end && is_class(*p, C_TCHAR))
        p++;
    if (p == end)
        return incomplete(ps);
    if (*p != ' ' || p == m)
        return fail(ps, p, 400, "invalid method");
    req->method = (pt_slice){m, (size_t)(p - m)};
    req->method_id = pt_method_lookup(m, (size_t)(p - m));

    const char *t = ++p;
    p = scan_target(p, end);
    if (p == end) {
        /* If this is where the view runs out, the answer is 414, not 431. */
        ps->long_target = (size_t)(end - t) > lim->max_uri_bytes;
        return incomplete(ps);
    }
    if (*p != ' ' || p == t)
        return fail(ps, p, 400, "invalid request-target");
    req->target = (pt_slice){t, (size_t)(p - t)};

    const char *v = p + 1; /* "HTTP/x.y" CR LF: exactly 10 bytes */
    if (end - v < 10)
        return fail(ps, v, 400, "invalid HTTP version");
    if (memcmp(v, "HTTP/", 5) != 0 || !is_digit(v[5]) || v[6] != '.' || !is_digit(v[7]))
        return fail(ps, v, 400, "invalid HTTP version");
    if (v[8] != '\r' || v[9] != '\n')
        return fail(ps, v + 8, 400, "request line must end with CRLF");
    /* Version before target checks, so the h2 preface "PRI * HTTP/2.0"
     * gets 505 rather than a complaint about its '*'. */
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(ps, v, 505, "HTTP version not supported");
    ps->minor = v[7] - '0';
    if (req->target.len > lim->max_uri_bytes)
        return fail(ps, v, 414, "request-target too long");
    const char *why = classify_target(req);
    if (why)
        return fail(ps, v, 400, why);
    return v + 10;
}

/* HTTP-version SP 3DIGIT SP reason CRLF. A missing reason and its SP are
 * tolerated ("HTTP/1.1 200\r\n"): they carry no framing meaning. */
static const char *parse_status_line(struct parser *ps, const char *p, struct pt_h1_response *res)
{
    const char *end = ps->end;
    if (end - p < 14) /* "HTTP/1.1 200" CR LF */
        return fail(ps, p, 502, "invalid status line");
    if (memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return fail(ps, p, 502, "invalid or unsupported HTTP version");
    if (!is_digit(p[9]) || !is_digit(p[10]) || !is_digit(p[11]) || p[9] == '0')
        return fail(ps, p, 502, "invalid status code");
    ps->minor = p[7] - '0';
    res->minor_version = ps->minor;
    res->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');

    const char *r = p + 12, *e = r;
    if (*r == ' ') {
        r++;
        e = scan_value(r, end);
        if (e == end)
            return incomplete(ps);
    }
    if (*e != '\r')
        return fail(ps, e, 502, "invalid status line");
    if (end - e < 2)
        return incomplete(ps);
    if (e[1] != '\n')
        return fail(ps, e, 502, "bare CR");
    res->reason = (pt_slice){r, (size_t)(e - r)};
    return e + 2;
}

/* Content-Length = 1*DIGIT, or a list of identical values ("42, 42",
 * RFC 9110 §8.6). Anything else, including an empty value or a number past
 * INT64_MAX, is an error. */
static bool note_content_length(struct parser *ps, pt_slice v)
{
    const char *p = v.p, *e = v.p + v.len;
    for (;;) {
        const char *d = p;
        int64_t n = 0;
        for (; p < e && is_digit(*p); p++) {
            if (n > (INT64_MAX - (*p - '0')) / 10)
                return ps->reason = "Content-Length overflows", false;
            n = n * 10 + (*p - '0');
        }
        if (p == d)
            return ps->reason = "invalid Content-Length", false;
        if (ps->cl_seen && n != ps->fr->content_length)
            return ps->reason = "differing Content-Length values", false;
        ps->cl_seen = true;
        ps->fr->content_length = n;
        while (p < e && is_ows(*p))
            p++;
        if (p == e)
            return true;
        if (*p++ != ',')
            return ps->reason = "invalid Content-Length", false;
        while (p < e && is_ows(*p))
            p++;
    }
}

/* Next element of a comma-separated list (RFC 9110 §5.6.1), OWS trimmed.
 * Returns false at the end. Empty elements come back with len 0. */
static bool next_element(const char **pp, const char *e, pt_slice *out)
{
    const char *p = *pp;
    if (p > e)
        return false;
    while (p < e && is_ows(*p))
        p++;
    const char *s = p, *c = memchr(p, ',', (size_t)(e - p));
    const char *t = c ? c : e;
    *pp = t + 1;
    while (t > s && is_ows(t[-1]))
        t--;
    *out = (pt_slice){s, (size_t)(t - s)};
    return true;
}

static bool is_token(pt_slice s)
{
    if (s.len == 0)
        return false;
    for (size_t i = 0; i < s.len; i++)
        if (!is_class(s.p[i], C_TCHAR))
            return false;
    return true;
}

/* Transfer-Encoding elements accumulate across field lines in order; the
 * verdict (chunked last and once, nothing else) is given in finish(). */
static bool note_transfer_encoding(struct parser *ps, pt_slice v)
{
    const char *p = v.p;
    pt_slice el;
    ps->te_seen = true;
    while (next_element(&p, v.p + v.len, &el)) {
        /* Empty elements and parameters are refused rather than skipped:
         * a framing header is no place for leniency. */
        if (!is_token(el))
            return ps->reason = "invalid Transfer-Encoding", false;
        if (ieq(el.p, el.len, "chunked")) {
            ps->te_chunked++;
            ps->te_last_chunked = true;
        } else {
            ps->te_other = true;
            ps->te_last_chunked = false;
        }
    }
    return true;
}

static bool note_connection(struct parser *ps, pt_slice v)
{
    const char *p = v.p;
    pt_slice el;
    while (next_element(&p, v.p + v.len, &el)) {
        if (el.len == 0)
            continue;
        if (!is_token(el))
            return ps->reason = "invalid Connection option", false;
        if (ieq(el.p, el.len, "close"))
            ps->conn_close = true;
        else if (ieq(el.p, el.len, "keep-alive"))
            ps->conn_keep_alive = true;
        else if (ieq(el.p, el.len, "upgrade"))
            ps->conn_upgrade = true;
    }
    return true;
}

/* Acts on a field the framing or routing depends on. Returns false with
 * ps->reason set when the field is refused (status 400 / 502). */
static bool note_field(struct parser *ps, const struct pt_h1_header *h)
{
    uint64_t bit = 1ull << h->token;
    if (ps->is_request && (pt_token_flags[h->token] & PT_TF_SINGLE) && (ps->seen & bit))
        return ps->reason = "duplicate header field (Host)", false;
    ps->seen |= bit;

    switch (h->token) {
    case PT_TOK_HOST:
        if (ps->is_request && !valid_authority(h->value.p, h->value.len, false))
            return ps->reason = "invalid Host", false;
        ps->host = h->value;
        return true;
    case PT_TOK_CONTENT_LENGTH:
        return note_content_length(ps, h->value);
    case PT_TOK_TRANSFER_ENCODING:
        return note_transfer_encoding(ps, h->value);
    case PT_TOK_CONNECTION:
        return note_connection(ps, h->value);
    case PT_TOK_UPGRADE:
        ps->upgrade_seen = true;
        /* Upgrade (h2c included) is hop-by-hop: the gateway never forwards
         * it and serves the request as plain HTTP/1.1, which RFC 9110
         * §7.8 allows. Rejecting it would break `curl --http2 http://`. */
        return true;
    case PT_TOK_EXPECT:
        if (ieq(h->value.p, h->value.len, "100-continue"))
            ps->expect_continue = true;
        return true;
    default:
        return true;
    }
}

/* field-line CRLF ... CRLF. Returns the end of the head. */
static const char *parse_fields(struct parser *ps, const char *p)
{
    const char *end = ps->end;
    int bad = ps->is_request ? 400 : 502;
    ps->in_fields = true;
    for (;;) {
        if (p == end)
            return incomplete(ps);
        if (*p == '\r') {
            if (end - p < 2)
                return incomplete(ps);
            if (p[1] != '\n')
                return fail(ps, p, bad, "bare CR");
            return p + 2;
        }
        if (*p == '\n')
            return fail(ps, p, bad, "bare LF");
        if (is_ows(*p))
            return fail(ps, p, bad, "obs-fold or whitespace before a field name");

        const char *name = p;
        while (p < end && is_class(*p, C_TCHAR))
            p++;
        if (p == end)
            return incomplete(ps);
        if (*p != ':')
            return fail(ps, p, bad, is_ows(*p) ? "whitespace before colon" : "invalid field name");
        if (p == name)
            return fail(ps, p, bad, "empty field name");
        if (ps->n == ps->max_headers)
            return fail(ps, p, ps->is_request ? 431 : 502, "too many header fields");

        const char *v = p + 1;
        while (v < end && is_ows(*v))
            v++;
        const char *e = scan_value(v, end);
        if (e == end)
            return incomplete(ps);
        if (*e != '\r')
            return fail(ps, e, bad, *e == '\n' ? "bare LF" : "control character in field value");
        if (end - e < 2)
            return incomplete(ps);
        if (e[1] != '\n')
            return fail(ps, e, bad, "bare CR");
        const char *ve = e;
        while (ve > v && is_ows(ve[-1]))
            ve--;

        struct pt_h1_header *h = &ps->headers[ps->n++];
        h->name = (pt_slice){name, (size_t)(p - name)};
        h->value = (pt_slice){v, (size_t)(ve - v)};
        h->token = pt_token_lookup(name, h->name.len);
        if (h->token != PT_TOK_UNKNOWN && !note_field(ps, h))
            return fail(ps, e, bad, ps->reason);
        p = e + 2;
    }
}

/* Whole-head rules (RFC 9112 §6): the message must have one unambiguous
 * length, and chunked must be the final coding, applied once. */
static bool finish(struct parser *ps)
{
    int bad = ps->is_request ? 400 : 502;
    struct pt_h1_framing *fr = ps->fr;
    const char *why = NULL;

    ps->status = bad;
    if (ps->is_request && ps->minor == 1 && !(ps->seen & (1ull << PT_TOK_HOST)))
        why = "missing Host";
    else if (ps->te_seen && ps->cl_seen)
        why = "Content-Length with Transfer-Encoding";
    else if (ps->te_seen && ps->minor == 0)
        why = "Transfer-Encoding in HTTP/1.0";
    else if (ps->te_seen && !ps->te_last_chunked)
        why = "chunked is not the final transfer coding";
    else if (ps->te_chunked > 1)
        why = "chunked applied more than once";
    else if (ps->te_other) {
        ps->status = ps->is_request ? 501 : 502;
        why = "unsupported transfer coding";
    }
    if (why) {
        ps->rc = PT_H1_ERROR;
        ps->reason = why;
        return false;
    }
    fr->chunked = ps->te_seen;
    fr->keep_alive = ps->minor == 1 ? !ps->conn_close : ps->conn_keep_alive && !ps->conn_close;
    fr->upgrade = ps->upgrade_seen && ps->conn_upgrade;
    return true;
}

/* The head length is returned as an int, hence the clamp. */
static size_t view_cap(const struct pt_h1_limits *lim)
{
    return PT_MIN(lim->max_header_bytes, (size_t)INT32_MAX);
}

static void parser_init(struct parser *ps, const char *buf, size_t len,
                        const struct pt_h1_limits *lim, struct pt_h1_header *headers,
                        struct pt_h1_framing *fr, bool is_request)
{
    size_t cap = view_cap(lim);
    *ps = (struct parser){.buf = buf,
                          .is_request = is_request,
                          .headers = headers,
                          .max_headers = lim->max_headers,
                          .fr = fr};
    /* A head not ended within cap bytes is longer than cap: a full view
     * is as final as a longer buffer (a buffer of exactly cap bytes can
     * take no more). */
    ps->truncated = len >= cap;
    ps->end = buf + (ps->truncated ? cap : len);
    *fr = (struct pt_h1_framing){.content_length = -1};
}

/* The final verdict: a head that cannot end inside the view is too big. */
static int parser_result(struct parser *ps, const char *head_end)
{
    if (head_end)
        return (int)(head_end - ps->buf);
    if (ps->rc == PT_H1_INCOMPLETE && ps->truncated) {
        ps->rc = PT_H1_ERROR;
        ps->status = ps->long_target ? 414 : 431;
        ps->reason = ps->long_target ? "request-target too long"
                     : ps->in_fields ? "header section too large"
                                     : "request line too large";
    }
    return ps->rc;
}

/* New bytes without an LF complete no line, so the verdict on the longer
 * buffer is the previous one: INCOMPLETE (see the file comment). */
static bool nothing_new(const char *buf, size_t len, size_t prev_len,
                        const struct pt_h1_limits *lim)
{
    return prev_len != 0 && prev_len <= len && len < view_cap(lim) &&
           !memchr(buf + prev_len, '\n', len - prev_len);
}

int pt_h1_parse_request(const char *buf, size_t len, size_t prev_len, struct pt_h1_request *req,
                        struct pt_h1_header *headers, const struct pt_h1_limits *lim)
{
    if (nothing_new(buf, len, prev_len, lim))
        return PT_H1_INCOMPLETE;

    struct parser ps;
    *req = (struct pt_h1_request){.headers = headers};
    parser_init(&ps, buf, len, lim, headers, &req->framing, true);
    const char *p = parse_request_line(&ps, buf, req, lim);
    if (p)
        p = parse_fields(&ps, p);
    if (p && !finish(&ps))
        p = NULL;
    req->num_headers = ps.n;
    req->minor_version = ps.minor;
    req->expect_continue = ps.expect_continue;
    /* absolute-form and CONNECT already took the host from the target. */
    if (!req->host.p)
        req->host = ps.host;
    int rc = parser_result(&ps, p);
    if (rc == PT_H1_ERROR) {
        req->error_status = ps.status;
        req->error_reason = ps.reason;
    }
    return rc;
}

int pt_h1_parse_response(const char *buf, size_t len, size_t prev_len, struct pt_h1_response *res,
                         struct pt_h1_header *headers, const struct pt_h1_limits *lim)
{
    if (nothing_new(buf, len, prev_len, lim))
        return PT_H1_INCOMPLETE;

    struct parser ps;
    *res = (struct pt_h1_response){.headers = headers};
    parser_init(&ps, buf, len, lim, headers, &res->framing, false);
    const char *p = parse_status_line(&ps, buf, res);
    if (p)
        p = parse_fields(&ps, p);
    if (p && !finish(&ps))
        p = NULL;
    res->num_headers = ps.n;
    int rc = parser_result(&ps, p);
    if (rc == PT_H1_ERROR) {
        /* Whatever went wrong upstream, the client sees a bad gateway. */
        res->error_status = 502;
        res->error_reason = ps.reason;
    }
    return rc;
}

/* ---- chunked transfer coding (RFC 9112 §7.1) ---- */

/* One state per position in the grammar, so input may be split anywhere. */
enum {
    CS_SIZE,           /* first hex digit of chunk-size */
    CS_SIZE_DIGITS,    /* more hex digits, ';', BWS or CR */
    CS_BWS,            /* BWS after size or ext value: only ';' may follow */
    CS_EXT_NAME_START, /* after ';': BWS, then a token */
    CS_EXT_NAME,       /* in chunk-ext-name */
    CS_EXT_NAME_BWS,   /* BWS after a name: '=' or ';' must follow */
    CS_EXT_VAL_START,  /* after '=': BWS, then token or quoted-string */
    CS_EXT_VAL_TOKEN,
    CS_EXT_VAL_QUOTED,
    CS_EXT_VAL_ESCAPE, /* after '\' in a quoted-string */
    CS_EXT_VAL_END,    /* after the closing quote */
    CS_SIZE_LF,        /* CR seen at the end of the size line */
    CS_DATA,
    CS_DATA_CR,
    CS_DATA_LF,
    CS_TRAILER_START, /* a trailer field line, or the final CRLF */
    CS_TRAILER_NAME,
    CS_TRAILER_VALUE,
    CS_TRAILER_LF,
    CS_FINAL_LF,
    CS_DONE,
    CS_ERROR,
};

#define CHUNK_LINE_MAX 4096u     /* one chunk-size line with its extensions */
#define CHUNK_TRAILER_MAX 16384u /* the whole trailer section */
#define CHUNK_SIZE_MAX (1ull << 62)

void pt_chunked_init(struct pt_chunked *c)
{
    *c = (struct pt_chunked){.state = CS_SIZE};
}

static int hex_value(char ch)
{
    if (is_digit(ch))
        return ch - '0';
    unsigned l = (unsigned)(ch | 0x20) - 'a';
    return l < 6u ? (int)l + 10 : -1;
}

/* Advances the state machine by one byte outside chunk data. Returns the
 * new state (CS_ERROR on a violation). */
static int chunk_step(struct pt_chunked *c, char ch)
{
    int s = c->state;
    if (s < CS_DATA && ++c->line_len > CHUNK_LINE_MAX)
        return CS_ERROR;
    if (s >= CS_TRAILER_START && s <= CS_FINAL_LF && ++c->line_len > CHUNK_TRAILER_MAX)
        return CS_ERROR;

    switch (s) {
    case CS_SIZE:
    case CS_SIZE_DIGITS: {
        int d = hex_value(ch);
        if (d >= 0) {
            if (++c->size_digits > 16 || c->remaining > (CHUNK_SIZE_MAX - (uint64_t)d) / 16)
                return CS_ERROR;
            c->remaining = c->remaining * 16 + (uint64_t)d;
            return CS_SIZE_DIGITS;
        }
        if (s == CS_SIZE)
            return CS_ERROR;
        return ch == ';'    ? CS_EXT_NAME_START
               : is_ows(ch) ? CS_BWS
               : ch == '\r' ? CS_SIZE_LF
                            : CS_ERROR;
    }
    case CS_BWS:
        return is_ows(ch) ? CS_BWS : ch == ';' ? CS_EXT_NAME_START : CS_ERROR;
    case CS_EXT_NAME_START:
        return is_ows(ch) ? s : is_class(ch, C_TCHAR) ? CS_EXT_NAME : CS_ERROR;
    case CS_EXT_NAME:
        if (is_class(ch, C_TCHAR))
            return s;
        if (ch == '\r')
            return CS_SIZE_LF;
        /* After a name, whatever may follow its BWS may follow. */
        __attribute__((fallthrough));
    case CS_EXT_NAME_BWS:
        return is_ows(ch)  ? CS_EXT_NAME_BWS
               : ch == '=' ? CS_EXT_VAL_START
               : ch == ';' ? CS_EXT_NAME_START
                           : CS_ERROR;
    case CS_EXT_VAL_START:
        return is_ows(ch)              ? s
               : ch == '"'             ? CS_EXT_VAL_QUOTED
               : is_class(ch, C_TCHAR) ? CS_EXT_VAL_TOKEN
                                       : CS_ERROR;
    case CS_EXT_VAL_TOKEN:
        if (is_class(ch, C_TCHAR))
            return s;
        __attribute__((fallthrough));
    case CS_EXT_VAL_END:
        return ch == '\r'   ? CS_SIZE_LF
               : ch == ';'  ? CS_EXT_NAME_START
               : is_ows(ch) ? CS_BWS
                            : CS_ERROR;
    case CS_EXT_VAL_QUOTED:
        return ch == '"'                ? CS_EXT_VAL_END
               : ch == '\\'             ? CS_EXT_VAL_ESCAPE
               : is_class(ch, C_QDTEXT) ? s
                                        : CS_ERROR;
    case CS_EXT_VAL_ESCAPE:
        return is_class(ch, C_VALUE) ? CS_EXT_VAL_QUOTED : CS_ERROR;
    case CS_SIZE_LF:
        if (ch != '\n')
            return CS_ERROR;
        /* From here line_len counts the next size line, or the trailer
         * section as a whole (never reset there: it is bounded in total). */
        c->line_len = 0;
        c->size_digits = 0;
        return c->remaining ? CS_DATA : CS_TRAILER_START;
    case CS_DATA_CR:
        return ch == '\r' ? CS_DATA_LF : CS_ERROR;
    case CS_DATA_LF:
        return ch == '\n' ? CS_SIZE : CS_ERROR;
    case CS_TRAILER_START:
        return ch == '\r' ? CS_FINAL_LF : is_class(ch, C_TCHAR) ? CS_TRAILER_NAME : CS_ERROR;
    case CS_TRAILER_NAME:
        return is_class(ch, C_TCHAR) ? s : ch == ':' ? CS_TRAILER_VALUE : CS_ERROR;
    case CS_TRAILER_VALUE:
        return is_class(ch, C_VALUE) ? s : ch == '\r' ? CS_TRAILER_LF : CS_ERROR;
    case CS_TRAILER_LF:
        return ch == '\n' ? CS_TRAILER_START : CS_ERROR;
    case CS_FINAL_LF:
        return ch == '\n' ? CS_DONE : CS_ERROR;
    default:
        return CS_ERROR;
    }
}

/* Scan, decode and strip share this loop. */
enum chunk_mode { CK_SCAN, CK_DECODE, CK_STRIP };

/* Whether the byte consumed in state s belongs to a trailer field line. */
static bool in_trailer_field(int s, char ch)
{
    return (s == CS_TRAILER_START && ch != '\r') || s == CS_TRAILER_NAME || s == CS_TRAILER_VALUE ||
           s == CS_TRAILER_LF;
}

static ssize_t chunked_run(struct pt_chunked *c, enum chunk_mode mode, char *buf, size_t len,
                           size_t *out_len, bool *done)
{
    size_t i = 0, w = 0;
    while (i < len && c->state != CS_DONE && c->state != CS_ERROR) {
        if (c->state == CS_DATA) {
            size_t take = (size_t)PT_MIN((uint64_t)(len - i), c->remaining);
            if (mode != CK_SCAN && w != i)
                memmove(buf + w, buf + i, take);
            w += take;
            i += take;
            c->remaining -= take;
            if (c->remaining == 0)
                c->state = CS_DATA_CR;
            continue;
        }
        int s = c->state;
        char ch = buf[i++];
        c->state = chunk_step(c, ch);
        if (mode == CK_STRIP && !in_trailer_field(s, ch))
            buf[w++] = ch;
    }
    if (out_len)
        *out_len = mode == CK_SCAN ? i : w;
    *done = c->state == CS_DONE;
    return c->state == CS_ERROR ? -1 : (ssize_t)i;
}

ssize_t pt_chunked_scan(struct pt_chunked *c, const char *buf, size_t len, bool *done)
{
    return chunked_run(c, CK_SCAN, (char *)buf, len, NULL, done);
}

ssize_t pt_chunked_decode(struct pt_chunked *c, char *buf, size_t len, size_t *out_len, bool *done)
{
    return chunked_run(c, CK_DECODE, buf, len, out_len, done);
}

ssize_t pt_chunked_strip(struct pt_chunked *c, char *buf, size_t len, size_t *out_len, bool *done)
{
    return chunked_run(c, CK_STRIP, buf, len, out_len, done);
}

size_t pt_chunked_size_line(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t k = 0;
    do {
        tmp[k++] = hex[n & 15];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < k; i++)
        out[i] = tmp[k - 1 - i];
    out[k] = '\r';
    out[k + 1] = '\n';
    return k + 2;
}
