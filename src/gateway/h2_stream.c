/*
 * h2_stream.c — one HTTP/2 stream is one exchange (exchange.h): the
 * request head from nghttp2's header callbacks (validated per RFC 9113
 * §8.2 on top of what nghttp2 checks), the request body from DATA frames
 * (buffered up to the stream window, which reopens only as the exchange
 * pulls: backpressure to the client), and the exchange's response as
 * HEADERS + DATA through a data provider that pulls from the exchange
 * (DEFERRED while it has nothing: backpressure to the upstream is the
 * client's window).
 *
 * Memory: the stream object lives in its own request arena (its first
 * allocation), with the exchange, the head's copies and, once DATA comes,
 * one PT_H2_STREAM_WINDOW body buffer. Releasing the arena frees it all.
 */
#include "gateway/h2_server.h"
#include "gateway/respond.h"

#include "core/log.h"
#include "http/tokens.h"

#include <stdio.h>

/* ---- the codec's side of the exchange ---- */

static pt_slice codec_body_peek(void *conn, bool *eos)
{
    struct h2_stream *st = conn;
    *eos = st->req_eos;
    if (pt_unlikely(st->tunnel && !st->tunnel_open)) {
        *eos = false; /* the tunnel's bytes go once the upstream switched */
        return (pt_slice){"", 0};
    }
    if (!st->body)
        return (pt_slice){"", 0};
    return (pt_slice){st->body + st->bstart, st->bend - st->bstart};
}

static void codec_body_consumed(void *conn, size_t n)
{
    struct h2_stream *st = conn;
    if (n == 0)
        return;
    st->bstart += (uint32_t)n;
    if (st->bstart == st->bend)
        st->bstart = st->bend = 0;
    /* Reopens the windows by what left the buffer: the client may send
     * that much more (the WINDOW_UPDATE goes out with the next write). */
    if (st->nghttp2_closed || nghttp2_session_consume(st->h->s, st->id, n) != 0)
        nghttp2_session_consume_connection(st->h->s, n);
}

static void codec_wake(void *conn)
{
    struct h2_stream *st = conn;
    /* Batched: the stream is pumped, and the connection written, once at
     * the end of this loop turn with everything else that woke. */
    pt_h2_stream_ready(st->h, st);
    pt_h2s_defer(st->h);
}

static const struct pt_codec_ops codec_ops = {codec_body_peek, codec_body_consumed, codec_wake};

/* ---- streams ---- */

static struct h2_stream *stream_new(struct pt_h2s *h, int32_t id)
{
    struct pt_conn *c = h->c;
    struct pt_arena a;
    pt_arena_init_pooled(&a, PT_REQ_ARENA_BLOCK, &c->w->arena_pool);
    struct h2_stream *st = pt_arena_alloc(&a, sizeof(*st));
    if (!st) {
        pt_arena_release(&a);
        return NULL;
    }
    _Static_assert(offsetof(struct h2_stream, ex) == 0, "the exchange comes first");
    memset((char *)st + sizeof(st->ex), 0, sizeof(*st) - sizeof(st->ex));
    st->arena = a;
    st->h = h;
    st->id = id;
    st->content_length = -1;
    pt_exchange_init(&st->ex, c->w, &st->arena, &codec_ops, st);
    st->ex.listener = c->listener;
    st->ex.peer = (pt_slice){c->remote, c->remote_len};
    st->ex.tls = c->tls;
    st->ex.peer_ip = c->remote_ip;
    st->ex.req.scheme = (pt_slice){c->scheme, strlen(c->scheme)};
    st->ex.req.h2 = true;
    st->ex.t_start = pt_loop_now_ns(&c->w->loop);
    st->next = h->streams;
    if (h->streams)
        h->streams->prev = st;
    h->streams = st;
    h->nstreams++;
    h->nheads++;
    pt_h2s_count_stream(h);
    return st;
}

void pt_h2_stream_free(struct pt_h2s *h, struct h2_stream *st, bool completed)
{
    if (!st->ended) {
        st->ended = true;
        if (!st->started && !st->ex.status && !st->ex.error)
            st->ex.error = "stream reset before its request was complete";
        pt_exchange_end(&st->ex, completed);
    }
    if (!st->started)
        h->nheads--;
    pt_timer_cancel(&h->c->w->loop, &st->rate_timer);
    pt_h2_stream_unready(h, st);
    if (st->prev)
        st->prev->next = st->next;
    else
        h->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    h->nstreams--;
    if (h->s && !st->nghttp2_closed)
        nghttp2_session_set_stream_user_data(h->s, st->id, NULL);
    struct pt_arena a = st->arena; /* st lives in it */
    pt_arena_release(&a);
}

