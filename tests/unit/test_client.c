/* test_client.c — the outbound client (client.h) and the buffered fetch
 * (fetch.h) against a scripted upstream, in process: a real epoll loop
 * with a pt_outbound and buffer pool drives the calls, and the upstream is
 * a non-blocking loopback listener the test serves by hand on the same
 * thread (accept, read what arrived, send scripted bytes, close), so every
 * interleaving is the one the test chose.
 *
 * Covered: request head (hop-by-hop and framing fields dropped, Host
 * added), keep-alive reuse, request bodies (Content-Length and chunked,
 * offered in pieces, backpressure through a full socket), response
 * framings (length, chunked, close-delimited, HEAD/204/304), 1xx heads,
 * failures (refused, invalid, truncated, timeouts, body stall), the stale
 * pooled connection retry, pt_fetch and pt_fetch_parse_url.
 *
 * Three cases guard defects these tests found (fixed since): a complete
 * body-less answer must reach PT_CALL_DONE, a fetch on a pooled connection
 * must send its request, and URLs end their authority at `?` and `#`. */
#include "proxy/client.h"
#include "proxy/fetch.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>

/* ---- the environment: loop, outbound, one upstream with one target ---- */

static struct pt_loop loop;
static struct pt_bufpool bufs;
static struct pt_outbound ob;
static struct pt_arena arena;
static struct pt_upstream up;
static struct pt_target tgt;
static char tgt_address[32];
static int lfd = -1;

static void turn(void)
{
    pt_loop_run_once(&loop, 1);
    pt_outbound_reap(&ob);
}

static void set_target(struct pt_target *t, char *address, uint16_t port)
{
    memset(t, 0, sizeof(*t));
    struct sockaddr_in *sa = (struct sockaddr_in *)&t->addr;
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa->sin_port = htons(port);
    t->addrlen = sizeof(*sa);
    snprintf(address, 32, "127.0.0.1:%u", port);
    t->address = address;
    t->weight = 1;
}

static void env_open(void)
{
    CHECK(pt_loop_init(&loop) == 0);
    pt_bufpool_init(&bufs, 16);
    pt_outbound_init(&ob, &loop, &bufs);
    pt_arena_init(&arena, 16384);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(lfd, (struct sockaddr *)&sa, len) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &len) < 0)
        abort();
    set_target(&tgt, tgt_address, ntohs(sa.sin_port));
    memset(&up, 0, sizeof(up));
    up.name = "test";
    up.targets = &tgt;
    up.ntargets = 1;
    up.connect_timeout_ms = 1000;
    up.read_timeout_ms = 5000;
    up.keepalive = 8;
}

static void env_close(void)
{
    pt_outbound_destroy(&ob);
    pt_loop_flush(&loop);
    pt_loop_destroy(&loop);
    pt_bufpool_destroy(&bufs);
    pt_arena_destroy(&arena);
    close(lfd);
    lfd = -1;
}

/* Drops idle pooled connections (a test that wants a fresh connection). */
static void pool_flush(void)
{
    pt_outbound_destroy(&ob);
    pt_outbound_init(&ob, &loop, &bufs);
}

/* ---- the upstream side, served by hand ---- */

struct upc {
    int fd;
    char *in;
    size_t n, cap;
    bool eof;
};

