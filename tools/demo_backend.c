/*
 * demo_backend.c - the origin server behind portico's demo, end-to-end
 * tests and benchmarks.
 *
 * A self-contained HTTP/1.1 server (libc + pthreads; libcrypto for the
 * WebSocket handshake in demo_ws.c) with its own
 * request parser; it shares no code with the gateway, so it checks the
 * gateway rather than mirroring its bugs.  Design:
 *
 *   - each worker thread runs its own epoll instance; connections are
 *     non-blocking and edge-triggered; the listening sockets are shared by
 *     all workers (EPOLLEXCLUSIVE avoids thundering herds);
 *   - keep-alive and pipelining: every complete request in the input
 *     buffer is answered in order, and the answers leave in one write();
 *   - no allocation per request: a connection owns a fixed input buffer
 *     and an output buffer that only ever grows; request bodies stream
 *     through a CRC32 and at most 64 KiB of them is kept (for the echo);
 *   - /bytes/N is generated 64 KiB at a time as the socket drains;
 *   - timers (X-Demo-Delay, slow-body, lingering close) live in a
 *     per-worker list that sets the epoll_wait timeout: nothing sleeps.
 *
 * Usage: demo_backend --listen HOST:PORT [--listen HOST:PORT ...]
 *                     [--name NAME] [--threads N] [--quiet]
 *                     [--delay MS] [--status CODE]
 *
 * Endpoints, the X-Demo-* control headers and the /__stats counters are
 * documented in tools/README.md.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_CAP (64 * 1024)    /* per-connection input buffer */
#define MAX_HEAD (32 * 1024)  /* largest request head accepted */
#define MAX_HDRS 128          /* most header fields per request */
#define BODY_KEEP 65536       /* request body bytes kept for the echo */
#define OUT_HIGH (256 * 1024) /* stop parsing while this much is unsent */
#define REFILL (64 * 1024)    /* /bytes data generated per refill */
#define LINGER_MS 2000        /* drain input this long after a close */
#define SLOW_MS 100           /* slow-body: one byte per tick */
#define MAX_LISTEN 16
#define MAX_THREADS 64
#define JSON "application/json"

enum { OBJ_LISTENER = 1, OBJ_CONN, OBJ_STOP };  /* what an epoll event points at */
enum { PH_HEAD, PH_BODY, PH_READY };            /* request phases */
enum { CS_SIZE, CS_DATA, CS_CRLF, CS_TRAILER }; /* chunked decoder states */
enum { T_NONE, T_DELAY, T_SLOW, T_LINGER };     /* timer kinds */
enum {
    BRK_NONE,
    BRK_RESET,
    BRK_CLOSE,
    BRK_BADCL,
    BRK_SHORT,
    BRK_BADCHUNK,
    BRK_GARBAGE,
    BRK_HANG,
    BRK_SLOW,
    BRK_COUNT
};
static const char *const BREAK_NAMES[BRK_COUNT] = {
    "", "reset", "close", "bad-cl", "short", "bad-chunk", "garbage", "hang", "slow-body"};

/* A byte buffer; [off, len) is the part not consumed (sent) yet. */
struct buf {
    char *p;
    size_t off, len, cap;
};

struct listener {
    int kind, fd, port;
    char addr[300];
    char xb[128];   /* "X-Backend: name:port\r\n" */
    char tiny[256]; /* the /tiny response head up to and including X-Backend */
    size_t xblen, tinylen;
};

/* A header field as offsets from the start of the request head. */
struct hdr {
    uint32_t name, nlen, val, vlen;
};

struct req {
    uint32_t hlen, mlen, tgt, tlen; /* head length; method; request-target */
    char vminor;                    /* HTTP/1.<vminor> */
    bool keepalive, head, chunked, expect, demo;
    uint64_t clen;            /* Content-Length bytes still to read */
    uint64_t body_len, cleft; /* body bytes seen; left in this chunk */
    uint32_t crc;
    int cstate, delay, status, brk; /* chunked decoder; X-Demo-* controls */
    bool ochunked, oclose, delayed;
    unsigned nhdr;
    struct hdr h[MAX_HDRS]; /* (everything above is zeroed per request) */
};

struct conn {
    int kind, fd;
    struct listener *l;
    struct conn *prev, *next;   /* the worker's connections */
    struct conn *tprev, *tnext; /* the worker's armed timers */
    int64_t deadline;
    int tkind, phase;
    bool can_read, can_write, eof_pending, rd_eof, dead, stream_chunked;
    bool waiting, hung, slow, close_after, reset_after, lingering, counted;
    unsigned epoch;
    size_t allow; /* slow-body: bytes that may be written now */
    uint64_t nreq, stream_left, stream_pos;
    size_t stream_chunk;
    size_t rpos, bpos, wpos; /* request start, body cursor, data end */
    struct buf out;
    char *body; /* BODY_KEEP bytes, allocated on first use */
    struct req r;
    char in[IN_CAP];
};

struct worker {
    pthread_t tid;
    int ep;
    struct conn *conns, *timers;
    struct buf sb; /* scratch for response bodies */
    time_t date_sec;
    char date[64]; /* "Date: ...\r\n" */
    size_t datelen;
};

static const char *g_name = "demo";
static bool g_quiet;
static struct listener g_ls[MAX_LISTEN];
static int g_nls, g_stop_fd, g_stop_obj = OBJ_STOP;
static atomic_llong g_accepts, g_requests, g_active;
static atomic_uint g_epoch; /* bumped by /__stats/reset */
/* Process-wide defaults for requests without their own X-Demo-Delay or
 * X-Demo-Status (--delay, --status, POST /__control): a slow or failing
 * target, for balancer, breaker and failover tests. */
static atomic_int g_delay, g_status;
static uint32_t g_crc[8][256];
static char g_pat[REFILL + 16]; /* "0123456789abcdef" repeated */
static bool g_tchar[256];

/* ------------------------------------------------------------ utilities */

