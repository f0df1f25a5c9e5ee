/*
 * h1_server_io.c — the HTTP/1.1 codec's bytes: request heads in (parse,
 * copy into the request arena, hand to the exchange), request bodies in
 * (Content-Length or chunked, de-framed in place), responses out (head,
 * body framed for this client, interim heads), lingering close, and the
 * pump that runs it all (pt_h1s_run).
 */
#include "gateway/h1_server.h"
#include "gateway/h2_server.h"
#include "gateway/respond.h"

#include "http/h1.h"
#include "http/h1_write.h"
#include "http/proxy_protocol.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

/* ---- request heads ---- */

/* A head can be up to max_header_bytes (the parser refuses longer ones
 * before the buffer fills), so that is all the buffer needs; with the
 * default limit (16 KiB) this is the pooled size and costs no malloc. */
static uint32_t rbuf_cap(const struct pt_generation *g)
{
    uint64_t need = g->limits.max_header_bytes;
    return need > PT_BUF_SIZE ? (uint32_t)need : PT_BUF_SIZE;
}

/* Copies the head into the request arena and points every slice at the
 * copy: the read buffer is reused for the body and for pipelined
 * requests, while the head is needed until the log line (one memcpy of a
 * few hundred bytes, cheaper than tracking buffer lifetimes). */
static bool keep_head(struct h1_txn *t, struct pt_h1_request *req, uint32_t head_len)
{
    struct pt_conn *c = t->c;
    const char *base = c->rbuf->data + c->rbuf->start;
    char *copy = pt_arena_alloc(&c->arena, head_len);
    struct pt_hfield *store = pt_arena_alloc(&c->arena, sizeof(*store) * (req->num_headers + 8));
    if (!copy || !store)
        return false;
    memcpy(copy, base, head_len);
#define REBASE(s)                                                                                  \
    do {                                                                                           \
        if ((s).p >= base && (s).p <= base + head_len)                                             \
            (s).p = copy + ((s).p - base);                                                         \
    } while (0)
    REBASE(req->method);
    REBASE(req->target);
    REBASE(req->path);
    REBASE(req->query);
    REBASE(req->host);
    for (size_t i = 0; i < req->num_headers; i++) {
        REBASE(req->headers[i].name);
        REBASE(req->headers[i].value);
    }
#undef REBASE
    pt_headers_from_h1(&t->ex.reqh, store, (uint32_t)req->num_headers + 8, req->headers,
                       req->num_headers);
    return true;
}

/* Connection: upgrade came with an Upgrade field: WebSocket when it names
 * it. Anything else (h2c included) is not an upgrade the gateway makes:
 * the request goes on as plain HTTP/1.1 and the field is dropped. */
static uint8_t upgrade_asked(struct pt_headers *h)
{
    const struct pt_hfield *f = pt_headers_find_token(h, PT_TOK_UPGRADE);
    if (!f)
        return PT_UPGRADE_NONE;
    const char *p = f->value.p, *end = p + f->value.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *q = p;
        while (q < end && *q != ',' && *q != ' ' && *q != '\t')
            q++;
        if (q - p == 9 && strncasecmp(p, "websocket", 9) == 0)
            return PT_UPGRADE_WEBSOCKET;
        p = q;
    }
    return PT_UPGRADE_NONE;
}

/* A complete head is at the front of c->rbuf: start the transaction. */
static void txn_start(struct pt_conn *c, struct pt_h1_request *req, uint32_t head_len)
{
    struct pt_worker *w = c->w;
    pt_timer_cancel(&w->loop, &c->timer);
    struct h1_txn *t = pt_h1s_txn_new(c);
    if (!t || !keep_head(t, req, head_len)) {
        pt_h1s_close(c);
        return;
    }
    c->requests++;
    t->pipelined = c->next_pipelined;
    c->next_pipelined = false;
    t->minor_version = req->minor_version;
    t->expect_continue = req->expect_continue;
    t->head_only = req->method_id == PT_METHOD_HEAD;
    struct pt_exchange *ex = &t->ex;
    ex->req.method = req->method;
    ex->req.method_id = req->method_id;
    ex->req.target = req->target;
    ex->req.path = req->path;
    ex->req.query = req->query;
    ex->req.host = req->host;
    ex->req.http10 = req->minor_version == 0;
    ex->req.chunked = req->framing.chunked;
    ex->req.content_length = req->framing.chunked ? -1 : req->framing.content_length;
    /* An HTTP/1.0 request's Upgrade is ignored (RFC 9110 §7.8): served
     * as a plain request, the field dropped as hop-by-hop. */
    if (pt_unlikely(req->framing.upgrade) && req->minor_version == 1)
        ex->req.upgrade = upgrade_asked(&ex->reqh);
    struct pt_hfield *rid = pt_headers_find_token(&ex->reqh, PT_TOK_X_REQUEST_ID);
    if (rid)
        pt_exchange_set_request_id(ex, rid->value);

    if (req->framing.chunked) {
        t->req_mode = BODY_CHUNKED;
        pt_chunked_init(&t->req_ck);
    } else if (req->framing.content_length > 0) {
        t->req_mode = BODY_CL;
        t->req_left = (uint64_t)req->framing.content_length;
    } else {
        t->req_mode = BODY_NONE;
        t->req_done = true;
    }
    t->close_after = !req->framing.keep_alive;
    /* The head leaves the buffer; body bytes follow at rbuf start. */
    pt_buf_consume(c->rbuf, head_len);
    t->body_rx = pt_buf_len(c->rbuf); /* body bytes that came with the head */
    pt_exchange_start(ex);
    if (ex->route)
        t->body_limit =
            ex->route->max_body_bytes ? ex->route->max_body_bytes : ex->gen->limits.max_body_bytes;
    else
        t->body_limit = ex->gen->limits.max_body_bytes;
    if (!t->req_done && ex->resp != PT_RESP_GATEWAY && ex->gen->limits.min_body_rate)
        pt_h1s_body_rate_start(t);
}