/* True when a connection waits in the listener's backlog. */
static bool up_pending(void)
{
    struct pollfd p = {.fd = lfd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

/* Accepts the next connection, spinning the loop meanwhile. */
static bool up_accept(struct upc *s)
{
    memset(s, 0, sizeof(*s));
    s->cap = 1 << 16;
    s->in = malloc(s->cap);
    s->in[0] = 0;
    s->fd = -1;
    for (int i = 0; i < 3000 && s->fd < 0; i++) {
        s->fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (s->fd < 0)
            turn();
    }
    return s->fd >= 0;
}

static void up_close(struct upc *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static void up_free(struct upc *s)
{
    up_close(s);
    free(s->in);
    s->in = NULL;
}

static void up_drain(struct upc *s)
{
    while (s->fd >= 0) {
        if (s->cap - s->n < 4096) {
            s->cap *= 2;
            s->in = realloc(s->in, s->cap);
        }
        ssize_t r = recv(s->fd, s->in + s->n, s->cap - s->n - 1, MSG_DONTWAIT);
        if (r == 0)
            s->eof = true;
        if (r <= 0)
            break;
        s->n += (size_t)r;
        s->in[s->n] = 0;
    }
}

/* Spins the loop until the upstream has received `pat`. */
static bool up_wait(struct upc *s, const char *pat)
{
    for (int i = 0; i < 3000; i++) {
        up_drain(s);
        if (memmem(s->in, s->n, pat, strlen(pat)))
            return true;
        turn();
    }
    return false;
}

/* Spins a few turns and returns what arrived meanwhile (from `from`). */
static const char *up_settle(struct upc *s, size_t from)
{
    for (int i = 0; i < 5; i++) {
        turn();
        up_drain(s);
    }
    return s->in + from;
}

static void up_reset(struct upc *s)
{
    s->n = 0;
    s->in[0] = 0;
}

static void up_send(struct upc *s, const char *str)
{
    size_t len = strlen(str);
    CHECK_EQ_INT(send(s->fd, str, len, MSG_NOSIGNAL), len);
}

/* ---- the caller side ---- */

struct caller {
    struct pt_call c;
    /* request body source: body[off..offered) is on offer */
    const char *body;
    size_t offered, off;
    bool body_eos;
    size_t consumed_calls;
    int wakes;
    bool hold; /* don't take response bytes */
    /* what came back */
    char resp[4096];
    size_t rlen;
    uint64_t rtotal, rsum; /* every body byte: count and a position-weighted sum */
    bool resp_eos;
    int interim[4];
    int ninterim;
    char interim_link[64];
};

static pt_slice body_peek(void *user, bool *eos)
{
    struct caller *u = user;
    *eos = u->body_eos; /* set once everything is on offer */
    return (pt_slice){u->body ? u->body + u->off : "", u->offered - u->off};
}

static void body_consumed(void *user, size_t n)
{
    struct caller *u = user;
    u->off += n;
    u->consumed_calls++;
}

/* Takes what the call has, then pumps it, while that makes progress. */
static void pull(struct caller *u)
{
    struct pt_call *c = &u->c;
    for (int guard = 0; guard < 10000; guard++) {
        if (c->phase == PT_CALL_FAILED)
            return;
        const struct pt_call_head *ih;
        while ((ih = pt_call_interim(c))) {
            if (u->ninterim < 4)
                u->interim[u->ninterim] = ih->status;
            u->ninterim++;
            for (size_t i = 0; i < ih->nfields; i++)
                if (pt_slice_ieq_cstr(ih->fields[i].name, "Link"))
                    snprintf(u->interim_link, sizeof(u->interim_link), "%.*s",
                             (int)ih->fields[i].value.len, ih->fields[i].value.p);
            pt_call_interim_done(c);
        }
        if (pt_call_head(c) && !u->hold) {
            bool eos = false;
            pt_slice s = pt_call_body_peek(c, &eos);
            size_t keep = PT_MIN(s.len, sizeof(u->resp) - u->rlen);
            memcpy(u->resp + u->rlen, s.p, keep);
            u->rlen += keep;
            for (size_t i = 0; i < s.len; i++)
                u->rsum += (uint64_t)(unsigned char)s.p[i] * (++u->rtotal);
            pt_call_body_consume(c, s.len);
            u->resp_eos |= eos;
        }
        if (pt_call_pump(c) == 0)
            return;
    }
}

static void on_wake(void *user)
{
    struct caller *u = user;
    u->wakes++;
    pull(u);
}

static const struct pt_call_ops caller_ops = {body_peek, body_consumed, on_wake};

static struct pt_call_req mkreq(const char *method, int method_id, const char *path)
{
    return (struct pt_call_req){
        .up = &up,
        .method = {method, strlen(method)},
        .method_id = method_id,
        .path = {path, strlen(path)},
        .add_host = true,
        .content_length = -1,
        .pool_idle_ms = 10000,
        .arena = &arena,
        .max_headers = 32,
    };
}

static int start(struct caller *u, const struct pt_call_req *r)
{
    memset(u, 0, sizeof(*u));
    int rc = pt_call_start(&u->c, &ob, r, &caller_ops, u);
    if (rc == 0)
        pull(u); /* a pooled connection is writable now: no event will say so */
    return rc;
}

#define SPIN_UNTIL(cond)                                                                           \
    do {                                                                                           \
        for (int spin_i_ = 0; spin_i_ < 3000 && !(cond); spin_i_++)                                \
            turn();                                                                                \
    } while (0)

static bool done_or_failed(const struct caller *u)
{
    return u->c.phase == PT_CALL_FAILED || u->resp_eos;
}

static pt_slice field(const struct pt_call_head *h, const char *name)
{
    for (size_t i = 0; h && i < h->nfields; i++)
        if (pt_slice_ieq_cstr(h->fields[i].name, name))
            return h->fields[i].value;
    return (pt_slice){NULL, 0};
}

#define CHECK_RESP(u, str)                                                                         \
    CHECK_MSG((u)->rlen == strlen(str) && memcmp((u)->resp, (str), (u)->rlen) == 0,                \
              "body \"%.*s\" != \"%s\"", (int)(u)->rlen, (u)->resp, (str))

/* A plain GET answered with `resp` on upstream connection s (accepted
 * here when s->fd < 0); checks the call completes. */
static void simple_get(struct caller *u, struct upc *s, const char *resp)
{
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(u, &r), 0);
    if (s->fd < 0)
        CHECK(up_accept(s));
    CHECK(up_wait(s, "\r\n\r\n"));
    up_reset(s);
    up_send(s, resp);
    SPIN_UNTIL(done_or_failed(u));
    CHECK_EQ_INT(u->c.fail, PT_CALL_FAIL_NONE);
}

/* ---- tests ---- */

/* GET with a Content-Length answer: the head as sent, the response as
 * parsed, then a second call on the same (pooled) connection. */
static void test_get_and_reuse(void)
{
    struct caller u;
    struct upc s;
    struct pt_headers h = {0};
    pt_headers_add(&h, &arena, PT_SLICE("X-Test"), PT_SLICE("yes"));
    pt_headers_add(&h, &arena, PT_SLICE("Connection"), PT_SLICE("close"));
    pt_headers_add(&h, &arena, PT_SLICE("Content-Length"), PT_SLICE("99"));
    pt_headers_add(&h, &arena, PT_SLICE("Expect"), PT_SLICE("100-continue"));
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/a");
    r.query = PT_SLICE("x=1");
    r.headers = &h;
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(!u.c.reused);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    char want[160];
    snprintf(want, sizeof(want), "GET /a?x=1 HTTP/1.1\r\nX-Test: yes\r\nHost: %s\r\n\r\n",
             tgt_address);
    CHECK_STR(s.in, want);
    CHECK(u.c.sent_all);
    CHECK(u.c.phase == PT_CALL_WAITING);
    CHECK(!pt_call_head(&u.c));
    up_reset(&s);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Up: 1\r\n\r\nhello");
    SPIN_UNTIL(done_or_failed(&u));
    const struct pt_call_head *hd = pt_call_head(&u.c);
    CHECK(hd != NULL);
    if (hd) {
        CHECK_EQ_INT(hd->status, 200);
        CHECK(pt_slice_eq_cstr(hd->reason, "OK"));
        CHECK_EQ_INT(hd->nfields, 2);
        CHECK(pt_slice_eq_cstr(field(hd, "X-Up"), "1"));
        CHECK_EQ_INT(hd->content_length, 5);
        CHECK_EQ_INT(hd->frame, PT_FRAME_LENGTH);
    }
    CHECK_RESP(&u, "hello");
    CHECK(u.resp_eos);
    CHECK_EQ_INT(u.c.phase, PT_CALL_DONE);
    CHECK(u.c.t_head_ns >= u.c.t_connect_ns && u.c.t_connect_ns > 0);
    pt_call_finish(&u.c);
    turn(); /* not one released in this turn */

    /* The second call goes out on the same connection. */
    r = mkreq("GET", PT_METHOD_GET, "/b");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(u.c.reused);
    CHECK(up_wait(&s, "\r\n\r\n"));
    CHECK(!up_pending());
    CHECK(strncmp(s.in, "GET /b HTTP/1.1\r\n", 17) == 0);
    up_reset(&s);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_RESP(&u, "bye");
    pt_call_finish(&u.c);
    CHECK_EQ_INT(ob.connects, 1);
    CHECK_EQ_INT(ob.reuses, 1);
    turn();
    up_free(&s);
    pool_flush();
}

/* A Content-Length request body offered in pieces: only what is offered
 * goes out, exactly once, and only after the head. */
static void test_body_length_pieces(void)
{
    struct caller u;
    struct upc s;
    struct pt_call_req r = mkreq("POST", PT_METHOD_POST, "/up");
    r.content_length = 11;
    CHECK_EQ_INT(start(&u, &r), 0);
    u.body = "hello world";
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    CHECK(strstr(s.in, "\r\nContent-Length: 11\r\n\r\n") != NULL);
    size_t head = s.n;
    CHECK_STR(up_settle(&s, head), "");
    CHECK(!u.c.sent_all);
    u.offered = 5;
    pull(&u);
    CHECK(up_wait(&s, "hello"));
    CHECK_STR(up_settle(&s, head), "hello");
    CHECK_EQ_INT(u.off, 5);
    CHECK_EQ_INT(u.c.bytes_sent, 5);
    CHECK(!u.c.sent_all);
    u.offered = 11;
    u.body_eos = true;
    pull(&u);
    CHECK(up_wait(&s, "world"));
    CHECK_STR(up_settle(&s, head), "hello world");
    CHECK(u.c.sent_all);
    CHECK_EQ_INT(u.c.bytes_sent, 11);
    up_send(&s, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->status == 201);
    CHECK_EQ_INT(u.rlen, 0);
    pt_call_finish(&u.c);
    up_free(&s);
    pool_flush();
}

/* 4 MiB of body into an upstream that does not read: the client sends
 * what the socket takes, consumes exactly that much of the source, and
 * goes on when the upstream drains (EPOLLOUT), byte-exact. */
static void test_body_backpressure(void)
{
    struct caller u;
    struct upc s;
    size_t total = 4u << 20;
    char *big = malloc(total);
    for (size_t i = 0; i < total; i++)
        big[i] = (char)('a' + (i * 7 + i / 4093) % 26);
    struct pt_call_req r = mkreq("PUT", PT_METHOD_PUT, "/big");
    r.content_length = (int64_t)total;
    CHECK_EQ_INT(start(&u, &r), 0);
    u.body = big;
    u.offered = total;
    u.body_eos = true;
    CHECK(up_accept(&s));
    for (int i = 0; i < 20; i++)
        turn();
    pull(&u);
    CHECK(u.c.bytes_sent > 0 && u.c.bytes_sent < total);
    CHECK_EQ_INT(u.off, u.c.bytes_sent);
    CHECK(!u.c.sent_all);
    CHECK(u.c.phase == PT_CALL_WAITING);
    for (int i = 0; i < 20000 && !u.c.sent_all; i++) {
        up_drain(&s);
        turn();
    }
    up_drain(&s);
    CHECK(u.c.sent_all);
    CHECK_EQ_INT(u.off, total);
    char *eoh = memmem(s.in, s.n, "\r\n\r\n", 4);
    CHECK(eoh != NULL);
    if (eoh) {
        size_t head = (size_t)(eoh + 4 - s.in);
        CHECK_EQ_INT(s.n - head, total);
        CHECK(s.n - head == total && memcmp(s.in + head, big, total) == 0);
    }
    up_send(&s, "HTTP/1.1 204 No Content\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->status == 204);
    pt_call_finish(&u.c);
    up_free(&s);
    free(big);
    pool_flush();
}

/* A chunked request body: the upstream sees each offered piece framed as
 * one chunk, the CRLF after it sent with the next frame, and the
 * last-chunk once the source says eos. */
static void test_body_chunked(void)
{
    struct caller u;
    struct upc s;
    struct pt_call_req r = mkreq("POST", PT_METHOD_POST, "/ck");
    r.chunked = true;
    CHECK_EQ_INT(start(&u, &r), 0);
    u.body = "wikipedia";
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    CHECK(strstr(s.in, "\r\nTransfer-Encoding: chunked\r\n\r\n") != NULL);
    CHECK(strstr(s.in, "Content-Length") == NULL);
    size_t head = s.n;
    u.offered = 4;
    pull(&u);
    CHECK(up_wait(&s, "wiki"));
    CHECK_STR(up_settle(&s, head), "4\r\nwiki");
    u.offered = 9;
    pull(&u);
    CHECK(up_wait(&s, "pedia"));
    CHECK_STR(up_settle(&s, head), "4\r\nwiki\r\n5\r\npedia");
    CHECK(!u.c.sent_all);
    u.body_eos = true;
    pull(&u);
    CHECK(up_wait(&s, "0\r\n\r\n"));
    CHECK_STR(up_settle(&s, head), "4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n");
    CHECK(u.c.sent_all);
    CHECK_EQ_INT(u.c.bytes_sent, 9);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_RESP(&u, "ok");
    pt_call_finish(&u.c);
    turn();

    /* The whole body offered at once with eos: one chunk, then the end. */
    r = mkreq("POST", PT_METHOD_POST, "/ck2");
    r.chunked = true;
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(u.c.reused);
    u.body = "wiki";
    u.offered = 4;
    u.body_eos = true;
    up_reset(&s);
    pull(&u);
    CHECK(up_wait(&s, "0\r\n\r\n"));
    char *eoh = strstr(s.in, "\r\n\r\n");
    CHECK(eoh && strcmp(eoh + 4, "4\r\nwiki\r\n0\r\n\r\n") == 0);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
    pt_call_finish(&u.c);

    /* An empty chunked body: just the last-chunk. */
    turn();
    r = mkreq("POST", PT_METHOD_POST, "/ck3");
    r.chunked = true;
    CHECK_EQ_INT(start(&u, &r), 0);
    u.body_eos = true;
    up_reset(&s);
    pull(&u);
    CHECK(up_wait(&s, "0\r\n\r\n"));
    eoh = strstr(s.in, "\r\n\r\n");
    CHECK(eoh && strcmp(eoh + 4, "0\r\n\r\n") == 0);
    CHECK(u.c.sent_all);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    pt_call_finish(&u.c);
    up_free(&s);
    pool_flush();
}

/* A chunked response, split mid size line and mid data: the payload comes
 * out de-framed and the connection is reused. */
static void test_response_chunked(void)
{
    struct caller u = {0};
    struct upc s = {.fd = -1};
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwi");
    SPIN_UNTIL(u.rlen == 2 || u.c.phase == PT_CALL_FAILED);
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->frame == PT_FRAME_CHUNKED);
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->content_length == -1);
    CHECK(!u.resp_eos);
    up_send(&s, "ki\r\n0");
    for (int i = 0; i < 5; i++)
        turn();
    up_send(&s, "d\r\npedia is long\r\n0\r\nX-Trailer: t\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
    CHECK_RESP(&u, "wikipedia is long");
    pt_call_finish(&u.c);
    turn();
    up_reset(&s);
    simple_get(&u, &s, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    CHECK(u.c.reused);
    pt_call_finish(&u.c);
    up_free(&s);
    pool_flush();
}

/* No length, no chunked: the body ends at the upstream's close, and the
 * connection is not pooled. */
static void test_response_close_delimited(void)
{
    struct caller u;
    struct upc s;
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nuntil ");
    SPIN_UNTIL(u.rlen == 6 || u.c.phase == PT_CALL_FAILED);
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->frame == PT_FRAME_CLOSE);
    CHECK(!u.resp_eos);
    up_send(&s, "the end");
    up_close(&s);
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
    CHECK_RESP(&u, "until the end");
    pt_call_finish(&u.c);
    up_free(&s);
    turn();
    /* The next call needs a new connection. */
    r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(!u.c.reused);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    pt_call_abort(&u.c);
    up_free(&s);
    pool_flush();
}

/* HEAD, 204 and 304 have no body whatever their fields say; the
 * connection stays reusable after each. */
static void test_response_no_body(void)
{
    struct caller u;
    struct upc s;
    struct pt_call_req r = mkreq("HEAD", PT_METHOD_HEAD, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    CHECK(strncmp(s.in, "HEAD / HTTP/1.1\r\n", 17) == 0);
    up_reset(&s);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    const struct pt_call_head *h = pt_call_head(&u.c);
    CHECK(h && h->frame == PT_FRAME_NONE && h->content_length == 100);
    CHECK_EQ_INT(u.rlen, 0);
    pt_call_finish(&u.c);
    turn();

    simple_get(&u, &s, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n");
    CHECK(u.c.reused);
    h = pt_call_head(&u.c);
    CHECK(h && h->status == 204 && h->frame == PT_FRAME_NONE);
    CHECK_EQ_INT(u.rlen, 0);
    pt_call_finish(&u.c);
    turn();

    simple_get(&u, &s, "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n");
    CHECK(u.c.reused);
    h = pt_call_head(&u.c);
    CHECK(h && h->status == 304 && h->frame == PT_FRAME_NONE);
    CHECK_EQ_INT(u.rlen, 0);
    pt_call_finish(&u.c);
    turn();

    /* Still one connection, still clean. */
    simple_get(&u, &s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    CHECK(u.c.reused);
    CHECK_RESP(&u, "ok");
    pt_call_finish(&u.c);
    CHECK_EQ_INT(ob.connects, 1);
    up_free(&s);
    pool_flush();
}

/* 1xx: a 103 is offered before the final head, a 100 is swallowed, a 101
 * nobody asked for fails the call. */
static void test_interim(void)
{
    struct caller u;
    struct upc s = {.fd = -1};
    simple_get(&u, &s,
               "HTTP/1.1 100 Continue\r\n\r\n"
               "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    CHECK_EQ_INT(u.ninterim, 1);
    CHECK_EQ_INT(u.interim[0], 103);
    CHECK_STR(u.interim_link, "</style.css>; rel=preload");
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->status == 200);
    CHECK_RESP(&u, "ok");
    pt_call_finish(&u.c);
    turn();

    /* The interim head is held until the caller takes it. */
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(u.c.reused);
    CHECK(up_wait(&s, "\r\n\r\n"));
    u.hold = true;
    up_send(&s, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    SPIN_UNTIL(u.ninterim == 1);
    CHECK_EQ_INT(u.ninterim, 1);
    CHECK(!pt_call_head(&u.c));
    up_send(&s, "HTTP/1.1 103 Early Hints\r\nLink: </b>\r\n\r\n"
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    SPIN_UNTIL(pt_call_head(&u.c) != NULL);
    CHECK_EQ_INT(u.ninterim, 2);
    CHECK_STR(u.interim_link, "</b>");
    u.hold = false;
    pull(&u);
    CHECK(u.resp_eos);
    pt_call_finish(&u.c);
    turn();

    /* Only 100s before the final head: nothing offered. */
    simple_get(&u, &s,
               "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!");
    CHECK_EQ_INT(u.ninterim, 0);
    CHECK_RESP(&u, "!");
    pt_call_finish(&u.c);
    turn();

    r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.phase, PT_CALL_FAILED);
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_PROTOCOL);
    CHECK(u.c.fail_text != NULL);
    CHECK(u.wakes > 0);
    pt_call_abort(&u.c);
    pt_call_abort(&u.c); /* idempotent */
    up_free(&s);
    pool_flush();
}

/* A port nobody listens on: CONNECT, either at once (no wake) or from the
 * loop (one wake). */
static void test_refused(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    CHECK(bind(fd, (struct sockaddr *)&sa, len) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
    close(fd); /* bound, never listened: the port refuses */
    struct pt_target t;
    char addr[32];
    set_target(&t, addr, ntohs(sa.sin_port));
    struct caller u;
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/");
    r.target = &t;
    int rc = start(&u, &r);
    if (rc != 0) {
        CHECK_EQ_INT(rc, PT_CALL_FAIL_CONNECT);
        CHECK_EQ_INT(u.wakes, 0);
    }
    SPIN_UNTIL(u.c.phase == PT_CALL_FAILED);
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_CONNECT);
    CHECK_STR(u.c.fail_text, "upstream connection refused");
    CHECK(u.c.target == &t);
    pt_call_abort(&u.c);

    /* No target at all. */
    struct pt_upstream none = up;
    none.ntargets = 0;
    r = mkreq("GET", PT_METHOD_GET, "/");
    r.up = &none;
    CHECK_EQ_INT(start(&u, &r), PT_CALL_FAIL_NO_TARGET);
    CHECK_EQ_INT(u.wakes, 0);
    CHECK(u.c.target == NULL);
    pt_call_abort(&u.c);
}

/* Responses that are not HTTP, bodies that stop short, upstreams that go
 * quiet. */
static void test_failures(void)
{
    struct caller u;
    struct upc s;
    struct pt_call_req r;
    static const char *invalid[] = {
        "HTTP/1.1 2x0 OK\r\n\r\n",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        r = mkreq("GET", PT_METHOD_GET, "/");
        CHECK_EQ_INT(start(&u, &r), 0);
        CHECK(!u.c.reused);
        CHECK(up_accept(&s));
        CHECK(up_wait(&s, "\r\n\r\n"));
        up_send(&s, invalid[i]);
        SPIN_UNTIL(done_or_failed(&u));
        CHECK_MSG(u.c.fail == PT_CALL_FAIL_PROTOCOL, "case %zu: fail %d", i, (int)u.c.fail);
        pt_call_abort(&u.c);
        up_free(&s);
        turn();
    }

    /* Truncated body: 10 promised, 4 sent, closed. */
    r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd");
    SPIN_UNTIL(u.rlen == 4 || u.c.phase == PT_CALL_FAILED);
    up_close(&s);
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_RESET);
    CHECK_STR(u.c.fail_text, "upstream truncated the response");
    CHECK_RESP(&u, "abcd");
    CHECK(!u.resp_eos);
    pt_call_abort(&u.c);
    up_free(&s);

    /* Truncated chunked body. */
    r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n");
    up_close(&s);
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_RESET);
    pt_call_abort(&u.c);
    up_free(&s);

    /* Closed with a partial head, and closed with nothing (a fresh
     * connection is not retried). */
    for (int k = 0; k < 2; k++) {
        r = mkreq("GET", PT_METHOD_GET, "/");
        CHECK_EQ_INT(start(&u, &r), 0);
        CHECK(up_accept(&s));
        CHECK(up_wait(&s, "\r\n\r\n"));
        if (k == 0)
            up_send(&s, "HTTP/1.1 200 OK\r\nContent-Le");
        up_close(&s);
        SPIN_UNTIL(done_or_failed(&u));
        CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_RESET);
        CHECK_EQ_INT(u.c.retries, 0);
        CHECK(!up_pending());
        pt_call_abort(&u.c);
        up_free(&s);
    }

    /* Read timeout: the upstream takes the request and says nothing. */
    r = mkreq("GET", PT_METHOD_GET, "/");
    r.read_timeout_ms = 40;
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    uint64_t t0 = pt_loop_now(&loop);
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_TIMEOUT);
    CHECK(pt_loop_now(&loop) - t0 >= 30);
    CHECK(u.wakes > 0);
    pt_call_abort(&u.c);
    up_free(&s);

    /* ... and in the middle of the body. */
    r = mkreq("GET", PT_METHOD_GET, "/");
    r.read_timeout_ms = 40;
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_TIMEOUT);
    CHECK_RESP(&u, "ab");
    pt_call_abort(&u.c);
    up_free(&s);

    /* The caller's body source stalls: BODY_STALL, not the upstream's
     * fault. */
    r = mkreq("POST", PT_METHOD_POST, "/");
    r.content_length = 10;
    r.read_timeout_ms = 40;
    CHECK_EQ_INT(start(&u, &r), 0);
    u.body = "0123456789";
    u.offered = 3;
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n012"));
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_BODY_STALL);
    pt_call_abort(&u.c);
    up_free(&s);
    pool_flush();
}

