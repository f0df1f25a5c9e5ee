/*
 * exchange_body.c — the request body for filters that want it whole
 * (filter.h: on_request_body, PT_BODY_WHOLE): gathered from the codec
 * before dispatch, handed to the filters, then sent upstream from the
 * request arena with a Content-Length of its final size.
 *
 * Only a route whose chain has a request-body hook its config uses, and
 * a request one of those filters asked for in on_request, comes here
 * (ctx->request_body_want); every other request dispatches as before and
 * its body streams from the codec to the call.
 *
 * Gathering pulls with the codec's body_peek/body_consumed on every pump
 * (pt_exchange_pump), so the codec keeps reading while the arena takes the
 * bytes: a body with a Content-Length goes into one block of that size, a
 * chunked one into a list of parts joined at the end. A client that sends
 * nothing for the route's timeout (else the upstream's read_timeout) gets
 * 408 and is closed, like a stalled body on the streaming path. A body
 * longer than ctx->request_body_max stops the gathering: what was taken
 * goes upstream first, then the rest streams from the codec, all of it
 * unchanged and with the client's framing (the filters are not called).
 * max_body_bytes is the codec's business and applies first (413).
 *
 * Ownership: the parts and the gathered body live in the request arena;
 * the idle timer is ex->deadline (free: no filter is suspended here).
 */
#include "gateway/exchange_int.h"

struct rb_part {
    pt_slice s;
    struct rb_part *next;
};

static uint64_t idle_ms(const struct pt_exchange *ex)
{
    if (ex->route->timeout_ms)
        return ex->route->timeout_ms;
    return ex->up && ex->up->read_timeout_ms ? ex->up->read_timeout_ms : 30000;
}

static void gather_stalled(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_exchange *ex = pt_container_of(t, struct pt_exchange, deadline);
    if (!ex->rb_gathering)
        return;
    pt_exchange_respond(ex, 408, "request body timeout", true); /* stops the gathering */
    ex->codec->wake(ex->conn);                                  /* last act */
}

void pt_exchange_gather_stop(struct pt_exchange *ex)
{
    if (!ex->rb_gathering)
        return;
    ex->rb_gathering = false;
    pt_timer_cancel(&ex->w->loop, &ex->deadline);
}

void pt_exchange_gather_start(struct pt_exchange *ex)
{
    int64_t cl = ex->req.chunked ? -1 : ex->req.content_length;
    uint64_t max = ex->fctx.request_body_max;
    if (!ex->req.chunked && cl <= 0) {
        pt_exchange_dispatch(ex); /* no body: nothing to gather */
        return;
    }
    if (cl > 0 && (uint64_t)cl > max) {
        pt_exchange_dispatch(ex); /* streams unchanged */
        return;
    }
    if (cl > 0) {
        char *buf = pt_arena_alloc(ex->arena, (size_t)cl);
        if (!buf) {
            pt_exchange_respond(ex, 500, "out of memory", true);
            return;
        }
        ex->rb_body = (pt_slice){buf, 0};
    }
    ex->rb_gathering = true;
    ex->want_continue = true; /* the codec may answer 100 Continue */
    pt_timer_arm(&ex->w->loop, &ex->deadline, idle_ms(ex), gather_stalled);
    pt_exchange_gather_pump(ex);
}

/* Appends a copy of `s` (a chunked body's part). False when out of memory. */
static bool add_part(struct pt_exchange *ex, pt_slice s)
{
    struct rb_part *p = pt_arena_alloc(ex->arena, sizeof(*p));
    char *copy = pt_arena_alloc(ex->arena, s.len);
    if (!p || !copy)
        return false;
    memcpy(copy, s.p, s.len);
    *p = (struct rb_part){{copy, s.len}, NULL};
    if (ex->rb_last)
        ((struct rb_part *)ex->rb_last)->next = p;
    else
        ex->rb_first = p;
    ex->rb_last = p;
    return true;
}

