/*
 * h1_server.c — the HTTP/1.1 server codec: bytes on one client connection
 * become exchanges (exchange.h), and each exchange's response becomes
 * bytes again. It owns framing (Content-Length, chunked both ways, close-
 * delimited), keep-alive, pipelining, interim heads (100 Continue, 103),
 * the connection's timers (header, idle, send), hangups and lingering
 * close. It knows no routes, filters or upstreams.
 *
 * Ownership: a worker owns its pt_conn objects; a connection owns at most
 * one transaction (struct h1_txn, in the connection's request arena),
 * which embeds the exchange. Closed connections are freed at the end of
 * the loop turn, so an event already queued for them in the same turn
 * finds a `closed` flag, not freed memory.
 *
 * Flow: every event (client socket, or a wake from the exchange) ends in
 * pt_h1s_run(), which pumps until nothing can move: read the client, let the
 * exchange run its upstream call, write the client. Request body payload
 * is pulled by the call straight from the read buffer, and response
 * payload is written straight from the call's buffer (no copy); a side is
 * read only once the other side drained what it holds (backpressure).
 */
#include "gateway/h1_server.h"
#include "gateway/h2_server.h"
#include "gateway/respond.h"

#include "core/log.h"
#include "http/h1.h"
#include "http/h1_write.h"

#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static bool response_started(const struct h1_txn *t)
{
    return t->ex.response_started;
}

/* ---- the codec's side of the exchange ---- */

static pt_slice codec_body_peek(void *conn, bool *eos)
{
    struct pt_conn *c = conn;
    struct h1_txn *t = c->txn;
    *eos = true;
    if (pt_unlikely(t && t->ex.upgraded && !t->tunnel)) {
        *eos = false; /* the 101 is not rendered yet: the tunnel starts there */
        return (pt_slice){"", 0};
    }
    if (!t || t->req_mode == BODY_NONE || t->req_done)
        return (pt_slice){"", 0};
    uint32_t avail = c->rbuf ? pt_buf_len(c->rbuf) : 0;
    const char *p = c->rbuf ? c->rbuf->data + c->rbuf->start : "";
    if (t->req_mode == BODY_TUNNEL) {
        *eos = t->tunnel_eof && avail == 0;
        return (pt_slice){p, avail};
    }
    if (t->req_mode == BODY_CL) {
        uint32_t n = (uint32_t)PT_MIN((uint64_t)avail, t->req_left);
        *eos = n == t->req_left;
        return (pt_slice){p, n};
    }
    *eos = t->req_scan_done;
    return (pt_slice){p, t->req_ready};
}

static void codec_body_consumed(void *conn, size_t n)
{
    struct pt_conn *c = conn;
    struct h1_txn *t = c->txn;
    if (!t || n == 0)
        return;
    pt_buf_consume(c->rbuf, (uint32_t)n);
    if (t->req_mode == BODY_TUNNEL) {
        t->req_done = t->tunnel_eof && pt_buf_len(c->rbuf) == 0;
    } else if (t->req_mode == BODY_CL) {
        t->req_left -= n;
        t->req_done = t->req_left == 0;
    } else {
        t->req_ready -= (uint32_t)n;
        t->req_done = t->req_scan_done && t->req_ready == 0;
    }
}

static void codec_wake(void *conn)
{
    struct pt_conn *c = conn;
    if (c->closed)
        return;
    if (c->in_run) {
        c->again = true;
        return;
    }
    pt_h1s_run(c);
}

static const struct pt_codec_ops codec_ops = {codec_body_peek, codec_body_consumed, codec_wake};

/* ---- small helpers ---- */

static __thread struct pt_h1_header *hscratch;
static __thread size_t hscratch_cap;

struct pt_h1_header *pt_h1s_scratch_headers(size_t n)
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
    pt_call_thread_exit();
    pt_h2s_thread_exit();
    free(hscratch);
    hscratch = NULL;
    hscratch_cap = 0;
}

