/*
 * client.c — see client.h. The HTTP/1.1 side of an outbound call: head
 * serialization, body framing, response parsing, timeouts and the
 * stale-connection retry. Retries across attempts and the replay of held
 * body bytes are in client_retry.c.
 *
 * Every socket event and timer ends in pump() then one tail call of
 * ops->wake; nothing after the wake touches the call (the caller may have
 * ended it and reused its memory).
 */
#include "proxy/client.h"
#include "proxy/client_int.h"

#include "http/h1_write.h"
#include "http/traceparent.h"
#include "http/websocket.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static int pump_write(struct pt_call *c);
static int pump_read(struct pt_call *c);
static int tls_step(struct pt_call *c);
static int start_tls(struct pt_call *c);
static pt_slice body_peek(struct pt_call *c, bool *eos);

/* ---- small helpers ---- */

static uint64_t read_timeout(const struct pt_call *c)
{
    return c->req.read_timeout_ms ? c->req.read_timeout_ms : c->req.up->read_timeout_ms;
}

static struct pt_loop *loop_of(const struct pt_call *c)
{
    return c->ob->loop;
}

/* p2c_ewma's latency sample: from asking for a connection to the final
 * head. A failure counts as at least connect_timeout, so a target that
 * fails fast does not look fast. */
static void observe_latency(struct pt_call *c, bool ok)
{
    uint64_t now = pt_loop_now_ns(loop_of(c));
    uint64_t end = ok && c->t_head_ns ? c->t_head_ns : now;
    uint64_t sample = c->t_connect_ns && end > c->t_connect_ns ? end - c->t_connect_ns : 0;
    if (!ok)
        sample = PT_MAX(sample, c->req.up->connect_timeout_ms * 1000000u);
    pt_balance_observe(c->target->state, sample, now);
}

/* Reports the call's outcome to its target's shared cell, once (per
 * attempt: a retry clears `reported`). Balanced calls only: a call to a
 * fixed target (an active health probe, a URL's call) is not traffic. A
 * passing /healthz probe must not end the failure streak of the target's
 * real routes, nor a failing one count as a failed request: the health
 * checker keeps its own counts (pt_state_record_check). */
static void report(struct pt_call *c, bool ok)
{
    if (c->reported || !c->target)
        return;
    c->reported = true;
    if (c->req.target)
        return;
    pt_state_record_call(c->target->state, ok, c->req.up, pt_loop_now_ns(loop_of(c)) / 1000000u);
    if (c->req.up->balance == PT_BALANCE_P2C_EWMA)
        observe_latency(c, ok);
}

void pt_client_report_attempt(struct pt_call *c, bool ok)
{
    report(c, ok);
}

void pt_client_trace_begin(struct pt_call *c)
{
    struct pt_call_trace *t = c->req.trace;
    if (pt_likely(!t))
        return;
    t->begin(t, c);
    t->open = true;
}

void pt_client_trace_end(struct pt_call *c, int status, enum pt_call_fail fail)
{
    struct pt_call_trace *t = c->req.trace;
    if (pt_likely(!t) || !t->open)
        return;
    t->open = false;
    t->end(t, c, status, fail);
}

/* Ends the call with an error: the connection is closed (a half-read
 * response can never be reused). Returns -1 for the pumps. */
int pt_client_fail_now(struct pt_call *c, enum pt_call_fail why, const char *text)
{
    if (c->phase != PT_CALL_FAILED) {
        c->fail = why;
        c->fail_text = text;
        c->phase = PT_CALL_FAILED;
        pt_client_trace_end(c, 0, why);
        /* The gateway's own limits and a stalled client are not the
         * target's fault. */
        if (why != PT_CALL_FAIL_RESOURCES && why != PT_CALL_FAIL_BODY_STALL &&
            why != PT_CALL_FAIL_NO_TARGET)
            report(c, false);
    }
    if (c->uc) {
        pt_uconn_close(c->uc);
        c->uc = NULL;
    }
    return -1;
}

/* A failure of the attempt: another attempt when retries allow (then 1:
 * the pumps go on with it, or see it failed), else the call ends (-1). */
static int fail(struct pt_call *c, enum pt_call_fail why, const char *text)
{
    if (pt_unlikely(c->retry_on) && c->phase != PT_CALL_FAILED && pt_client_retry(c, why, 0))
        return 1;
    return pt_client_fail_now(c, why, text);
}

/* Only idempotent methods (RFC 9110 §9.2.2) are sent twice. */
bool pt_client_idempotent(int method_id)
{
    switch (method_id) {
    case PT_METHOD_GET:
    case PT_METHOD_HEAD:
    case PT_METHOD_OPTIONS:
    case PT_METHOD_PUT:
    case PT_METHOD_DELETE:
    case PT_METHOD_TRACE:
        return true;
    default:
        return false;
    }
}

static bool has_body(const struct pt_call *c)
{
    return c->req.chunked || c->req.content_length > 0;
}

/* ---- target and connection ---- */

/* The target of the next attempt: the balancer's pick, avoiding the ones
 * tried already (a retry goes elsewhere when it can). */