static struct h2_stream *stream_of(nghttp2_session *s, int32_t id)
{
    return nghttp2_session_get_stream_user_data(s, id);
}

/* ---- the request head ---- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct pt_h2s *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        /* Trailers: a field section of their own, under the same caps. */
        struct h2_stream *st = stream_of(s, frame->hd.stream_id);
        if (st) {
            st->nfields = 0;
            st->hbytes = 0;
        }
        return 0;
    }
    if (h->goaway)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* refused: after our GOAWAY */
    struct h2_stream *st = stream_new(h, frame->hd.stream_id);
    if (!st)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    h->had_req = true;
    h->requests++;
    nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
    return 0;
}

static bool take_pseudo(struct h2_stream *st, pt_slice n, pt_slice v)
{
    if (pt_slice_eq(n, PT_SLICE(":method")))
        st->method = v;
    else if (pt_slice_eq(n, PT_SLICE(":path")))
        st->path = v;
    else if (pt_slice_eq(n, PT_SLICE(":scheme")))
        st->scheme = v;
    else if (pt_slice_eq(n, PT_SLICE(":authority")))
        st->authority = v;
    else if (pt_slice_eq(n, PT_SLICE(":protocol")))
        st->protocol = v;
    else
        return false;
    return true;
}

/* Joins cookie crumbs (RFC 9113 §8.2.3) with "; " into one field. */
static bool add_cookie(struct h2_stream *st, pt_slice v)
{
    if (!st->cookie.len) {
        st->cookie = v;
        return true;
    }
    char *j = pt_arena_alloc(&st->arena, st->cookie.len + 2 + v.len);
    if (!j)
        return false;
    memcpy(j, st->cookie.p, st->cookie.len);
    memcpy(j + st->cookie.len, "; ", 2);
    memcpy(j + st->cookie.len + 2, v.p, v.len);
    st->cookie = (pt_slice){j, st->cookie.len + 2 + v.len};
    return true;
}