/* A pooled connection the upstream closed after its answer, before the
 * pool saw it: an idempotent GET goes out again, once, on a new
 * connection; a POST with a body is not sent twice. */
static void test_stale_retry(void)
{
    struct caller u;
    struct upc s = {.fd = -1}, s2;
    simple_get(&u, &s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    pt_call_finish(&u.c);
    turn();
    up_close(&s); /* the loop has not seen this close yet */
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/again");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(u.c.reused);
    CHECK(up_accept(&s2));
    CHECK(up_wait(&s2, "\r\n\r\n"));
    CHECK(strncmp(s2.in, "GET /again HTTP/1.1\r\n", 21) == 0);
    CHECK_EQ_INT(u.c.retries, 1);
    CHECK(!u.c.reused);
    up_send(&s2, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nretry");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
    CHECK_RESP(&u, "retry");
    pt_call_finish(&u.c);
    CHECK_EQ_INT(ob.connects, 2);
    turn();

    /* The same with a POST carrying a body: the failure is reported. */
    up_close(&s2);
    r = mkreq("POST", PT_METHOD_POST, "/once");
    r.content_length = 3;
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(u.c.reused);
    u.body = "abc";
    u.offered = 3;
    u.body_eos = true;
    pull(&u);
    SPIN_UNTIL(done_or_failed(&u));
    CHECK_EQ_INT(u.c.phase, PT_CALL_FAILED);
    CHECK(u.c.fail == PT_CALL_FAIL_RESET || u.c.fail == PT_CALL_FAIL_WRITE);
    CHECK_EQ_INT(u.c.retries, 0);
    for (int i = 0; i < 5; i++)
        turn();
    CHECK(!up_pending());
    CHECK_EQ_INT(ob.connects, 2);
    pt_call_abort(&u.c);
    up_free(&s);
    up_free(&s2);
    pool_flush();
}

/* A response head split across reads; a big body through a caller that
 * stops taking it: the client holds one buffer, not the body, and the
 * read timeout does not fire while the caller is the one waiting. */
static void test_response_backpressure(void)
{
    struct caller u;
    struct upc s;
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/big");
    r.read_timeout_ms = 40;
    CHECK_EQ_INT(start(&u, &r), 0);
    u.hold = true;
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    size_t total = 16u << 20;
    char *big = malloc(total);
    uint64_t sum = 0;
    for (size_t i = 0; i < total; i++) {
        big[i] = (char)('A' + (i * 13 + i / 1021) % 26);
        sum += (uint64_t)(unsigned char)big[i] * (i + 1);
    }
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Le");
    for (int i = 0; i < 5; i++)
        turn();
    CHECK(!pt_call_head(&u.c));
    char head[64];
    snprintf(head, sizeof(head), "ngth: %zu\r\n\r\n", total);
    up_send(&s, head);
    size_t sent = 0;
    for (int i = 0; i < 200; i++) {
        ssize_t w = send(s.fd, big + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            sent += (size_t)w;
        turn();
    }
    CHECK(pt_call_head(&u.c) && pt_call_head(&u.c)->content_length == (int64_t)total);
    CHECK(sent < total); /* the client stopped reading: the sockets filled up */
    CHECK(u.c.uc && u.c.uc->rbuf && pt_buf_len(u.c.uc->rbuf) <= PT_BUF_SIZE);
    CHECK(pt_call_waits_for_caller(&u.c));
    CHECK(u.c.phase == PT_CALL_BODY); /* 200 turns: well past the 40 ms read timeout */
    u.hold = false;
    pull(&u);
    for (int i = 0; i < 20000 && !done_or_failed(&u); i++) {
        if (sent < total) {
            ssize_t w = send(s.fd, big + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                sent += (size_t)w;
        }
        turn();
    }
    CHECK_EQ_INT(u.c.fail, PT_CALL_FAIL_NONE);
    CHECK(u.resp_eos);
    CHECK_EQ_INT(u.rtotal, total);
    CHECK(u.rsum == sum);
    pt_call_finish(&u.c);
    free(big);
    up_free(&s);
    pool_flush();
}

/* Regression (client.c, pt_call_body_consume): a response that is complete
 * with nothing left to consume must reach PT_CALL_DONE: HEAD/204/304,
 * Content-Length: 0, and a chunked body whose last-chunk arrives after the
 * payload was taken. pt_call_body_consume returns early on n == 0 before
 * its "res_eos && res_ready == 0 -> PT_CALL_DONE" step, and nothing else
 * sets DONE. pt_exchange_end (exchange.c) finishes the call only when
 * phase == PT_CALL_DONE, so these responses close a clean keep-alive
 * connection instead of pooling it. */
static void test_done_phase(void)
{
    static const char *resp[] = {
        "HTTP/1.1 204 No Content\r\n\r\n", "HTTP/1.1 304 Not Modified\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", /* consumed: DONE (passes) */
    };
    struct caller u;
    struct upc s = {.fd = -1};
    for (size_t i = 0; i < sizeof(resp) / sizeof(resp[0]); i++) {
        simple_get(&u, &s, resp[i]);
        CHECK(u.resp_eos);
        CHECK_MSG(u.c.phase == PT_CALL_DONE,
                  "case %zu: complete response left in phase %d, not DONE", i, (int)u.c.phase);
        pt_call_finish(&u.c);
        turn();
    }
    /* The last-chunk in a read of its own. */
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(start(&u, &r), 0);
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n");
    SPIN_UNTIL(u.rlen == 2 || u.c.phase == PT_CALL_FAILED);
    up_send(&s, "0\r\n\r\n");
    SPIN_UNTIL(done_or_failed(&u));
    CHECK(u.resp_eos);
    CHECK_MSG(u.c.phase == PT_CALL_DONE,
              "chunked end alone: complete response left in phase %d, not DONE", (int)u.c.phase);
    pt_call_finish(&u.c);
    up_free(&s);
    pool_flush();
}

/* ---- pt_fetch ---- */

struct fetch_user {
    int done;
};

static void fetch_done(struct pt_fetch *f, void *user)
{
    struct fetch_user *fu = user;
    fu->done++;
    (void)f;
}

static void test_fetch(void)
{
    struct pt_fetch f;
    struct fetch_user fu = {0};
    struct upc s;
    struct pt_call_req r = mkreq("POST", PT_METHOD_POST, "/auth");
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, PT_SLICE("ping"), 4, fetch_done, &fu), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\nping"));
    CHECK(strstr(s.in, "\r\nContent-Length: 4\r\n") != NULL);
    up_reset(&s);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-A: b\r\n\r\n0123456789");
    SPIN_UNTIL(fu.done > 0);
    CHECK_EQ_INT(fu.done, 1);
    CHECK_EQ_INT(f.fail, PT_CALL_FAIL_NONE);
    CHECK_EQ_INT(f.status, 200);
    CHECK(f.head && f.head->nfields == 2 && pt_slice_eq_cstr(field(f.head, "X-A"), "b"));
    CHECK_EQ_INT(f.rlen, 4);
    CHECK(f.rlen == 4 && memcmp(f.rbody, "0123", 4) == 0);
    CHECK(f.truncated);
    for (int i = 0; i < 5; i++)
        turn();
    CHECK_EQ_INT(fu.done, 1);
    up_free(&s);
    pool_flush();

    /* Fits: not truncated; GET without a body sends no Content-Length. */
    fu.done = 0;
    r = mkreq("GET", PT_METHOD_GET, "/jwks");
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, (pt_slice){NULL, 0}, 64, fetch_done, &fu), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    CHECK(strstr(s.in, "Content-Length") == NULL);
    up_reset(&s);
    up_send(&s, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    SPIN_UNTIL(fu.done > 0);
    CHECK_EQ_INT(fu.done, 1);
    CHECK_EQ_INT(f.status, 200);
    CHECK(f.rlen == 5 && memcmp(f.rbody, "hello", 5) == 0);
    CHECK(!f.truncated);
    up_free(&s);
    pool_flush();

    /* Failed: done runs with the reason. */
    fu.done = 0;
    r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, (pt_slice){NULL, 0}, 64, fetch_done, &fu), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_send(&s, "garbage\r\n\r\n");
    SPIN_UNTIL(fu.done > 0);
    CHECK_EQ_INT(fu.done, 1);
    CHECK_EQ_INT(f.fail, PT_CALL_FAIL_PROTOCOL);
    CHECK(f.fail_text != NULL);
    up_free(&s);

    /* Cancelled: done never runs, the connection is closed. */
    fu.done = 0;
    r = mkreq("GET", PT_METHOD_GET, "/");
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, (pt_slice){NULL, 0}, 64, fetch_done, &fu), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    pt_fetch_cancel(&f);
    pt_fetch_cancel(&f); /* idempotent */
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    for (int i = 0; i < 20 && !s.eof; i++) {
        turn();
        up_drain(&s);
    }
    CHECK(s.eof);
    CHECK_EQ_INT(fu.done, 0);
    up_free(&s);

    /* Cancelled before the answer's read timeout would fire. */
    fu.done = 0;
    r = mkreq("GET", PT_METHOD_GET, "/");
    r.read_timeout_ms = 20;
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, (pt_slice){NULL, 0}, 64, fetch_done, &fu), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    pt_fetch_cancel(&f);
    for (int i = 0; i < 60; i++)
        turn();
    CHECK_EQ_INT(fu.done, 0);
    up_free(&s);
    pool_flush();
}