/* The parts as one slice in ex->rb_body (a Content-Length body is
 * already one). False when out of memory. */
static bool join_parts(struct pt_exchange *ex)
{
    if (!ex->rb_first)
        return true;
    char *buf = pt_arena_alloc(ex->arena, ex->rb_len ? ex->rb_len : 1);
    if (!buf)
        return false;
    size_t off = 0;
    for (struct rb_part *p = ex->rb_first; p; p = p->next) {
        memcpy(buf + off, p->s.p, p->s.len);
        off += p->s.len;
    }
    ex->rb_body = (pt_slice){buf, off};
    ex->rb_first = ex->rb_last = NULL;
    return true;
}

/* The whole body is in: the filters' hooks, then the call, with the
 * result's length. */
static void gathered(struct pt_exchange *ex)
{
    pt_exchange_gather_stop(ex);
    int r = pt_chain_run_request_body(&ex->route->chain, &ex->fctx, ex->states, &ex->rb_body);
    if (r != PT_FILTER_CONTINUE) {
        pt_exchange_respond(ex, 500, "filter error", false);
        return;
    }
    ex->rb_sending = true;
    ex->rb_eos = true;
    ex->req.chunked = false;
    ex->req.content_length = (int64_t)ex->rb_body.len;
    pt_exchange_dispatch(ex);
}

/* Longer than any filter takes: what was taken goes first, unchanged,
 * then the codec's rest, in the client's framing. */
static void overflowed(struct pt_exchange *ex)
{
    pt_chain_request_body_too_large(&ex->route->chain, &ex->fctx);
    pt_exchange_gather_stop(ex);
    ex->rb_sending = true;
    ex->rb_eos = false;
    pt_exchange_dispatch(ex);
}

int pt_exchange_gather_pump(struct pt_exchange *ex)
{
    int progress = 0;
    while (ex->rb_gathering) {
        bool eos = false;
        pt_slice s = ex->codec->body_peek(ex->conn, &eos);
        if (s.len == 0 && !eos)
            break;
        if (ex->rb_len + s.len > ex->fctx.request_body_max) {
            if (!join_parts(ex)) {
                pt_exchange_respond(ex, 500, "out of memory", true);
                return 1;
            }
            overflowed(ex);
            return 1;
        }
        bool ok = true;
        if (s.len && ex->req.chunked)
            ok = add_part(ex, s);
        else if (s.len)
            memcpy((char *)ex->rb_body.p + ex->rb_body.len, s.p, s.len), ex->rb_body.len += s.len;
        if (!ok) {
            pt_exchange_respond(ex, 500, "out of memory", true);
            return 1;
        }
        ex->rb_len += s.len;
        ex->bytes_in += s.len;
        ex->codec->body_consumed(ex->conn, s.len);
        progress = 1;
        if (eos) {
            if (!join_parts(ex)) {
                pt_exchange_respond(ex, 500, "out of memory", true);
                return 1;
            }
            gathered(ex);
            return 1;
        }
        pt_timer_arm(&ex->w->loop, &ex->deadline, idle_ms(ex), gather_stalled);
    }
    return progress;
}

pt_slice pt_exchange_gathered_peek(struct pt_exchange *ex, bool *eos)
{
    if (ex->rb_off < ex->rb_body.len) {
        *eos = ex->rb_eos;
        return (pt_slice){ex->rb_body.p + ex->rb_off, ex->rb_body.len - ex->rb_off};
    }
    if (ex->rb_eos) {
        *eos = true;
        return (pt_slice){"", 0};
    }
    return ex->codec->body_peek(ex->conn, eos);
}

void pt_exchange_gathered_consumed(struct pt_exchange *ex, size_t n)
{
    size_t left = ex->rb_body.len - ex->rb_off;
    if (left) {
        ex->rb_off += PT_MIN(n, left);
        return; /* (the call takes at most what one peek gave) */
    }
    ex->bytes_in += n;
    ex->codec->body_consumed(ex->conn, n);
}
