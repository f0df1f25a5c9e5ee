/*
 * h2_session.c — the HTTP/2 server codec's connection: nghttp2's session
 * over the connection's byte stream (pt_conn_recv / pt_conn_sendv: TLS
 * or the socket), its timers, its flood guards and GOAWAY.
 *
 * How a connection gets here: the HTTP/1.1 codec reads the first bytes of
 * a connection on a listener with `http2: true`; the client preface
 * ("PRI * HTTP/2.0...", h2c with prior knowledge) or ALPN "h2" on TLS
 * hands it over (pt_h2s_adopt). The pt_conn stays (its socket, TLS,
 * peer, listener, slot in the worker's list and counts); its event and
 * timer callbacks become this file's, and c->h2 holds the HTTP/2 state.
 *
 * Ownership: the pt_h2s (malloc'd at adoption, freed with the pt_conn at
 * reap) owns the nghttp2 session and the open streams; each stream
 * (h2_stream.c) lives in its own request arena with its exchange, so a
 * finished stream gives its memory back at once. nghttp2 callbacks only
 * set state: streams are pumped, and the connection closed, from
 * pt_h2s_run, never from inside nghttp2.
 *
 * Flow: every event (socket, or a stream's exchange waking) ends in
 * pt_h2s_run: read what the socket has into nghttp2 (not while our own
 * output is stuck: a client that doesn't read stops being read), pump
 * each open stream's exchange, then write what nghttp2 has (batched into
 * one 16 KiB pooled buffer per write).
 */
#include "gateway/h2_server.h"

#include "core/log.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/uio.h>

/* What the connection's one timer stands for now (set_timer):
 *   HEADER  no request yet, or a header block begun and not finished:
 *           header_timeout, then GOAWAY and close (the slowloris guard);
 *   IDLE    no stream open: idle_timeout, then GOAWAY and close;
 *   SEND    the socket takes no more of our bytes: idle_timeout, then cut;
 *   STALL   streams open: every idle_timeout, a stream whose response the
 *           client's flow-control window held back that long is reset
 *           (the per-stream send timeout; its upstream call ends). */
enum { TM_NONE, TM_HEADER, TM_IDLE, TM_SEND, TM_STALL };

static void close_now(struct pt_conn *c)
{
    pt_h1s_close(c);
}

/* ---- time and flood accounting ---- */

static void reset_window(struct pt_h2s *h)
{
    uint64_t now = pt_loop_now(&h->c->w->loop);
    if (now - h->rst_win_ms >= PT_H2_RESET_WINDOW_MS) {
        h->rst_win_ms = now;
        h->resets = 0;
        h->win_streams = 0;
    }
}

void pt_h2s_count_stream(struct pt_h2s *h)
{
    reset_window(h);
    h->win_streams++;
}

void pt_h2s_count_reset(struct pt_h2s *h)
{
    reset_window(h);
    if (++h->resets > PT_H2_MAX_RESETS_PER_WINDOW && h->resets > h->win_streams / 2)
        h->calm = true;
}

/* Ends the session: GOAWAY (last stream processed) goes out with the next
 * write, nothing more is read, and the connection closes once it is out. */
static void terminate(struct pt_h2s *h, uint32_t code)
{
    if (!h->term)
        nghttp2_session_terminate_session(h->s, code);
    h->term = true;
    h->goaway = true;
}

static void h2_timeout(struct pt_loop *loop, struct pt_timer *tm);

/* The per-stream send timeout: resets each stream the client's window
 * has held back for idle_timeout; re-arms for the next one due. */
static void stall_check(struct pt_conn *c, struct pt_h2s *h)
{
    uint64_t lim = c->w->gen->limits.idle_timeout_ms, now = pt_loop_now(&c->w->loop);
    uint64_t next = lim;
    for (struct h2_stream *st = h->streams; st; st = st->next) {
        if (!pt_h2_stream_window_shut(h, st))
            continue;
        uint64_t held = now - st->out_ms;
        if (held >= lim)
            pt_h2_stream_reset(h, st, NGHTTP2_CANCEL, "client send timeout");
        else if (lim - held < next)
            next = lim - held;
    }
    h->timer_mode = TM_STALL;
    pt_timer_arm(&c->w->loop, &c->timer, next, h2_timeout);
    pt_h2s_run(c); /* sends the resets; set_timer moves on if the mode changed */
}