const struct pt_target *pt_client_pick(struct pt_call *c)
{
    const struct pt_call_req *r = &c->req;
    if (r->target)
        return r->target;
    const struct pt_upstream *u = r->up;
    struct pt_pick p = {
        /* The worker's round-robin state is sized for the generation of
         * the turn the call started in; a reload before a retry frees it.
         * Only the first pick (nothing tried yet) uses it: a retry picks
         * by weighted random. */
        .rr = c->ntried ? NULL : r->rr,
        .rand = r->rand,
        .now_ms = pt_loop_now_ns(loop_of(c)) / 1000000u,
        .key = r->hash_key,
        .avoid = c->tried,
        .navoid = c->ntried,
    };
    uint32_t i = pt_balance_pick(u, &p);
    if (i >= u->ntargets)
        return NULL;
    if (c->ntried < PT_MAX_ATTEMPTS)
        c->tried[c->ntried++] = i;
    return &u->targets[i];
}

static void on_timeout(struct pt_loop *loop, struct pt_timer *tm);
static void on_event(struct pt_uconn *uc, uint32_t events);

/* The per-try deadline bounds getting connected and sending the head,
 * then, restarted when the whole request is out (account_sent), the wait
 * for the final head. It is off while the body is still being sent: an
 * upload takes as long as it takes, and read_timeout bounds a stall. */
static bool try_deadline_applies(const struct pt_call *c)
{
    return c->try_deadline_ms && (c->sent_all || c->head_sent < c->head_len);
}

/* Arms the connection's timer for `ms`, or to the attempt's per-try
 * deadline when that applies and comes first. */
static void arm(struct pt_call *c, uint64_t ms)
{
    if (pt_unlikely(try_deadline_applies(c))) {
        uint64_t now = loop_of(c)->now_ms;
        uint64_t left = c->try_deadline_ms > now ? c->try_deadline_ms - now : 0;
        ms = PT_MIN(ms, left);
    }
    pt_timer_arm(loop_of(c), &c->uc->timer, ms, on_timeout);
}

/* The gateway's own limits (descriptors, memory, local ports), not the
 * upstream's fault: 503 for the caller, as for any overload. */
static bool out_of_resources(int err)
{
    return err == -EMFILE || err == -ENFILE || err == -ENOBUFS || err == -ENOMEM ||
           err == -EADDRNOTAVAIL;
}

/* Takes a pooled connection (or a new one when `fresh`). -1 on failure. */
int pt_client_take_connection(struct pt_call *c, bool fresh)
{
    int err = 0;
    /* Pools are keyed by address and shared by upstreams naming the same
     * target: one with keepalive 0 never takes another's idle connection. */
    fresh |= c->req.up->keepalive == 0;
    struct pt_uconn *uc =
        pt_uconn_acquire(c->ob, c->target, c->req.up->tls, fresh, &c->reused, &err);
    if (!uc) {
        if (out_of_resources(err))
            return fail(c, PT_CALL_FAIL_RESOURCES, "gateway out of resources");
        return fail(c, PT_CALL_FAIL_CONNECT,
                    err == -ECONNREFUSED ? "upstream connection refused"
                                         : "upstream connect failed");
    }
    c->uc = uc;
    uc->user = c;
    uc->on_event = on_event;
    c->hup = false;
    /* A connecting socket becomes writable (or errors) when connect()
     * completes; asking SO_ERROR earlier would report success. */
    c->writable = uc->connected;
    /* Not readable until the loop says so: an idle pooled connection the
     * upstream closed is caught by the pool or by the event that follows. */
    c->readable = false;
    c->head_sent = 0;
    c->sent_all = false; /* a retry sends the (bodyless) request again */
    /* A new TLS connection is "connecting" until its handshake is done. */
    bool ready = uc->connected && (pt_likely(!c->req.up->tls) || uc->tls);
    c->phase = ready ? PT_CALL_WAITING : PT_CALL_CONNECTING;
    if (!c->t_connect_ns)
        c->t_connect_ns = pt_loop_now_ns(loop_of(c));
    arm(c, ready ? read_timeout(c) : c->req.up->connect_timeout_ms);
    return 0;
}

/* A reused keep-alive connection the upstream had already closed: the
 * request never reached it, so sending it again on a new connection (not
 * another pooled one, which may be as stale) is safe when no body was
 * consumed on the way. 1 when retried, 0 when not eligible, -1 when the
 * retry failed. */
static int retry_stale(struct pt_call *c)
{
    if (!c->reused || c->res_any || has_body(c) || c->retries >= 2 ||
        !pt_client_idempotent(c->req.method_id))
        return 0;
    c->retries++;
    pt_uconn_close(c->uc);
    c->uc = NULL;
    c->res_prev = 0;
    return pt_client_take_connection(c, true) < 0 ? -1 : 1;
}

/* ---- the request head ---- */

/* Request line with the caller's path, live non-hop-by-hop fields, then
 * our framing: no field edit can make the upstream see another length. */