static void *xrealloc(void *p, size_t n)
{
    if (!(p = realloc(p, n))) {
        fputs("demo_backend: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Makes room for n more bytes, reclaiming the consumed prefix first.
 * Buffers only grow, so steady-state traffic never allocates. */
static char *reserve(struct buf *b, size_t n)
{
    if (b->cap - b->len >= n)
        return b->p + b->len;
    if (b->off) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap - b->len < n)
            cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    return b->p + b->len;
}

static void put(struct buf *b, const void *s, size_t n)
{
    if (!n)
        return;
    memcpy(reserve(b, n), s, n);
    b->len += n;
}

#define PUTS(b, lit) put((b), "" lit, sizeof(lit) - 1)
static void putstr(struct buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* Appends v in decimal (base 10) or lowercase hex, at least `width` digits. */
static void putnum(struct buf *b, uint64_t v, unsigned base, int width)
{
    char t[24];
    int i = sizeof t;
    do {
        t[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v || (int)sizeof t - i < width);
    put(b, t + i, sizeof t - (size_t)i);
}
#define putu(b, v) putnum((b), (v), 10, 1)

/* printf into a buffer; for the cold paths (the hot ones use put()). */
static void putf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    va_start(ap, fmt);
    vsnprintf(reserve(b, (size_t)n + 1), (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Length of the valid UTF-8 sequence at s (no overlongs, surrogates or
 * code points above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t k = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
    if (c < 0xC2 || c > 0xF4 || n < k)
        return 0;
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return k;
}

static bool utf8_valid(const char *p, size_t n)
{
    for (size_t i = 0, k; i < n; i += k)
        if (!(k = utf8_len((const unsigned char *)p + i, n - i)))
            return false;
    return true;
}

/* Appends s as a JSON string.  Valid UTF-8 is copied; a byte that is not
 * part of a valid sequence becomes \u00XX (read as Latin-1), so the output
 * is valid JSON whatever the request contained. */
static void put_json(struct buf *b, const char *s, size_t n)
{
    static const char esc[] = "\"\"\\\\\nn\rr\tt\bb\ff"; /* pairs: byte, escape letter */
    char *o = reserve(b, n * 6 + 2), *o0 = o;
    const unsigned char *p = (const unsigned char *)s;
    *o++ = '"';
    for (size_t i = 0, k; i < n; i += k) {
        unsigned ch = p[i];
        const char *e;
        if (ch >= 0x20 && ch < 0x80 && ch != '"' && ch != '\\') {
            *o++ = (char)ch;
            k = 1;
        } else if (ch >= 0x80 && (k = utf8_len(p + i, n - i))) {
            memcpy(o, p + i, k);
            o += k;
        } else if (ch && (e = memchr(esc, (int)ch, sizeof esc - 1)) && (e - esc) % 2 == 0) {
            *o++ = '\\';
            *o++ = e[1];
            k = 1;
        } else {
            o += sprintf(o, "\\u%04x", ch);
            k = 1;
        }
    }
    *o++ = '"';
    b->len += (size_t)(o - o0);
}

static void put_kv(struct buf *b, const char *key, const char *s, size_t n)
{
    putstr(b, key);
    put_json(b, s, n);
}

static void crc_init(void)
{
    for (uint32_t i = 0, c, k; i < 256; g_crc[0][i++] = c)
        for (c = i, k = 0; k < 8; k++)
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    for (int t = 1; t < 8; t++)
        for (int i = 0; i < 256; i++)
            g_crc[t][i] = (g_crc[t - 1][i] >> 8) ^ g_crc[0][g_crc[t - 1][i] & 0xFF];
}

static uint32_t le32(const unsigned char *s)
{
    return (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
}

/* zlib's CRC-32, sliced by 8 so that large uploads are not CPU-bound. */
static uint32_t crc32_update(uint32_t crc, const char *p, size_t n)
{
    const unsigned char *s = (const unsigned char *)p;
    crc = ~crc;
    for (; n >= 8; s += 8, n -= 8) {
        uint32_t a = crc ^ le32(s), b = le32(s + 4);
        crc = g_crc[7][a & 0xFF] ^ g_crc[6][(a >> 8) & 0xFF] ^ g_crc[5][(a >> 16) & 0xFF] ^
              g_crc[4][a >> 24] ^ g_crc[3][b & 0xFF] ^ g_crc[2][(b >> 8) & 0xFF] ^
              g_crc[1][(b >> 16) & 0xFF] ^ g_crc[0][b >> 24];
    }
    while (n--)
        crc = g_crc[0][(crc ^ *s++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* Strict unsigned decimal: digits only, at most `max`. */
static bool parse_u64(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (!n || n > 19)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    *out = v;
    return v <= max;
}

#define NAME_IS(p, n, lit) ((n) == sizeof(lit) - 1 && !strncasecmp((p), (lit), (n)))

/* Whether the comma-separated list p contains tok (case-insensitive). */
static bool has_token(const char *p, size_t n, const char *tok)
{
    for (size_t i = 0, s, e; i < n;) {
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
            i++;
        for (s = i; i < n && p[i] != ',';)
            i++;
        for (e = i; e > s && (p[e - 1] == ' ' || p[e - 1] == '\t');)
            e--;
        if (e - s == strlen(tok) && !strncasecmp(p + s, tok, e - s))
            return true;
    }
    return false;
}

static const char *reason(int code)
{
    static const struct {
        int code;
        const char *text;
    } R[] = {{200, "OK"},
             {201, "Created"},
             {202, "Accepted"},
             {204, "No Content"},
             {206, "Partial Content"},
             {301, "Moved Permanently"},
             {302, "Found"},
             {303, "See Other"},
             {304, "Not Modified"},
             {307, "Temporary Redirect"},
             {308, "Permanent Redirect"},
             {400, "Bad Request"},
             {401, "Unauthorized"},
             {403, "Forbidden"},
             {404, "Not Found"},
             {405, "Method Not Allowed"},
             {408, "Request Timeout"},
             {409, "Conflict"},
             {413, "Content Too Large"},
             {429, "Too Many Requests"},
             {431, "Request Header Fields Too Large"},
             {500, "Internal Server Error"},
             {501, "Not Implemented"},
             {502, "Bad Gateway"},
             {503, "Service Unavailable"},
             {504, "Gateway Timeout"},
             {505, "HTTP Version Not Supported"}};
    for (size_t i = 0; i < sizeof R / sizeof R[0]; i++)
        if (R[i].code == code)
            return R[i].text;
    return "Status";
}

/* ------------------------------------------------------------ timers */

/* Arms c's single timer (a connection waits for one thing at a time). */
static void timer_set(struct worker *w, struct conn *c, int ms, int kind)
{
    if (!c->tkind) {
        c->tprev = NULL;
        if ((c->tnext = w->timers))
            w->timers->tprev = c;
        w->timers = c;
    }
    c->tkind = kind;
    c->deadline = now_ms() + ms;
}

static void timer_clear(struct worker *w, struct conn *c)
{
    if (!c->tkind)
        return;
    *(c->tprev ? &c->tprev->tnext : &w->timers) = c->tnext;
    if (c->tnext)
        c->tnext->tprev = c->tprev;
    c->tkind = T_NONE;
}

/* The epoll_wait timeout: time to the earliest deadline, or -1. */
static int timers_next(struct worker *w)
{
    int64_t min = INT64_MAX, now = now_ms();
    if (!w->timers)
        return -1;
    for (struct conn *c = w->timers; c; c = c->tnext)
        min = c->deadline < min ? c->deadline : min;
    return min <= now ? 0 : (int)(min - now);
}

/* ------------------------------------------------------------ parsing */

/* Length of the request head at p (through the empty line that ends it;
 * CRLF or bare LF line endings), or 0 if it is not complete yet. */
static size_t find_head_end(const char *p, size_t n)
{
    const char *s = p, *e = p + n;
    while ((s = memchr(s, '\n', (size_t)(e - s))) && ++s < e) {
        if (*s == '\n')
            return (size_t)(s + 1 - p);
        if (*s == '\r' && s + 1 < e && s[1] == '\n')
            return (size_t)(s + 2 - p);
    }
    return 0;
}

/* Scans one line (which must end with LF before `end`); returns its length
 * without CR/LF and sets *next to the following line. */
static size_t head_line(const char *p, const char *end, const char **next)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t ll = (size_t)(nl - p);
    *next = nl + 1;
    return ll && p[ll - 1] == '\r' ? ll - 1 : ll;
}

/* Interprets one X-Demo-<n> header.  Returns 0, or 400 with *err set. */
static int parse_demo(struct req *r, const char *n, size_t nl, const char *v, size_t vl,
                      const char **err)
{
    uint64_t x;
    size_t i = 0;
    bool on = NAME_IS(v, vl, "1") || NAME_IS(v, vl, "true") || NAME_IS(v, vl, "yes");
    r->demo = true;
    if (NAME_IS(n, nl, "delay")) {
        *err = "bad X-Demo-Delay (milliseconds expected)";
        if (!parse_u64(v, vl, 3600000, &x))
            return 400;
        r->delay = (int)x;
    } else if (NAME_IS(n, nl, "status")) {
        *err = "bad X-Demo-Status (200..599 expected)";
        if (!parse_u64(v, vl, 599, &x) || x < 200)
            return 400;
        r->status = (int)x;
    } else if (NAME_IS(n, nl, "chunked")) {
        r->ochunked = on;
    } else if (NAME_IS(n, nl, "close")) {
        r->oclose = on;
    } else if (NAME_IS(n, nl, "header")) {
        while (i < vl && g_tchar[(unsigned char)v[i]])
            i++;
        *err = "bad X-Demo-Header (\"Name: value\" expected)";
        if (!i || i >= vl || v[i] != ':')
            return 400;
    } else if (NAME_IS(n, nl, "break")) {
        for (int k = 1; k < BRK_COUNT; k++)
            if (strlen(BREAK_NAMES[k]) == vl && !strncasecmp(v, BREAK_NAMES[k], vl))
                r->brk = k;
        *err = "unknown X-Demo-Break mode";
        if (!r->brk)
            return 400;
    }
    return 0;
}

/* Parses the request head at c->in + c->rpos (r->hlen bytes, ending with
 * an empty line) into c->r.  Returns 0, or an error status with *err set. */
static int parse_head(struct conn *c, const char **err)
{
    struct req *r = &c->r;
    const char *base = c->in + c->rpos, *end = base + r->hlen, *p = base, *next;
    size_t ll = head_line(p, end, &next), i = 0;

    /* request-line = method SP request-target SP HTTP-version */
    *err = "malformed request line";
    while (i < ll && g_tchar[(unsigned char)p[i]])
        i++;
    if (!i || i >= ll || p[i] != ' ')
        return 400;
    r->mlen = (uint32_t)i;
    size_t t = ++i;
    for (; i < ll && p[i] != ' '; i++)
        if ((unsigned char)p[i] <= 0x20 || p[i] == 0x7f)
            return 400;
    if (i == t || ll - i != 9)
        return 400;
    r->tgt = (uint32_t)t;
    r->tlen = (uint32_t)(i - t);
    const char *v = p + i + 1;
    if (memcmp(v, "HTTP/", 5) || v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' ||
        v[7] > '9')
        return 400;
    *err = "unsupported HTTP version";
    if (v[5] != '1')
        return 505;
    r->vminor = v[7];

    bool has_cl = false, want_close = false, want_ka = false;
    int hosts = 0, tes = 0;
    for (p = next; p < end && (ll = head_line(p, end, &next)); p = next) {
        /* field-name ":" OWS field-value OWS; obs-fold (a leading space)
         * and whitespace before the colon are rejected */
        *err = "malformed header field";
        for (i = 0; i < ll && g_tchar[(unsigned char)p[i]];)
            i++;
        if (!i || i >= ll || p[i] != ':')
            return 400;
        size_t vs = i + 1, ve = ll;
        while (vs < ve && (p[vs] == ' ' || p[vs] == '\t'))
            vs++;
        while (ve > vs && (p[ve - 1] == ' ' || p[ve - 1] == '\t'))
            ve--;
        for (size_t k = vs; k < ve; k++)
            if (((unsigned char)p[k] < 0x20 && p[k] != '\t') || p[k] == 0x7f)
                return 400;
        *err = "too many header fields";
        if (r->nhdr == MAX_HDRS)
            return 431;
        r->h[r->nhdr++] = (struct hdr){(uint32_t)(p - base), (uint32_t)i, (uint32_t)(p - base + vs),
                                       (uint32_t)(ve - vs)};
        const char *val = p + vs;
        size_t vl = ve - vs;
        uint64_t x;
        if (NAME_IS(p, i, "content-length")) {
            *err = "bad Content-Length";
            if (!parse_u64(val, vl, UINT64_MAX, &x) || (has_cl && x != r->clen))
                return 400;
            has_cl = true;
            r->clen = x;
        } else if (NAME_IS(p, i, "transfer-encoding")) {
            *err = "unsupported Transfer-Encoding";
            if (!NAME_IS(val, vl, "chunked"))
                return 501;
            tes++;
            r->chunked = true;
        } else if (NAME_IS(p, i, "connection")) {
            want_close |= has_token(val, vl, "close");
            want_ka |= has_token(val, vl, "keep-alive");
        } else if (NAME_IS(p, i, "host")) {
            hosts++;
        } else if (NAME_IS(p, i, "expect")) {
            r->expect = NAME_IS(val, vl, "100-continue");
        } else if (i > 7 && !strncasecmp(p, "x-demo-", 7)) {
            int rc = parse_demo(r, p + 7, i - 7, val, vl, err);
            if (rc)
                return rc;
        }
    }
    *err = "ambiguous message framing";
    if (tes > 1 || (r->chunked && (has_cl || r->vminor == '0')))
        return 400;
    *err = "missing or duplicate Host header";
    if (r->vminor != '0' ? hosts != 1 : hosts > 1)
        return 400;
    r->keepalive = r->vminor == '0' ? want_ka && !want_close : !want_close;
    r->head = r->mlen == 4 && !memcmp(base, "HEAD", 4);
    r->expect = r->expect && r->vminor != '0' && (r->chunked || r->clen);
    const char *tg = base + r->tgt;
    if (!(r->tlen >= 3 && !memcmp(tg, "/__", 3))) { /* control paths are never slowed */
        int d = atomic_load_explicit(&g_delay, memory_order_relaxed);
        int st = atomic_load_explicit(&g_status, memory_order_relaxed);
        if (d && !r->delay)
            r->delay = d, r->demo = true;
        if (st && !r->status)
            r->status = st, r->demo = true;
    }
    return 0;
}

/* Feeds body bytes to the CRC and keeps the first BODY_KEEP of them. */
static void body_feed(struct conn *c, const char *p, size_t n)
{
    struct req *r = &c->r;
    if (!n)
        return;
    r->crc = crc32_update(r->crc, p, n);
    if (r->body_len < BODY_KEEP) {
        size_t k = BODY_KEEP - (size_t)r->body_len;
        if (!c->body)
            c->body = xrealloc(NULL, BODY_KEEP);
        memcpy(c->body + r->body_len, p, k < n ? k : n);
    }
    r->body_len += n;
}

static int hexval(char ch)
{
    int lc = ch | 0x20;
    return ch >= '0' && ch <= '9' ? ch - '0' : lc >= 'a' && lc <= 'f' ? lc - 'a' + 10 : -1;
}

/* Consumes the request body buffered at c->bpos (Content-Length or
 * chunked).  Returns 1 when the body is complete, 0 when more input is
 * needed, -1 on a malformed chunked body. */
static int body_step(struct conn *c)
{
    struct req *r = &c->r;
    if (!r->chunked) {
        size_t k = c->wpos - c->bpos < r->clen ? c->wpos - c->bpos : (size_t)r->clen;
        body_feed(c, c->in + c->bpos, k);
        c->bpos += k;
        return (r->clen -= k) == 0;
    }
    for (;;) {
        const char *p = c->in + c->bpos, *next;
        size_t avail = c->wpos - c->bpos, i = 0, k;
        if (r->cstate == CS_DATA) {
            if (!(k = avail < r->cleft ? avail : (size_t)r->cleft))
                return 0;
            body_feed(c, p, k);
            c->bpos += k;
            if (!(r->cleft -= k))
                r->cstate = CS_CRLF;
        } else if (r->cstate == CS_CRLF) { /* the line end after chunk data */
            k = avail && p[0] == '\n' ? 1 : avail > 1 && p[0] == '\r' && p[1] == '\n' ? 2 : 0;
            if (!k)
                return avail > 1 || (avail == 1 && p[0] != '\r') ? -1 : 0;
            c->bpos += k;
            r->cstate = CS_SIZE;
        } else { /* a chunk-size line or a trailer line: needs a whole line */
            if (!memchr(p, '\n', avail))
                return avail > 4096 ? -1 : 0;
            size_t ll = head_line(p, p + avail, &next);
            c->bpos = (size_t)(next - c->in);
            if (r->cstate == CS_TRAILER) {
                if (!ll)
                    return 1; /* trailer fields are ignored */
                continue;
            }
            uint64_t v = 0;
            for (int d; i < ll && (d = hexval(p[i])) >= 0; i++) {
                if (v >> 56)
                    return -1;
                v = v * 16 + (uint64_t)d;
            }
            size_t digits = i;
            while (i < ll && (p[i] == ' ' || p[i] == '\t'))
                i++;
            if (!digits || (i < ll && p[i] != ';'))
                return -1; /* extensions are ignored */
            r->cleft = v;
            r->cstate = v ? CS_DATA : CS_TRAILER;
        }
    }
}

/* Makes room at the end of the input buffer.  While a request's body is
 * read, its head must survive (the response is built from it), so only
 * the consumed body bytes between head and cursor are dropped. */
static void in_compact(struct conn *c)
{
    if (c->phase == PH_HEAD) {
        memmove(c->in, c->in + c->rpos, c->wpos - c->rpos);
        c->wpos -= c->rpos;
    } else {
        size_t hl = c->r.hlen;
        memmove(c->in, c->in + c->rpos, hl);
        memmove(c->in + hl, c->in + c->bpos, c->wpos - c->bpos);
        c->wpos = hl + (c->wpos - c->bpos);
        c->bpos = hl;
    }
    c->rpos = 0;
}

/* ------------------------------------------------------------ responses */

/* Writes a response head and decides the connection's fate: Connection:
 * close (and close after sending) unless the request allows keep-alive,
 * which HTTP/1.0 clients get confirmed explicitly. */
static void put_head(struct worker *w, struct conn *c, int code, const char *ctype, uint64_t clen,
                     bool chunked, bool bodyless)
{
    struct buf *o = &c->out;
    struct req *r = &c->r;
    PUTS(o, "HTTP/1.1 ");
    putu(o, (uint64_t)code);
    put(o, " ", 1);
    putstr(o, reason(code));
    PUTS(o, "\r\nContent-Type: ");
    putstr(o, ctype);
    if (!bodyless && chunked) {
        PUTS(o, "\r\nTransfer-Encoding: chunked");
    } else if (!bodyless) {
        PUTS(o, "\r\nContent-Length: ");
        putu(o, clen);
    }
    PUTS(o, "\r\n");
    put(o, c->l->xb, c->l->xblen);
    put(o, w->date, w->datelen);
    if (c->close_after || !r->keepalive || r->oclose) {
        PUTS(o, "Connection: close\r\n");
        c->close_after = true;
    } else if (r->vminor == '0') {
        PUTS(o, "Connection: keep-alive\r\n");
    }
    for (unsigned i = 0; r->demo && i < r->nhdr; i++) {
        if (NAME_IS(c->in + c->rpos + r->h[i].name, r->h[i].nlen, "x-demo-header")) {
            put(o, c->in + c->rpos + r->h[i].val, r->h[i].vlen);
            PUTS(o, "\r\n");
        }
    }
    PUTS(o, "\r\n");
}

/* Queues a response: a JSON body, or with `stream` the /bytes/N head whose
 * body stream_refill() produces later.  X-Demo-Status overrides the status;
 * X-Demo-Chunked sends the body chunked (HTTP/1.1 clients only); with
 * slow-body the head goes at once and the rest one byte per SLOW_MS. */
static void respond(struct worker *w, struct conn *c, int code, const char *body, uint64_t blen,
                    bool stream)
{
    struct req *r = &c->r;
    struct buf *o = &c->out;
    code = r->status ? r->status : code;
    bool bodyless = code == 204 || code == 304, chunked = r->ochunked && r->vminor != '0';
    bool send = !bodyless && !r->head;
    put_head(w, c, code, stream ? "application/octet-stream" : JSON, blen, chunked, bodyless);
    size_t head_pending = o->len - o->off;
    if (stream && send) {
        c->stream_left = blen;
        c->stream_pos = 0;
        c->stream_chunked = chunked;
        c->stream_chunk = blen < 3 * 16384 ? (size_t)blen / 3 + 1 : 16384;
    } else if (send && !chunked) {
        put(o, body, (size_t)blen);
    }
    for (size_t i = 0, k, piece = (size_t)blen / 3 + 1; send && chunked; i += k) {
        if (!(k = stream ? 0 : blen - i < piece ? blen - i : piece)) {
            if (!c->stream_left)
                PUTS(o, "0\r\n\r\n");
            break;
        }
        putnum(o, k, 16, 1);
        PUTS(o, "\r\n");
        put(o, body + i, k);
        PUTS(o, "\r\n");
    }
    if (r->brk == BRK_SLOW) {
        c->slow = true;
        c->allow = head_pending;
        timer_set(w, c, SLOW_MS, T_SLOW);
    }
}

/* Generates the next REFILL bytes of a /bytes body into the output buffer.
 * Byte i of the body is "0123456789abcdef"[i % 16]. */
static void stream_refill(struct conn *c)
{
    struct buf *o = &c->out;
    for (size_t budget = REFILL, k; c->stream_left && budget; budget -= k) {
        k = c->stream_left < budget ? (size_t)c->stream_left : budget;
        if (c->stream_chunked) {
            k = k < c->stream_chunk ? k : c->stream_chunk;
            putnum(o, k, 16, 1);
            PUTS(o, "\r\n");
        }
        put(o, g_pat + c->stream_pos % 16, k);
        c->stream_pos += k;
        c->stream_left -= k;
        if (c->stream_chunked)
            c->stream_left ? PUTS(o, "\r\n") : PUTS(o, "\r\n0\r\n\r\n");
    }
}

/* A request that cannot be served: {"error": msg}, then close. */
static void respond_error(struct worker *w, struct conn *c, int code, const char *msg)
{
    struct req *r = &c->r;
    r->demo = r->head = r->ochunked = false;
    r->status = r->brk = 0;
    c->close_after = true;
    w->sb.len = 0;
    put_kv(&w->sb, "{\"error\":", msg, strlen(msg));
    PUTS(&w->sb, "}");
    respond(w, c, code, w->sb.p, w->sb.len, false);
}

/* X-Demo-Break: misbehave as asked (slow-body is handled by respond()). */
static void do_break(struct worker *w, struct conn *c)
{
    static const char *const tails[BRK_COUNT] = {
        [BRK_BADCL] = "Content-Length: abc\r\n\r\n{\"ok\":true}",
        [BRK_SHORT] = "Content-Length: 100\r\n\r\n0123456789",
        [BRK_BADCHUNK] = "Transfer-Encoding: chunked\r\n\r\nzz\r\n{\"ok\":true}\r\n0\r\n\r\n"};
    int brk = c->r.brk, code = c->r.status ? c->r.status : 200;
    c->close_after = brk != BRK_RESET && brk != BRK_HANG;
    c->reset_after = brk == BRK_RESET;
    c->hung = brk == BRK_HANG;
    if (brk == BRK_GARBAGE)
        PUTS(&c->out, "NOT HTTP\r\n\r\n");
    if (tails[brk])
        putf(&c->out, "HTTP/1.1 %d %s\r\nContent-Type: " JSON "\r\n%s%sConnection: close\r\n%s",
             code, reason(code), c->l->xb, w->date, tails[brk]);
}

static const struct user {
    const char *name, *email, *handle;
} USERS[] = {
    {"Ada Lovelace", "ada@example.com", "ada"},
    {"Alan Turing", "alan@example.com", "alan"},
    {"Grace Hopper", "grace@example.com", "grace"},
    {"Edsger Dijkstra", "edsger@example.com", "edsger"},
    {"Barbara Liskov", "barbara@example.com", "barbara"},
};
#define NUSERS (sizeof USERS / sizeof USERS[0])

static const struct order {
    int id, user, qty, cents;
    const char *item, *status;
} ORDERS[] = {
    {1001, 1, 3, 4500, "Analytical Engine punch cards", "shipped"},
    {1002, 2, 1, 12900, "Enigma rotor set", "delivered"},
    {1003, 1, 10, 2990, "Brass gear assortment", "processing"},
    {1004, 3, 1, 3999, "COBOL reference manual", "shipped"},
    {1005, 4, 2, 1550, "Semaphore starter kit", "delivered"},
    {1006, 5, 1, 2500, "CLU language notes", "processing"},
    {1007, 3, 1, 9900, "Framed moth", "delivered"},
    {1008, 2, 1, 45000, "Bombe maintenance kit", "cancelled"},
};

static void user_json(struct buf *b, size_t i)
{
    putf(b,
         "{\"id\":%zu,\"name\":\"%s\",\"email\":\"%s\","
         "\"avatar\":\"https://avatars.example.com/%s.png\"}",
         i + 1, USERS[i].name, USERS[i].email, USERS[i].handle);
}

/* GET /orders[?user=ID][&limit=N]; other query parameters are ignored. */
static int orders_json(struct buf *b, const char *q, size_t ql)
{
    uint64_t user = 0, limit = UINT64_MAX, n = 0;
    for (const char *p = q, *e = q + ql, *amp, *eq; p < e; p = amp + (amp < e)) {
        if (!(amp = memchr(p, '&', (size_t)(e - p))))
            amp = e;
        if (!(eq = memchr(p, '=', (size_t)(amp - p))))
            continue;
        size_t kl = (size_t)(eq - p), vl = (size_t)(amp - eq - 1);
        if ((NAME_IS(p, kl, "user") && !parse_u64(eq + 1, vl, UINT32_MAX, &user)) ||
            (NAME_IS(p, kl, "limit") && !parse_u64(eq + 1, vl, UINT32_MAX, &limit))) {
            PUTS(b, "{\"error\":\"bad query parameter\"}");
            return 400;
        }
    }
    PUTS(b, "[");
    for (size_t i = 0; i < sizeof ORDERS / sizeof ORDERS[0] && n < limit; i++) {
        const struct order *o = &ORDERS[i];
        if (user && (uint64_t)o->user != user)
            continue;
        putf(b,
             "%s{\"id\":%d,\"user_id\":%d,\"item\":\"%s\",\"quantity\":%d,"
             "\"total_cents\":%d,\"status\":\"%s\"}",
             n++ ? "," : "", o->id, o->user, o->item, o->qty, o->cents, o->status);
    }
    PUTS(b, "]");
    return 200;
}

/* GET /recommendations?user=ID (examples/bff.yaml's web profile): a
 * nested document, the same few items for everyone, ranked per user. */
static int recommendations_json(struct buf *b, const char *q, size_t ql)
{
    static const char *const items[] = {"Difference Engine replica", "Slide rule",
                                        "Core memory plane"};
    uint64_t user = 0;
    if (ql < 5 || memcmp(q, "user=", 5) != 0 || !parse_u64(q + 5, ql - 5, NUSERS, &user) ||
        user == 0) {
        PUTS(b, "{\"error\":\"user=ID expected\"}");
        return 400;
    }
    putf(b, "{\"user_id\":%llu,\"model\":{\"name\":\"demo\",\"version\":3},\"items\":[",
         (unsigned long long)user);
    for (size_t i = 0; i < 3; i++)
        putf(b, "%s{\"sku\":\"SKU-%zu\",\"title\":\"%s\",\"score\":%.2f}", i ? "," : "",
             100 + (i + user) % 3, items[(i + user) % 3], 0.9 - 0.2 * (double)i);
    PUTS(b, "]}");
    return 200;
}

/* The catch-all handler: describes the request as JSON. */
static void echo_json(struct buf *b, struct conn *c, const char *path, size_t pl, const char *q,
                      size_t ql)
{
    struct req *r = &c->r;
    const char *base = c->in + c->rpos;
    put_kv(b, "{\"backend\":", g_name, strlen(g_name));
    putf(b, ",\"port\":%d", c->l->port);
    put_kv(b, ",\"method\":", base, r->mlen);
    put_kv(b, ",\"path\":", path, pl);
    put_kv(b, ",\"query\":", q, ql);
    put_kv(b, ",\"target\":", base + r->tgt, r->tlen);
    putf(b, ",\"version\":\"HTTP/1.%c\",\"headers\":[", r->vminor);
    for (unsigned i = 0; i < r->nhdr; i++) {
        put_kv(b, i ? ",[" : "[", base + r->h[i].name, r->h[i].nlen);
        put_kv(b, ",", base + r->h[i].val, r->h[i].vlen);
        PUTS(b, "]");
    }
    putf(b,
         "],\"body_len\":%llu,\"body_crc32\":\"%08x\",\"body\":", (unsigned long long)r->body_len,
         (unsigned)r->crc);
    if (r->body_len <= BODY_KEEP && utf8_valid(c->body, (size_t)r->body_len))
        put_json(b, r->body_len ? c->body : "", (size_t)r->body_len);
    else
        PUTS(b, "null");
    PUTS(b, "}");
}

/* Routes a fully received request and queues its response. */
/* POST /__control?delay=MS&status=CODE: sets (0 clears) the process-wide
 * defaults; answers with the values now in force. */
static int control(struct buf *b, const char *q, size_t ql)
{
    int delay = atomic_load(&g_delay), status = atomic_load(&g_status);
    for (const char *p = q, *e = q + ql; p && p < e;) {
        const char *amp = memchr(p, '&', (size_t)(e - p)), *end = amp ? amp : e;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        uint64_t x;
        if (!eq || !parse_u64(eq + 1, (size_t)(end - eq - 1), 3600000, &x)) {
            PUTS(b, "{\"error\":\"bad /__control query (delay=MS&status=CODE)\"}");
            return 400;
        }
        if (NAME_IS(p, (size_t)(eq - p), "delay")) {
            delay = (int)x;
        } else if (NAME_IS(p, (size_t)(eq - p), "status") && (x == 0 || (x >= 200 && x <= 599))) {
            status = (int)x;
        } else {
            PUTS(b, "{\"error\":\"bad /__control query (delay=MS&status=CODE)\"}");
            return 400;
        }
        p = amp ? amp + 1 : NULL;
    }
    atomic_store(&g_delay, delay);
    atomic_store(&g_status, status);
    putf(b, "{\"delay\":%d,\"status\":%d}", delay, status);
    return 200;
}

/* ------------------------------------------------------------ websocket */

/* tools/demo_ws.c: takes the socket (a dup of fd, now blocking), answers
 * the handshake for `key` and echoes on a thread of its own; `pend`
 * (bytes behind the handshake) and `hdrs` (its fields as JSON) are its. */
bool demo_ws_start(int fd, const char *key, size_t kl, char *pend, size_t npend, char *hdrs,
                   size_t hl);

/* Answers the handshake and hands the socket to a session thread. False
 * when this is not a valid upgrade (then it is answered as a request). */
static bool ws_upgrade(struct worker *w, struct conn *c)
{
    struct req *r = &c->r;
    const char *base = c->in + c->rpos, *key = NULL, *up = NULL;
    size_t kl = 0, ul = 0;
    for (unsigned i = 0; i < r->nhdr; i++) {
        const char *n = base + r->h[i].name;
        if (r->h[i].nlen == 17 && !strncasecmp(n, "sec-websocket-key", 17))
            key = base + r->h[i].val, kl = r->h[i].vlen;
        if (r->h[i].nlen == 7 && !strncasecmp(n, "upgrade", 7))
            up = base + r->h[i].val, ul = r->h[i].vlen;
    }
    if (!key || !up || !has_token(up, ul, "websocket"))
        return false;
    struct buf hb = {0};
    PUTS(&hb, "[");
    for (unsigned i = 0; i < r->nhdr; i++) {
        put_kv(&hb, i ? ",[" : "[", base + r->h[i].name, r->h[i].nlen);
        put_kv(&hb, ",", base + r->h[i].val, r->h[i].vlen);
        PUTS(&hb, "]");
    }
    PUTS(&hb, "]");
    size_t npend = c->wpos - c->bpos;
    char *pend = xrealloc(NULL, npend + 1);
    memcpy(pend, c->in + c->bpos, npend);
    c->bpos = c->wpos;
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    demo_ws_start(c->fd, key, kl, pend, npend, hb.p, hb.len);
    c->dead = true; /* the worker lets go of its descriptor; the session has its own */
    return true;
}

static void dispatch(struct worker *w, struct conn *c)
{
    struct req *r = &c->r;
    struct buf *b = &w->sb;
    const char *base = c->in + c->rpos, *path = base + r->tgt, *q = "", *s, *qm;
    size_t pl = r->tlen, ql = 0;
    uint64_t n;
    int code = 200;
    if (path[0] != '/' && (s = memmem(path, pl, "://", 3))) { /* absolute-form */
        const char *e = path + pl, *slash = memchr(s + 3, '/', (size_t)(e - s - 3));
        path = slash ? slash : e;
        pl = (size_t)(e - path);
    }
    if ((qm = memchr(path, '?', pl))) {
        q = qm + 1;
        ql = pl - (size_t)(q - path);
        pl = (size_t)(qm - path);
    }
#define PATH_IS(lit) (pl == sizeof(lit) - 1 && !memcmp(path, lit, pl))
#define PATH_HAS(lit) (pl >= sizeof(lit) - 1 && !memcmp(path, lit, sizeof(lit) - 1))
    bool get = r->head || (r->mlen == 3 && !memcmp(base, "GET", 3));
    bool post = r->mlen == 4 && !memcmp(base, "POST", 4);
    bool stats = (get && PATH_IS("/__stats")) || (post && PATH_IS("/__stats/reset")) ||
                 (post && PATH_IS("/__control"));

    /* Stats probes are invisible: not counted as requests, and a
     * connection that starts with one is not counted at all. */
    if (!stats) {
        atomic_fetch_add_explicit(&g_requests, 1, memory_order_relaxed);
    } else if (!c->nreq && c->counted) {
        c->counted = false;
        atomic_fetch_sub(&g_active, 1);
        if (c->epoch == atomic_load(&g_epoch))
            atomic_fetch_sub(&g_accepts, 1);
    }
    if (r->brk && r->brk != BRK_SLOW) {
        do_break(w, c);
        return;
    }
    if (get && PATH_IS("/ws/echo") && ws_upgrade(w, c))
        return;
    if (get && !r->demo && !r->head && r->keepalive && r->vminor == '1' && PATH_IS("/tiny")) {
        /* the benchmark path: three copies into the output buffer */
        struct listener *l = c->l;
        char *d = reserve(&c->out, l->tinylen + w->datelen + 13);
        memcpy(d, l->tiny, l->tinylen);
        memcpy(d + l->tinylen, w->date, w->datelen);
        memcpy(d + l->tinylen + w->datelen, "\r\n{\"ok\":true}", 13);
        c->out.len += l->tinylen + w->datelen + 13;
        return;
    }
    b->len = 0;
    if (get && PATH_IS("/tiny")) {
        PUTS(b, "{\"ok\":true}");
    } else if (get && PATH_IS("/healthz")) {
        PUTS(b, "{\"status\":\"ok\"}");
    } else if (get && PATH_IS("/users")) {
        for (size_t i = 0; i < NUSERS; i++) {
            put(b, i ? "," : "[", 1);
            user_json(b, i);
        }
        PUTS(b, "]");
    } else if (get && PATH_HAS("/users/")) {
        if (parse_u64(path + 7, pl - 7, NUSERS, &n) && n >= 1) {
            user_json(b, (size_t)n - 1);
        } else {
            code = 404;
            PUTS(b, "{\"error\":\"not found\"}");
        }
    } else if (get && PATH_IS("/orders")) {
        code = orders_json(b, q, ql);
    } else if (get && PATH_IS("/recommendations")) {
        code = recommendations_json(b, q, ql);
    } else if (post && PATH_IS("/__control")) {
        code = control(b, q, ql);
    } else if (stats) {
        if (post) {
            atomic_fetch_add(&g_epoch, 1);
            atomic_store(&g_accepts, 0);
            atomic_store(&g_requests, 0);
        }
        long long v[3] = {atomic_load(&g_accepts), atomic_load(&g_requests),
                          atomic_load(&g_active)};
        putf(b, "{\"accepts\":%lld,\"requests\":%lld,\"active\":%lld}", v[0] > 0 ? v[0] : 0,
             v[1] > 0 ? v[1] : 0, v[2] > 0 ? v[2] : 0);
    } else if (get && PATH_HAS("/bytes/")) {
        if (parse_u64(path + 7, pl - 7, (uint64_t)1 << 50, &n)) {
            respond(w, c, 200, NULL, n, true);
            return;
        }
        code = 400;
        PUTS(b, "{\"error\":\"bad byte count\"}");
    } else {
        echo_json(b, c, path, pl, q, ql);
    }
    respond(w, c, code, b->p, b->len, false);
}

/* ------------------------------------------------------------ connections */

static void conn_close(struct worker *w, struct conn *c, bool rst)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (rst)
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); /* close() sends RST */
    close(c->fd);
    timer_clear(w, c);
    *(c->prev ? &c->prev->next : &w->conns) = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->counted)
        atomic_fetch_sub(&g_active, 1);
    free(c->out.p);
    free(c->body);
    free(c);
}

/* Reads what fits into the input buffer.  Once no more requests will be
 * served (close pending, hung) input is read and thrown away instead.  A
 * short read means the socket is drained, unless EOF is known to be
 * pending (EPOLLRDHUP): then we read on until read() returns 0. */
static bool conn_read(struct conn *c)
{
    char sink[16384];
    ssize_t n;
    if (!c->can_read || c->rd_eof)
        return false;
    if (c->hung || c->close_after || c->reset_after) {
        while ((n = read(c->fd, sink, sizeof sink)) > 0 || (n < 0 && errno == EINTR))
            ;
        c->rd_eof = n == 0;
        c->can_read = false;
        c->dead = n < 0 && errno != EAGAIN;
        return false;
    }
    if (c->phase == PH_HEAD && c->rpos == c->wpos)
        c->rpos = c->wpos = 0;
    else if (IN_CAP - c->wpos < 4096)
        in_compact(c);
    size_t space = IN_CAP - c->wpos;
    if (!space)
        return false;
    if ((n = read(c->fd, c->in + c->wpos, space)) > 0) {
        c->wpos += (size_t)n;
        c->can_read = (size_t)n == space || c->eof_pending;
        return true;
    }
    if (n == 0)
        c->rd_eof = true;
    if (n == 0 || errno == EINTR)
        return true;
    c->can_read = false;
    c->dead = errno != EAGAIN;
    return false;
}

/* Parses and answers as many buffered requests as allowed: not while a
 * response is delayed, streaming or trickling, nor past OUT_HIGH unsent
 * bytes, nor after a response that closes the connection. */
static bool conn_process(struct worker *w, struct conn *c)
{
    bool prog = false;
    while (!c->waiting && !c->hung && !c->close_after && !c->reset_after && !c->slow &&
           !c->stream_left && c->out.len - c->out.off < OUT_HIGH) {
        if (c->phase == PH_HEAD) {
            for (; c->rpos < c->wpos && (c->in[c->rpos] == '\r' || c->in[c->rpos] == '\n');
                 c->rpos++)
                prog = true; /* empty lines before a request-line are ignored */
            size_t hl = find_head_end(c->in + c->rpos, c->wpos - c->rpos);
            if (!hl && c->wpos - c->rpos < MAX_HEAD)
                break;
            memset(&c->r, 0, offsetof(struct req, h));
            c->r.vminor = '1';
            c->r.hlen = (uint32_t)hl;
            const char *err = "request head too large";
            int code = hl && hl <= MAX_HEAD ? parse_head(c, &err) : 431;
            if (code) {
                respond_error(w, c, code, err);
                return true;
            }
            c->bpos = c->rpos + hl;
            c->phase = PH_BODY;
            prog = true;
            if (c->r.expect)
                PUTS(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
        }
        if (c->phase == PH_BODY) {
            size_t before = c->bpos;
            int s = body_step(c);
            prog |= c->bpos != before;
            if (s < 0) {
                respond_error(w, c, 400, "malformed chunked body");
                return true;
            }
            if (!s)
                break;
            c->phase = PH_READY;
        }
        if (c->r.delay && !c->r.delayed) {
            c->r.delayed = c->waiting = true;
            timer_set(w, c, c->r.delay, T_DELAY);
            break;
        }
        dispatch(w, c);
        c->nreq++;
        c->rpos = c->bpos;
        c->phase = PH_HEAD;
        prog = true;
    }
    return prog;
}

/* Writes queued output, one write() for everything queued, refilling a
 * /bytes stream as the buffer empties and keeping to the slow-body budget. */
static bool conn_flush(struct worker *w, struct conn *c)
{
    struct buf *o = &c->out;
    bool prog = false;
    for (;;) {
        if (o->off == o->len) {
            o->off = o->len = 0;
            if (c->stream_left)
                stream_refill(c);
        }
        size_t n = o->len - o->off;
        n = c->slow && n > c->allow ? c->allow : n;
        if (!n || !c->can_write)
            break;
        ssize_t k = write(c->fd, o->p + o->off, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            c->can_write = false;
            c->dead = errno != EAGAIN;
            break;
        }
        o->off += (size_t)k;
        c->allow -= c->slow ? (size_t)k : 0;
        prog = true;
        if ((size_t)k < n) {
            c->can_write = false;
            break;
        }
    }
    if (c->slow && o->off == o->len && !c->stream_left) {
        c->slow = false;
        timer_clear(w, c);
    }
    return prog;
}

/* Closes the connection if it is finished.  Returns false if it was. */
static bool conn_finish(struct worker *w, struct conn *c)
{
    bool drained = c->out.off == c->out.len && !c->stream_left;
    if (c->dead || (drained && c->reset_after)) {
        conn_close(w, c, c->reset_after && !c->dead);
        return false;
    }
    if (drained && c->close_after && !c->lingering) {
        /* lingering close: send FIN, then drain input until the peer
         * closes, so unread input cannot turn our FIN into a RST */
        shutdown(c->fd, SHUT_WR);
        c->lingering = true;
        timer_set(w, c, LINGER_MS, T_LINGER);
        conn_read(c);
    }
    if (c->dead ||
        (c->rd_eof && (c->lingering || c->hung || (drained && !c->waiting && !c->close_after)))) {
        conn_close(w, c, false);
        return false;
    }
    return true;
}

/* Drives a connection as far as it goes without blocking.  Returns false
 * if the connection was closed (and freed). */
static bool conn_run(struct worker *w, struct conn *c)
{
    for (bool prog = true; prog && !c->dead;) {
        prog = conn_read(c);
        prog |= !c->dead && conn_process(w, c);
        prog |= !c->dead && conn_flush(w, c);
    }
    return conn_finish(w, c);
}

static void timers_run(struct worker *w)
{
    int64_t now = now_ms();
    for (struct conn *c = w->timers, *next; c; c = next) {
        next = c->tnext; /* only c itself is closed or re-armed below */
        if (c->deadline > now)
            continue;
        int kind = c->tkind;
        timer_clear(w, c);
        if (kind == T_LINGER) {
            conn_close(w, c, false);
            continue;
        }
        c->waiting = c->waiting && kind != T_DELAY;
        c->allow += kind == T_SLOW;
        if (conn_run(w, c) && kind == T_SLOW && c->slow && !c->tkind)
            timer_set(w, c, SLOW_MS, T_SLOW);
    }
}

static void do_accept(struct worker *w, struct listener *l)
{
    for (int i = 0, one = 1; i < 64; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0) {
            if (errno != EAGAIN && !g_quiet)
                perror("demo_backend: accept");
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = xrealloc(NULL, sizeof *c);
        memset(c, 0, offsetof(struct conn, r) + offsetof(struct req, h));
        c->kind = OBJ_CONN;
        c->fd = fd;
        c->l = l;
        c->can_write = c->counted = true;
        c->epoch = atomic_load(&g_epoch);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                                 .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        if ((c->next = w->conns))
            w->conns->prev = c;
        w->conns = c;
        atomic_fetch_add_explicit(&g_accepts, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&g_active, 1, memory_order_relaxed);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[256];
    struct tm tm;
    for (bool running = true; running;) {
        int n = epoll_wait(w->ep, evs, 256, timers_next(w));
        if (n < 0 && errno != EINTR) {
            perror("demo_backend: epoll_wait");
            break;
        }
        time_t now = time(NULL);
        if (now != w->date_sec) { /* the Date header, formatted once a second */
            w->date_sec = now;
            w->datelen = strftime(w->date, sizeof w->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n",
                                  gmtime_r(&now, &tm));
        }
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            uint32_t ev = evs[i].events;
            struct conn *c = evs[i].data.ptr;
            if (kind == OBJ_STOP)
                running = false;
            if (kind == OBJ_LISTENER)
                do_accept(w, evs[i].data.ptr);
            if (kind != OBJ_CONN || !running)
                continue;
            c->can_read |= (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
            c->eof_pending |= (ev & (EPOLLRDHUP | EPOLLHUP)) != 0;
            c->can_write |= (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
            conn_run(w, c);
        }
        if (running && w->timers)
            timers_run(w);
    }
    while (w->conns)
        conn_close(w, w->conns, false);
    free(w->sb.p);
    return NULL;
}

/* ------------------------------------------------------------ startup */

/* Binds and listens on HOST:PORT ("[v6]:PORT"; an empty HOST means
 * 127.0.0.1; PORT 0 picks a free port) and prepares the per-port headers. */
static int open_listener(struct listener *l, const char *spec)
{
    static const char tiny[] =
        "HTTP/1.1 200 OK\r\nContent-Type: " JSON "\r\nContent-Length: 11\r\n";
    char host[256];
    const char *colon = strrchr(spec, ':'), *h = host;
    size_t hl = colon ? (size_t)(colon - spec) : 0;
    if (!colon || hl >= sizeof host || !colon[1])
        return fprintf(stderr, "demo_backend: bad --listen %s (HOST:PORT)\n", spec), -1;
    memcpy(host, spec, hl);
    host[hl] = 0;
    if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
        host[hl - 1] = 0;
        h++;
    }
    h = *h ? h : "127.0.0.1";
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *ai;
    int rc = getaddrinfo(h, colon + 1, &hints, &ai), one = 1, fd = -1;
    if (rc)
        return fprintf(stderr, "demo_backend: %s: %s\n", spec, gai_strerror(rc)), -1;
    if ((fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "demo_backend: %s: %s\n", spec, strerror(errno));
        freeaddrinfo(ai);
        if (fd >= 0)
            close(fd);
        return -1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    bool v6 = ss.ss_family == AF_INET6;
    l->kind = OBJ_LISTENER;
    l->fd = fd;
    l->port =
        ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    snprintf(l->addr, sizeof l->addr, v6 ? "[%s]:%d" : "%s:%d", h, l->port);
    l->xblen = (size_t)snprintf(l->xb, sizeof l->xb, "X-Backend: %s:%d\r\n", g_name, l->port);
    memcpy(l->tiny, tiny, sizeof tiny - 1);
    memcpy(l->tiny + sizeof tiny - 1, l->xb, l->xblen);
    l->tinylen = sizeof tiny - 1 + l->xblen;
    return 0;
}

/* "--opt value" or "--opt=value"; NULL if argv[*i] is not that option. */
static const char *opt_value(int argc, char **argv, int *i, const char *name)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n))
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    return argv[*i][n] || *i + 1 >= argc ? NULL : argv[++*i];
}

int main(int argc, char **argv)
{
    const char *specs[MAX_LISTEN], *v;
    char *end = "";
    int nspecs = 0, nthreads = 1, sig = 0;
    for (int i = 1; i < argc && *end == 0; i++) {
        if ((v = opt_value(argc, argv, &i, "--listen")))
            nspecs < MAX_LISTEN ? (void)(specs[nspecs++] = v) : (void)(end = "?");
        else if ((v = opt_value(argc, argv, &i, "--name")))
            g_name = v;
        else if ((v = opt_value(argc, argv, &i, "--threads")))
            nthreads = (int)strtol(v, &end, 10);
        else if ((v = opt_value(argc, argv, &i, "--delay")))
            atomic_store(&g_delay, (int)strtol(v, &end, 10));
        else if ((v = opt_value(argc, argv, &i, "--status")))
            atomic_store(&g_status, (int)strtol(v, &end, 10));
        else if (!strcmp(argv[i], "--quiet"))
            g_quiet = true;
        else
            end = "?";
    }
    size_t nl = strlen(g_name); /* the name goes into a header: keep it a token */
    if (*end || !nspecs || nthreads < 1 || nthreads > MAX_THREADS || !nl || nl > 64 ||
        strspn(g_name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != nl) {
        fputs("usage: demo_backend --listen HOST:PORT [--listen HOST:PORT ...]\n"
              "                    [--name NAME] [--threads N (1-64)] [--quiet]\n"
              "                    [--delay MS] [--status CODE]\n",
              stderr);
        return 2;
    }
    for (int ch = 0; ch < 256; ch++)
        g_tchar[ch] = (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
                      (ch && strchr("!#$%&'*+-.^_`|~", ch));
    for (size_t i = 0; i < sizeof g_pat; i++)
        g_pat[i] = "0123456789abcdef"[i % 16];
    crc_init();

    /* SIGINT/SIGTERM are taken synchronously by main (sigwait); the
     * workers inherit the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    for (g_nls = 0; g_nls < nspecs; g_nls++)
        if (open_listener(&g_ls[g_nls], specs[g_nls]) < 0)
            return 1;
    struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
    if ((g_stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0 || !ws)
        return perror("demo_backend"), 1;
    for (int t = 0; t < nthreads; t++) {
        struct worker *w = &ws[t];
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &g_stop_obj};
        if ((w->ep = epoll_create1(EPOLL_CLOEXEC)) < 0 ||
            epoll_ctl(w->ep, EPOLL_CTL_ADD, g_stop_fd, &ev) < 0)
            return perror("demo_backend: epoll"), 1;
        for (int i = 0; i < g_nls; i++) {
            ev = (struct epoll_event){.events = EPOLLIN | EPOLLEXCLUSIVE, .data.ptr = &g_ls[i]};
            if (epoll_ctl(w->ep, EPOLL_CTL_ADD, g_ls[i].fd, &ev) < 0)
                return perror("demo_backend: epoll"), 1;
        }
        if (pthread_create(&w->tid, NULL, worker_main, w))
            return fputs("demo_backend: cannot start threads\n", stderr), 1;
    }
    fprintf(stderr, "demo_backend %s listening on", g_name);
    for (int i = 0; i < g_nls; i++)
        fprintf(stderr, " %s", g_ls[i].addr);
    fputc('\n', stderr);

    sigwait(&sigs, &sig);
    uint64_t one = 1; /* the eventfd stays readable: every worker sees it */
    if (write(g_stop_fd, &one, sizeof one) < 0)
        perror("demo_backend: eventfd");
    for (int t = 0; t < nthreads; t++) {
        pthread_join(ws[t].tid, NULL);
        close(ws[t].ep);
    }
    for (int i = 0; i < g_nls; i++)
        close(g_ls[i].fd);
    close(g_stop_fd);
    free(ws);
    if (!g_quiet)
        fprintf(stderr, "demo_backend %s: %s, exiting\n", g_name, strsignal(sig));
    return 0;
}