/* Reads what the client has into c->rbuf (which has room once compacted:
 * a head never fills it). 1 when bytes came; 0 when none did (`readable`
 * is cleared on EAGAIN); -1 when the client is gone (the connection was
 * closed). */
static int recv_into_rbuf(struct pt_conn *c)
{
    if (pt_buf_space(c->rbuf) == 0)
        pt_buf_compact(c->rbuf);
    size_t space = pt_buf_space(c->rbuf);
    ssize_t n = pt_conn_recv(c, c->rbuf->data + c->rbuf->end, space);
    if (n > 0) {
        c->rbuf->end += (uint32_t)n;
        /* A short read drained the socket; with edge triggering the next
         * arrival raises a new event, so skip the EAGAIN read. */
        if ((size_t)n < space && !c->hup)
            c->readable = false;
        return 1;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        pt_h1s_close(c);
        return -1;
    }
    if (errno == EAGAIN)
        c->readable = false;
    return 0;
}

/* On a listener with `http2: true`, whether the connection speaks HTTP/2:
 * ALPN said "h2", or the first bytes are the client preface (h2c with
 * prior knowledge). 1 yes, -1 no (HTTP/1.1), 0 not known yet (a prefix of
 * the preface so far). Only a connection's first bytes are looked at. */
static int sniff_h2(struct pt_conn *c)
{
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (c->requests > 0)
        return -1;
    if (c->tls) {
        const char *alpn = pt_tls_alpn(c->tls);
        return alpn && strcmp(alpn, "h2") == 0 ? 1 : -1;
    }
    uint32_t n = PT_MIN(pt_buf_len(c->rbuf), (uint32_t)sizeof(preface) - 1);
    if (memcmp(c->rbuf->data + c->rbuf->start, preface, n) != 0)
        return -1;
    return n == sizeof(preface) - 1 ? 1 : 0;
}

/* Reads the client while no transaction is active; starts one when a head
 * is complete. Returns true when a transaction was started. */
static bool read_head(struct pt_conn *c)
{
    struct pt_worker *w = c->w;
    struct pt_generation *g = pt_worker_refresh_gen(w);
    struct pt_h1_limits lim = {g->limits.max_headers, g->limits.max_header_bytes,
                               g->limits.max_uri_bytes};
    struct pt_h1_header *hs = pt_h1s_scratch_headers(g->limits.max_headers);
    if (!hs) {
        pt_h1s_close(c);
        return false;
    }
    size_t prev = 0;
    for (;;) {
        if (!c->rbuf) {
            if (!c->readable)
                break;
            c->rbuf = pt_buf_get(&w->bufs, rbuf_cap(g));
            if (!c->rbuf) {
                pt_h1s_close(c);
                return false;
            }
        }
        if (c->http2 && pt_buf_len(c->rbuf) > 0) {
            int h2 = sniff_h2(c);
            if (h2 > 0) {
                pt_h2s_adopt(c);
                return false;
            }
            if (h2 < 0)
                c->http2 = false;
        }
        if (pt_buf_len(c->rbuf) > 0 && !c->http2) {
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
                pt_h1s_codec_error(c, req.error_status ? req.error_status : 400, req.error_reason);
                return c->txn != NULL;
            }
            prev = pt_buf_len(c->rbuf);
        }
        if (!c->readable)
            break;
        int got = recv_into_rbuf(c);
        if (got < 0)
            return false;
        if (got > 0) {
            if (!c->head_started) {
                c->head_started = true;
                c->head_ns = pt_loop_now_ns(&w->loop);
                pt_timer_arm(&w->loop, &c->timer, g->limits.header_timeout_ms, pt_h1s_timeout);
            }
            continue;
        }
        /* `readable` only said there might be bytes: with none of the
         * next request here, it has to be waited for, so it was not
         * pipelined. */
        if (!c->readable && pt_buf_len(c->rbuf) == 0)
            c->next_pipelined = false;
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
                     pt_h1s_timeout);
    return false;
}

/* ---- the PROXY protocol header ---- */

/* Takes a parsed header: its source becomes the peer (a LOCAL one keeps
 * the socket's), and the bytes after it are the HTTP stream, with a head
 * timer of its own (a balancer sends the header at connect, before its
 * client has said anything). */