bool pt_client_build_head(struct pt_call *c)
{
    const struct pt_call_req *r = &c->req;
    /* A target resolved from a host name is called by that name. */
    const char *host = c->target->name ? c->target->name : c->target->address;
    size_t cap = r->method.len + r->path.len + r->query.len + 96 + strlen(host);
    if (r->headers)
        cap += pt_h1_fields_size(r->headers);
    if (r->trace)
        cap += 16 + PT_TRACEPARENT_LEN;
    cap += r->upgrade.len ? 48 + r->upgrade.len : 0;
    char *o = pt_arena_alloc(r->arena, cap);
    if (!o)
        return false;
    size_t n = pt_h1_put(o, r->method);
    o[n++] = ' ';
    n += pt_h1_put(o + n, r->path);
    if (r->query.len) {
        o[n++] = '?';
        n += pt_h1_put(o + n, r->query);
    }
    n += pt_h1_put(o + n, PT_SLICE(" HTTP/1.1\r\n"));
    for (uint32_t i = 0; r->headers && i < r->headers->n; i++) {
        const struct pt_hfield *f = &r->headers->f[i];
        if (f->dead || (pt_token_flags[f->token] & PT_TF_HOP) || f->token == PT_TOK_EXPECT ||
            f->token == PT_TOK_CONTENT_LENGTH)
            continue;
        if (r->trace && f->name.len == 11 && strncasecmp(f->name.p, "traceparent", 11) == 0)
            continue; /* ours names this attempt's span */
        n += pt_h1_put_field(o + n, f->name, f->value);
    }
    if (r->trace)
        n += pt_h1_put_field(o + n, PT_SLICE("traceparent"),
                             (pt_slice){r->trace->traceparent, PT_TRACEPARENT_LEN});
    if (r->add_host)
        n += pt_h1_put_field(o + n, PT_SLICE("Host"), (pt_slice){host, strlen(host)});
    if (r->upgrade.len) {
        /* Ours, not the client's (hop-by-hop, skipped above): only the
         * protocol the route allows is asked for. */
        n += pt_h1_put(o + n, PT_SLICE("Connection: Upgrade\r\n"));
        n += pt_h1_put_field(o + n, PT_SLICE("Upgrade"), r->upgrade);
    }
    if (r->chunked)
        n += pt_h1_put(o + n, PT_SLICE("Transfer-Encoding: chunked\r\n"));
    else if (r->content_length >= 0)
        n += pt_h1_put_content_length(o + n, (uint64_t)r->content_length);
    o[n++] = '\r';
    o[n++] = '\n';
    c->head = o;
    c->head_len = (uint32_t)n;
    return true;
}

int pt_call_start(struct pt_call *c, struct pt_outbound *ob, const struct pt_call_req *req,
                  const struct pt_call_ops *ops, void *user)
{
    memset(c, 0, sizeof(*c));
    c->ob = ob;
    c->req = *req;
    c->ops = ops;
    c->user = user;
    c->req_left = req->content_length > 0 && !req->chunked ? (uint64_t)req->content_length : 0;
    c->attempts = 1;
    c->target = pt_client_pick(c);
    if (!c->target) {
        pt_client_fail_now(c, PT_CALL_FAIL_NO_TARGET, "no healthy upstream target");
        return c->fail;
    }
    if (pt_unlikely(req->up->retry.attempts > 1 || req->up->retry.per_try_timeout_ms))
        pt_client_retry_init(c);
    /* Requests in flight per target, across workers (least_conn reads it). */
    pt_state_active_inc(c->target->state);
    c->counted = true;
    pt_client_trace_begin(c);
    if (!pt_client_build_head(c)) {
        pt_client_fail_now(c, PT_CALL_FAIL_RESOURCES, "out of memory");
        return c->fail;
    }
    if (pt_client_take_connection(c, false) < 0)
        return c->fail;
    /* A pooled connection is writable now: the head goes out at once
     * (no event would come to send it). */
    pt_call_pump(c);
    return c->phase == PT_CALL_FAILED ? (int)c->fail : 0;
}

/* ---- events ---- */

static void wake(struct pt_call *c)
{
    c->ops->wake(c->user); /* last act: c may be gone after this */
}

static void on_event(struct pt_uconn *uc, uint32_t events)
{
    struct pt_call *c = uc->user;
    if (pt_unlikely(uc->tls != NULL))
        events = pt_tls_events(uc->tls, events);
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->readable = true;
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
        c->hup = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
        c->writable = true;
    pt_call_pump(c);
    wake(c);
}

bool pt_call_waits_for_caller(const struct pt_call *c)
{
    if (c->interim_ready)
        return true;
    return (c->phase == PT_CALL_BODY || c->phase == PT_CALL_DONE) && c->uc && c->uc->rbuf &&
           pt_buf_len(c->uc->rbuf) > 0;
}

static void on_timeout(struct pt_loop *loop, struct pt_timer *tm)
{
    struct pt_uconn *uc = pt_container_of(tm, struct pt_uconn, timer);
    struct pt_call *c = uc->user;
    if (!c)
        return;
    /* Bytes read from the upstream wait for a caller that has not taken
     * them: the gateway is not waiting on the upstream, and the caller's
     * own timers (the client's send timeout) bound that wait. */
    if (pt_call_waits_for_caller(c)) {
        pt_timer_arm(loop, &uc->timer, read_timeout(c), on_timeout);
        return;
    }
    bool connecting = c->phase == PT_CALL_CONNECTING;
    bool eos = false;
    /* The upstream took everything it was given and the rest of the body
     * never came: the caller's body source stalled, not the upstream. */
    if (!connecting && c->phase == PT_CALL_WAITING && !c->sent_all && c->head_sent == c->head_len &&
        body_peek(c, &eos).len == 0 && !eos)
        fail(c, PT_CALL_FAIL_BODY_STALL, "request body timeout");
    else if (connecting)
        /* Whichever deadline ended it (connect_timeout or the per-try
         * one), the attempt never got a connection: a connect failure,
         * retried under `connect_failure`. */
        fail(c, PT_CALL_FAIL_CONNECT_TO,
             try_deadline_applies(c) && loop->now_ms >= c->try_deadline_ms
                 ? "upstream connect timeout (per-try)"
             : uc->connected ? "upstream TLS handshake timeout"
                             : "upstream connect timeout");
    else if (try_deadline_applies(c) && loop->now_ms >= c->try_deadline_ms)
        fail(c, PT_CALL_FAIL_TIMEOUT, "upstream per-try timeout");
    else
        fail(c, PT_CALL_FAIL_TIMEOUT, c->upgraded ? "tunnel idle timeout" : "upstream timeout");
    /* A retry started another attempt: a pooled connection is writable
     * now and no event would come to send its head. */
    if (c->phase != PT_CALL_FAILED)
        pt_call_pump(c);
    wake(c);
}