static void head_fail(struct h2_stream *st, int status, const char *why)
{
    if (!st->hfail) {
        st->hfail = status;
        st->hwhy = why;
    }
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct pt_h2s *h = ud;
    (void)flags;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    if (!st)
        return 0;
    const struct pt_limits *lim = &h->c->w->gen->limits;
    /* The byte cap counts every field as SETTINGS_MAX_HEADER_LIST_SIZE
     * does (pseudo-headers too, 32 bytes each added); the count cap counts
     * the regular fields only, as HTTP/1.1 counts its header lines (the
     * pseudo-headers stand for its request line), and cookie crumbs
     * (RFC 9113 §8.2.3) as the one Cookie line they are joined into. */
    bool crumb = !st->started && st->cookie.len && namelen == 6 && memcmp(name, "cookie", 6) == 0;
    if ((!namelen || name[0] != ':') && !crumb)
        st->nfields++;
    st->hbytes += namelen + valuelen + 32;
    if (st->hbytes > lim->max_header_bytes || st->nfields > lim->max_headers) {
        if (st->started)
            st->tfail = true; /* trailers: the stream is reset once they end */
        else
            head_fail(st, 431, "request header fields too large");
        /* Far beyond the cap is no client's mistake: an HPACK bomb
         * expands a few bytes into many fields. */
        if (st->hbytes > PT_H2_HEADER_BLOCK_FACTOR * 4 * lim->max_header_bytes)
            h->calm = true;
        return 0;
    }
    if (st->hfail || st->started)
        return 0; /* trailers: counted, not forwarded */
    char *copy = pt_arena_alloc(&st->arena, namelen + valuelen + 2);
    if (!copy)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    memcpy(copy, name, namelen);
    copy[namelen] = 0;
    memcpy(copy + namelen + 1, value, valuelen);
    copy[namelen + 1 + valuelen] = 0;
    pt_slice n = {copy, namelen}, v = {copy + namelen + 1, valuelen};
    if (namelen && name[0] == ':') {
        if (!take_pseudo(st, n, v))
            head_fail(st, 400, "unknown pseudo-header");
        return 0;
    }
    int tok = pt_token_lookup(n.p, n.len);
    /* nghttp2 refused connection-specific fields and TE other than
     * "trailers"; what it lets through but HTTP/1.1 would read as
     * framing or hop-by-hop must not cross either. */
    if (tok == PT_TOK_CONNECTION || tok == PT_TOK_KEEP_ALIVE || tok == PT_TOK_PROXY_CONNECTION ||
        tok == PT_TOK_TRANSFER_ENCODING || tok == PT_TOK_UPGRADE) {
        head_fail(st, 400, "connection-specific header field");
        return 0;
    }
    if (tok == PT_TOK_TE)
        return 0; /* "trailers": meaningless to an HTTP/1.1 upstream hop */
    if (tok == PT_TOK_CONTENT_LENGTH) {
        int64_t cl = 0;
        if (!valuelen || valuelen > 18)
            cl = -2;
        for (size_t i = 0; cl >= 0 && i < valuelen; i++)
            cl = value[i] >= '0' && value[i] <= '9' ? cl * 10 + (value[i] - '0') : -2;
        if (cl < 0 || (st->content_length >= 0 && st->content_length != cl)) {
            head_fail(st, 400, "invalid content-length");
            return 0;
        }
        st->content_length = cl;
        return 0; /* the outbound call writes its own */
    }
    if (tok == PT_TOK_HOST) {
        st->host = v;
        return 0;
    }
    if (pt_slice_eq(n, PT_SLICE("cookie")))
        return add_cookie(st, v) ? 0 : NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (pt_headers_add(&st->ex.reqh, &st->arena, n, v) < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return 0;
}

/* A field nghttp2 found malformed (control characters, edge whitespace,
 * a forbidden name): the stream is malformed (RFC 9113 §8.1.1), not a
 * field to drop. */
static int on_invalid_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                             size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                             void *ud)
{
    (void)name, (void)namelen, (void)value, (void)valuelen, (void)flags, (void)ud;
    nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_PROTOCOL_ERROR);
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud);

static void split_target(struct h2_stream *st)
{
    struct pt_request_meta *r = &st->ex.req;
    r->target = st->path;
    const char *q = memchr(st->path.p, '?', st->path.len);
    r->path = st->path;
    r->query = (pt_slice){"", 0};
    if (q) {
        r->path.len = (size_t)(q - st->path.p);
        r->query = (pt_slice){q + 1, st->path.len - r->path.len - 1};
    }
}

/* ---- the minimum body rate ----
 * limits.min_body_rate per stream, as HTTP/1.1 judges it (h1_server_io.c):
 * each body_rate_window (the first is the grace) must bring rate × window
 * bytes of the request body, judged only while the gateway waits on the
 * client (the stream's buffer is empty: the upstream took everything, so
 * the client has its whole window to fill, and no filter is at work).
 * Too slow → 408 on that stream (Envoy's answer to a stream timeout
 * before the response began), then RST_STREAM NO_ERROR to stop the
 * upload (on_frame_send); the connection's other streams carry on. */

static void body_rate_check(struct pt_loop *loop, struct pt_timer *tm)
{
    struct h2_stream *st = pt_container_of(tm, struct h2_stream, rate_timer);
    struct pt_exchange *ex = &st->ex;
    if (st->req_eos || st->discard || ex->response_started || ex->resp == PT_RESP_GATEWAY ||
        st->h->c->closed)
        return;
    const struct pt_limits *lim = &ex->gen->limits;
    uint64_t need = lim->min_body_rate * lim->body_rate_window_ms / 1000;
    bool waiting_on_client = st->bstart == st->bend && !ex->suspended;
    if (waiting_on_client && st->body_in - st->rate_mark < need) {
        st->discard = true; /* what still comes is dropped, its window reopened */
        pt_exchange_respond(ex, 408, "request body too slow", false);
        pt_h2_stream_ready(st->h, st);
        pt_h2s_run(st->h->c);
        return;
    }
    st->rate_mark = st->body_in;
    pt_timer_arm(loop, &st->rate_timer, lim->body_rate_window_ms, body_rate_check);
}