static bool proxy_header_taken(struct pt_conn *c, const struct pt_pp_header *h, uint32_t n)
{
    struct pt_worker *w = c->w;
    if (!h->local)
        pt_h1s_set_peer(c, &h->src);
    c->want_proxy = false;
    pt_buf_consume(c->rbuf, n);
    if (c->tls_wait) {
        /* TLS starts now; bytes read past the header are its ClientHello. */
        c->tls = c->tls_wait;
        c->tls_wait = NULL;
        uint32_t rest = pt_buf_len(c->rbuf);
        if (rest && pt_tls_push_input(c->tls, c->rbuf->data + c->rbuf->start, rest) < 0) {
            pt_h1s_close(c);
            return false;
        }
        pt_buf_consume(c->rbuf, rest);
        pt_timer_arm(&w->loop, &c->timer, c->hs_timeout_ms, pt_h1s_timeout);
        return true;
    }
    if (pt_buf_len(c->rbuf) > 0) {
        c->head_started = true;
        c->head_ns = pt_loop_now_ns(&w->loop);
    }
    pt_timer_arm(&w->loop, &c->timer, w->gen->limits.header_timeout_ms, pt_h1s_timeout);
    return true;
}

/* TLS: drives the handshake before the first head. True once it is done
 * (the first head gets header_timeout from here; ALPN is known), false
 * while it waits for the peer or when it failed (closed, no response). */
static bool tls_handshake_step(struct pt_conn *c)
{
    int r = pt_tls_handshake(c->tls);
    if (r == 0)
        return false;
    if (r < 0) {
        /* A connect-and-close without a byte (a TCP health check) is not a
         * failed handshake. */
        if (c->tls->bytes > 0)
            pt_h1s_tls_done(c, false, errno == EPROTO ? pt_tls_last_error() : strerror(errno));
        pt_h1s_close(c);
        return false;
    }
    pt_h1s_tls_done(c, true, NULL);
    struct pt_worker *w = c->w;
    c->readable = true; /* the request may have come with the handshake's last flight */
    pt_timer_arm(&w->loop, &c->timer, w->gen->limits.header_timeout_ms, pt_h1s_timeout);
    return true;
}

/* On a proxy_protocol listener, reads the PROXY header before any other
 * byte. True once it is taken (read_head goes on with what follows); false
 * while it waits for bytes (the header timer armed at accept runs: no
 * header in time, no response), or when the connection was closed: an
 * invalid header closes at once, without a response. */