int pt_call_pump(struct pt_call *c)
{
    int progress = 0;
    for (int guard = 0; guard < 1000; guard++) {
        if (c->phase == PT_CALL_FAILED || !c->uc)
            return progress;
        int w = pump_write(c);
        if (w < 0)
            return progress;
        int r = pump_read(c);
        if (r < 0)
            return progress;
        if (w == 0 && r == 0)
            break;
        progress = 1;
    }
    return progress;
}

/* ---- sending ---- */

/* Chunked request bodies: the framing before the next payload bytes (the
 * CRLF ending the previous chunk, then a size line), or the last-chunk. */
static void next_chunk_frame(struct pt_call *c, size_t len, bool last)
{
    uint32_t n = 0;
    if (c->chunk_crlf) {
        c->chunk_line[n++] = '\r';
        c->chunk_line[n++] = '\n';
        c->chunk_crlf = false;
    }
    if (last) {
        memcpy(c->chunk_line + n, "0\r\n\r\n", 5);
        n += 5;
    } else {
        n += (uint32_t)pt_chunked_size_line(c->chunk_line + n, len);
        c->chunk_left = (uint32_t)len;
    }
    c->chunk_line_len = n;
    c->chunk_line_sent = 0;
}

/* The body source: held bytes a retry re-sends first, then the caller's. */
static pt_slice body_peek(struct pt_call *c, bool *eos)
{
    if (pt_unlikely(c->held_pos < c->held_len))
        return pt_client_held_peek(c, eos);
    return c->ops->body_peek(c->user, eos);
}

static void body_consumed(struct pt_call *c, size_t n)
{
    if (pt_unlikely(c->held_pos < c->held_len)) {
        c->held_pos += n; /* gather never mixes held and fresh bytes */
        return;
    }
    if (pt_unlikely(c->retry_on))
        pt_client_hold(c, n);
    c->ops->body_consumed(c->user, n);
}

/* What goes out next: head, framing, payload. Returns the iovec count and
 * sets *data to the payload bytes included. */
static int gather(struct pt_call *c, struct iovec *iov, size_t *data, bool *last_frame)
{
    int n = 0;
    *data = 0;
    *last_frame = false;
    if (c->head_sent < c->head_len)
        iov[n++] = (struct iovec){c->head + c->head_sent, c->head_len - c->head_sent};
    bool eos = false;
    if (!c->req.chunked) {
        if (c->req_left == 0)
            return n;
        pt_slice s = body_peek(c, &eos);
        size_t len = PT_MIN((uint64_t)s.len, c->req_left);
        if (len)
            iov[n++] = (struct iovec){(char *)s.p, len};
        *data = len;
        return n;
    }
    if (c->body_eos_sent)
        return n;
    if (c->chunk_line_sent == c->chunk_line_len && c->chunk_left == 0) {
        pt_slice s = body_peek(c, &eos);
        if (s.len)
            next_chunk_frame(c, PT_MIN(s.len, (size_t)1 << 30), false);
        else if (eos)
            next_chunk_frame(c, 0, true);
    }
    if (c->chunk_line_sent < c->chunk_line_len) {
        iov[n++] = (struct iovec){c->chunk_line + c->chunk_line_sent,
                                  c->chunk_line_len - c->chunk_line_sent};
        *last_frame = c->chunk_left == 0;
    }
    if (c->chunk_left) {
        pt_slice s = body_peek(c, &eos);
        size_t len = PT_MIN(s.len, (size_t)c->chunk_left);
        if (len)
            iov[n++] = (struct iovec){(char *)s.p, len};
        *data = len;
    }
    return n;
}

/* Books `sent` bytes against the head, chunk framing and payload. */
static void account_sent(struct pt_call *c, size_t sent, bool last_frame)
{
    size_t h = PT_MIN(sent, (size_t)(c->head_len - c->head_sent));
    c->head_sent += (uint32_t)h;
    sent -= h;
    if (c->req.chunked && c->chunk_line_sent < c->chunk_line_len) {
        size_t f = PT_MIN(sent, (size_t)(c->chunk_line_len - c->chunk_line_sent));
        c->chunk_line_sent += (uint32_t)f;
        sent -= f;
        if (last_frame && c->chunk_line_sent == c->chunk_line_len)
            c->body_eos_sent = true;
    }
    if (sent) {
        body_consumed(c, sent);
        c->bytes_sent += sent;
        if (c->req.chunked) {
            c->chunk_left -= (uint32_t)sent;
            if (c->chunk_left == 0)
                c->chunk_crlf = true;
        } else {
            c->req_left -= sent;
        }
        /* The upstream is taking the body: its read timeout runs from the
         * last byte it took, not from the start of a long upload. */
        arm(c, read_timeout(c));
    }
    if (!c->sent_all && c->head_sent == c->head_len &&
        (c->req.chunked ? c->body_eos_sent : c->req_left == 0)) {
        c->sent_all = true;
        if (pt_unlikely(c->try_deadline_ms) && has_body(c)) {
            /* The body is out: per_try_timeout now bounds the wait for the
             * response head, however long the upload took. (A bodyless
             * request keeps the deadline set at the attempt's start:
             * connect, head and answer within one per_try_timeout.) */
            c->try_deadline_ms = loop_of(c)->now_ms + c->req.up->retry.per_try_timeout_ms;
            arm(c, read_timeout(c));
        }
    } else if (pt_unlikely(c->try_deadline_ms) && h && c->head_sent == c->head_len) {
        /* The head is out, the body goes on: the timer armed under the
         * per-try deadline yields to the read timeout. */
        arm(c, read_timeout(c));
    }
}