/* The head is complete: fill the exchange's request and start it. */
static void start_request(struct pt_h2s *h, struct h2_stream *st, bool eos)
{
    struct pt_exchange *ex = &st->ex;
    struct pt_request_meta *r = &ex->req;
    st->started = true;
    pt_h2_stream_ready(h, st);
    h->nheads--;
    st->req_eos = eos;
    ex->t_start = pt_loop_now_ns(&h->c->w->loop);
    r->method = st->method;
    r->method_id = pt_method_lookup(st->method.p, st->method.len);
    st->head_only = r->method_id == PT_METHOD_HEAD;
    if (st->path.len)
        split_target(st);
    /* :authority is the target's authority; a Host beside it must agree
     * (RFC 9113 §8.3.1), or the upstream and the router would disagree
     * on where the request goes. */
    r->host = st->authority.len ? st->authority : st->host;
    if (st->authority.len && st->host.len && !pt_slice_eq(st->authority, st->host))
        head_fail(st, 400, ":authority and host disagree");
    if (!r->host.len)
        head_fail(st, 400, "no :authority or host");
    if (st->cookie.len && pt_headers_add(&ex->reqh, &st->arena, PT_SLICE("cookie"), st->cookie) < 0)
        head_fail(st, 500, "out of memory");
    if (st->host.len && pt_headers_add(&ex->reqh, &st->arena, PT_SLICE("host"), r->host) < 0)
        head_fail(st, 500, "out of memory");
    r->content_length = st->content_length >= 0 ? st->content_length : (eos ? 0 : -1);
    r->chunked = r->content_length < 0;
    /* CONNECT: RFC 8441 WebSocket (h2_tunnel.c), else refused. */
    if (pt_unlikely(r->method_id == PT_METHOD_CONNECT) && !pt_h2_tunnel_request(st))
        head_fail(st, 500, "out of memory");
    struct pt_hfield *rid = pt_headers_find_token(&ex->reqh, PT_TOK_X_REQUEST_ID);
    if (rid)
        pt_exchange_set_request_id(ex, rid->value);
    if (st->hfail) {
        /* Answered here; the exchange reads no body. */
        pt_worker_refresh_gen(h->c->w);
        st->discard = true;
        pt_exchange_respond(ex, st->hfail, st->hwhy, false);
        return;
    }
    pt_exchange_start(ex);
    st->body_limit = ex->route && ex->route->max_body_bytes ? ex->route->max_body_bytes
                                                            : ex->gen->limits.max_body_bytes;
    if (ex->resp != PT_RESP_NONE && !ex->dispatched)
        st->discard = true; /* answered before any body was wanted */
    if (!eos && !st->tunnel && !st->discard && ex->resp != PT_RESP_GATEWAY &&
        ex->gen->limits.min_body_rate)
        pt_timer_arm(&h->c->w->loop, &st->rate_timer, ex->gen->limits.body_rate_window_ms,
                     body_rate_check); /* the grace window counts what came with the head */
}

