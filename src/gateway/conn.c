/*
 * conn.c — the HTTP/1.1 request lifecycle on one client connection:
 * read and parse a head, route it, run the request filters, pick a target,
 * stream the request to the upstream and the response back, log, and then
 * either serve the next (possibly pipelined) request or close.
 *
 * Ownership: a worker owns its pt_conn objects; a connection owns at most
 * one transaction (pt_txn, in the connection's request arena), and a
 * transaction owns at most one upstream connection (acquired from the
 * worker's pool, returned or closed when the transaction ends). Closed
 * connections are freed at the end of the loop turn, so an event already
 * queued for them in the same turn finds a `closed` flag, not freed memory.
 *
 * Flow control: bytes move buffer to socket; a side is read only when the
 * buffer it fills has been drained by the other side. So memory per
 * request is bounded by two buffers whatever the body sizes.
 *
 * Everything runs from conn_run(): every event (client or upstream) ends
 * there, and it loops until no side can make progress.
 */
#include "gateway/router.h"
#include "gateway/respond.h"
#include "gateway/worker.h"

#include "core/log.h"
#include "http/h1.h"
#include "http/path.h"

#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum body_mode { BODY_NONE, BODY_CL, BODY_CHUNKED, BODY_EOF };

struct pt_txn;

struct pt_conn {
    struct pt_io io;
    struct pt_worker *w;
    struct pt_timer timer; /* idle / header / send timeout */
    struct pt_buf *rbuf;   /* client bytes; NULL while idle */
    struct pt_conn *next, *prev;
    struct pt_conn *free_next;
    struct pt_arena arena; /* per-request allocations; blocks go back to the
                              worker's pool after each request */
    struct pt_txn *txn;    /* the request in progress, or NULL */
    char remote[INET6_ADDRSTRLEN];
    char listener[32]; /* copied: listeners can be replaced by a reload (names ≤ 31) */
    uint8_t remote_len;
    bool readable, writable; /* edge-triggered readiness not yet consumed */
    bool hup;                /* peer half-closed or errored: read until EOF */
    bool hup_unjudged;       /* hangup reported before its request was complete */
    bool hup_reset;          /* the hangup was a reset or error, not a FIN */
    bool closed;
    bool head_started;     /* some bytes of the next head have arrived */
    uint64_t head_ns;      /* when they did (the loop's clock): request time starts there */
    bool lingering;        /* response sent, write side shut, discarding input */
    bool next_pipelined;   /* the next request's bytes came while one was in progress */
    uint64_t idle_since;   /* ms: when it last went idle between requests (eviction LRU) */
    bool cut;              /* closing mid-response: drop what is in flight */
    uint64_t linger_bytes; /* discarded while lingering */
    uint64_t requests;     /* transactions started */
    uint64_t hup_req;      /* with hup_unjudged: the request the hangup follows */
};

struct pt_txn {
    struct pt_conn *c;
    struct pt_generation *gen;
    const struct pt_route *route;
    struct pt_route_result rr;
    struct pt_h1_request req;
    struct pt_headers reqh, resph;
    struct pt_filter_ctx fctx;
    void **states;
    uint32_t cursor;
    bool filters_suspended;
    bool pipelined; /* sent while the previous request was in progress */
    char reqid_buf[33];
    pt_slice reqid;
    pt_slice path; /* after strip_prefix / rewrite */

    /* request body, client → upstream */
    enum body_mode req_mode;
    uint64_t req_left; /* BODY_CL: bytes still to forward */
    struct pt_chunked req_ck;
    uint32_t req_ready; /* bytes at rbuf start validated and ready to send */
    bool req_scan_done; /* chunked: terminator seen */
    bool req_done;      /* whole body forwarded */
    bool input_settled; /* `readable` checked once the request was complete */
    uint64_t body_limit;
    uint64_t bytes_in;

    /* upstream */
    const struct pt_upstream *up;
    const struct pt_target *target;
    struct pt_uconn *uc;
    bool uc_reused, uc_readable, uc_writable, uc_hup;
    bool req_abandoned; /* the upstream stopped taking the body (answered early) */
    int retries;
    char *uhead;
    uint32_t uhead_len, uhead_sent;

    /* response, upstream → client */
    struct pt_h1_response res;
    struct pt_h1_header *res_hdrs;
    uint32_t res_prev; /* parser hint */
    bool res_any;      /* the upstream sent a byte (a 1xx counts): no retry */
    bool res_head_done;
    bool res_head_is_ours; /* a gateway-made response (no upstream body) */
    enum body_mode res_mode;
    uint64_t res_left;
    struct pt_chunked res_ck;
    bool res_decode; /* HTTP/1.0 client: de-chunk */
    uint32_t res_ready;
    bool res_body_done;
    bool res_upstream_reusable;
    pt_slice chead; /* response head (or whole gateway response) for the client */
    uint32_t chead_sent;
    pt_slice interim; /* 1xx interim heads (103 Early Hints) not yet sent */
    uint32_t interim_sent;
    char *interim_buf; /* arena buffer behind interim once a 1xx was queued */
    uint32_t interim_cap;
    uint64_t interim_out; /* bytes of interim heads written, for the log */
    bool close_after;

    int status;
    const char *error; /* gateway error text, for the log */
    uint64_t bytes_out;
    /* ns, the loop's time of the wakeup that saw each event: no clock
     * read per request */
    uint64_t t_start, t_up_start, t_up_head;
};

static void conn_run(struct pt_conn *c);
static void conn_close(struct pt_conn *c);
static void client_cut(struct pt_txn *t, const char *why);

/* Some of the response went out to the client (an error response can no
 * longer replace it). */
static bool response_started(const struct pt_txn *t)
{
    return t->chead_sent > 0 || t->bytes_out > 0;
}

static void txn_gateway_response(struct pt_txn *t, int status, const char *error, const char *extra,
                                 pt_slice body, bool close);

/* ---- small helpers ---- */

/* Request header names with `_` (limits.headers_with_underscores): drops
 * them, or answers 400 and returns false. */
static bool screen_underscores(struct pt_txn *t, uint8_t mode)
{
    for (uint32_t i = 0; i < t->reqh.n; i++) {
        struct pt_hfield *f = &t->reqh.f[i];
        if (f->dead || !memchr(f->name.p, '_', f->name.len))
            continue;
        if (mode == PT_US_REJECT) {
            txn_gateway_response(t, 400, "header name with an underscore", NULL, (pt_slice){0},
                                 true);
            return false;
        }
        f->dead = true;
    }
    return true;
}

static __thread struct pt_h1_header *hscratch;
static __thread size_t hscratch_cap;

static struct pt_h1_header *scratch_headers(size_t n)
{
    if (n > hscratch_cap) {
        free(hscratch);
        hscratch = malloc(n * sizeof(*hscratch));
        hscratch_cap = hscratch ? n : 0;
    }
    return hscratch;
}

void pt_conn_thread_exit(void)
{
    free(hscratch);
    hscratch = NULL;
    hscratch_cap = 0;
}

/* A head can be up to max_header_bytes (the parser refuses longer ones
 * before the buffer fills), so that is all the buffer needs; with the
 * default limit (16 KiB) this is the pooled size and costs no malloc. */
static uint32_t rbuf_cap(const struct pt_generation *g)
{
    uint64_t need = g->limits.max_header_bytes;
    return need > PT_BUF_SIZE ? (uint32_t)need : PT_BUF_SIZE;
}

/* xorshift64*: fast, per-worker, no syscalls; request ids need to be
 * unique, not unpredictable. */
static uint64_t next_random(struct pt_worker *w)
{
    uint64_t x = w->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    w->rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static void gen_request_id(struct pt_worker *w, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t x = next_random(w);
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(x >> (i * 4)) & 15];
    }
    out[32] = 0;
}

static bool valid_request_id(pt_slice v)
{
    if (v.len == 0 || v.len > 128)
        return false;
    for (size_t i = 0; i < v.len; i++)
        if ((unsigned char)v.p[i] <= 0x20 || (unsigned char)v.p[i] >= 0x7f)
            return false;
    return true;
}

/* ---- connection setup and teardown ---- */

/* A reported hangup, judged once, when the request it follows is complete:
 * with no pipelined bytes waiting and the peer really gone, the
 * transaction ends with 499 and the connection closes. Returns true when
 * it closed the connection. */
static bool judge_hangup(struct pt_conn *c)
{
    struct pt_txn *t = c->txn;
    if (c->requests > c->hup_req) {
        c->hup_unjudged = false; /* a later (pipelined) request started: excused */
        return false;
    }
    if (!t || c->requests < c->hup_req || !t->req_done || t->filters_suspended)
        return false; /* not yet: judged when the request is complete */
    c->hup_unjudged = false;
    if (t->pipelined && !c->hup_reset)
        return false; /* a client that half-closed after pipelining waits for its answers */
    if ((c->rbuf && pt_buf_len(c->rbuf) > 0) || !pt_io_peer_gone(&c->w->loop, &c->io))
        return false; /* pipelined requests still get their answers */
    if (t->chead_sent == 0)
        t->status = 499;
    if (!t->error)
        t->error = "client closed the connection";
    conn_close(c);
    return true;
}

static void conn_on_event(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_conn *c = pt_container_of(io, struct pt_conn, io);
    (void)loop;
    if (c->closed)
        return;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    /* Edge-triggered epoll repeats RDHUP in every later event's mask:
     * only the first report of a hangup is news. */
    bool new_hup = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->hup;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    /* A client that leaves while its request is with the upstream: stop,
     * free the upstream connection, log 499 (nginx's default; HTTP/1.1
     * has no way to keep a response for a client that is gone). Bytes it
     * pipelined before its FIN, read or not, still get their answers (the
     * hangup is judged once, when first reported). A transaction waiting
     * on a filter is left to it: the filter holds the transaction. */
    if (events & EPOLLERR)
        c->hup_reset = true; /* reset: gone, whatever it pipelined */
    /* Input reported after the request was complete: new bytes (pipelined)
     * or an edge for bytes a read already took; settle_readable tells. */
    if ((events & EPOLLIN) && c->txn && c->txn->req_done)
        c->txn->input_settled = false;
    if (new_hup) {
        c->hup_unjudged = true;
        /* the request in progress, else the next one to start */
        c->hup_req = c->txn ? c->requests : c->requests + 1;
    }
    if (c->hup_unjudged && judge_hangup(c))
        return;
    conn_run(c);
    /* The FIN came with (or before the end of) the request it follows, as
     * epoll reports when both arrive together: judged once the request is
     * complete, so that both backends treat it alike. */
    if (!c->closed && c->hup_unjudged)
        judge_hangup(c);
}