static int finish_connect(struct pt_call *c)
{
    int e = pt_uconn_finish_connect(c->uc);
    if (e == -EINPROGRESS || e == -EALREADY)
        return 0;
    if (e < 0) {
        int rs = c->reused ? retry_stale(c) : 0;
        if (rs != 0)
            return rs;
        return fail(c, PT_CALL_FAIL_CONNECT,
                    e == -ECONNREFUSED ? "upstream connection refused" : "upstream connect failed");
    }
    if (pt_unlikely(c->req.up->tls != NULL))
        return start_tls(c);
    c->phase = PT_CALL_WAITING;
    arm(c, read_timeout(c));
    return 1;
}

/* A new connection to a TLS upstream is connected: the handshake starts.
 * It runs within connect_timeout (the timer armed for the connect keeps
 * running); tls_step goes on with it. */
static int start_tls(struct pt_call *c)
{
    if (pt_uconn_start_tls(c->uc, c->req.up->tls, c->target) < 0)
        return fail(c, PT_CALL_FAIL_RESOURCES, "out of memory");
    return tls_step(c);
}

/* Drives the TLS handshake of a new connection: 1 when it completed, 0
 * while it waits for the server, -1 on failure. A failure is a connect
 * failure (retries under connect_failure, reported to the target). */
static int tls_step(struct pt_call *c)
{
    const char *why = NULL;
    int r = pt_uconn_handshake(c->uc, &why);
    if (r == 0) {
        c->readable = c->writable = false; /* the next event says which */
        return 0;
    }
    if (r < 0) {
        const char *text = pt_arena_strdup(c->req.arena, why);
        return fail(c, PT_CALL_FAIL_CONNECT, text ? text : "upstream TLS handshake failed");
    }
    c->phase = PT_CALL_WAITING;
    c->writable = true;
    c->readable = pt_tls_has_buffered(c->uc->tls);
    arm(c, read_timeout(c));
    return 1;
}

/* A tunnel's client-to-upstream bytes: unframed, as the caller offers
 * them; the caller's end is our FIN toward the upstream (half-close). */
static int pump_tunnel_write(struct pt_call *c)
{
    if (c->tunnel_wr_shut || !c->writable || !c->tunnel_open)
        return 0;
    bool eos = false;
    pt_slice s = c->ops->body_peek(c->user, &eos);
    if (s.len == 0) {
        if (!eos)
            return 0;
        c->tunnel_wr_shut = true;
        if (pt_uconn_shutdown_wr(c->uc) < 0)
            return fail(c, PT_CALL_FAIL_WRITE, "upstream write failed");
        return 1;
    }
    struct iovec iov = {(char *)s.p, s.len};
    ssize_t w = pt_uconn_sendv(c->uc, &iov, 1);
    if (w < 0) {
        if (errno == EAGAIN) {
            c->writable = false;
            return 0;
        }
        return fail(c, errno == ECONNRESET ? PT_CALL_FAIL_RESET : PT_CALL_FAIL_WRITE,
                    "upstream write failed");
    }
    c->ops->body_consumed(c->user, (size_t)w);
    c->bytes_sent += (uint64_t)w;
    arm(c, read_timeout(c)); /* the idle timer: any byte either way */
    return 1;
}

static int pump_write(struct pt_call *c)
{
    if (pt_unlikely(c->upgraded) && c->uc)
        return pump_tunnel_write(c);
    if (!c->uc)
        return 0;
    if (pt_unlikely(c->phase == PT_CALL_CONNECTING && c->uc->connected)) {
        /* TLS: connect() completed, the handshake is under way (or, on a
         * socket connected at once, not started). */
        if (!c->uc->tls)
            return start_tls(c);
        if (!c->readable && !c->writable)
            return 0;
        int r = tls_step(c);
        if (r <= 0 || !c->uc)
            return r;
    }
    if (!c->writable || c->body_abandoned || c->sent_all)
        return 0;
    if (!c->uc->connected) {
        int r = finish_connect(c);
        if (r <= 0 || !c->uc || !c->uc->connected || c->phase == PT_CALL_CONNECTING)
            return r;
    }
    struct iovec iov[3];
    size_t data;
    bool last_frame;
    int n = gather(c, iov, &data, &last_frame);
    if (n == 0)
        return 0;
    ssize_t w = pt_uconn_sendv(c->uc, iov, n);
    if (w < 0) {
        if (errno == EAGAIN) {
            c->writable = false;
            return 0;
        }
        int rs = c->head_sent == 0 ? retry_stale(c) : 0;
        if (rs != 0)
            return rs;
        if (c->head_sent == c->head_len) {
            /* The upstream had the whole head and stopped taking the body:
             * it may have answered early (its own 413) and closed. Stop
             * sending and read what it said, to EOF; the read side reports
             * a failure when it said nothing. */
            c->body_abandoned = true;
            c->readable = true;
            c->hup = true;
            return 1;
        }
        return fail(c, PT_CALL_FAIL_WRITE, "upstream write failed");
    }
    account_sent(c, (size_t)w, last_frame);
    return 1;
}

/* ---- receiving ---- */

/* Copies a parsed head out of the read buffer into the arena, so its
 * slices outlive the buffer's reuse for the body. */