static void h2_timeout(struct pt_loop *loop, struct pt_timer *tm)
{
    struct pt_conn *c = pt_container_of(tm, struct pt_conn, timer);
    struct pt_h2s *h = c->h2;
    (void)loop;
    if (c->closed)
        return;
    uint8_t mode = h->timer_mode;
    h->timer_mode = TM_NONE;
    if (mode == TM_STALL) {
        stall_check(c, h);
        return;
    }
    if (mode == TM_SEND) {
        /* The client stopped reading: its streams are cut. */
        c->cut = true;
        close_now(c);
        return;
    }
    /* Idle, or no complete request head in time: say goodbye properly. A
     * header block left unfinished blocks the whole connection (nothing
     * may come between its frames), so its other streams go too. */
    for (struct h2_stream *st = h->streams; st; st = st->next)
        if (!st->started && !st->ex.error)
            st->ex.error = "request header timeout";
    terminate(h, NGHTTP2_NO_ERROR);
    pt_h2s_run(c);
    if (!c->closed)
        close_now(c);
}

static void set_timer(struct pt_conn *c, struct pt_h2s *h)
{
    const struct pt_limits *lim = &c->w->gen->limits;
    uint8_t mode;
    if (h->out_block)
        mode = TM_SEND;
    else if (h->nheads > 0 || (h->nstreams == 0 && !h->had_req))
        mode = TM_HEADER;
    else if (h->nstreams == 0)
        mode = TM_IDLE;
    else
        mode = TM_STALL;
    if (mode == h->timer_mode)
        return;
    h->timer_mode = mode;
    if (mode == TM_IDLE)
        c->idle_since = pt_loop_now(&c->w->loop); /* max_connections evicts the oldest */
    pt_timer_arm(&c->w->loop, &c->timer,
                 mode == TM_HEADER ? lim->header_timeout_ms : lim->idle_timeout_ms, h2_timeout);
}

/* ---- bytes ---- */

/* Feeds bytes to nghttp2. False when the session is over (closed). */
static bool feed(struct pt_conn *c, struct pt_h2s *h, const uint8_t *p, size_t n)
{
    uint64_t now = pt_loop_now(&c->w->loop);
    if (now - h->ctl_win_ms >= PT_H2_FLOOD_WINDOW_MS) {
        h->ctl_win_ms = now;
        h->ctl_frames = 0;
    }
    ssize_t r = nghttp2_session_mem_recv(h->s, p, n);
    if (h->ctl_frames > PT_H2_MAX_CTL_PER_WINDOW)
        h->calm = true;
    if (r < 0 || h->calm) {
        pt_info("h2: %s: %s", c->remote,
                h->calm ? "flood guard tripped: GOAWAY ENHANCE_YOUR_CALM"
                        : nghttp2_strerror((int)r));
        /* nghttp2 queued its own GOAWAY for protocol errors; ours goes
         * for a guard. Either way: flush it, then close. */
        terminate(h, h->calm ? NGHTTP2_ENHANCE_YOUR_CALM : NGHTTP2_PROTOCOL_ERROR);
        return false;
    }
    return true;
}

/* Reads the client into nghttp2. 1 on progress, 0 none, -1 closed. */
static int h2_read(struct pt_conn *c, struct pt_h2s *h)
{
    uint8_t buf[16384];
    int progress = 0;
    /* After a graceful GOAWAY (drain) reading goes on: the streams in
     * flight still need the client's WINDOW_UPDATEs and request DATA. */
    while (c->readable && !h->term && !h->out_block && nghttp2_session_want_read(h->s)) {
        ssize_t n = pt_conn_recv(c, buf, sizeof(buf));
        if (n > 0) {
            progress = 1;
            if ((size_t)n < sizeof(buf) && !c->hup)
                c->readable = false;
            if (!feed(c, h, buf, (size_t)n))
                return 1;
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close_now(c);
            return -1;
        }
        if (errno == EAGAIN)
            c->readable = false;
    }
    return progress;
}

/* Writes what nghttp2 has. 1 on progress, 0 none, -1 closed. */
static int h2_write(struct pt_conn *c, struct pt_h2s *h)
{
    int progress = 0;
    struct pt_buf *b = c->rbuf; /* h2 reads into the stack: rbuf is the output batch */
    for (;;) {
        if (!b) {
            b = c->rbuf = pt_buf_get(&c->w->bufs, 0);
            if (!b) {
                close_now(c);
                return -1;
            }
        }
        if (pt_buf_space(b) == 0)
            pt_buf_compact(b);
        while (pt_buf_space(b) > 0) {
            if (h->out_len == 0) {
                const uint8_t *d;
                ssize_t n = nghttp2_session_mem_send(h->s, &d);
                if (n < 0) {
                    close_now(c);
                    return -1;
                }
                if (n == 0)
                    break;
                h->out = d;
                h->out_len = (size_t)n;
            }
            size_t k = PT_MIN(h->out_len, (size_t)pt_buf_space(b));
            memcpy(b->data + b->end, h->out, k);
            b->end += (uint32_t)k;
            h->out += k;
            h->out_len -= k;
        }
        if (pt_buf_len(b) == 0 || !c->writable)
            break;
        struct iovec iov = {b->data + b->start, pt_buf_len(b)};
        ssize_t n = pt_conn_sendv(c, &iov, 1);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) {
                c->writable = errno != EAGAIN;
                break;
            }
            close_now(c);
            return -1;
        }
        pt_buf_consume(b, (uint32_t)n);
        progress = 1;
    }
    h->out_block = pt_buf_len(b) > 0 && !c->writable;
    if (pt_buf_len(b) == 0) {
        pt_buf_put(&c->w->bufs, b);
        c->rbuf = NULL;
    }
    return progress;
}