/* Regression (fetch.c, pt_fetch_start): a fetch that gets a pooled (already
 * connected) connection must send its request; it used not to. pt_call_start does no
 * I/O, and pt_fetch_start does not pump the call afterwards; the pooled
 * socket has been writable all along, so edge-triggered epoll reports no
 * EPOLLOUT and nothing ever calls pt_call_pump: the fetch sits until the
 * read timeout. Expected: the request reaches the upstream at once. */
static void test_fetch_on_pooled_connection(void)
{
    struct pt_fetch f;
    struct fetch_user fu = {0};
    struct upc s;
    struct pt_call_req r = mkreq("GET", PT_METHOD_GET, "/one");
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, (pt_slice){NULL, 0}, 64, fetch_done, &fu), 0);
    CHECK(up_accept(&s));
    CHECK(up_wait(&s, "\r\n\r\n"));
    up_reset(&s);
    up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
    SPIN_UNTIL(fu.done > 0);
    CHECK_EQ_INT(f.status, 200);
    turn();

    fu.done = 0;
    r = mkreq("GET", PT_METHOD_GET, "/two");
    r.read_timeout_ms = 300;
    CHECK_EQ_INT(pt_fetch_start(&f, &ob, &r, (pt_slice){NULL, 0}, 64, fetch_done, &fu), 0);
    CHECK(f.call.reused);
    bool sent = up_wait(&s, "GET /two");
    CHECK_MSG(sent, "request on a pooled connection not sent (fail %d: %s)", (int)f.fail,
              f.fail_text ? f.fail_text : "-");
    if (sent)
        up_send(&s, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    SPIN_UNTIL(fu.done > 0);
    CHECK_EQ_INT(fu.done, 1);
    CHECK_MSG(f.fail == PT_CALL_FAIL_NONE && f.status == 200,
              "fetch on a pooled connection: fail %d (%s)", (int)f.fail,
              f.fail_text ? f.fail_text : "-");
    up_free(&s);
    pool_flush();
}