static void conn_timeout(struct pt_loop *loop, struct pt_timer *tm)
{
    struct pt_conn *c = pt_container_of(tm, struct pt_conn, timer);
    (void)loop;
    if (c->closed)
        return;
    if (c->lingering) {
        conn_close(c);
        return;
    }
    if (!c->txn && c->head_started) {
        /* Slowloris guard: a head that doesn't complete in time. */
        struct pt_generation *g = c->w->gen;
        pt_worker_pin(c->w, g);
        struct pt_txn *t = pt_arena_zalloc(&c->arena, sizeof(*t));
        if (!t) {
            pt_worker_unpin(c->w, g);
            conn_close(c);
            return;
        }
        t->c = c;
        t->gen = g;
        t->t_start = c->head_ns; /* from the first byte, as nginx's $request_time */
        gen_request_id(c->w, t->reqid_buf);
        t->reqid = (pt_slice){t->reqid_buf, 32};
        t->req_done = true;
        c->txn = t;
        txn_gateway_response(t, 408, NULL, NULL, (pt_slice){0}, true);
        conn_run(c);
        return;
    }
    /* The client stopped reading a response (the send timeout): a cut it
     * cannot mistake for the end. */
    if (c->txn && response_started(c->txn)) {
        client_cut(c->txn, "client send timeout");
        return;
    }
    conn_close(c);
}

void pt_conn_accept(struct pt_worker *w, struct pt_wlistener *l, int fd,
                    const struct sockaddr_storage *peer)
{
    /* Connection objects are recycled per worker: accepting allocates
     * nothing in steady state. */
    struct pt_conn *c = w->conn_cache;
    if (c) {
        w->conn_cache = c->free_next;
        w->nconn_cache--;
        memset(c, 0, sizeof(*c));
    } else {
        c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            return;
        }
    }
    pt_arena_init_pooled(&c->arena, PT_REQ_ARENA_BLOCK, &w->arena_pool);
    c->io.fd = fd;
    c->io.cb = conn_on_event;
    c->w = w;

    snprintf(c->listener, sizeof(c->listener), "%s", l->name);
    if (peer->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, c->remote,
                  sizeof(c->remote));
    else if (peer->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, c->remote,
                  sizeof(c->remote));
    c->remote_len = (uint8_t)strlen(c->remote);
    if (pt_loop_add_stream(&w->loop, &c->io, false) < 0) {
        close(fd);
        free(c);
        return;
    }
    atomic_fetch_add_explicit(&pt_active_connections, 1, memory_order_relaxed);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    c->writable = true;
    /* The first bytes may already be here (accept raced the data). A new
     * connection gets header_timeout for its first head, bytes or not (a
     * client that connects and sends nothing is a slowloris too); between
     * requests a keep-alive connection gets idle_timeout. */
    c->readable = true;
    pt_timer_arm(&w->loop, &c->timer, w->gen->limits.header_timeout_ms, conn_timeout);
    conn_run(c);
}

static void access_log(struct pt_txn *t);