/* ---- the pump ---- */

void pt_h2_stream_ready(struct pt_h2s *h, struct h2_stream *st)
{
    if (st->queued)
        return;
    st->queued = true;
    st->rnext = NULL;
    st->rprev = h->ready_tail;
    if (h->ready_tail)
        h->ready_tail->rnext = st;
    else
        h->ready = st;
    h->ready_tail = st;
}

void pt_h2_stream_unready(struct pt_h2s *h, struct h2_stream *st)
{
    if (!st->queued)
        return;
    st->queued = false;
    if (st->rprev)
        st->rprev->rnext = st->rnext;
    else
        h->ready = st->rnext;
    if (st->rnext)
        st->rnext->rprev = st->rprev;
    else
        h->ready_tail = st->rprev;
}

/* Pumps the streams that were ready when it began (one pass: a stream
 * that made progress goes to the back, for the next pass after a write).
 * Streams with nothing new cost nothing: a connection with 100 streams
 * waiting on their upstreams pumps only those that woke. */
static int pump_streams(struct pt_h2s *h)
{
    int progress = 0;
    struct pt_conn *c = h->c;
    struct h2_stream *last = h->ready_tail;
    while (h->ready && !c->closed) {
        struct h2_stream *st = h->ready;
        bool end = st == last;
        pt_h2_stream_unready(h, st);
        if (pt_h2_stream_pump(h, st)) {
            progress = 1;
            if (!c->closed)
                pt_h2_stream_ready(h, st);
        }
        if (end)
            break;
    }
    return progress;
}

void pt_h2s_defer(struct pt_h2s *h)
{
    if (h->in_run) {
        h->again = true;
        return;
    }
    if (h->flush_queued || h->c->closed)
        return;
    struct pt_worker *w = h->c->w;
    h->flush_queued = true;
    h->fnext = w->h2_flush;
    w->h2_flush = h;
}

void pt_h2s_flush_turn(struct pt_worker *w)
{
    struct pt_h2s *h;
    while ((h = w->h2_flush) != NULL) {
        w->h2_flush = h->fnext;
        h->fnext = NULL;
        h->flush_queued = false;
        if (!h->c->closed && h->s)
            pt_h2s_run(h->c);
    }
}

void pt_h2s_run(struct pt_conn *c)
{
    struct pt_h2s *h = c->h2;
    if (c->closed)
        return;
    if (h->in_run) {
        h->again = true;
        return;
    }
    h->in_run = true;
    for (int guard = 0; guard < 10000 && !c->closed; guard++) {
        h->again = false;
        int p = h2_read(c, h);
        if (p < 0)
            break;
        p |= pump_streams(h);
        if (c->closed)
            break;
        int w = h2_write(c, h);
        if (w < 0)
            break;
        if (!p && !w && !h->again)
            break;
    }
    h->in_run = false;
    if (c->closed)
        return;
    bool flushed = !c->rbuf && h->out_len == 0 && !pt_conn_tls_owes(c);
    if (flushed && ((!nghttp2_session_want_read(h->s) && !nghttp2_session_want_write(h->s)) ||
                    (h->goaway && h->nstreams == 0))) {
        close_now(c);
        return;
    }
    set_timer(c, h);
}

static void h2_on_event(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_conn *c = pt_container_of(io, struct pt_conn, io);
    (void)loop;
    if (c->closed)
        return;
    if (c->tls)
        events = pt_tls_events(c->tls, events);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    if (events & EPOLLERR) {
        close_now(c); /* reset: nothing more can be said to it */
        return;
    }
    /* Read, pump and write once at the end of the turn, together with
     * whatever the turn's upstream events woke: one write for all. */
    pt_h2s_defer(c->h2);
}

/* ---- life ---- */

static __thread nghttp2_session_callbacks *t_cb;
static __thread nghttp2_option *t_opt;

static nghttp2_session_callbacks *callbacks(void)
{
    if (!t_cb && nghttp2_session_callbacks_new(&t_cb) == 0)
        pt_h2_set_stream_callbacks(t_cb);
    return t_cb;
}

void pt_h2s_thread_exit(void)
{
    nghttp2_session_callbacks_del(t_cb);
    nghttp2_option_del(t_opt);
    t_cb = NULL;
    t_opt = NULL;
}