/* A transaction with its exchange, in the connection's arena. */
struct h1_txn *pt_h1s_txn_new(struct pt_conn *c)
{
    /* The exchange (the first member) is zeroed by pt_exchange_init: clear
     * only the codec's part here, not 2 KiB twice per request. */
    struct h1_txn *t = pt_arena_alloc(&c->arena, sizeof(*t));
    if (!t)
        return NULL;
    _Static_assert(offsetof(struct h1_txn, ex) == 0, "the exchange comes first");
    memset((char *)t + sizeof(t->ex), 0, sizeof(*t) - sizeof(t->ex));
    t->c = c;
    pt_exchange_init(&t->ex, c->w, &c->arena, &codec_ops, c);
    t->ex.listener = c->listener;
    t->ex.peer = (pt_slice){c->remote, c->remote_len};
    t->ex.tls = c->tls;
    t->ex.peer_ip = c->remote_ip;
    t->ex.req.scheme = (pt_slice){c->scheme, strlen(c->scheme)};
    t->ex.t_start = c->head_started ? c->head_ns : pt_loop_now_ns(&c->w->loop);
    t->minor_version = 1;
    c->txn = t;
    return t;
}

/* A response the codec makes before any request is usable (a bad head, a
 * header timeout): a transaction of its own, for the log line. */
void pt_h1s_codec_error(struct pt_conn *c, int status, const char *why)
{
    struct h1_txn *t = pt_h1s_txn_new(c);
    if (!t) {
        pt_h1s_close(c);
        return;
    }
    t->req_done = true;
    pt_exchange_respond(&t->ex, status, why, true);
}

/* ---- hangups and timers ---- */

/* A reported hangup, judged once, when the request it follows is complete:
 * with no pipelined bytes waiting and the peer really gone, the
 * transaction ends with 499 and the connection closes. A request waiting
 * on a filter is judged too: its suspension is cancelled. Returns true
 * when it closed the connection. */
static bool judge_hangup(struct pt_conn *c)
{
    struct h1_txn *t = c->txn;
    if (c->requests > c->hup_req) {
        c->hup_unjudged = false; /* a later (pipelined) request started: excused */
        return false;
    }
    if (!t || c->requests < c->hup_req || !t->req_done)
        return false; /* not yet: judged when the request is complete */
    if (t->tunnel) {
        c->hup_unjudged = false; /* a tunnel's half-close is read as EOF and relayed */
        return false;
    }
    c->hup_unjudged = false;
    if (t->pipelined && !c->hup_reset)
        return false; /* a client that half-closed after pipelining waits for its answers */
    if ((c->rbuf && pt_buf_len(c->rbuf) > 0) || (c->tls && pt_tls_has_buffered(c->tls)) ||
        !pt_io_peer_gone(&c->w->loop, &c->io))
        return false; /* pipelined requests still get their answers */
    if (t->chead_sent == 0)
        t->ex.status = 499;
    if (!t->ex.error)
        t->ex.error = "client closed the connection";
    pt_h1s_close(c);
    return true;
}