/* Ends the transaction's bookkeeping: upstream connection, log, pin. */
static void txn_end(struct pt_txn *t, bool completed)
{
    struct pt_conn *c = t->c;
    if (t->uc) {
        /* uc_hup: the upstream closed (or reset) it; that edge was
         * consumed, so an idle connection would never be seen to die. */
        /* uc_readable: an edge came that nobody read (bytes after the
         * response, or a read that filled the buffer exactly): the socket
         * may hold bytes, and an edge-triggered loop reports them never. */
        if (completed && t->res_upstream_reusable && !t->uc_hup && !t->uc_readable)
            pt_uconn_release(t->uc, t->up->keepalive, t->gen->limits.idle_timeout_ms);
        else
            pt_uconn_close(t->uc);
        t->uc = NULL;
    }
    if (!completed && t->status == 0)
        t->status = 499; /* client went away before a response: nginx's convention */
    if (t->route && t->route->chain.n_log)
        pt_chain_run_log(&t->route->chain, &t->fctx, t->states);
    access_log(t);
    pt_worker_unpin(c->w, t->gen);
    /* Single writer: a relaxed load+store is a plain add, no locked
     * instruction, and the admin thread still reads a whole value. */
    atomic_store_explicit(&c->w->served,
                          atomic_load_explicit(&c->w->served, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    c->txn = NULL;
    /* An idle keep-alive connection holds no arena memory. */
    pt_arena_release(&c->arena);
}

static void conn_close(struct pt_conn *c)
{
    if (c->closed)
        return;
    struct pt_worker *w = c->w;
    if (c->txn)
        txn_end(c->txn, false);
    pt_timer_cancel(&w->loop, &c->timer);
    pt_io_close_ex(&w->loop, &c->io, c->cut);
    c->closed = true;
    if (c->rbuf) {
        pt_buf_put(&w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    c->free_next = w->to_free;
    w->to_free = c;
    atomic_fetch_sub_explicit(&pt_active_connections, 1, memory_order_relaxed);
}

void pt_conn_reap(struct pt_worker *w)
{
    bool any = false;
    while (w->to_free) {
        struct pt_conn *c = w->to_free;
        w->to_free = c->free_next;
        pt_arena_release(&c->arena);
        if (w->nconn_cache < PT_CONN_CACHE_MAX && !atomic_load(&w->draining)) {
            c->free_next = w->conn_cache;
            w->conn_cache = c;
            w->nconn_cache++;
        } else {
            free(c);
        }
        any = true;
    }
    if (any)
        pt_worker_resume_accept(w);
}

void pt_conn_cache_free(struct pt_worker *w)
{
    while (w->conn_cache) {
        struct pt_conn *c = w->conn_cache;
        w->conn_cache = c->free_next;
        free(c);
    }
    w->nconn_cache = 0;
}

void pt_conn_close_idle(struct pt_worker *w)
{
    struct pt_conn *c = w->conns;
    while (c) {
        struct pt_conn *next = c->next;
        if (!c->txn && !c->head_started)
            conn_close(c);
        c = next;
    }
}

bool pt_conn_close_longest_idle(struct pt_worker *w)
{
    struct pt_conn *oldest = NULL;
    for (struct pt_conn *c = w->conns; c; c = c->next) {
        /* Only a keep-alive connection between requests gives way, and
         * not one whose next request is here or reported in this batch of
         * events. A new connection never does, even a silent one (nginx
         * would take it): its request may be on the wire, and losing it is
         * worse than a slot held for header_timeout. */
        if (c->requests == 0 || c->txn || c->head_started || c->lingering || c->readable ||
            pt_io_has_input(&w->loop, &c->io) || !pt_timer_armed(&c->timer))
            continue;
        if (!oldest || c->idle_since <= oldest->idle_since) /* ties: older */
            oldest = c;
    }
    if (!oldest)
        return false;
    conn_close(oldest);
    return true;
}

void pt_conn_close_all(struct pt_worker *w)
{
    while (w->conns) {
        struct pt_conn *c = w->conns;
        /* A response cut by the drain timeout must not look complete. */
        if (c->txn && response_started(c->txn)) {
            client_cut(c->txn, "drain timeout");
        } else {
            if (c->txn && !c->txn->error)
                c->txn->error = "drain timeout"; /* logged 499: no answer went out */
            conn_close(c);
        }
    }
}

/* ---- gateway-made responses ---- */

static void txn_gateway_response(struct pt_txn *t, int status, const char *error, const char *extra,
                                 pt_slice body, bool close)
{
    if (t->uc) {
        pt_uconn_close(t->uc);
        t->uc = NULL;
    }
    /* A small body that is already here is skipped, so the connection can
     * stay open; a body we have not read would be parsed as the next
     * request, so then the connection closes. */
    struct pt_buf *rb = t->c->rbuf;
    if (!t->req_done && t->req_mode == BODY_CL && t->uhead_sent == 0 && rb &&
        pt_buf_len(rb) >= t->req_left) {
        pt_buf_consume(rb, (uint32_t)t->req_left);
        t->req_left = 0;
        t->req_done = true;
    }
    if (!t->req_done)
        close = true;
    /* A drain closes the connection after this response: say so. */
    if (atomic_load_explicit(&t->c->w->draining, memory_order_relaxed))
        close = true;
    t->status = status;
    t->error = error ? error : pt_error_text(status);
    t->close_after = t->close_after || close;
    /* An HTTP/1.0 client keeps the connection only when the response says
     * so (as build_client_head does for upstream responses). */
    if (!t->close_after && t->req.minor_version == 0 && t->req.method.len)
        extra = pt_arena_sprintf(&t->c->arena, "%sConnection: keep-alive\r\n", extra ? extra : "");
    bool head_only = t->req.method_id == PT_METHOD_HEAD;
    t->chead = pt_respond_build(&t->c->arena, status, error, t->reqid, extra, body, t->close_after,
                                head_only);
    if (!t->chead.p) {
        t->close_after = true;
        t->chead = (pt_slice){"", 0};
    }
    t->chead_sent = 0;
    t->res_head_done = true;
    t->res_head_is_ours = true;
    t->res_body_done = true;
    t->res_ready = 0;
    t->res_mode = BODY_NONE;
}

/* Cuts the client off in the middle of a response. When the client's
 * body ends at close (a response without length, or one de-chunked for
 * an HTTP/1.0 client) a FIN would make the cut body look complete, so the
 * connection is reset instead (SO_LINGER 0: the close sends RST). */
static void client_cut(struct pt_txn *t, const char *why)
{
    t->error = why;
    if (t->res_mode == BODY_EOF || t->res_decode) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(t->c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    t->c->cut = true;
    conn_close(t->c);
}

/* An upstream failure: an error response when nothing was sent to the
 * client yet, else the client connection is cut so a broken response can
 * never look complete. Returns false when the connection was closed. */
static bool txn_upstream_fail(struct pt_txn *t, int status, const char *why)
{
    if (response_started(t)) {
        t->status = t->status ? t->status : status;
        client_cut(t, why);
        return false;
    }
    txn_gateway_response(t, status, why, NULL, (pt_slice){0}, false);
    return true;
}

/* ---- upstream side ---- */

static void uconn_event(struct pt_uconn *uc, uint32_t events)
{
    struct pt_txn *t = uc->user;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        t->uc_readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        t->uc_hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        t->uc_writable = true;
    conn_run(t->c);
}

static uint64_t read_timeout(const struct pt_txn *t)
{
    return t->route->timeout_ms ? t->route->timeout_ms : t->up->read_timeout_ms;
}

static void upstream_timeout(struct pt_loop *loop, struct pt_timer *tm)
{
    struct pt_uconn *uc = pt_container_of(tm, struct pt_uconn, timer);
    struct pt_txn *t = uc->user;
    if (!t)
        return;
    struct pt_conn *c = t->c;
    /* Bytes read from the upstream (or an interim head, which stops the
     * reading) are waiting for a client that does not take them: the
     * gateway is not waiting on the upstream, and the client's own send
     * timeout (armed on EAGAIN) bounds that wait. */
    if (!c->writable &&
        ((t->res_head_done && !t->res_head_is_ours && uc->rbuf && pt_buf_len(uc->rbuf) > 0) ||
         (!t->res_head_done && t->interim_sent < t->interim.len))) {
        pt_timer_arm(loop, &uc->timer, read_timeout(t), upstream_timeout);
        return;
    }
    bool connecting = !uc->connected;
    /* The upstream took everything it was given and the rest of the body
     * never came: the client stalled, not the upstream (408, like nginx's
     * client_body_timeout; the connection closes, the body unfinished). */
    if (!connecting && !t->req_done && !t->res_head_done && t->uhead_sent == t->uhead_len &&
        t->req_ready == 0 && (!c->rbuf || pt_buf_len(c->rbuf) == 0)) {
        txn_gateway_response(t, 408, "request body timeout", NULL, (pt_slice){0}, true);
        conn_run(c);
        return;
    }
    if (txn_upstream_fail(t, 504, connecting ? "upstream connect timeout" : "upstream timeout"))
        conn_run(c);
}

/* The gateway's own limits (descriptors, memory, local ports), not the
 * upstream's fault: 503, as for any overload, rather than 502. */
static bool out_of_resources(int err)
{
    return err == -EMFILE || err == -ENFILE || err == -ENOBUFS || err == -ENOMEM ||
           err == -EADDRNOTAVAIL;
}

/* Gets a connection to the picked target (a new one when `fresh`).
 * Returns false after having set an error response. */
static bool txn_connect(struct pt_txn *t, bool fresh)
{
    struct pt_worker *w = t->c->w;
    int err = 0;
    /* Pools are keyed by address and shared by upstreams naming the same
     * target: one with keepalive 0 never takes another's idle connection. */
    fresh |= t->up->keepalive == 0;
    struct pt_uconn *uc = pt_uconn_acquire(&w->ob, t->target, fresh, &t->uc_reused, &err);
    if (!uc) {
        if (out_of_resources(err))
            txn_upstream_fail(t, 503, "gateway out of resources");
        else
            txn_upstream_fail(t, 502,
                              err == -ECONNREFUSED ? "upstream connection refused"
                                                   : "upstream connect failed");
        return false;
    }
    t->uc = uc;
    t->uc_hup = false;
    uc->user = t;
    uc->on_event = uconn_event;
    /* A connecting socket becomes writable (or errors) when connect()
     * completes; asking SO_ERROR earlier would report success. */
    t->uc_writable = uc->connected;
    /* Not readable until epoll says so: an idle pooled connection that the
     * upstream closed is caught by the pool or by the event that follows. */
    t->uc_readable = false; /* a pooled socket may hold an EOF we never read */
    t->uhead_sent = 0;
    if (!t->t_up_start)
        t->t_up_start = pt_loop_now_ns(&w->loop);
    pt_timer_arm(&w->loop, &uc->timer, uc->connected ? read_timeout(t) : t->up->connect_timeout_ms,
                 upstream_timeout);
    return true;
}

/* A reused keep-alive connection the upstream had already closed: the
 * request never reached it, so sending it again on a new connection (not
 * another pooled one, which may be as stale) is safe when there is no body
 * that was consumed on the way. Returns 1 when retried, 0 when the request
 * is not eligible, -1 when the retry failed (an error response is set). */
static int txn_retry_stale(struct pt_txn *t)
{
    if (!t->uc_reused || t->res_any || t->req_mode != BODY_NONE || t->retries >= 2)
        return 0;
    /* Only idempotent methods (RFC 9110 §9.2.2): a POST the upstream may
     * have acted on before closing must not run twice. */
    switch (t->req.method_id) {
    case PT_METHOD_GET:
    case PT_METHOD_HEAD:
    case PT_METHOD_OPTIONS:
    case PT_METHOD_PUT:
    case PT_METHOD_DELETE:
    case PT_METHOD_TRACE:
        break;
    default:
        return 0;
    }
    t->retries++;
    pt_uconn_close(t->uc);
    t->uc = NULL;
    t->res_prev = 0;
    return txn_connect(t, true) ? 1 : -1;
}

/* ---- serialization ---- */

static size_t put(char *o, pt_slice s)
{
    memcpy(o, s.p, s.len);
    return s.len;
}

/* Writes "HTTP/1.1 NNN " (the parser guarantees three digits). */
static size_t put_status(char *o, int status)
{
    memcpy(o, "HTTP/1.1 ", 9);
    o[9] = (char)('0' + status / 100 % 10);
    o[10] = (char)('0' + status / 10 % 10);
    o[11] = (char)('0' + status % 10);
    o[12] = ' ';
    return 13;
}

/* Writes one "name: value\r\n" line; returns its length. */
static size_t put_field(char *o, pt_slice name, pt_slice value)
{
    size_t n = put(o, name);
    o[n++] = ':';
    o[n++] = ' ';
    n += put(o + n, value);
    o[n++] = '\r';
    o[n++] = '\n';
    return n;
}

/* "Content-Length: N\r\n" (at most 38 bytes). */
static size_t put_content_length(char *o, uint64_t v)
{
    char digits[20];
    size_t nd = 0;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    size_t n = put(o, PT_SLICE("Content-Length: "));
    while (nd)
        o[n++] = digits[--nd];
    o[n++] = '\r';
    o[n++] = '\n';
    return n;
}

/* Room put_field needs for every field of a list (dead ones included). */
static size_t fields_size(const struct pt_headers *h)
{
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++)
        n += h->f[i].name.len + h->f[i].value.len + 4;
    return n;
}

/* Builds the request head sent upstream: request line with the rewritten
 * path, live non-hop-by-hop fields, then our framing. */
static bool build_upstream_head(struct pt_txn *t)
{
    size_t cap = t->req.method.len + t->path.len + t->req.query.len + 96;
    cap += fields_size(&t->reqh);
    char *o = pt_arena_alloc(&t->c->arena, cap);
    if (!o)
        return false;
    size_t n = 0;
    n += put(o + n, t->req.method);
    o[n++] = ' ';
    n += put(o + n, t->path);
    if (t->req.query.len) {
        o[n++] = '?';
        n += put(o + n, t->req.query);
    }
    n += put(o + n, PT_SLICE(" HTTP/1.1\r\n"));
    for (uint32_t i = 0; i < t->reqh.n; i++) {
        const struct pt_hfield *f = &t->reqh.f[i];
        if (f->dead || (pt_token_flags[f->token] & PT_TF_HOP) || f->token == PT_TOK_EXPECT ||
            f->token == PT_TOK_CONTENT_LENGTH)
            continue;
        n += put_field(o + n, f->name, f->value);
    }
    /* The framing is ours, written from what the body was framed by: no
     * field edit can make the upstream see another length. */
    if (t->req_mode == BODY_CHUNKED)
        n += put(o + n, PT_SLICE("Transfer-Encoding: chunked\r\n"));
    else if (t->req.framing.content_length >= 0)
        n += put_content_length(o + n, (uint64_t)t->req.framing.content_length);
    o[n++] = '\r';
    o[n++] = '\n';
    t->uhead = o;
    t->uhead_len = (uint32_t)n;
    return true;
}

/* Builds the response head sent to the client. */
static bool build_client_head(struct pt_txn *t)
{
    /* The status line carries the upstream's reason phrase, which can be
     * as long as a whole head: count it. */
    size_t cap = 160 + t->res.reason.len;
    cap += fields_size(&t->resph);
    char *o = pt_arena_alloc(&t->c->arena, cap);
    if (!o)
        return false;
    size_t len = put_status(o, t->res.status);
    if (t->res.reason.len)
        len += put(o + len, t->res.reason);
    else
        len += put(o + len, (pt_slice){pt_reason_phrase(t->res.status),
                                       strlen(pt_reason_phrase(t->res.status))});
    o[len++] = '\r';
    o[len++] = '\n';
    for (uint32_t i = 0; i < t->resph.n; i++) {
        const struct pt_hfield *f = &t->resph.f[i];
        if (f->dead || (pt_token_flags[f->token] & PT_TF_HOP) || f->token == PT_TOK_CONTENT_LENGTH)
            continue;
        len += put_field(o + len, f->name, f->value);
    }
    /* Framing written from the parsed response, as for requests. A
     * de-chunked response (HTTP/1.0 client) ends at close. */
    if (t->res_mode == BODY_CHUNKED && !t->res_decode)
        len += put(o + len, PT_SLICE("Transfer-Encoding: chunked\r\n"));
    else if (!t->res_decode && t->res.framing.content_length >= 0 && t->res.status != 204)
        len += put_content_length(o + len, (uint64_t)t->res.framing.content_length);
    /* (RFC 9110 §8.6: no Content-Length in a 204, whatever the upstream
     * said; a 304 keeps it, as a HEAD answer does: it describes the
     * representation.) */
    /* A drain closes the connection after this response: say so. */
    if (atomic_load_explicit(&t->c->w->draining, memory_order_relaxed))
        t->close_after = true;
    if (t->close_after)
        len += put(o + len, PT_SLICE("Connection: close\r\n"));
    else if (t->req.minor_version == 0)
        len += put(o + len, PT_SLICE("Connection: keep-alive\r\n"));
    o[len++] = '\r';
    o[len++] = '\n';
    t->chead = (pt_slice){o, len};
    t->chead_sent = 0;
    return true;
}

/* ---- request start ---- */

/* The next element of a comma-separated field value (RFC 9110 §5.6.1)
 * from *pp, which advances; empty at the end. */
static pt_slice list_next(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
        p++;
    const char *s = p;
    while (p < end && *p != ',' && *p != ' ' && *p != '\t')
        p++;
    *pp = p;
    return (pt_slice){s, (size_t)(p - s)};
}

/* Marks the fields named by Connection (other than close/keep-alive) dead:
 * they are hop-by-hop by the sender's own declaration. Naming the framing
 * or Host there takes nothing away: build_upstream_head and
 * build_client_head write the framing from what the body was framed by,
 * and add_forwarding_headers sets Host from the routed host. */
static void drop_connection_listed(struct pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        if (h->f[i].dead || h->f[i].token != PT_TOK_CONNECTION)
            continue;
        const char *p = h->f[i].value.p, *end = p + h->f[i].value.len;
        while (p < end) {
            pt_slice name = list_next(&p, end);
            if (name.len && !pt_slice_ieq_cstr(name, "close") &&
                !pt_slice_ieq_cstr(name, "keep-alive"))
                pt_headers_remove(h, name);
        }
    }
}

static bool add_forwarding_headers(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    struct pt_arena *a = &c->arena;
    pt_slice ip = {c->remote, c->remote_len};
    /* X-Forwarded-For: append to what earlier proxies wrote (an empty
     * field adds nothing: no ", 10.0.0.1"). */
    size_t prior = 0;
    for (uint32_t i = 0; i < t->reqh.n; i++)
        if (!t->reqh.f[i].dead && t->reqh.f[i].token == PT_TOK_X_FORWARDED_FOR &&
            t->reqh.f[i].value.len)
            prior += t->reqh.f[i].value.len + 2;
    pt_slice xff = ip;
    if (prior) {
        char *v = pt_arena_alloc(a, prior + ip.len);
        if (!v)
            return false;
        size_t n = 0;
        for (uint32_t i = 0; i < t->reqh.n; i++) {
            if (t->reqh.f[i].dead || t->reqh.f[i].token != PT_TOK_X_FORWARDED_FOR ||
                !t->reqh.f[i].value.len)
                continue;
            n += put(v + n, t->reqh.f[i].value);
            v[n++] = ',';
            v[n++] = ' ';
        }
        n += put(v + n, ip);
        xff = (pt_slice){v, n};
    }
    if (pt_headers_set(&t->reqh, a, PT_SLICE("X-Forwarded-For"), xff) < 0 ||
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Forwarded-Proto"), PT_SLICE("http")) < 0 ||
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Request-ID"), t->reqid) < 0)
        return false;
    if (t->req.host.len &&
        pt_headers_set(&t->reqh, a, PT_SLICE("X-Forwarded-Host"), t->req.host) < 0)
        return false;
    /* The upstream sees the host the request was routed by: the authority
     * of an absolute-form target replaces the Host field (RFC 9112
     * §3.2.2). Before the filters, so a transform can still set its own. */
    struct pt_hfield *h = pt_headers_find_token(&t->reqh, PT_TOK_HOST);
    if (t->req.host.len && (!h || !pt_slice_eq(h->value, t->req.host)) &&
        pt_headers_set(&t->reqh, a, PT_SLICE("Host"), t->req.host) < 0)
        return false;
    return true;
}

/* Applies strip_prefix or rewrite to the path. Returns 1, 0 when out of
 * memory, -1 when a rewrite made a path that cannot be normalised. */
static int rewrite_path(struct pt_txn *t)
{
    const struct pt_route *r = t->route;
    t->path = t->req.path;
    if (r->strip_prefix) {
        size_t n = strlen(r->strip_prefix);
        if (t->path.len >= n && memcmp(t->path.p, r->strip_prefix, n) == 0) {
            t->path.p += n;
            t->path.len -= n;
            if (t->path.len == 0 || t->path.p[0] != '/') {
                char *p = pt_arena_alloc(&t->c->arena, t->path.len + 1);
                if (!p)
                    return 0;
                p[0] = '/';
                memcpy(p + 1, t->path.p, t->path.len);
                t->path = (pt_slice){p, t->path.len + 1};
            }
        }
    } else if (r->rewrite) {
        /* A template may use a parameter more than once: every `{` may
         * stand for the longest value, so bound it by all of them. */
        size_t cap = strlen(r->rewrite) + 1, values = 0, slots = 0;
        for (uint32_t i = 0; i < t->rr.nparams; i++)
            values += t->rr.param_values[i].len;
        for (const char *s = r->rewrite; *s; s++)
            slots += *s == '{';
        cap += slots * values;
        char *o = pt_arena_alloc(&t->c->arena, cap);
        if (!o)
            return 0;
        size_t n = 0;
        for (const char *s = r->rewrite; *s;) {
            if (*s == '{') {
                const char *e = strchr(s, '}');
                if (e) {
                    pt_slice name = {s + 1, (size_t)(e - s - 1)};
                    pt_slice v = pt_param_lookup(t->rr.param_names, t->rr.param_values,
                                                 t->rr.nparams, r->match.regex != NULL, name);
                    if (v.p)
                        n += put(o + n, v);
                    s = e + 1;
                    continue;
                }
            }
            o[n++] = *s++;
        }
        t->path = (pt_slice){o, n};
        /* A regex capture can be part of a segment, so `..` again (`{name}`
         * of `/r/...pdf`): the rewritten path is normalised too. */
        if (t->gen->limits.normalize_path) {
            long nl = pt_path_normalize(o, n, t->gen->limits.merge_slashes);
            if (nl < 0)
                return -1;
            t->path.len = (size_t)nl;
        }
    }
    return 1;
}

static void txn_dispatch(struct pt_txn *t);

static void filters_resumed(struct pt_filter_ctx *ctx, enum pt_filter_result r);

/* Runs the request phase from the cursor; returns false when the chain
 * ended the request (a response is set) or suspended. */
static bool txn_run_request_filters(struct pt_txn *t)
{
    const struct pt_chain *ch = &t->route->chain;
    if (ch->n_request == 0)
        return true;
    int r = pt_chain_run_request(ch, &t->fctx, t->states, &t->cursor);
    switch (r) {
    case PT_FILTER_CONTINUE:
        return true;
    case PT_FILTER_SUSPEND:
        t->filters_suspended = true;
        return false;
    case PT_FILTER_RESPOND: {
        /* Extra headers a filter put into resp_headers (e.g. Retry-After). */
        size_t cap = 1 + fields_size(&t->resph);
        char *extra = pt_arena_alloc(&t->c->arena, cap);
        size_t n = 0;
        if (extra) {
            for (uint32_t i = 0; i < t->resph.n; i++) {
                const struct pt_hfield *f = &t->resph.f[i];
                if (f->dead)
                    continue;
                n += put_field(extra + n, f->name, f->value);
            }
            extra[n] = 0;
        }
        int st = t->fctx.respond_status ? t->fctx.respond_status : 403;
        txn_gateway_response(t, st, NULL, extra, t->fctx.respond_body, false);
        return false;
    }
    default:
        txn_gateway_response(t, 500, "filter error", NULL, (pt_slice){0}, false);
        return false;
    }
}

static void filters_resumed(struct pt_filter_ctx *ctx, enum pt_filter_result r)
{
    struct pt_txn *t = ctx->owner;
    struct pt_conn *c = t->c;
    t->filters_suspended = false;
    if (r == PT_FILTER_CONTINUE) {
        if (txn_run_request_filters(t))
            txn_dispatch(t);
    } else if (r == PT_FILTER_RESPOND) {
        t->cursor--; /* treat as if the suspended filter answered now */
        txn_gateway_response(t, ctx->respond_status ? ctx->respond_status : 403, NULL, NULL,
                             ctx->respond_body, false);
    } else {
        txn_gateway_response(t, 500, "filter error", NULL, (pt_slice){0}, false);
    }
    conn_run(c);
}

static const char *method_list(struct pt_arena *a, uint32_t mask)
{
    size_t cap = 24;
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        cap += pt_method_names[m].len + 2;
    char *o = pt_arena_alloc(a, cap + 16);
    if (!o)
        return NULL;
    size_t n = put(o, PT_SLICE("Allow: "));
    bool first = true;
    for (int m = 1; m < PT_METHOD__COUNT; m++) {
        if (!(mask & (1u << m)))
            continue;
        if (!first) {
            o[n++] = ',';
            o[n++] = ' ';
        }
        n += put(o + n, pt_method_names[m]);
        first = false;
    }
    o[n++] = '\r';
    o[n++] = '\n';
    o[n] = 0;
    return o;
}

/* A complete head is at the front of c->rbuf: set up the transaction. */
static void txn_start(struct pt_conn *c, struct pt_h1_request *preq, uint32_t head_len)
{
    struct pt_worker *w = c->w;
    struct pt_generation *g = w->gen;
    pt_timer_cancel(&w->loop, &c->timer);
    pt_worker_pin(w, g);
    struct pt_txn *t = pt_arena_zalloc(&c->arena, sizeof(*t));
    if (!t) {
        pt_worker_unpin(w, g);
        conn_close(c);
        return;
    }
    c->txn = t;
    c->requests++;
    t->pipelined = c->next_pipelined;
    c->next_pipelined = false;
    t->c = c;
    t->gen = g;
    t->t_start = c->head_started ? c->head_ns : pt_loop_now_ns(&c->w->loop);
    t->req = *preq;
    t->res_upstream_reusable = false;

    /* Copy the head into the request arena and point every slice at the
     * copy: the read buffer is reused for the body and for pipelined
     * requests, while the head is needed until the log line (one memcpy of
     * a few hundred bytes, cheaper than tracking buffer lifetimes). */
    const char *base = c->rbuf->data + c->rbuf->start;
    char *copy = pt_arena_alloc(&c->arena, head_len);
    if (!copy) {
        conn_close(c);
        return;
    }
    memcpy(copy, base, head_len);
#define REBASE(s)                                                                                  \
    do {                                                                                           \
        if ((s).p >= base && (s).p <= base + head_len)                                             \
            (s).p = copy + ((s).p - base);                                                         \
    } while (0)
    REBASE(t->req.method);
    REBASE(t->req.target);
    REBASE(t->req.path);
    REBASE(t->req.query);
    REBASE(t->req.host);
    for (size_t i = 0; i < preq->num_headers; i++) {
        REBASE(preq->headers[i].name);
        REBASE(preq->headers[i].value);
    }
#undef REBASE

    /* Headers: copy the parser's slices into an editable list (the bytes
     * stay in rbuf, which is not compacted until the head is consumed). */
    struct pt_hfield *store = pt_arena_alloc(&c->arena, sizeof(*store) * (preq->num_headers + 8));
    if (!store) {
        conn_close(c);
        return;
    }
    pt_headers_from_h1(&t->reqh, store, (uint32_t)preq->num_headers + 8, preq->headers,
                       preq->num_headers);
    t->resph = (struct pt_headers){0};
    t->req.headers = NULL; /* points at scratch; don't keep */

    struct pt_hfield *rid = pt_headers_find_token(&t->reqh, PT_TOK_X_REQUEST_ID);
    if (rid && valid_request_id(rid->value)) {
        t->reqid = rid->value;
    } else {
        gen_request_id(w, t->reqid_buf);
        t->reqid = (pt_slice){t->reqid_buf, 32};
    }

    /* Body framing. */
    if (preq->framing.chunked) {
        t->req_mode = BODY_CHUNKED;
        pt_chunked_init(&t->req_ck);
    } else if (preq->framing.content_length > 0) {
        t->req_mode = BODY_CL;
        t->req_left = (uint64_t)preq->framing.content_length;
    } else {
        t->req_mode = BODY_NONE;
        t->req_done = true;
    }
    t->close_after = !preq->framing.keep_alive;
    /* The head leaves the buffer; body bytes follow at rbuf start. */
    pt_buf_consume(c->rbuf, head_len);

    /* CONNECT asks for a tunnel, which the gateway does not offer (its
     * authority-form target has no path to route or forward). */
    if (t->req.method_id == PT_METHOD_CONNECT) {
        txn_gateway_response(t, 501, "CONNECT is not supported", NULL, (pt_slice){0}, true);
        return;
    }
    if (g->limits.underscores != PT_US_ALLOW && !screen_underscores(t, g->limits.underscores))
        return;
    /* One spelling of the path for routing, filters and the upstream,
     * normalised in a copy (a refused path is logged as it was sent). */
    if (g->limits.normalize_path &&
        pt_path_needs_normalize(t->req.path.p, t->req.path.len, g->limits.merge_slashes)) {
        char *np = pt_arena_alloc(&c->arena, t->req.path.len);
        if (!np) {
            conn_close(c);
            return;
        }
        memcpy(np, t->req.path.p, t->req.path.len);
        long nl = pt_path_normalize(np, t->req.path.len, g->limits.merge_slashes);
        if (nl < 0) {
            txn_gateway_response(t, 400, "invalid path: `..` above the root or a bad `%` escape",
                                 NULL, (pt_slice){0}, true);
            return;
        }
        t->req.path = (pt_slice){np, (size_t)nl};
    }

    /* Route. */
    pt_slice host = t->req.host;
    for (size_t i = host.len; i > 0; i--) {
        if (host.p[i - 1] == ':') {
            host.len = i - 1;
            break;
        }
        if (host.p[i - 1] == ']')
            break;
    }
    if (host.len > 1 && host.p[host.len - 1] == '.')
        host.len--; /* "api.example.com." is the same name */
    struct pt_route_input in = {host, t->req.path, t->req.query, t->req.method_id, &t->reqh};
    int st = pt_router_match(g->router, &in, &t->rr);
    if (st != 0) {
        const char *extra = st == 405 ? method_list(&c->arena, t->rr.allow_methods) : NULL;
        txn_gateway_response(t, st, NULL, extra, (pt_slice){0}, false);
        return;
    }
    t->route = t->rr.route;
    t->up = t->route->upstream;
    t->body_limit = t->route->max_body_bytes ? t->route->max_body_bytes : g->limits.max_body_bytes;
    if (t->req_mode == BODY_CL && t->req_left > t->body_limit) {
        txn_gateway_response(t, 413, NULL, NULL, (pt_slice){0}, true);
        return;
    }
    drop_connection_listed(&t->reqh);
    int rw = rewrite_path(t);
    if (rw < 0) {
        txn_gateway_response(t, 400, "invalid path after rewrite", NULL, (pt_slice){0}, true);
        return;
    }
    if (rw == 0 || !add_forwarding_headers(t)) {
        txn_gateway_response(t, 500, "out of memory", NULL, (pt_slice){0}, true);
        return;
    }

    /* Filters. */
    t->fctx.arena = &c->arena;
    t->fctx.req_headers = &t->reqh;
    t->fctx.resp_headers = &t->resph;
    t->fctx.method_id = t->req.method_id;
    t->fctx.method = t->req.method;
    t->fctx.path = t->path;
    t->fctx.query = t->req.query;
    t->fctx.request_id = t->reqid;
    t->fctx.remote_addr = (pt_slice){c->remote, c->remote_len};
    t->fctx.param_names = t->rr.param_names;
    t->fctx.param_values = t->rr.param_values;
    t->fctx.nparams = t->rr.nparams;
    t->fctx.params_numbered = t->route->match.regex != NULL; /* groups, in order */
    t->fctx.resume = filters_resumed;
    t->fctx.owner = t;
    if (t->route->chain.n_all)
        t->states = pt_chain_states(&t->route->chain, &c->arena);
    if (!txn_run_request_filters(t))
        return;
    txn_dispatch(t);
}

static void txn_dispatch(struct pt_txn *t)
{
    if (!t->up) {
        txn_gateway_response(t, 502, "route has no upstream", NULL, (pt_slice){0}, false);
        return;
    }
    struct pt_worker *w = t->c->w;
    struct pt_rr_state *rr = pt_worker_rr(w, t->gen, t->up);
    uint32_t i = rr ? pt_rr_pick(rr, t->up) : pt_weighted_pick(t->up, next_random(w));
    t->target = &t->up->targets[i];
    /* The request goes upstream as HTTP/1.1, where Host is required; an
     * HTTP/1.0 request may have come without one: name the target. */
    if (!pt_headers_find_token(&t->reqh, PT_TOK_HOST) &&
        pt_headers_set(&t->reqh, &t->c->arena, PT_SLICE("Host"),
                       (pt_slice){t->target->address, strlen(t->target->address)}) < 0) {
        txn_gateway_response(t, 500, "out of memory", NULL, (pt_slice){0}, true);
        return;
    }
    if (!build_upstream_head(t)) {
        txn_gateway_response(t, 500, "out of memory", NULL, (pt_slice){0}, true);
        return;
    }
    if (!txn_connect(t, false))
        return;
    /* Expect: 100-continue is answered here, once the request has passed
     * routing, limits and filters: the client sends its body only to a
     * request that will be forwarded (nginx does the same). */
    if (t->req.expect_continue && !t->req_done && pt_buf_len(t->c->rbuf) == 0 &&
        t->req.minor_version == 1) {
        /* Queued as an interim head: it goes out whole and before
         * anything else, even while the previous response's last bytes
         * are still on their way (a pipelined request). */
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        t->interim = (pt_slice){cont, sizeof(cont) - 1};
        t->interim_sent = 0;
    }
}

/* ---- the pump ---- */

/* Reads the client while no transaction is active; starts one when a head
 * is complete. Returns true when a transaction was started. */
static bool read_head(struct pt_conn *c)
{
    struct pt_worker *w = c->w;
    struct pt_generation *g = pt_worker_refresh_gen(w);
    struct pt_h1_limits lim = {g->limits.max_headers, g->limits.max_header_bytes,
                               g->limits.max_uri_bytes};
    struct pt_h1_header *hs = scratch_headers(g->limits.max_headers);
    if (!hs) {
        conn_close(c);
        return false;
    }
    size_t prev = 0;
    for (;;) {
        if (!c->rbuf) {
            if (!c->readable)
                break;
            c->rbuf = pt_buf_get(&w->bufs, rbuf_cap(g));
            if (!c->rbuf) {
                conn_close(c);
                return false;
            }
        }
        if (pt_buf_len(c->rbuf) > 0) {
            struct pt_h1_request req;
            int r = pt_h1_parse_request(c->rbuf->data + c->rbuf->start, pt_buf_len(c->rbuf), prev,
                                        &req, hs, &lim);
            if (r > 0) {
                txn_start(c, &req, (uint32_t)r);
                return c->txn != NULL && !c->closed;
            }
            if (r == PT_H1_ERROR) {
                /* Framing errors close the connection: nothing after a bad
                 * head can be trusted to start a new request. */
                pt_worker_pin(w, g);
                struct pt_txn *t = pt_arena_zalloc(&c->arena, sizeof(*t));
                if (!t) {
                    pt_worker_unpin(w, g);
                    conn_close(c);
                    return false;
                }
                c->txn = t;
                t->c = c;
                t->gen = g;
                t->t_start = c->head_started ? c->head_ns : pt_loop_now_ns(&c->w->loop);
                t->req_done = true;
                gen_request_id(w, t->reqid_buf);
                t->reqid = (pt_slice){t->reqid_buf, 32};
                txn_gateway_response(t, req.error_status ? req.error_status : 400, req.error_reason,
                                     NULL, (pt_slice){0}, true);
                return true;
            }
            prev = pt_buf_len(c->rbuf);
        }
        if (!c->readable)
            break;
        if (pt_buf_space(c->rbuf) == 0)
            pt_buf_compact(c->rbuf);
        size_t space = pt_buf_space(c->rbuf);
        ssize_t n = pt_io_recv(&w->loop, &c->io, c->rbuf->data + c->rbuf->end, space);
        if (n > 0) {
            c->rbuf->end += (uint32_t)n;
            /* A short read drained the socket; with edge triggering the
             * next arrival raises a new event, so skip the EAGAIN read. */
            if ((size_t)n < space && !c->hup)
                c->readable = false;
            if (!c->head_started) {
                c->head_started = true;
                c->head_ns = pt_loop_now_ns(&w->loop);
                pt_timer_arm(&w->loop, &c->timer, g->limits.header_timeout_ms, conn_timeout);
            }
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            conn_close(c);
            return false;
        }
        if (errno == EAGAIN) {
            c->readable = false;
            /* `readable` only said there might be bytes: with none of the
             * next request here, it has to be waited for, so it was not
             * pipelined. */
            if (!c->rbuf || pt_buf_len(c->rbuf) == 0)
                c->next_pipelined = false;
        }
    }
    /* Waiting for bytes: an idle connection holds no buffer. */
    if (c->rbuf && pt_buf_len(c->rbuf) == 0) {
        pt_buf_put(&w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    if (!pt_timer_armed(&c->timer))
        pt_timer_arm(&w->loop, &c->timer,
                     c->head_started || c->requests == 0 ? g->limits.header_timeout_ms
                                                         : g->limits.idle_timeout_ms,
                     conn_timeout);
    return false;
}

/* A request body that turned out broken or too large: an error response
 * while the client has seen nothing of a response; once the upstream's
 * response has started, a second response would land inside its body, so
 * the connection is cut instead. Returns false. */
static bool txn_request_fail(struct pt_txn *t, int status, const char *why)
{
    if (response_started(t)) {
        client_cut(t, why ? why : pt_error_text(status));
        return false;
    }
    txn_gateway_response(t, status, why, NULL, (pt_slice){0}, true);
    return false;
}

/* Checks the chunked framing of b's bytes from `from` on, dropping the
 * trailer section's field lines: trailers are not forwarded (as Envoy's
 * default for HTTP/1), so no field a route's rules or the gateway's own
 * headers govern can reach the next hop there. Bytes after the body (a
 * pipelined request) move up to close the gap. Returns the body bytes now
 * at `from`, or UINT32_MAX on a framing error. */
static uint32_t strip_chunked(struct pt_chunked *ck, struct pt_buf *b, uint32_t from, bool *done)
{
    char *p = b->data + b->start + from;
    size_t len = pt_buf_len(b) - from, kept = 0;
    ssize_t k = pt_chunked_strip(ck, p, len, &kept, done);
    if (k < 0)
        return UINT32_MAX;
    if (kept < (size_t)k) {
        memmove(p + kept, p + k, len - (size_t)k);
        b->end -= (uint32_t)((size_t)k - kept);
    }
    return (uint32_t)kept;
}

/* Validates newly arrived request-body bytes; returns false on a framing
 * error or an exceeded limit (a response is then set, or the connection
 * closed). */
static bool scan_request_body(struct pt_txn *t)
{
    struct pt_buf *b = t->c->rbuf;
    uint32_t avail = pt_buf_len(b);
    if (t->req_ready >= avail)
        return true;
    if (t->req_mode == BODY_CL) {
        t->req_ready = (uint32_t)PT_MIN((uint64_t)avail, t->req_left);
    } else if (t->req_mode == BODY_CHUNKED && !t->req_scan_done) {
        bool done = false;
        uint32_t kept = strip_chunked(&t->req_ck, b, t->req_ready, &done);
        if (kept == UINT32_MAX)
            return txn_request_fail(t, 400, "malformed chunked body");
        t->req_ready += kept;
        t->req_scan_done = done;
    }
    /* Chunked bodies are measured as received (framing included): the
     * limit guards memory and bandwidth, a few bytes of framing don't
     * change that. */
    if (t->req_mode == BODY_CHUNKED && t->bytes_in + t->req_ready > t->body_limit)
        return txn_request_fail(t, 413, NULL);
    return true;
}

/* Sends upstream what is ready: the head, then body bytes. */
static int pump_upstream_write(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    struct pt_uconn *uc = t->uc;
    if (!uc || !t->uc_writable || t->req_abandoned)
        return 0;
    if (!uc->connected) {
        int e = pt_uconn_finish_connect(uc);
        if (e == -EINPROGRESS || e == -EALREADY)
            return 0;
        if (e < 0) {
            int rs = t->uc_reused ? txn_retry_stale(t) : 0;
            if (rs != 0)
                return rs;
            txn_upstream_fail(t, 502,
                              e == -ECONNREFUSED ? "upstream connection refused"
                                                 : "upstream connect failed");
            return -1;
        }
        pt_timer_arm(&c->w->loop, &uc->timer, read_timeout(t), upstream_timeout);
    }
    bool head_left = t->uhead_sent < t->uhead_len;
    uint32_t body = 0;
    if (!t->req_done && c->rbuf) {
        if (!scan_request_body(t))
            return -1;
        body = t->req_ready;
    }
    if (!head_left && body == 0)
        return 0;
    struct iovec iov[2];
    int n = 0;
    if (head_left)
        iov[n++] = (struct iovec){t->uhead + t->uhead_sent, t->uhead_len - t->uhead_sent};
    if (body)
        iov[n++] = (struct iovec){c->rbuf->data + c->rbuf->start, body};
    ssize_t w = pt_io_sendv(&c->w->loop, &uc->io, iov, n);
    if (w < 0) {
        if (errno == EAGAIN) {
            t->uc_writable = false;
            return 0;
        }
        int rs = t->uhead_sent == 0 ? txn_retry_stale(t) : 0;
        if (rs != 0)
            return rs;
        if (t->uhead_sent == t->uhead_len) {
            /* The upstream had the whole head and stopped taking the body:
             * it may have answered early (its own 413) and closed. Stop
             * sending and read what it said, to EOF (the connection is
             * dead, no further event may come); the read side reports a
             * 502 when it said nothing. The client connection closes after
             * the response, the body having been left unread. */
            t->req_abandoned = true;
            t->uc_readable = true;
            t->uc_hup = true;
            return 1;
        }
        txn_upstream_fail(t, 502, "upstream write failed");
        return -1;
    }
    size_t sent = (size_t)w;
    if (head_left) {
        size_t h = PT_MIN(sent, (size_t)(t->uhead_len - t->uhead_sent));
        t->uhead_sent += (uint32_t)h;
        sent -= h;
    }
    if (sent) {
        pt_buf_consume(c->rbuf, (uint32_t)sent);
        t->req_ready -= (uint32_t)sent;
        t->bytes_in += sent;
        if (t->req_mode == BODY_CL)
            t->req_left -= sent;
        /* The upstream is taking the body: its read timeout runs from the
         * last byte it took, not from the start of a long upload. */
        pt_timer_arm(&c->w->loop, &uc->timer, read_timeout(t), upstream_timeout);
    }
    if ((t->req_mode == BODY_CL && t->req_left == 0) ||
        (t->req_mode == BODY_CHUNKED && t->req_scan_done && t->req_ready == 0))
        t->req_done = true;
    return 1;
}

/* Reads more request body from the client once the previous bytes went
 * upstream (that ordering is the backpressure). */
static int pump_client_read(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    if (t->req_done || !c->readable || t->res_head_is_ours)
        return 0;
    if (c->rbuf && pt_buf_len(c->rbuf) > 0)
        return 0;
    if (!c->rbuf) {
        c->rbuf = pt_buf_get(&c->w->bufs, 0);
        if (!c->rbuf) {
            conn_close(c);
            return -1;
        }
    }
    /* Empty buffer: reuse it from the front. The request head's slices
     * were only needed until the upstream head was built. */
    c->rbuf->start = c->rbuf->end = 0;
    ssize_t n = pt_io_recv(&c->w->loop, &c->io, c->rbuf->data, c->rbuf->cap);
    if (n > 0) {
        c->rbuf->end = (uint32_t)n;
        if ((size_t)n < c->rbuf->cap && !c->hup)
            c->readable = false;
        return 1;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        conn_close(c); /* client vanished mid-body */
        return -1;
    }
    c->readable = false;
    return 0;
}

/* Classifies the bytes of the response body now in the upstream buffer. */
static bool scan_response_body(struct pt_txn *t)
{
    struct pt_buf *b = t->uc->rbuf;
    uint32_t avail = pt_buf_len(b);
    if (t->res_ready >= avail || t->res_body_done)
        return true;
    switch (t->res_mode) {
    case BODY_CL:
        t->res_ready = (uint32_t)PT_MIN((uint64_t)avail, t->res_left);
        if (avail > t->res_left)
            t->res_upstream_reusable = false; /* bytes beyond the body */
        break;
    case BODY_EOF:
        t->res_ready = avail;
        break;
    case BODY_CHUNKED: {
        bool done = false;
        char *p = b->data + b->start + t->res_ready;
        size_t len = avail - t->res_ready;
        if (t->res_decode) {
            size_t out = 0;
            ssize_t k = pt_chunked_decode(&t->res_ck, p, len, &out, &done);
            if (k < 0)
                return false;
            if ((size_t)k < len)
                t->res_upstream_reusable = false;
            /* Payload now sits at p[0..out); drop the consumed framing. */
            b->end = b->start + t->res_ready + (uint32_t)out;
            t->res_ready += (uint32_t)out;
        } else {
            uint32_t kept = strip_chunked(&t->res_ck, b, t->res_ready, &done);
            if (kept == UINT32_MAX)
                return false;
            if (t->res_ready + kept < pt_buf_len(b))
                t->res_upstream_reusable = false; /* bytes beyond the body */
            t->res_ready += kept;
        }
        if (done)
            t->res_body_done = true;
        break;
    }
    case BODY_NONE:
        break;
    }
    return true;
}

/* The upstream response head is complete: decide framing, run response
 * filters, build the client head. */
static bool response_head_ready(struct pt_txn *t, uint32_t head_len)
{
    struct pt_conn *c = t->c;
    struct pt_uconn *uc = t->uc;
    t->t_up_head = pt_loop_now_ns(&c->w->loop);
    t->status = t->res.status;
    pt_buf_consume(uc->rbuf, head_len);
    if (uc->rbuf->start == 0 && uc->rbuf->end == 0)
        uc->rbuf->start = uc->rbuf->end = head_len; /* keep head slices intact */
    t->res_upstream_reusable = t->res.framing.keep_alive;
    bool no_body =
        t->req.method_id == PT_METHOD_HEAD || t->res.status == 204 || t->res.status == 304;
    if (no_body) {
        t->res_mode = BODY_NONE;
        t->res_body_done = true;
    } else if (t->res.framing.chunked) {
        t->res_mode = BODY_CHUNKED;
        pt_chunked_init(&t->res_ck);
        t->res_decode = t->req.minor_version == 0;
        if (t->res_decode)
            t->close_after = true;
    } else if (t->res.framing.content_length >= 0) {
        t->res_mode = BODY_CL;
        t->res_left = (uint64_t)t->res.framing.content_length;
        if (t->res_left == 0)
            t->res_body_done = true;
    } else {
        t->res_mode = BODY_EOF;
        t->res_upstream_reusable = false;
        t->close_after = true; /* the only way to end this body for the client */
    }
    if (!t->req_done) {
        /* The upstream answered before taking the whole body (e.g. its own
         * 413): neither connection can be reused safely. */
        t->res_upstream_reusable = false;
        t->close_after = true;
    }
    struct pt_hfield *store = pt_arena_alloc(&c->arena, sizeof(*store) * (t->res.num_headers + 8));
    if (!store)
        return false;
    pt_headers_from_h1(&t->resph, store, (uint32_t)t->res.num_headers + 8, t->res.headers,
                       t->res.num_headers);
    drop_connection_listed(&t->resph);
    pt_headers_set(&t->resph, &c->arena, PT_SLICE("X-Request-ID"), t->reqid);
    if (t->route->chain.n_response_head) {
        t->fctx.status = t->res.status;
        pt_chain_run_response_head(&t->route->chain, &t->fctx, t->states);
    }
    t->res_head_done = true;
    return build_client_head(t);
}

/* True when `name` is listed in one of the head's Connection fields. */
static bool connection_lists(const struct pt_h1_response *r, pt_slice name)
{
    for (size_t i = 0; i < r->num_headers; i++) {
        if (r->headers[i].token != PT_TOK_CONNECTION)
            continue;
        const char *p = r->headers[i].value.p, *end = p + r->headers[i].value.len;
        while (p < end) {
            pt_slice item = list_next(&p, end);
            if (item.len && pt_slice_ieq(item, name))
                return true;
        }
    }
    return false;
}

/* Appends the interim response just parsed (t->res) to the bytes waiting
 * for the client, without its hop-by-hop and Connection-listed fields. */
static bool queue_interim(struct pt_txn *t)
{
    uint32_t left = (uint32_t)t->interim.len - t->interim_sent;
    size_t need = left + 32 + t->res.reason.len;
    for (size_t i = 0; i < t->res.num_headers; i++)
        need += t->res.headers[i].name.len + t->res.headers[i].value.len + 4;
    /* Several 1xx in one read: append in a buffer that doubles, so queuing
     * k of them copies O(total) bytes, not O(k * total). */
    char *o = t->interim_buf;
    if (o && need <= t->interim_cap) {
        memmove(o, t->interim.p + t->interim_sent, left);
    } else {
        size_t cap = PT_MAX(need, (size_t)t->interim_cap * 2);
        o = pt_arena_alloc(&t->c->arena, cap);
        if (!o)
            return false;
        if (left)
            memcpy(o, t->interim.p + t->interim_sent, left);
        t->interim_buf = o;
        t->interim_cap = (uint32_t)cap;
    }
    size_t n = left;
    n += put_status(o + n, t->res.status);
    n += put(o + n, t->res.reason);
    o[n++] = '\r';
    o[n++] = '\n';
    for (size_t i = 0; i < t->res.num_headers; i++) {
        const struct pt_h1_header *h = &t->res.headers[i];
        if ((pt_token_flags[h->token] & PT_TF_HOP) || h->token == PT_TOK_CONTENT_LENGTH ||
            connection_lists(&t->res, h->name) ||
            (t->route && pt_chain_hides_interim_field(&t->route->chain, h->name)))
            continue;
        n += put_field(o + n, h->name, h->value);
    }
    o[n++] = '\r';
    o[n++] = '\n';
    t->interim = (pt_slice){o, n};
    t->interim_sent = 0;
    return true;
}

/* Writes to the client: the bytes taken (> 0); 0 when the socket is full
 * (the send timeout is armed, the next EPOLLOUT resumes); -1 when the
 * connection failed and was closed. */
static ssize_t client_send(struct pt_txn *t, struct iovec *iov, int n)
{
    struct pt_conn *c = t->c;
    ssize_t w = pt_io_sendv(&c->w->loop, &c->io, iov, n);
    if (w >= 0)
        return w;
    if (errno == EAGAIN) {
        c->writable = false;
        pt_timer_arm(&c->w->loop, &c->timer, t->gen->limits.idle_timeout_ms, conn_timeout);
        return 0;
    }
    if (!t->error)
        t->error = "client closed the connection";
    conn_close(c);
    return -1;
}

/* Sends queued interim heads; they precede anything else on the wire.
 * Returns 1 on progress, 0 when blocked or nothing is queued, -1 when the
 * connection was closed. */
static int pump_client_interim(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    if (t->interim_sent >= t->interim.len || !c->writable)
        return 0;
    struct iovec iov = {(char *)t->interim.p + t->interim_sent, t->interim.len - t->interim_sent};
    ssize_t w = client_send(t, &iov, 1);
    if (w <= 0)
        return (int)w;
    t->interim_sent += (uint32_t)w;
    t->interim_out += (uint64_t)w;
    /* The client is reading again: the send timeout a full socket armed is
     * over (during a transaction nothing else uses the client timer). */
    pt_timer_cancel(&c->w->loop, &c->timer);
    return 1;
}

/* Reads and parses the upstream response. */
static int pump_upstream_read(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    struct pt_uconn *uc = t->uc;
    if (!uc || !uc->connected || !t->uc_readable || t->res_head_is_ours)
        return 0;
    if (t->res_head_done && (t->res_body_done || (uc->rbuf && pt_buf_len(uc->rbuf) > 0)))
        return 0; /* backpressure: the client has not taken what we have */
    if (!t->res_head_done && t->interim_sent < t->interim.len)
        return 0; /* the same for interim heads (every 1xx in the buffer was parsed) */
    if (!uc->rbuf) {
        uc->rbuf = pt_buf_get(&c->w->bufs, 0);
        if (!uc->rbuf) {
            txn_upstream_fail(t, 502, "out of memory");
            return -1;
        }
    }
    if (t->res_head_done)
        uc->rbuf->start = uc->rbuf->end = 0;
    else if (pt_buf_space(uc->rbuf) == 0)
        pt_buf_compact(uc->rbuf);
    if (pt_buf_space(uc->rbuf) == 0) {
        txn_upstream_fail(t, 502, "upstream response head too large");
        return -1;
    }
    size_t space = pt_buf_space(uc->rbuf);
    ssize_t n = pt_io_recv(&c->w->loop, &uc->io, uc->rbuf->data + uc->rbuf->end, space);
    if (n > 0 && (size_t)n < space && !t->uc_hup)
        t->uc_readable = false;
    if (n < 0) {
        if (errno == EAGAIN) {
            t->uc_readable = false;
            return 0;
        }
        if (errno == EINTR)
            return 1;
    }
    if (n <= 0) {
        /* EOF or reset. */
        if (!t->res_head_done) {
            int rs = !t->res_any && t->uhead_sent == t->uhead_len ? txn_retry_stale(t) : 0;
            if (rs != 0)
                return rs;
            txn_upstream_fail(
                t, 502, n == 0 ? "upstream closed the connection" : "upstream connection reset");
            return -1;
        }
        /* A body that ends at close ends at a clean close only: a reset
         * may have lost bytes. */
        if (t->res_mode == BODY_EOF && n == 0) {
            t->res_body_done = true;
            t->uc_readable = false;
            return 1;
        }
        /* Truncated body: a 502 if nothing went out yet (the head may be
         * waiting for a busy client), else the client is cut off. */
        txn_upstream_fail(t, 502,
                          n == 0 ? "upstream truncated the response" : "upstream connection reset");
        return -1;
    }
    uc->rbuf->end += (uint32_t)n;
    t->res_any = true;
    pt_timer_arm(&c->w->loop, &uc->timer, read_timeout(t), upstream_timeout);
    if (!t->res_head_done) {
        struct pt_generation *g = t->gen;
        struct pt_h1_limits lim = {g->limits.max_headers, PT_BUF_SIZE - 1, PT_BUF_SIZE};
        if (!t->res_hdrs) {
            t->res_hdrs = pt_arena_alloc(&c->arena, sizeof(*t->res_hdrs) * g->limits.max_headers);
            if (!t->res_hdrs) {
                txn_upstream_fail(t, 502, "out of memory");
                return -1;
            }
        }
        for (;;) {
            int r = pt_h1_parse_response(uc->rbuf->data + uc->rbuf->start, pt_buf_len(uc->rbuf),
                                         t->res_prev, &t->res, t->res_hdrs, &lim);
            if (r == PT_H1_INCOMPLETE) {
                t->res_prev = pt_buf_len(uc->rbuf);
                return 1;
            }
            if (r == PT_H1_ERROR) {
                t->res_upstream_reusable = false;
                txn_upstream_fail(t, 502, "invalid upstream response");
                return -1;
            }
            if (t->res.status >= 100 && t->res.status < 200) {
                if (t->res.status == 101) {
                    txn_upstream_fail(t, 502, "unexpected protocol switch");
                    return -1;
                }
                /* Interim response: 103 Early Hints and the like go on to
                 * an HTTP/1.1 client ahead of the final response (RFC 9110
                 * §15.2); a stray 100 is ours to answer, not forwarded. */
                if (t->res.status != 100 && t->req.minor_version == 1 && !queue_interim(t)) {
                    txn_upstream_fail(t, 502, "out of memory");
                    return -1;
                }
                pt_buf_consume(uc->rbuf, (uint32_t)r);
                t->res_prev = 0;
                if (pt_buf_len(uc->rbuf) == 0)
                    return 1;
                continue;
            }
            if (!response_head_ready(t, (uint32_t)r)) {
                txn_upstream_fail(t, 502, "out of memory");
                return -1;
            }
            break;
        }
    }
    if (!scan_response_body(t)) {
        t->res_upstream_reusable = false;
        txn_upstream_fail(t, 502, "invalid upstream body framing");
        return -1;
    }
    return 1;
}

/* Writes the response head and ready body bytes to the client. */
static int pump_client_write(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    if (t->interim_sent < t->interim.len)
        return pump_client_interim(t);
    if (!t->res_head_done || !c->writable)
        return 0;
    bool head_left = t->chead_sent < t->chead.len;
    uint32_t body = (t->uc && t->uc->rbuf && !t->res_head_is_ours) ? t->res_ready : 0;
    if (!head_left && body == 0)
        return 0;
    struct iovec iov[2];
    int n = 0;
    if (head_left)
        iov[n++] = (struct iovec){(char *)t->chead.p + t->chead_sent, t->chead.len - t->chead_sent};
    if (body)
        iov[n++] = (struct iovec){t->uc->rbuf->data + t->uc->rbuf->start, body};
    ssize_t w = client_send(t, iov, n);
    if (w <= 0)
        return (int)w;
    size_t sent = (size_t)w;
    if (head_left) {
        size_t h = PT_MIN(sent, t->chead.len - t->chead_sent);
        t->chead_sent += (uint32_t)h;
        sent -= h;
        t->bytes_out += h;
    }
    if (sent) {
        pt_buf_consume(t->uc->rbuf, (uint32_t)sent);
        t->res_ready -= (uint32_t)sent;
        t->bytes_out += sent;
        if (t->res_mode == BODY_CL) {
            t->res_left -= sent;
            if (t->res_left == 0)
                t->res_body_done = true;
        }
    }
    pt_timer_cancel(&c->w->loop, &c->timer);
    return 1;
}

static bool txn_finished(const struct pt_txn *t)
{
    return t->res_head_done && t->chead_sent == t->chead.len && t->res_body_done &&
           t->res_ready == 0 && t->interim_sent == t->interim.len;
}

/*
 * Lingering close (as nginx does): after answering a request whose body
 * was left unread (413, an early upstream answer), closing at once makes
 * the kernel send a reset for the unread bytes, and a reset can destroy the
 * response before the client has read it. So shut the write side (the
 * client sees the end of the response), discard whatever still arrives for
 * up to PT_LINGER_MS (and PT_LINGER_MAX_BYTES), then close.
 */
#define PT_LINGER_MS 2000
#define PT_LINGER_MAX_BYTES (8u << 20)

static void linger_discard(struct pt_conn *c)
{
    char sink[4096];
    if (!c->readable)
        return;
    for (;;) {
        ssize_t n = pt_io_recv(&c->w->loop, &c->io, sink, sizeof(sink));
        if (n > 0) {
            c->linger_bytes += (uint64_t)n;
            if (c->linger_bytes > PT_LINGER_MAX_BYTES)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            c->readable = false;
            return;
        }
        break; /* EOF or error: the client is done */
    }
    conn_close(c);
}

static void conn_linger(struct pt_conn *c)
{
    if (c->rbuf) {
        pt_buf_put(&c->w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    if (pt_io_shutdown_wr(&c->w->loop, &c->io) < 0) {
        conn_close(c);
        return;
    }
    c->lingering = true;
    c->head_started = false; /* nothing more will be parsed: a drain may close it */
    c->readable = true;
    pt_timer_arm(&c->w->loop, &c->timer, PT_LINGER_MS, conn_timeout);
    linger_discard(c);
}

/* The response is fully written: end the transaction and get ready for the
 * next request on this connection (or close it). */
static void txn_finish(struct pt_txn *t)
{
    struct pt_conn *c = t->c;
    struct pt_worker *w = c->w;
    if (!t->req_done)
        t->close_after = true;
    bool close_conn = t->close_after || atomic_load_explicit(&w->draining, memory_order_relaxed);
    bool unread_body = !t->req_done;
    txn_end(t, true);
    if (close_conn) {
        if (unread_body)
            conn_linger(c);
        else
            conn_close(c);
        return;
    }
    c->head_started = false;
    /* Bytes of the next request already here (buffered, received, or
     * reported readable): it was pipelined, and a FIN behind it is no
     * reason to drop it (judge_hangup). */
    c->next_pipelined =
        (c->rbuf && pt_buf_len(c->rbuf) > 0) || c->readable || pt_io_has_input(&w->loop, &c->io);
    c->idle_since = pt_loop_now(&w->loop);
    if (c->rbuf && pt_buf_len(c->rbuf) == 0) {
        pt_buf_put(&w->bufs, c->rbuf);
        c->rbuf = NULL;
    } else if (c->rbuf) {
        pt_buf_compact(c->rbuf); /* pipelined bytes move to the front */
        c->head_started = true;
        c->head_ns = pt_loop_now_ns(&w->loop);
    }
    pt_timer_arm(&w->loop, &c->timer,
                 c->head_started ? w->gen->limits.header_timeout_ms
                                 : w->gen->limits.idle_timeout_ms,
                 conn_timeout);
}

/* The request is complete: settle whether the next one's bytes are
 * already waiting. `readable` can be a guess (the last read filled the
 * buffer, or an edge reported bytes a read already took); left standing
 * until the response is out, it would count a request sent after that
 * response as pipelined (judge_hangup). Settled once when the request
 * completes and again after each input event until the transaction ends.
 * Costs one recv(MSG_PEEK) with epoll, and only in those cases: a short
 * read already cleared the flag, so a plain request pays nothing. */
static void settle_readable(struct pt_conn *c, struct pt_txn *t)
{
    t->input_settled = true;
    if (c->readable && !c->hup && (!c->rbuf || pt_buf_len(c->rbuf) == 0) &&
        !pt_io_input_waiting(&c->w->loop, &c->io))
        c->readable = false;
}

static void conn_run(struct pt_conn *c)
{
    if (c->lingering) {
        linger_discard(c);
        return;
    }
    for (int guard = 0; guard < 10000; guard++) {
        if (c->closed)
            return;
        if (!c->txn) {
            if (!read_head(c))
                return;
            continue;
        }
        struct pt_txn *t = c->txn;
        if (t->filters_suspended)
            return;
        int progress = 0, r;
        if ((r = pump_upstream_write(t)) < 0 && c->closed)
            return;
        progress |= r > 0;
        if ((r = pump_client_read(t)) < 0)
            return;
        progress |= r > 0;
        if (t->req_done && !t->input_settled)
            settle_readable(c, t);
        if ((r = pump_upstream_read(t)) < 0 && c->closed)
            return;
        progress |= r > 0;
        if ((r = pump_client_write(t)) < 0)
            return;
        progress |= r > 0;
        if (txn_finished(t)) {
            txn_finish(t);
            continue;
        }
        if (!progress)
            return;
    }
}

/* ---- access log ---- */

static void access_log(struct pt_txn *t)
{
    struct pt_generation *g = t->gen;
    if (g->access_log.mode == PT_ALOG_OFF)
        return;
    char line[4096];
    char esc[6 * 512];
    /* Clocks are read here, only when there is a line to write. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    uint64_t now = pt_now_ns();
    double dur = (double)(now - t->t_start) / 1e6;
    double up =
        t->t_up_start ? (double)((t->t_up_head ? t->t_up_head : now) - t->t_up_start) / 1e6 : 0.0;
    size_t plen = t->req.path.len > 512 ? 512 : t->req.path.len;
    size_t pe = t->req.path.p ? pt_json_escape(esc, t->req.path.p, plen) : 0;
    char rid[6 * 128];
    size_t rl = pt_json_escape(rid, t->reqid.p, t->reqid.len);
    int n = snprintf(
        line, sizeof(line),
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"request_id\":\"%.*s\","
        "\"remote_addr\":\"%s\",\"listener\":\"%s\",\"route\":\"%s\",\"upstream\":\"%s\","
        "\"target\":\"%s\",\"method\":\"%.*s\",\"path\":\"%.*s\",\"status\":%d,"
        "\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f,\"upstream_ms\":%.3f%s%s%s}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        ts.tv_nsec / 1000000, (int)rl, rid, t->c->remote, t->c->listener,
        t->route ? t->route->name : "", t->up ? t->up->name : "",
        t->target ? t->target->address : "", (int)PT_MIN(t->req.method.len, 32),
        t->req.method.p ? t->req.method.p : "", (int)pe, esc, t->status,
        (unsigned long long)t->bytes_in, (unsigned long long)(t->bytes_out + t->interim_out), dur,
        up, t->error ? ",\"error\":\"" : "", t->error ? t->error : "", t->error ? "\"" : "");
    if (n > 0)
        pt_alog_push(&t->c->w->alog, line, (size_t)PT_MIN(n, (int)sizeof(line) - 1));
}