static nghttp2_option *options(void)
{
    if (t_opt || nghttp2_option_new(&t_opt) != 0)
        return t_opt;
    /* The window reopens as the exchange pulls the body (h2_stream.c). */
    nghttp2_option_set_no_auto_window_update(t_opt, 1);
    nghttp2_option_set_no_closed_streams(t_opt, 1);
    /* Flood guards (Debian's 1.52.0-1+deb12u3 has them): rapid reset's
     * token bucket, CONTINUATIONs per header block, SETTINGS entries per
     * frame, queued SETTINGS/PING ACKs. */
    nghttp2_option_set_stream_reset_rate_limit(t_opt, 1000, 33);
    nghttp2_option_set_max_continuations(t_opt, 8);
    nghttp2_option_set_max_settings(t_opt, 32);
    nghttp2_option_set_max_outbound_ack(t_opt, 1000);
    nghttp2_option_set_max_deflate_dynamic_table_size(t_opt, 4096);
    return t_opt;
}

bool pt_h2s_adopt(struct pt_conn *c)
{
    struct pt_worker *w = c->w;
    struct pt_h2s *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cb = callbacks();
    nghttp2_option *opt = options();
    if (!h || !cb || !opt || nghttp2_session_server_new2(&h->s, cb, h, opt) != 0) {
        free(h);
        close_now(c);
        return false;
    }
    h->c = c;
    c->h2 = h;
    c->io.cb = h2_on_event;
    h->ctl_win_ms = h->rst_win_ms = pt_loop_now(&w->loop);
    const struct pt_limits *lim = &w->gen->limits;
    /* The header list we take, counted as RFC 7541 counts it (32 bytes per
     * field): what max_header_bytes caps (431 beyond). */
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, PT_H2_MAX_STREAMS},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, PT_H2_STREAM_WINDOW},
        /* RFC 8441: WebSocket over extended CONNECT (h2_tunnel.c). */
        {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
         (uint32_t)PT_MIN(lim->max_header_bytes, UINT32_MAX)},
    };
    if (nghttp2_submit_settings(h->s, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0])) != 0 ||
        nghttp2_session_set_local_window_size(h->s, NGHTTP2_FLAG_NONE, 0, PT_H2_CONN_WINDOW) != 0) {
        close_now(c);
        return false;
    }
    /* The bytes the HTTP/1.1 codec read (the preface, maybe more). */
    struct pt_buf *b = c->rbuf;
    c->rbuf = NULL;
    /* A request head is due within header_timeout, as on HTTP/1.1. */
    h->timer_mode = TM_HEADER;
    pt_timer_arm(&w->loop, &c->timer, lim->header_timeout_ms, h2_timeout);
    bool ok = feed(c, h, (const uint8_t *)b->data + b->start, pt_buf_len(b));
    pt_buf_put(&w->bufs, b);
    (void)ok; /* a failed feed queued GOAWAY: the run flushes it and closes */
    pt_h2s_run(c);
    return !c->closed;
}

void pt_h2s_drain(struct pt_conn *c)
{
    struct pt_h2s *h = c->h2;
    if (c->closed || h->goaway)
        return;
    h->goaway = true;
    nghttp2_submit_goaway(h->s, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->s),
                          NGHTTP2_NO_ERROR, NULL, 0);
    pt_h2s_run(c);
}

bool pt_h2s_idle(const struct pt_conn *c)
{
    const struct pt_h2s *h = c->h2;
    return h->s && h->had_req && h->nstreams == 0 && !h->goaway && !h->out_block && !c->rbuf &&
           h->out_len == 0 && !pt_conn_tls_owes(c);
}

void pt_h2s_evict(struct pt_conn *c)
{
    terminate(c->h2, NGHTTP2_NO_ERROR);
    pt_h2s_run(c); /* the GOAWAY goes out, then it closes */
    if (!c->closed)
        close_now(c); /* the slot is needed now */
}

void pt_h2s_close(struct pt_conn *c)
{
    struct pt_h2s *h = c->h2;
    if (!h->s)
        return;
    while (h->streams) {
        struct h2_stream *st = h->streams;
        if (!st->ex.error)
            st->ex.error = c->cut ? "client send timeout" : "connection closed";
        pt_h2_stream_free(h, st, false);
    }
    nghttp2_session_del(h->s);
    h->s = NULL;
    h->out_len = 0;
}

void pt_h2s_free(struct pt_conn *c)
{
    struct pt_h2s *h = c->h2;
    if (h->flush_queued) { /* (reap runs after the flush: not expected) */
        struct pt_h2s **pp = &c->w->h2_flush;
        while (*pp && *pp != h)
            pp = &(*pp)->fnext;
        if (*pp)
            *pp = h->fnext;
    }
    free(c->h2);
    c->h2 = NULL;
}