/* ---- pt_fetch_parse_url ---- */

static void test_parse_url(void)
{
    struct pt_arena a;
    pt_arena_init(&a, 4096);
    struct pt_target t;
    pt_slice path, query;

    CHECK_EQ_INT(pt_fetch_parse_url("http://127.0.0.1:8080/a/b?x=1&y", &a, &t, &path, &query), 0);
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&t.addr;
    CHECK_EQ_INT(t.addr.ss_family, AF_INET);
    CHECK_EQ_INT(t.addrlen, sizeof(struct sockaddr_in));
    CHECK_EQ_INT(ntohs(s4->sin_port), 8080);
    CHECK_EQ_INT(ntohl(s4->sin_addr.s_addr), 0x7f000001);
    CHECK_STR(t.address, "127.0.0.1:8080");
    CHECK_EQ_INT(t.weight, 1);
    CHECK(pt_slice_eq_cstr(path, "/a/b"));
    CHECK(pt_slice_eq_cstr(query, "x=1&y"));

    CHECK_EQ_INT(pt_fetch_parse_url("http://[::1]:9000/p", &a, &t, &path, &query), 0);
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&t.addr;
    CHECK_EQ_INT(t.addr.ss_family, AF_INET6);
    CHECK_EQ_INT(t.addrlen, sizeof(struct sockaddr_in6));
    CHECK_EQ_INT(ntohs(s6->sin6_port), 9000);
    CHECK(memcmp(&s6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback)) == 0);
    CHECK_STR(t.address, "[::1]:9000");
    CHECK(pt_slice_eq_cstr(path, "/p"));
    CHECK_EQ_INT(query.len, 0);

    CHECK_EQ_INT(pt_fetch_parse_url("http://[::1]/", &a, &t, &path, &query), 0);
    CHECK_EQ_INT(ntohs(s6->sin6_port), 80);

    CHECK_EQ_INT(pt_fetch_parse_url("http://localhost:81", &a, &t, &path, &query), 0);
    CHECK_EQ_INT(t.addr.ss_family, AF_INET);
    CHECK_EQ_INT(ntohs(s4->sin_port), 81);
    CHECK_EQ_INT(ntohl(s4->sin_addr.s_addr), 0x7f000001);
    CHECK_STR(t.address, "localhost:81");
    CHECK(pt_slice_eq_cstr(path, "/"));
    CHECK_EQ_INT(query.len, 0);

    CHECK_EQ_INT(pt_fetch_parse_url("http://10.1.2.3/x?", &a, &t, &path, &query), 0);
    CHECK_EQ_INT(ntohs(s4->sin_port), 80);
    CHECK_EQ_INT(ntohl(s4->sin_addr.s_addr), 0x0a010203);
    CHECK(pt_slice_eq_cstr(path, "/x"));
    CHECK_EQ_INT(query.len, 0);

    static const char *bad[] = {
        "HTTPS://127.0.0.1/",
        "ftp://127.0.0.1/",
        "127.0.0.1:80/",
        "http://example.com/",
        "http://auth.internal:8080/check",
        "http:///path",
        "http://",
        "http://127.0.0.1:0/",
        "http://127.0.0.1:65536/",
        "http://127.0.0.1:/",
        "http://[::1/",
        "http://256.1.1.1/",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_MSG(pt_fetch_parse_url(bad[i], &a, &t, &path, &query) == -EINVAL, "accepted %s",
                  bad[i]);
    /* https with an IP literal: a direct target too (its TLS is the URL
     * upstream's); port 443 unless given. */
    CHECK_EQ_INT(pt_fetch_parse_url("https://127.0.0.1/k", &a, &t, &path, &query), 0);
    CHECK_EQ_INT(ntohs(((struct sockaddr_in *)&t.addr)->sin_port), 443);

    /* Regression (fetch.c, pt_fetch_parse_url): the authority used to end
     * at the first '/' only, and the port is read with strtol without checking where it
     * stopped. "http://127.0.0.1:8080?x=1" (RFC 3986: empty path, query
     * x=1) is accepted with the query dropped and t->address (what
     * add_host sends as Host) "127.0.0.1:8080?x=1"; a port with trailing
     * junk ("80x") is accepted as 80. */
    int rc = pt_fetch_parse_url("http://127.0.0.1:8080?x=1", &a, &t, &path, &query);
    CHECK_MSG(rc == 0 && strcmp(t.address, "127.0.0.1:8080") == 0 && pt_slice_eq_cstr(path, "/") &&
                  pt_slice_eq_cstr(query, "x=1"),
              "query without path: address \"%s\" query \"%.*s\"", rc == 0 ? t.address : "-",
              rc == 0 ? (int)query.len : 0, rc == 0 ? query.p : "");
    CHECK_MSG(pt_fetch_parse_url("http://127.0.0.1:80x/", &a, &t, &path, &query) == -EINVAL,
              "port \"80x\" accepted");
    pt_arena_destroy(&a);
}

int main(void)
{
    env_open();
    test_get_and_reuse();
    test_body_length_pieces();
    test_body_backpressure();
    test_body_chunked();
    test_response_chunked();
    test_response_close_delimited();
    test_response_no_body();
    test_response_backpressure();
    test_done_phase();
    test_interim();
    test_refused();
    test_failures();
    test_stale_retry();
    test_fetch();
    test_fetch_on_pooled_connection();
    test_parse_url();
    env_close();
    return unit_report("client");
}