static bool keep_head(struct pt_call *c, struct pt_call_head *h, const char *base, uint32_t len)
{
    char *copy = pt_arena_alloc(c->req.arena, len ? len : 1);
    struct pt_h1_header *f = pt_arena_alloc(c->req.arena, sizeof(*f) * (c->res.num_headers + 1));
    if (!copy || !f)
        return false;
    memcpy(copy, base, len);
#define REBASE(s) ((s).p = (s).p ? copy + ((s).p - base) : (s).p)
    h->status = c->res.status;
    h->reason = c->res.reason;
    REBASE(h->reason);
    for (size_t i = 0; i < c->res.num_headers; i++) {
        f[i] = c->res_hdrs[i];
        REBASE(f[i].name);
        REBASE(f[i].value);
    }
#undef REBASE
    h->fields = f;
    h->nfields = c->res.num_headers;
    h->content_length = c->res.framing.content_length;
    return true;
}

/* The final head is parsed: decide the body's framing. */
static int final_head(struct pt_call *c, uint32_t head_len)
{
    struct pt_buf *b = c->uc->rbuf;
    c->t_head_ns = pt_loop_now_ns(loop_of(c));
    if (!keep_head(c, &c->final, b->data + b->start, head_len))
        return fail(c, PT_CALL_FAIL_RESOURCES, "out of memory");
    pt_buf_consume(b, head_len);
    c->reusable = c->res.framing.keep_alive;
    int st = c->res.status;
    if (c->req.method_id == PT_METHOD_HEAD || st == 204 || st == 304) {
        c->final.frame = PT_FRAME_NONE;
        c->res_eos = true;
    } else if (c->res.framing.chunked) {
        c->final.frame = PT_FRAME_CHUNKED;
        pt_chunked_init(&c->res_ck);
    } else if (c->res.framing.content_length >= 0) {
        c->final.frame = PT_FRAME_LENGTH;
        c->res_left = (uint64_t)c->res.framing.content_length;
        c->res_eos = c->res_left == 0;
    } else {
        c->final.frame = PT_FRAME_CLOSE;
        c->reusable = false;
    }
    /* Answered before taking the whole body (e.g. its own 413): the
     * connection can't be reused safely. */
    if (!c->sent_all)
        c->reusable = false;
    /* A listed status is retried before the caller sees anything of it. */
    if (pt_unlikely(c->retry_on) && pt_status_in(&c->req.up->retry.statuses, st) &&
        pt_client_retry(c, PT_CALL_FAIL_NONE, st))
        return 1;
    if (pt_unlikely(c->try_deadline_ms)) {
        /* The head came in time: from now on the read timeout rules. */
        c->try_deadline_ms = 0;
        arm(c, read_timeout(c));
    }
    c->phase = PT_CALL_BODY;
    report(c, !pt_status_in(&c->req.up->failure_statuses, st));
    return 1;
}

/* A 101 to the Upgrade we asked for: the call becomes a tunnel. The head
 * is kept for the caller (it answers its client with it); every byte after
 * it, already read or to come, is the "body" until the upstream closes. No
 * retry from here on, and nothing is held for one. */
static int switch_protocols(struct pt_call *c, uint32_t head_len)
{
    struct pt_buf *b = c->uc->rbuf;
    c->t_head_ns = pt_loop_now_ns(loop_of(c));
    if (!keep_head(c, &c->final, b->data + b->start, head_len))
        return fail(c, PT_CALL_FAIL_RESOURCES, "out of memory");
    pt_buf_consume(b, head_len);
    c->final.frame = PT_FRAME_CLOSE;
    c->final.content_length = -1;
    c->reusable = false;
    c->upgraded = true;
    c->retry_on = false;
    c->try_deadline_ms = 0;
    c->writable = true; /* the tunnel's first write finds out */
    c->phase = PT_CALL_BODY;
    arm(c, read_timeout(c));
    report(c, true);
    return 1;
}

/* A 101 switches only to the protocol we asked for, and for WebSocket
 * only with the Sec-WebSocket-Accept the key we sent calls for (http/
 * websocket.h: a server that says 101 without really switching must not
 * get the client's raw bytes). */
static bool switch_agreed(struct pt_call *c)
{
    if (!pt_slice_ieq_cstr(c->req.upgrade, "websocket"))
        return false; /* the only upgrade the gateway asks for */
    const struct pt_headers *h = c->req.headers;
    for (uint32_t i = 0; i < h->n; i++)
        if (!h->f[i].dead && pt_slice_ieq_cstr(h->f[i].name, "Sec-WebSocket-Key"))
            return pt_ws_switch_valid(c->res_hdrs, c->res.num_headers, h->f[i].value);
    return false;
}

/* The parser's field array: per thread, not per call. The parser re-reads
 * a head from its start on every attempt and keep_head copies the fields
 * out at once, so nothing outlives one parse_heads; a request arena does
 * not carry max_headers × 40 bytes for it. */
static __thread struct pt_h1_header *parse_scratch;
static __thread size_t parse_scratch_cap;

void pt_call_thread_exit(void)
{
    free(parse_scratch);
    parse_scratch = NULL;
    parse_scratch_cap = 0;
}

/* Parses heads from the buffer: interim ones are offered one at a time,
 * the final one switches to the body. 1 on progress, 0 when incomplete. */