static bool read_proxy_header(struct pt_conn *c)
{
    struct pt_worker *w = c->w;
    for (;;) {
        if (c->rbuf && pt_buf_len(c->rbuf) > 0) {
            struct pt_pp_header h;
            int r = pt_pp_parse(c->rbuf->data + c->rbuf->start, pt_buf_len(c->rbuf), &h);
            if (r > 0)
                return proxy_header_taken(c, &h, (uint32_t)r);
            if (r == PT_PP_ERROR || pt_buf_len(c->rbuf) == c->rbuf->cap) {
                pt_h1s_close(c);
                return false;
            }
        }
        if (!c->readable)
            break;
        if (!c->rbuf) {
            c->rbuf = pt_buf_get(&w->bufs, rbuf_cap(w->gen));
            if (!c->rbuf) {
                pt_h1s_close(c);
                return false;
            }
        }
        if (recv_into_rbuf(c) < 0)
            return false;
    }
    if (c->rbuf && pt_buf_len(c->rbuf) == 0) {
        pt_buf_put(&w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    return false;
}

/* ---- request bodies ---- */

/* A request body that turned out broken or too large: an error response
 * while the client has seen nothing of a response, else a cut. */
static void request_fail(struct h1_txn *t, int status, const char *why)
{
    if (t->ex.response_started) {
        pt_h1s_cut(t, why ? why : pt_error_text(status));
        return;
    }
    pt_exchange_respond(&t->ex, status, why, true);
}

/* De-frames newly arrived chunked bytes in place: payload moves to the
 * front, trailers are dropped (not forwarded, as Envoy's default for
 * HTTP/1), bytes after the body (a pipelined request) move up behind the
 * payload. Checks the body limit. False on an error (response set). */
static bool scan_request_body(struct h1_txn *t)
{
    struct pt_buf *b = t->c->rbuf;
    if (t->req_mode != BODY_CHUNKED || t->req_scan_done || !b)
        return true;
    uint32_t avail = pt_buf_len(b);
    if (t->req_ready >= avail)
        return true;
    char *p = b->data + b->start + t->req_ready;
    size_t len = avail - t->req_ready, out = 0;
    bool done = false;
    ssize_t k = pt_chunked_decode(&t->req_ck, p, len, &out, &done);
    if (k < 0) {
        request_fail(t, 400, "malformed chunked body");
        return false;
    }
    if (out < (size_t)k) {
        memmove(p + out, p + k, len - (size_t)k);
        b->end -= (uint32_t)((size_t)k - out);
    }
    t->req_ready += (uint32_t)out;
    t->body_seen += out;
    t->req_scan_done = done;
    if (done && t->req_ready == 0)
        t->req_done = true;
    if (t->body_seen > t->body_limit) {
        request_fail(t, 413, NULL);
        return false;
    }
    return true;
}

/* Reads more request body once the previous bytes went upstream (that
 * ordering is the backpressure). */
static int pump_client_read(struct h1_txn *t)
{
    struct pt_conn *c = t->c;
    if (t->req_done || !c->readable || t->ex.resp == PT_RESP_GATEWAY)
        return 0;
    if (c->rbuf && pt_buf_len(c->rbuf) > 0)
        return 0;
    if (!c->rbuf) {
        c->rbuf = pt_buf_get(&c->w->bufs, 0);
        if (!c->rbuf) {
            pt_h1s_close(c);
            return -1;
        }
    }
    /* Empty buffer: reuse it from the front (the head was copied). */
    c->rbuf->start = c->rbuf->end = 0;
    ssize_t n = pt_conn_recv(c, c->rbuf->data, c->rbuf->cap);
    if (n > 0) {
        c->rbuf->end = (uint32_t)n;
        t->body_rx += (uint64_t)n;
        if ((size_t)n < c->rbuf->cap && !c->hup)
            c->readable = false;
        /* An error sets a response, or cuts the client when the response
         * already started: then the connection and this transaction's
         * arena are gone, and the caller must not touch t again. */
        if (!scan_request_body(t) && c->closed)
            return -1;
        return 1;
    }
    if (n == 0 && t->tunnel) {
        /* The client's half-close: relayed as our FIN to the upstream. */
        t->tunnel_eof = true;
        t->req_done = true;
        c->readable = false;
        return 1;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        if (!t->ex.error && t->tunnel)
            t->ex.error = n == 0 ? "client closed the connection" : "client connection reset";
        pt_h1s_close(c); /* client vanished mid-body */
        return -1;
    }
    c->readable = false;
    return 0;
}

/* ---- the minimum body rate ----
 * Slow-body attacks (R.U.D.Y., slowloris on bodies) keep a request and its
 * upstream connection busy with a byte now and then, which no single
 * read timeout catches. Each window (limits.body_rate_window; the first
 * one is the grace a client gets to get going) must bring
 * min_body_rate × window bytes — judged only when the gateway is waiting
 * on the client: with the previous bytes still unsent (a slow upstream,
 * a filter at work) the client is not the one holding things up. Too
 * slow → 408 and close, as nginx's client_body_timeout. */

static void body_rate_check(struct pt_loop *loop, struct pt_timer *tm)
{
    struct h1_txn *t = pt_container_of(tm, struct h1_txn, rate_timer);
    struct pt_conn *c = t->c;
    if (c->closed || c->txn != t || t->req_done || t->tunnel || t->ex.response_started ||
        t->ex.resp == PT_RESP_GATEWAY)
        return;
    const struct pt_limits *lim = &t->ex.gen->limits;
    uint64_t need = lim->min_body_rate * lim->body_rate_window_ms / 1000;
    bool waiting_on_client = (!c->rbuf || pt_buf_len(c->rbuf) == 0) && !t->ex.suspended;
    if (waiting_on_client && t->body_rx - t->rate_mark < need) {
        request_fail(t, 408, "request body too slow");
        pt_h1s_run(c);
        return;
    }
    t->rate_mark = t->body_rx;
    pt_timer_arm(loop, &t->rate_timer, lim->body_rate_window_ms, body_rate_check);
}

void pt_h1s_body_rate_start(struct h1_txn *t)
{
    t->rate_mark = 0; /* the grace window counts what came with the head */
    pt_timer_arm(&t->c->w->loop, &t->rate_timer, t->ex.gen->limits.body_rate_window_ms,
                 body_rate_check);
}

/* ---- responses ---- */

/* Writes to the client: the bytes taken (> 0); 0 when the socket is full
 * (the send timeout is armed, the next EPOLLOUT resumes); -1 when the
 * connection failed and was closed. */
static ssize_t client_send(struct h1_txn *t, struct iovec *iov, int n)
{
    struct pt_conn *c = t->c;
    ssize_t w = pt_conn_sendv(c, iov, n);
    if (w >= 0)
        return w;
    if (errno == EAGAIN) {
        c->writable = false;
        pt_timer_arm(&c->w->loop, &c->timer, t->ex.gen->limits.idle_timeout_ms, pt_h1s_timeout);
        return 0;
    }
    if (!t->ex.error)
        t->ex.error = "client closed the connection";
    pt_h1s_close(c);
    return -1;
}

/* Appends an interim head to the bytes waiting for the client. */
static bool queue_interim_bytes(struct h1_txn *t, size_t need, const struct pt_call_head *h)
{
    uint32_t left = (uint32_t)t->interim.len - t->interim_sent;
    need += left;
    /* Several 1xx in a row: append in a buffer that doubles, so queuing k
     * of them copies O(total) bytes, not O(k * total). */
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
    if (!h) {
        n += pt_h1_put(o + n, PT_SLICE("HTTP/1.1 100 Continue\r\n\r\n"));
    } else {
        n += pt_h1_put_status(o + n, h->status);
        n += pt_h1_put(o + n, h->reason);
        o[n++] = '\r';
        o[n++] = '\n';
        for (size_t i = 0; i < h->nfields; i++) {
            const struct pt_h1_header *f = &h->fields[i];
            if ((pt_token_flags[f->token] & PT_TF_HOP) || f->token == PT_TOK_CONTENT_LENGTH ||
                pt_h1_connection_lists(h->fields, h->nfields, f->name) ||
                pt_exchange_hides_interim_field(&t->ex, f->name))
                continue;
            n += pt_h1_put_field(o + n, f->name, f->value);
        }
        o[n++] = '\r';
        o[n++] = '\n';
    }
    t->interim = (pt_slice){o, n};
    t->interim_sent = 0;
    return true;
}

/* 1xx heads from the upstream (103 Early Hints) go on to an HTTP/1.1
 * client ahead of the final response (RFC 9110 §15.2); an HTTP/1.0 client
 * gets none. Expect: 100-continue is answered once the request has passed
 * routing, limits and filters: the client sends its body only to a request
 * that will be forwarded (nginx does the same). */
static bool take_interim(struct h1_txn *t)
{
    struct pt_conn *c = t->c;
    /* Decided once, when the request is dispatched: a client whose body
     * is already arriving did not wait, and once a final response is
     * chosen a 100 could only land after it. */
    if (!t->continue_done && t->ex.want_continue) {
        t->continue_done = true;
        if (t->expect_continue && !t->req_done && (!c->rbuf || pt_buf_len(c->rbuf) == 0) &&
            t->minor_version == 1 && t->ex.resp == PT_RESP_NONE &&
            !queue_interim_bytes(t, 32, NULL))
            return false;
    }
    const struct pt_call_head *h;
    while ((h = pt_exchange_interim(&t->ex))) {
        if (t->minor_version == 1) {
            size_t need = 32 + h->reason.len;
            for (size_t i = 0; i < h->nfields; i++)
                need += h->fields[i].name.len + h->fields[i].value.len + 4;
            if (!queue_interim_bytes(t, need, h))
                return false;
        }
        pt_exchange_interim_done(&t->ex);
    }
    return true;
}

/* The extra fields of a gateway-made response ("Name: value\r\n" each). */
static const char *gateway_extra(struct h1_txn *t)
{
    const struct pt_headers *h = &t->ex.resph;
    size_t cap = 40 + pt_h1_fields_size(h);
    char *o = pt_arena_alloc(&t->c->arena, cap);
    if (!o)
        return NULL;
    size_t n = 0;
    for (uint32_t i = 0; i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || f->token == PT_TOK_CONTENT_LENGTH || f->token == PT_TOK_CONTENT_TYPE ||
            f->token == PT_TOK_X_REQUEST_ID || (pt_token_flags[f->token] & PT_TF_HOP))
            continue;
        n += pt_h1_put_field(o + n, f->name, f->value);
    }
    /* An HTTP/1.0 client keeps the connection only when the response says
     * so (as for upstream responses). */
    if (!t->close_after && t->minor_version == 0 && t->ex.req.method.len)
        n += pt_h1_put(o + n, PT_SLICE("Connection: keep-alive\r\n"));
    o[n] = 0;
    return o;
}

/* Renders a gateway-made response (whole, body included). */
static void build_gateway_response(struct h1_txn *t)
{
    struct pt_conn *c = t->c;
    struct pt_exchange *ex = &t->ex;
    /* A small body that is already here is skipped, so the connection can
     * stay open; a body we have not read would be parsed as the next
     * request, so then the connection closes. */
    struct pt_buf *rb = c->rbuf;
    if (!t->req_done && t->req_mode == BODY_CL && rb && pt_buf_len(rb) >= t->req_left) {
        pt_buf_consume(rb, (uint32_t)t->req_left);
        t->req_left = 0;
        t->req_done = true;
    }
    bool close = ex->close_after || !t->req_done ||
                 atomic_load_explicit(&c->w->draining, memory_order_relaxed);
    t->close_after = t->close_after || close;
    const char *extra = gateway_extra(t);
    t->chead = pt_respond_build(&c->arena, ex->status, ex->gw_error, ex->reqid, extra, ex->gw_body,
                                ex->gw_ctype, t->close_after,
                                t->head_only || ex->status == 204 || ex->status == 304, ex->gw_raw);
    if (!t->chead.p) {
        t->close_after = true;
        t->chead = (pt_slice){"", 0};
    }
    t->out = OUT_NONE;
    t->out_gateway = true;
    t->body_finished = true;
}

/* The 101 went (or goes) out: from here both sides are raw bytes
 * (exchange.h "Tunnels"). Bytes the client sent behind its handshake are
 * already in rbuf: the first the upstream gets. */
static void tunnel_begin(struct h1_txn *t)
{
    t->tunnel = true;
    t->out = OUT_TUNNEL;
    t->close_after = true; /* nothing follows a tunnel on this connection */
    t->req_mode = BODY_TUNNEL;
    t->req_done = false;
    t->c->readable = true; /* an edge may have come while nobody read */
}

/* Renders the head of an upstream response, choosing this client's body
 * framing from how the upstream delimited it. */
static bool build_upstream_head(struct h1_txn *t)
{
    struct pt_exchange *ex = &t->ex;
    size_t cap = 160 + ex->reason.len + pt_h1_fields_size(&ex->resph);
    char *o = pt_arena_alloc(&t->c->arena, cap);
    if (!o)
        return false;
    size_t len = pt_h1_put_status(o, ex->status);
    if (ex->reason.len)
        len += pt_h1_put(o + len, ex->reason);
    else
        len += pt_h1_put(o + len, (pt_slice){pt_reason_phrase(ex->status),
                                             strlen(pt_reason_phrase(ex->status))});
    o[len++] = '\r';
    o[len++] = '\n';
    for (uint32_t i = 0; i < ex->resph.n; i++) {
        const struct pt_hfield *f = &ex->resph.f[i];
        if (f->dead || (pt_token_flags[f->token] & PT_TF_HOP) || f->token == PT_TOK_CONTENT_LENGTH)
            continue;
        len += pt_h1_put_field(o + len, f->name, f->value);
    }
    if (ex->close_after)
        t->close_after = true;
    if (pt_unlikely(ex->upgraded)) {
        tunnel_begin(t);
        len += pt_h1_put(o + len, PT_SLICE("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"));
        t->chead = (pt_slice){o, len};
        t->out_gateway = false;
        t->body_finished = false;
        return true;
    }
    switch (ex->frame) {
    case PT_FRAME_NONE:
        t->out = OUT_NONE;
        /* (RFC 9110 §8.6: no Content-Length in a 204, whatever the
         * upstream said; a 304 keeps it, as a HEAD answer does: it
         * describes the representation.) */
        if (ex->content_length >= 0 && ex->status != 204)
            len += pt_h1_put_content_length(o + len, (uint64_t)ex->content_length);
        break;
    case PT_FRAME_LENGTH:
        t->out = OUT_LENGTH;
        len += pt_h1_put_content_length(o + len, (uint64_t)ex->content_length);
        break;
    case PT_FRAME_CHUNKED:
        if (t->minor_version == 1) {
            t->out = OUT_CHUNKED;
            len += pt_h1_put(o + len, PT_SLICE("Transfer-Encoding: chunked\r\n"));
        } else {
            t->out = OUT_CLOSE; /* an HTTP/1.0 client: the body ends at close */
            t->close_after = true;
        }
        break;
    case PT_FRAME_CLOSE:
        t->out = OUT_CLOSE; /* the only way to end this body for the client */
        t->close_after = true;
        break;
    }
    /* A drain closes the connection after this response: say so. */
    if (atomic_load_explicit(&t->c->w->draining, memory_order_relaxed))
        t->close_after = true;
    if (t->close_after)
        len += pt_h1_put(o + len, PT_SLICE("Connection: close\r\n"));
    else if (t->minor_version == 0)
        len += pt_h1_put(o + len, PT_SLICE("Connection: keep-alive\r\n"));
    o[len++] = '\r';
    o[len++] = '\n';
    t->chead = (pt_slice){o, len};
    t->out_gateway = false;
    t->body_finished = t->out == OUT_NONE;
    return true;
}

/* Builds the head of the exchange's current response when it has one
 * the codec has not rendered. */
static bool take_response(struct h1_txn *t)
{
    struct pt_exchange *ex = &t->ex;
    if (ex->resp == PT_RESP_NONE || (t->head_built && t->built_seq == ex->resp_seq))
        return true;
    t->head_built = true;
    t->built_seq = ex->resp_seq;
    t->chead_sent = 0;
    t->frame_len = t->frame_sent = 0;
    t->chunk_left = 0;
    t->out_end = false;
    if (ex->resp == PT_RESP_GATEWAY) {
        build_gateway_response(t);
        return true;
    }
    if (!build_upstream_head(t)) {
        pt_exchange_respond(ex, 502, "out of memory", false);
        return take_response(t);
    }
    return true;
}

/* Sends queued interim heads; they precede anything else on the wire. */
static int pump_client_interim(struct h1_txn *t)
{
    struct pt_conn *c = t->c;
    if (t->interim_sent >= t->interim.len || !c->writable)
        return 0;
    struct iovec iov = {(char *)t->interim.p + t->interim_sent, t->interim.len - t->interim_sent};
    ssize_t w = client_send(t, &iov, 1);
    if (w <= 0)
        return (int)w;
    t->interim_sent += (uint32_t)w;
    t->ex.bytes_out += (uint64_t)w;
    /* The client is reading again: the send timeout a full socket armed is
     * over (during a transaction nothing else uses the client timer). */
    pt_timer_cancel(&c->w->loop, &c->timer);
    return 1;
}

/* The body bytes that go out next, with chunked framing around them for
 * an OUT_CHUNKED client. Returns the iovecs added; *data = payload bytes. */
static int gather_body(struct h1_txn *t, struct iovec *iov, size_t *data)
{
    int n = 0;
    *data = 0;
    if (t->body_finished || t->out_gateway)
        return 0;
    bool eos = false;
    pt_slice s = pt_exchange_body_peek(&t->ex, &eos);
    if (t->out != OUT_CHUNKED) {
        if (s.len)
            iov[n++] = (struct iovec){(char *)s.p, s.len};
        *data = s.len;
        if (s.len == 0 && eos)
            t->body_finished = true;
        return n;
    }
    if (t->frame_sent == t->frame_len && t->chunk_left == 0 && !t->out_end && (s.len || eos)) {
        /* The CRLF that ends the previous chunk, then the next size line
         * (or the last-chunk). */
        uint32_t k = 0;
        if (t->need_crlf) {
            memcpy(t->frame, "\r\n", 2);
            k = 2;
            t->need_crlf = false;
        }
        if (s.len) {
            k += (uint32_t)pt_chunked_size_line(t->frame + k, s.len);
            t->chunk_left = (uint32_t)PT_MIN(s.len, (size_t)UINT32_MAX);
        } else {
            memcpy(t->frame + k, "0\r\n\r\n", 5);
            k += 5;
            t->out_end = true;
        }
        t->frame_len = k;
        t->frame_sent = 0;
    }
    if (t->frame_sent < t->frame_len)
        iov[n++] = (struct iovec){t->frame + t->frame_sent, t->frame_len - t->frame_sent};
    if (t->chunk_left && s.len) {
        size_t len = PT_MIN(s.len, (size_t)t->chunk_left);
        iov[n++] = (struct iovec){(char *)s.p, len};
        *data = len;
    }
    return n;
}

/* Books what a write took: head, chunk framing, payload. */
static void account_write(struct h1_txn *t, size_t sent, size_t data)
{
    size_t h = PT_MIN(sent, (size_t)(t->chead.len - t->chead_sent));
    t->chead_sent += (uint32_t)h;
    sent -= h;
    t->ex.bytes_out += h;
    if (t->out == OUT_CHUNKED && t->frame_sent < t->frame_len) {
        size_t f = PT_MIN(sent, (size_t)(t->frame_len - t->frame_sent));
        t->frame_sent += (uint32_t)f;
        sent -= f;
        t->ex.bytes_out += f;
        if (t->out_end && t->frame_sent == t->frame_len)
            t->body_finished = true;
    }
    if (sent) {
        size_t d = PT_MIN(sent, data);
        pt_exchange_body_consume(&t->ex, d);
        if (t->out == OUT_CHUNKED) {
            t->chunk_left -= (uint32_t)d;
            if (t->chunk_left == 0)
                t->need_crlf = true; /* goes out with the next frame */
        }
    }
}

/* Writes the response head and ready body bytes to the client. */
static int pump_client_write(struct h1_txn *t)
{
    struct pt_conn *c = t->c;
    if (t->interim_sent < t->interim.len)
        return pump_client_interim(t);
    if (!t->head_built || !c->writable)
        return 0;
    struct iovec iov[4];
    int n = 0;
    bool head_left = t->chead_sent < t->chead.len;
    if (head_left)
        iov[n++] = (struct iovec){(char *)t->chead.p + t->chead_sent, t->chead.len - t->chead_sent};
    size_t data = 0;
    n += gather_body(t, iov + n, &data);
    if (n == 0)
        return 0;
    ssize_t w = client_send(t, iov, n);
    if (w <= 0)
        return (int)w;
    t->ex.response_started = true;
    account_write(t, (size_t)w, data);
    pt_timer_cancel(&c->w->loop, &c->timer);
    return 1;
}

static bool txn_finished(struct h1_txn *t)
{
    return t->head_built && t->chead_sent == t->chead.len && t->body_finished &&
           t->interim_sent == t->interim.len && (!t->tunnel || t->req_done);
}

/*
 * Lingering close (as nginx does): after answering a request whose body
 * was left unread (413, an early upstream answer), closing at once makes
 * the kernel send a reset for the unread bytes, and a reset can destroy the
 * response before the client has read it. So shut the write side (the
 * client sees the end of the response), discard whatever still arrives for
 * up to PT_LINGER_MS (and PT_LINGER_MAX_BYTES), then close. Every TLS
 * connection closes this way: its write side ends with close_notify, sent
 * behind any records still waiting for room.
 */
#define PT_LINGER_MS 2000
#define PT_LINGER_MAX_BYTES (8u << 20)

static void linger_discard(struct pt_conn *c)
{
    char sink[4096];
    if (!c->readable)
        return;
    for (;;) {
        ssize_t n = pt_conn_recv(c, sink, sizeof(sink));
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
    pt_h1s_close(c);
}

static void conn_linger(struct pt_conn *c)
{
    if (c->rbuf) {
        pt_buf_put(&c->w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    if (pt_conn_shutdown_wr(c) < 0) {
        pt_h1s_close(c);
        return;
    }
    c->lingering = true;
    c->head_started = false; /* nothing more will be parsed: a drain may close it */
    c->readable = true;
    pt_timer_arm(&c->w->loop, &c->timer, PT_LINGER_MS, pt_h1s_timeout);
    linger_discard(c);
}

/* The response is fully written: end the transaction and get ready for the
 * next request on this connection (or close it). */
static void txn_finish(struct h1_txn *t)
{
    struct pt_conn *c = t->c;
    struct pt_worker *w = c->w;
    if (!t->req_done)
        t->close_after = true;
    bool close_conn = t->close_after || atomic_load_explicit(&w->draining, memory_order_relaxed);
    bool unread_body = !t->req_done;
    pt_h1s_txn_end(t, true);
    if (close_conn) {
        /* Over TLS the last records may still sit in the side buffer (the
         * socket took no more), and the client is owed a close_notify: a
         * close-delimited body is complete only with it. Lingering sends
         * it behind those records and closes at the client's EOF. */
        if (unread_body || c->tls)
            conn_linger(c);
        else
            pt_h1s_close(c);
        return;
    }
    c->head_started = false;
    /* Bytes of the next request already here (buffered, received, or
     * reported readable): it was pipelined, and a FIN behind it is no
     * reason to drop it (judge_hangup). */
    c->next_pipelined = (c->rbuf && pt_buf_len(c->rbuf) > 0) || c->readable || pt_conn_has_input(c);
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
                 pt_h1s_timeout);
}

/* The request is complete: settle whether the next one's bytes are
 * already waiting. `readable` can be a guess (the last read filled the
 * buffer, or an edge reported bytes a read already took); left standing
 * until the response is out, it would count a request sent after that
 * response as pipelined (judge_hangup). Costs one recv(MSG_PEEK) with
 * epoll, and only in those cases. */
static void settle_readable(struct pt_conn *c, struct h1_txn *t)
{
    t->input_settled = true;
    if (c->readable && !c->hup && (!c->rbuf || pt_buf_len(c->rbuf) == 0) &&
        !(c->tls && pt_tls_has_buffered(c->tls)) && !pt_io_input_waiting(&c->w->loop, &c->io))
        c->readable = false;
}

/* A tunnel whose upstream side ended and was all written: our FIN to the
 * client (it may still send; the tunnel ends at its EOF). 1 on progress,
 * -1 when the connection failed and was closed. */
static int tunnel_half_close(struct h1_txn *t)
{
    if (t->tunnel_wr_shut || !t->body_finished || t->chead_sent < t->chead.len || t->req_done)
        return 0;
    t->tunnel_wr_shut = true;
    if (pt_conn_shutdown_wr(t->c) < 0) {
        pt_h1s_close(t->c);
        return -1;
    }
    return 1;
}

/* One pass over every side of the transaction. 1 on progress, 0 when
 * nothing moved, -1 when the connection was closed. */
static int pump_txn(struct pt_conn *c, struct h1_txn *t)
{
    int progress = 0, r;
    if (t->req_done && !t->input_settled)
        settle_readable(c, t);
    /* A complete request holds no read buffer (its head was copied): a
     * request waiting on a filter or a slow upstream costs its arena, not
     * a 16 KiB buffer. Nor does a quiet tunnel (the next read takes one). */
    if ((t->req_done || t->tunnel) && c->rbuf && pt_buf_len(c->rbuf) == 0) {
        pt_buf_put(&c->w->bufs, c->rbuf);
        c->rbuf = NULL;
    }
    if (t->ex.suspended)
        return 0;
    if ((r = pump_client_read(t)) < 0)
        return -1;
    progress |= r > 0;
    if (!scan_request_body(t) && c->closed)
        return -1;
    if (t->req_done && !t->input_settled)
        settle_readable(c, t);
    progress |= pt_exchange_pump(&t->ex) > 0;
    if (c->closed)
        return -1;
    if (t->ex.cut) {
        pt_h1s_cut(t, t->ex.cut);
        return -1;
    }
    if (!take_interim(t) || !take_response(t)) {
        pt_h1s_close(c);
        return -1;
    }
    if ((r = pump_client_write(t)) < 0)
        return -1;
    progress |= r > 0;
    if (pt_unlikely(t->tunnel) && (r = tunnel_half_close(t)) != 0)
        return r;
    /* Pulling the body may have asked for a cut (a body filter failed
     * after the response started): act on it now, no event would come. */
    if (t->ex.cut) {
        pt_h1s_cut(t, t->ex.cut);
        return -1;
    }
    return progress;
}

void pt_h1s_run(struct pt_conn *c)
{
    if (c->lingering) {
        linger_discard(c);
        return;
    }
    c->in_run = true;
    for (int guard = 0; guard < 10000; guard++) {
        c->again = false;
        if (c->closed)
            break;
        if (!c->txn) {
            if (c->want_proxy && !read_proxy_header(c))
                break;
            if (c->tls && !c->tls->handshake_done && !tls_handshake_step(c))
                break;
            if (!read_head(c))
                break;
            continue;
        }
        struct h1_txn *t = c->txn;
        int r = pump_txn(c, t);
        if (r < 0 || c->closed)
            break;
        if (c->txn == t && txn_finished(t)) {
            txn_finish(t);
            continue;
        }
        if (!r && !c->again)
            break;
    }
    c->in_run = false;
}