/* ---- the request body ---- */

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                         size_t len, void *ud)
{
    (void)flags, (void)ud;
    struct h2_stream *st = stream_of(s, id);
    if (st)
        st->body_in += len;
    if (st && st->started && !st->discard && st->body_in > st->body_limit && !st->tunnel) {
        st->discard = true;
        if (!st->ex.response_started)
            pt_exchange_respond(&st->ex, 413, NULL, false);
        else
            st->ex.cut = "request body too large";
    }
    if (!st || st->discard || !st->started) {
        /* Nobody reads it: the window reopens at once. */
        if (nghttp2_session_consume(s, id, len) != 0)
            nghttp2_session_consume_connection(s, len);
        return 0;
    }
    if (len == 0)
        return 0;
    if (!st->body) {
        /* A body that declared a smaller length than the window gets just
         * that (a small JSON POST holds its size, not 64 KiB); nghttp2
         * resets a stream whose DATA exceeds its content-length. */
        st->bcap = st->content_length > 0 && st->content_length < PT_H2_STREAM_WINDOW
                       ? (uint32_t)st->content_length
                       : PT_H2_STREAM_WINDOW;
        st->body = pt_arena_alloc(&st->arena, st->bcap);
        if (!st->body)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (st->bend + len > st->bcap) {
        memmove(st->body, st->body + st->bstart, st->bend - st->bstart);
        st->bend -= st->bstart;
        st->bstart = 0;
    }
    if (st->bend + len > st->bcap)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* nghttp2 enforces window and length */
    memcpy(st->body + st->bend, data, len);
    st->bend += (uint32_t)len;
    st->ex.bytes_in += len;
    pt_h2_stream_ready(st->h, st); /* the call may take it */
    return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct pt_h2s *h = ud;
    bool eos = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
    struct h2_stream *st = frame->hd.stream_id ? stream_of(s, frame->hd.stream_id) : NULL;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (st && !st->started && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            start_request(h, st, eos);
            return 0;
        }
        if (st && st->tfail && !st->discard) {
            /* Trailers over the caps: the request was forwarded and a 431
             * can no longer replace its answer, so the stream is reset
             * (the upstream call goes with it); far over, the HPACK-bomb
             * guard already has the GOAWAY due. (A stream already answered
             * by the gateway drops them with its body.) */
            if (!st->ex.error)
                st->ex.error = "request trailer fields too large";
            st->rst_sent = true;
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_ENHANCE_YOUR_CALM);
            return 0;
        }
        break;
    case NGHTTP2_DATA:
        if (frame->hd.length == 0 && !eos)
            h->ctl_frames++; /* empty DATA: a cheap flood */
        break;
    case NGHTTP2_SETTINGS:
    case NGHTTP2_PING:
    case NGHTTP2_PRIORITY:
        h->ctl_frames++;
        break;
    case NGHTTP2_WINDOW_UPDATE:
        if (frame->hd.stream_id == 0)
            h->ctl_frames++;
        break;
    default:
        break;
    }
    if (st && eos) {
        st->req_eos = true;
        if (st->started)
            pt_h2_stream_ready(h, st);
    }
    return 0;
}