static int parse_heads(struct pt_call *c)
{
    struct pt_buf *b = c->uc->rbuf;
    struct pt_h1_limits lim = {c->req.max_headers, PT_BUF_SIZE - 1, PT_BUF_SIZE};
    if (parse_scratch_cap < c->req.max_headers) {
        struct pt_h1_header *n = realloc(parse_scratch, sizeof(*n) * c->req.max_headers);
        if (!n)
            return fail(c, PT_CALL_FAIL_RESOURCES, "out of memory");
        parse_scratch = n;
        parse_scratch_cap = c->req.max_headers;
    }
    c->res_hdrs = parse_scratch;
    while (pt_buf_len(b) > 0 && !c->interim_ready) {
        int r = pt_h1_parse_response(b->data + b->start, pt_buf_len(b), c->res_prev, &c->res,
                                     c->res_hdrs, &lim);
        if (r == PT_H1_INCOMPLETE) {
            c->res_prev = pt_buf_len(b);
            return 0;
        }
        if (r == PT_H1_ERROR) {
            c->reusable = false;
            return fail(c, PT_CALL_FAIL_PROTOCOL, "invalid upstream response");
        }
        c->res_prev = 0;
        if (c->res.status >= 200)
            return final_head(c, (uint32_t)r);
        if (c->res.status == 101) {
            if (!c->req.upgrade.len || !c->sent_all)
                return fail(c, PT_CALL_FAIL_PROTOCOL, "unexpected protocol switch");
            if (!switch_agreed(c))
                return fail(c, PT_CALL_FAIL_PROTOCOL, "invalid upstream protocol switch");
            return switch_protocols(c, (uint32_t)r);
        }
        /* A stray 100 is ours to answer, not forwarded; other 1xx (103
         * Early Hints) are offered to the caller (RFC 9110 §15.2). */
        if (c->res.status != 100) {
            if (!keep_head(c, &c->interim, b->data + b->start, (uint32_t)r))
                return fail(c, PT_CALL_FAIL_RESOURCES, "out of memory");
            c->interim_ready = true;
            c->shown = true;
        }
        pt_buf_consume(b, (uint32_t)r);
    }
    return 1;
}

/* Classifies the body bytes now in the read buffer. */
static bool scan_body(struct pt_call *c)
{
    struct pt_buf *b = c->uc->rbuf;
    uint32_t avail = pt_buf_len(b);
    if (c->res_ready >= avail || c->res_eos)
        return true;
    switch (c->final.frame) {
    case PT_FRAME_LENGTH:
        c->res_ready = (uint32_t)PT_MIN((uint64_t)avail, c->res_left);
        if (avail > c->res_left)
            c->reusable = false; /* bytes beyond the body */
        if (c->res_ready == c->res_left)
            c->res_eos = true;
        break;
    case PT_FRAME_CLOSE:
        c->res_ready = avail;
        break;
    case PT_FRAME_CHUNKED: {
        bool done = false;
        char *p = b->data + b->start + c->res_ready;
        size_t len = avail - c->res_ready, out = 0;
        ssize_t k = pt_chunked_decode(&c->res_ck, p, len, &out, &done);
        if (k < 0)
            return false;
        if ((size_t)k < len)
            c->reusable = false; /* bytes beyond the body */
        /* Payload now sits at p[0..out); drop the consumed framing. */
        b->end = b->start + c->res_ready + (uint32_t)out;
        c->res_ready += (uint32_t)out;
        c->res_eos = done;
        break;
    }
    case PT_FRAME_NONE:
        break;
    }
    return true;
}

/* TLS 1.3: the server's verdict on our certificate comes after our side
 * of the handshake is over, as an alert in place of the response. The
 * request never reached the application: a connect failure. */
static int tls_refused(struct pt_call *c)
{
    const char *text =
        pt_arena_sprintf(c->req.arena, "upstream TLS handshake failed: %s", pt_tls_last_error());
    return fail(c, PT_CALL_FAIL_CONNECT, text ? text : "upstream TLS handshake failed");
}

/* A read that returned 0 (EOF) or an error. */
static int read_ended(struct pt_call *c, ssize_t n)
{
    if (c->phase < PT_CALL_BODY) {
        int rs = !c->res_any && c->head_sent == c->head_len ? retry_stale(c) : 0;
        if (rs != 0)
            return rs;
        return fail(c, PT_CALL_FAIL_RESET,
                    n == 0 ? "upstream closed the connection" : "upstream connection reset");
    }
    /* A body that ends at close ends at a clean close only: a reset may
     * have lost bytes. Over TLS, clean means close_notify: a bare FIN can
     * come from anyone on the path (a truncation attack). */
    if (c->final.frame == PT_FRAME_CLOSE && n == 0 &&
        pt_likely(!c->uc->tls || pt_tls_closed_cleanly(c->uc->tls))) {
        c->res_eos = true;
        c->readable = false;
        return 1;
    }
    if (c->final.frame == PT_FRAME_CLOSE && n == 0)
        return fail(c, PT_CALL_FAIL_RESET, "upstream closed TLS without close_notify");
    return fail(c, PT_CALL_FAIL_RESET,
                n == 0 ? "upstream truncated the response" : "upstream connection reset");
}