static void conn_on_event(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_conn *c = pt_container_of(io, struct pt_conn, io);
    (void)loop;
    if (c->closed)
        return;
    if (c->tls)
        events = pt_tls_events(c->tls, events);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    /* Edge-triggered epoll repeats RDHUP in every later event's mask:
     * only the first report of a hangup is news. */
    bool new_hup = (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && !c->hup;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    /* A client that leaves while its request is with the upstream or a
     * filter: stop, free the upstream connection, log 499 (nginx's
     * default; HTTP/1.1 has no way to keep a response for a client that is
     * gone). Bytes it pipelined before its FIN still get their answers (the
     * hangup is judged once, when first reported). */
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
    pt_h1s_run(c);
    /* The FIN came with (or before the end of) the request it follows, as
     * epoll reports when both arrive together: judged once the request is
     * complete, so that both backends treat it alike. */
    if (!c->closed && c->hup_unjudged)
        judge_hangup(c);
}

void pt_h1s_timeout(struct pt_loop *loop, struct pt_timer *tm)
{
    struct pt_conn *c = pt_container_of(tm, struct pt_conn, timer);
    (void)loop;
    if (c->closed)
        return;
    if (c->tls && !c->tls->handshake_done) {
        pt_h1s_tls_done(c, false, "handshake timeout");
        pt_h1s_close(c);
        return;
    }
    if (c->lingering || c->want_proxy) {
        /* No valid PROXY header in time: the peer is not speaking HTTP to
         * us yet, so no response (nothing a balancer would relay). */
        pt_h1s_close(c);
        return;
    }
    if (!c->txn && c->head_started) {
        /* Slowloris guard: a head that doesn't complete in time. */
        pt_worker_refresh_gen(c->w);
        pt_h1s_codec_error(c, 408, NULL);
        pt_h1s_run(c);
        return;
    }
    /* The client stopped reading a response (the send timeout): a cut it
     * cannot mistake for the end. */
    if (c->txn && response_started(c->txn)) {
        pt_h1s_cut(c->txn, "client send timeout");
        return;
    }
    pt_h1s_close(c);
}

void pt_h1s_set_peer(struct pt_conn *c, const struct sockaddr_storage *peer)
{
    /* Parsed and written once per connection (canonical text, a v4-mapped
     * address as IPv4), so a request pays nothing to know its peer. */
    c->remote[0] = 0;
    c->remote_len = 0;
    if (!pt_ip_from_sockaddr(peer, &c->remote_ip))
        return;
    _Static_assert(sizeof(c->remote) >= PT_IP_TEXT_MAX, "room for any address");
    c->remote_len = (uint8_t)pt_ip_format(&c->remote_ip, c->remote);
}

void pt_conn_accept(struct pt_worker *w, struct pt_wlistener *l, int fd,
                    const struct sockaddr_storage *peer)
{
    /* Only the listed peers (the balancers) may say whose connection they
     * relay: anyone else on this listener could claim any address. */
    if (l->proxy_protocol && l->nproxy_from) {
        struct pt_ip ip;
        struct pt_cidr_set from = {l->proxy_from, l->nproxy_from};
        if (!pt_ip_from_sockaddr(peer, &ip) || !pt_cidr_set_has(&from, &ip)) {
            close(fd);
            return;
        }
    }
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
    c->scheme = l->scheme ? l->scheme : "http";
    snprintf(c->listener, sizeof(c->listener), "%s", l->name);
    pt_h1s_set_peer(c, peer);
    c->want_proxy = l->proxy_protocol;
    c->http2 = l->http2;
    if (l->tls_ctx) {
        /* Behind a PROXY header the ClientHello comes after it. */
        struct pt_tls *t = pt_tls_listener_accept(l->tls_ctx, &w->loop, &c->io);
        if (!t) {
            close(fd);
            free(c);
            return;
        }
        *(c->want_proxy ? &c->tls_wait : &c->tls) = t;
        c->hs_timeout_ms = (uint32_t)PT_MIN(l->handshake_timeout_ms, (uint64_t)UINT32_MAX);
    }
    if (pt_loop_add_stream(&w->loop, &c->io, false) < 0) {
        pt_tls_free(c->tls ? c->tls : c->tls_wait);
        close(fd);
        free(c);
        return;
    }
    atomic_fetch_add_explicit(&pt_active_connections, 1, memory_order_relaxed);
    c->lslot = pt_conn_counts_slot(&w->conn_counts, c->listener);
    pt_ctr_add(&w->conn_counts.slot[c->lslot].opened, 1);
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
    pt_timer_arm(&w->loop, &c->timer, c->tls ? c->hs_timeout_ms : w->gen->limits.header_timeout_ms,
                 pt_h1s_timeout);
    pt_h1s_run(c);
}

void pt_h1s_tls_done(struct pt_conn *c, bool ok, const char *why)
{
    struct pt_worker *w = c->w;
    if (!ok) {
        pt_ctr_add(&w->conn_counts.slot[c->lslot].tls_failed, 1);
        pt_debug("listener %s: TLS handshake with %s failed: %s", c->listener, c->remote, why);
        return;
    }
    if (SSL_session_reused(c->tls->ssl))
        pt_ctr_add(&w->conn_counts.slot[c->lslot].tls_resumed, 1);
    else
        pt_ctr_add(&w->conn_counts.slot[c->lslot].tls_full, 1);
}

/* Ends the transaction: the exchange (call, filters, log, pin), then the
 * arena (an idle keep-alive connection holds no arena memory). */
void pt_h1s_txn_end(struct h1_txn *t, bool completed)
{
    struct pt_conn *c = t->c;
    pt_timer_cancel(&c->w->loop, &t->rate_timer);
    pt_exchange_end(&t->ex, completed);
    c->txn = NULL;
    pt_arena_release(&c->arena);
}

void pt_h1s_close(struct pt_conn *c)
{
    if (c->closed)
        return;
    struct pt_worker *w = c->w;
    if (c->h2)
        pt_h2s_close(c);
    if (c->txn)
        pt_h1s_txn_end(c->txn, false);
    pt_timer_cancel(&w->loop, &c->timer);
    pt_io_close_ex(&w->loop, &c->io, c->cut);
    pt_tls_free(c->tls);
    c->tls = NULL;
    pt_tls_free(c->tls_wait);
    c->tls_wait = NULL;
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
    pt_ctr_add(&w->conn_counts.slot[c->lslot].closed, 1);
}

/* Cuts the client off in the middle of a response. When the client's
 * body ends at close a FIN would make the cut body look complete, so the
 * connection is reset instead (SO_LINGER 0: the close sends RST). */
void pt_h1s_cut(struct h1_txn *t, const char *why)
{
    t->ex.error = why;
    if (t->out == OUT_CLOSE) { /* (a tunnel ends with a FIN: its frames tell their end) */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(t->c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    t->c->cut = true;
    pt_h1s_close(t->c);
}

/* ---- the worker's view: reaping, drain, eviction ---- */

void pt_conn_reap(struct pt_worker *w)
{
    bool any = false;
    while (w->to_free) {
        struct pt_conn *c = w->to_free;
        w->to_free = c->free_next;
        pt_arena_release(&c->arena);
        if (c->h2)
            pt_h2s_free(c);
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
        if (c->h2)
            pt_h2s_drain(c); /* GOAWAY; in-flight streams finish */
        else if (!c->txn && !c->head_started && !c->lingering && !pt_conn_tls_owes(c))
            pt_h1s_close(c); /* (a lingering one ends on its own, soon; one
                                whose last records wait for room, next turn) */
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
         * worse than a slot held for header_timeout. An HTTP/2
         * connection gives way the same: served, no stream open. */
        if (c->h2 ? !pt_h2s_idle(c) : c->requests == 0 || c->txn || c->head_started || c->lingering)
            continue;
        if (c->readable || pt_conn_has_input(c) || !pt_timer_armed(&c->timer) ||
            pt_conn_tls_owes(c))
            continue;
        if (!oldest || c->idle_since <= oldest->idle_since) /* ties: older */
            oldest = c;
    }
    if (!oldest)
        return false;
    if (oldest->h2)
        pt_h2s_evict(oldest);
    else
        pt_h1s_close(oldest);
    return true;
}

void pt_conn_close_all(struct pt_worker *w)
{
    while (w->conns) {
        struct pt_conn *c = w->conns;
        /* A response cut by the drain timeout must not look complete. */
        if (c->txn && response_started(c->txn)) {
            pt_h1s_cut(c->txn, "drain timeout");
        } else {
            if (c->txn && !c->txn->ex.error)
                c->txn->ex.error = "drain timeout"; /* logged 499: no answer went out */
            pt_h1s_close(c);
        }
    }
}