static int on_begin_frame(nghttp2_session *s, const nghttp2_frame_hd *hd, void *ud)
{
    struct pt_h2s *h = ud;
    if (hd->type != NGHTTP2_HEADERS && hd->type != NGHTTP2_CONTINUATION)
        return 0;
    struct h2_stream *st = stream_of(s, hd->stream_id);
    if (!st)
        return 0;
    /* Our own cap on the header block across CONTINUATIONs (besides
     * nghttp2's count of them): a block this large is an attack. A
     * trailer block (HEADERS on a started stream) is counted on its own,
     * as its fields are. */
    if (hd->type == NGHTTP2_HEADERS && st->started)
        st->hblock = hd->length;
    else
        st->hblock += hd->length;
    if (st->hblock > PT_H2_HEADER_BLOCK_FACTOR * h->c->w->gen->limits.max_header_bytes) {
        h->calm = true;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *ud)
{
    struct pt_h2s *h = ud;
    struct h2_stream *st = stream_of(s, id);
    if (!st)
        return 0;
    st->nghttp2_closed = true;
    /* Unconsumed request bytes still count against the connection window. */
    if (st->bend > st->bstart)
        nghttp2_session_consume_connection(s, st->bend - st->bstart);
    bool completed = st->out_eos && error_code == NGHTTP2_NO_ERROR;
    /* The client's reset, or nghttp2's for the client's protocol error
     * (MadeYouReset, CVE-2025-8671, makes the server reset for it), of a
     * stream whose response was not out: that costs work for nothing.
     * Our own resets (an upstream cut, the send timeout) don't count. */
    if (!st->out_eos && !st->rst_sent)
        pt_h2s_count_reset(h);
    if (!completed) {
        if (!st->ex.error)
            st->ex.error = error_code == NGHTTP2_NO_ERROR         ? "stream closed"
                           : error_code == NGHTTP2_PROTOCOL_ERROR ? "stream reset: protocol error"
                                                                  : "stream reset";
        if (st->ex.response_started)
            st->ex.error = st->ex.error ? st->ex.error : "stream reset";
    }
    pt_h2_stream_free(h, st, completed);
    return 0;
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    (void)ud;
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
        (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA))
        return 0;
    struct h2_stream *st = stream_of(s, frame->hd.stream_id);
    if (!st)
        return 0;
    st->out_eos = true;
    /* The whole response is out while the client still sends a body
     * nobody reads: tell it to stop (RFC 9113 §8.1). */
    if (!st->req_eos && !st->rst_sent && !st->tunnel) {
        st->rst_sent = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

void pt_h2_set_stream_callbacks(nghttp2_session_callbacks *cb)
{
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_invalid_header_callback(cb, on_invalid_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
}

/* ---- the response ---- */

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s, (void)id, (void)ud;
    struct h2_stream *st = src->ptr;
    if (st->gateway) {
        size_t n = PT_MIN(len, st->gw.len - st->gw_off);
        memcpy(buf, st->gw.p + st->gw_off, n);
        st->gw_off += (uint32_t)n;
        if (st->gw_off == st->gw.len)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        st->ex.bytes_out += n;
        st->out_ms = pt_loop_now(&st->h->c->w->loop);
        return (ssize_t)n;
    }
    bool eos;
    pt_slice b = pt_exchange_body_peek(&st->ex, &eos);
    size_t n = PT_MIN(len, b.len);
    if (n == 0 && !eos) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    memcpy(buf, b.p, n);
    pt_exchange_body_consume(&st->ex, n); /* (counts bytes_out) */
    pt_h2_stream_ready(st->h, st);        /* room: the call may read more */
    st->out_ms = pt_loop_now(&st->h->c->w->loop);
    if (n == b.len && eos)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* A name as HTTP/2 wants it: lowercase (a copy only when needed). */
static uint8_t *lower_name(struct h2_stream *st, pt_slice n)
{
    size_t i = 0;
    while (i < n.len && !(n.p[i] >= 'A' && n.p[i] <= 'Z'))
        i++;
    if (i == n.len)
        return (uint8_t *)n.p;
    char *o = pt_arena_alloc(&st->arena, n.len);
    if (!o)
        return NULL;
    for (i = 0; i < n.len; i++)
        o[i] = n.p[i] >= 'A' && n.p[i] <= 'Z' ? (char)(n.p[i] + 32) : n.p[i];
    return (uint8_t *)o;
}

#define NV(nm, nl, v, vl)                                                                          \
    (nghttp2_nv)                                                                                   \
    {                                                                                              \
        (uint8_t *)(nm), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE                          \
    }

/* Fields that never cross into HTTP/2 (RFC 9113 §8.2.2). */
static bool skip_response_field(const struct pt_hfield *f, bool gateway)
{
    if (f->dead || (pt_token_flags[f->token] & PT_TF_HOP) || f->token == PT_TOK_CONTENT_LENGTH)
        return true;
    if (gateway && (f->token == PT_TOK_CONTENT_TYPE || f->token == PT_TOK_X_REQUEST_ID))
        return true;
    return false;
}

static int submit_response(struct pt_h2s *h, struct h2_stream *st)
{
    struct pt_exchange *ex = &st->ex;
    bool gw = ex->resp == PT_RESP_GATEWAY;
    uint32_t cap = ex->resph.n + 5;
    nghttp2_nv *nva = pt_arena_alloc(&st->arena, sizeof(*nva) * cap);
    char *num = pt_arena_alloc(&st->arena, 32);
    if (!nva || !num)
        return -1;
    uint32_t n = 0;
    int sl = snprintf(num, 4, "%03d", ex->status);
    nva[n++] = NV(":status", 7, num, (size_t)sl);
    int64_t clen = -1;
    bool body = !st->head_only && ex->status != 204 && ex->status != 304;
    st->gateway = gw;
    if (gw) {
        /* as pt_respond_build: a raw answer (the cache's) as it is */
        pt_slice ctype = ex->gw_ctype;
        if (!ex->gw_raw && !(ex->gw_ctype.len && ex->gw_body.len))
            ctype = PT_SLICE("application/json");
        st->gw = ex->gw_raw || ex->gw_body.len
                     ? ex->gw_body
                     : pt_respond_error_body(&st->arena, ex->status, ex->gw_error, ex->reqid);
        /* A 204 carries no Content-Length (RFC 9110 §8.6; nghttp2 clients
         * reset the stream otherwise), a 304 none of its own. */
        bool bodiless = ex->status == 204 || ex->status == 304;
        clen = bodiless ? -1 : (int64_t)st->gw.len;
        if (!bodiless && ctype.len)
            nva[n++] = NV("content-type", 12, ctype.p, ctype.len);
        nva[n++] = NV("x-request-id", 12, ex->reqid.p, ex->reqid.len);
        body = body && st->gw.len;
    } else if (ex->frame == PT_FRAME_LENGTH || (ex->frame == PT_FRAME_NONE && ex->status != 204)) {
        clen = ex->content_length;
        if (ex->frame == PT_FRAME_NONE)
            body = false;
    } else if (ex->frame == PT_FRAME_NONE) {
        body = false;
    }
    for (uint32_t i = 0; i < ex->resph.n && n + 2 < cap; i++) {
        const struct pt_hfield *f = &ex->resph.f[i];
        if (skip_response_field(f, gw))
            continue;
        uint8_t *ln = lower_name(st, f->name);
        if (!ln)
            return -1;
        nva[n++] = NV(ln, f->name.len, f->value.p, f->value.len);
    }
    if (clen >= 0) {
        char *cl = num + 4;
        int k = snprintf(cl, 28, "%lld", (long long)clen);
        nva[n++] = NV("content-length", 14, cl, (size_t)k);
    }
    nghttp2_data_provider prd = {.source.ptr = st, .read_callback = read_body};
    int rv = nghttp2_submit_response(h->s, st->id, nva, n, body ? &prd : NULL);
    if (rv != 0)
        return -1;
    if (!body && !gw) {
        /* Nothing to send: the exchange's body (if any, e.g. HEAD) is done. */
        bool eos;
        pt_slice b;
        while ((b = pt_exchange_body_peek(ex, &eos)).len)
            pt_exchange_body_consume(ex, b.len);
    }
    ex->response_started = true;
    st->out_ms = pt_loop_now(&h->c->w->loop);
    st->submitted = true;
    st->built_seq = ex->resp_seq;
    return 0;
}

bool pt_h2_stream_window_shut(struct pt_h2s *h, struct h2_stream *st)
{
    if (!st->submitted || st->out_eos || st->deferred || st->rst_sent || st->nghttp2_closed)
        return false;
    return nghttp2_session_get_stream_remote_window_size(h->s, st->id) <= 0 ||
           nghttp2_session_get_remote_window_size(h->s) <= 0;
}

void pt_h2_stream_reset(struct pt_h2s *h, struct h2_stream *st, uint32_t code, const char *why)
{
    if (!st->ex.error)
        st->ex.error = why;
    if (!st->rst_sent) {
        st->rst_sent = true;
        nghttp2_submit_rst_stream(h->s, NGHTTP2_FLAG_NONE, st->id, code);
    }
    st->discard = true;
}

int pt_h2_stream_pump(struct pt_h2s *h, struct h2_stream *st)
{
    struct pt_exchange *ex = &st->ex;
    if (!st->started || st->ended || st->rst_sent)
        return 0;
    int progress = 0;
    if (!ex->suspended)
        progress |= pt_exchange_pump(ex) > 0;
    while (pt_exchange_interim(ex)) /* 1xx heads: not relayed over HTTP/2 */
        pt_exchange_interim_done(ex);
    if (ex->cut) {
        pt_h2_stream_reset(h, st, NGHTTP2_INTERNAL_ERROR, ex->cut);
        return 1;
    }
    /* A WebSocket tunnel's 101: checked, it becomes the stream's 200 (or
     * a 502 replaces it). */
    if (pt_unlikely(ex->upgraded && !st->tunnel_open && !st->submitted))
        pt_h2_tunnel_switched(st);
    if (ex->resp != PT_RESP_NONE && (!st->submitted || st->built_seq != ex->resp_seq)) {
        if (st->submitted) {
            /* A response replaced after its head went out: a cut. */
            pt_h2_stream_reset(h, st, NGHTTP2_INTERNAL_ERROR, "response replaced after it started");
            return 1;
        }
        if (ex->resp == PT_RESP_GATEWAY || ex->dispatched == false)
            st->discard = st->discard || !ex->dispatched;
        if (submit_response(h, st) < 0) {
            pt_h2_stream_reset(h, st, NGHTTP2_INTERNAL_ERROR, "out of memory");
            return 1;
        }
        progress = 1;
    }
    if (st->deferred && st->submitted) {
        bool eos;
        pt_slice b = pt_exchange_body_peek(ex, &eos);
        if (b.len || eos || ex->cut) {
            st->deferred = false;
            nghttp2_session_resume_data(h->s, st->id);
            progress = 1;
        }
    }
    return progress;
}