static int pump_read(struct pt_call *c)
{
    struct pt_uconn *uc = c->uc;
    if (!uc || !uc->connected || c->phase == PT_CALL_CONNECTING)
        return 0;
    /* Heads already here behind an interim one the caller just took. */
    if (c->phase == PT_CALL_WAITING && !c->interim_ready && uc->rbuf && pt_buf_len(uc->rbuf) > 0 &&
        c->res_prev == 0) {
        int r = parse_heads(c);
        if (r < 0)
            return r;
        if (c->phase == PT_CALL_BODY && !scan_body(c))
            return fail(c, PT_CALL_FAIL_PROTOCOL, "invalid upstream body framing");
        if (r > 0 || c->phase == PT_CALL_BODY)
            return 1;
    }
    if (!c->readable || c->res_eos)
        return 0;
    if (c->phase >= PT_CALL_BODY && uc->rbuf && pt_buf_len(uc->rbuf) > 0)
        return 0; /* backpressure: the caller has not taken what we have */
    if (c->interim_ready)
        return 0; /* the same for interim heads */
    if (!uc->rbuf) {
        uc->rbuf = pt_buf_get(c->ob->bufs, 0);
        if (!uc->rbuf)
            return fail(c, PT_CALL_FAIL_RESOURCES, "out of memory");
    }
    struct pt_buf *b = uc->rbuf;
    if (c->phase >= PT_CALL_BODY)
        b->start = b->end = 0;
    else if (pt_buf_space(b) == 0)
        pt_buf_compact(b);
    if (pt_buf_space(b) == 0)
        return fail(c, PT_CALL_FAIL_PROTOCOL, "upstream response head too large");
    size_t space = pt_buf_space(b);
    ssize_t n = pt_uconn_recv(uc, b->data + b->end, space);
    if (n > 0 && (size_t)n < space && !c->hup)
        c->readable = false;
    if (n < 0 && errno == EAGAIN) {
        c->readable = false;
        return 0;
    }
    if (n < 0 && errno == EINTR)
        return 1;
    if (pt_unlikely(n < 0 && errno == EPROTO && uc->tls && !c->reused && !c->res_any))
        return tls_refused(c);
    if (n <= 0)
        return read_ended(c, n);
    b->end += (uint32_t)n;
    c->res_any = true;
    arm(c, read_timeout(c));
    if (c->phase < PT_CALL_BODY) {
        int r = parse_heads(c);
        if (r < 0 || c->phase < PT_CALL_BODY)
            return r < 0 ? r : 1;
    }
    if (!scan_body(c)) {
        c->reusable = false;
        return fail(c, PT_CALL_FAIL_PROTOCOL, "invalid upstream body framing");
    }
    return 1;
}

/* ---- the caller's side ---- */

const struct pt_call_head *pt_call_interim(struct pt_call *c)
{
    return c->interim_ready ? &c->interim : NULL;
}

void pt_call_interim_done(struct pt_call *c)
{
    c->interim_ready = false;
}

pt_slice pt_call_body_peek(struct pt_call *c, bool *eos)
{
    *eos = false;
    if (c->phase != PT_CALL_BODY && c->phase != PT_CALL_DONE)
        return (pt_slice){NULL, 0};
    *eos = c->res_eos;
    if (!c->uc || !c->uc->rbuf || c->res_ready == 0)
        return (pt_slice){"", 0};
    return (pt_slice){c->uc->rbuf->data + c->uc->rbuf->start, c->res_ready};
}

void pt_call_body_consume(struct pt_call *c, size_t n)
{
    if (n == 0) {
        /* Nothing to take, but the caller saw the end: a body-less or
         * already drained response is done all the same. */
        if (c->res_eos && c->res_ready == 0 && c->phase == PT_CALL_BODY)
            c->phase = PT_CALL_DONE;
        return;
    }
    pt_buf_consume(c->uc->rbuf, (uint32_t)n);
    c->res_ready -= (uint32_t)n;
    if (pt_unlikely(c->upgraded) && pt_buf_len(c->uc->rbuf) == 0) {
        /* A tunnel is mostly quiet: it holds no buffer between bursts (the
         * next read takes one from the worker's pool). */
        pt_buf_put(c->ob->bufs, c->uc->rbuf);
        c->uc->rbuf = NULL;
    }
    if (c->final.frame == PT_FRAME_LENGTH)
        c->res_left -= n;
    if (c->res_eos && c->res_ready == 0)
        c->phase = PT_CALL_DONE;
}

static void uncount(struct pt_call *c)
{
    if (c->counted) {
        c->counted = false;
        pt_state_active_dec(c->target->state);
    }
}

void pt_call_finish(struct pt_call *c)
{
    pt_client_trace_end(c, c->final.status, PT_CALL_FAIL_NONE);
    uncount(c);
    if (!c->uc)
        return;
    struct pt_uconn *uc = c->uc;
    c->uc = NULL;
    /* hup: the upstream closed (or reset) it; that edge was consumed, so an
     * idle connection would never be seen to die. readable: an edge came
     * that nobody read: the socket may hold bytes, and an edge-triggered
     * loop reports them never again. */
    if (c->reusable && c->res_eos && c->res_ready == 0 && c->sent_all && !c->hup && !c->readable)
        pt_uconn_release(uc, c->req.up->keepalive, c->req.pool_idle_ms);
    else
        pt_uconn_close(uc);
    if (c->phase != PT_CALL_FAILED)
        c->phase = PT_CALL_DONE;
}

void pt_call_expire(struct pt_call *c)
{
    if (c->phase != PT_CALL_FAILED)
        pt_client_fail_now(c, PT_CALL_FAIL_TIMEOUT, "upstream timeout"); /* the caller's: final */
}

void pt_call_abort(struct pt_call *c)
{
    /* The caller stopped it (its client went away, a filter answered):
     * the head's status when one came. */
    pt_client_trace_end(c, pt_call_head(c) ? c->final.status : 0, PT_CALL_FAIL_NONE);
    uncount(c);
    if (c->uc) {
        pt_uconn_close(c->uc);
        c->uc = NULL;
    }
}
