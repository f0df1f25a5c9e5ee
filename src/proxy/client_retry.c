/*
 * client_retry.c — retries of an outbound call (upstreams.*.retries):
 * when to start another attempt, the retry budget, and the request body
 * bytes held so that a retry can send them again. See client.h.
 *
 * An attempt ends in a retry when all of these hold:
 *   - its failure is listed in `on` (connect_failure, reset, timeout), or
 *     its final head has a listed status, and nothing of the response
 *     reached the caller (no interim head was offered);
 *   - attempts remain;
 *   - it is safe: no byte of the request was written upstream in this
 *     attempt, or the method is idempotent; and every body byte the
 *     caller gave is still held (a larger body that started streaming is
 *     never sent twice);
 *   - a usable target exists (another one when there is one);
 *   - the upstream's budget (retry_budget.h) allows it.
 * The caller never sees a retried attempt: its phase goes back to
 * CONNECTING/WAITING and the new attempt's outcome is what it gets.
 */
#include "proxy/client_int.h"

#include "proxy/retry_budget.h"

static uint64_t now_s(const struct pt_call *c)
{
    return c->ob->loop->now_ms / 1000u;
}

static void start_deadline(struct pt_call *c)
{
    uint64_t t = c->req.up->retry.per_try_timeout_ms;
    c->try_deadline_ms = t ? c->ob->loop->now_ms + t : 0;
}

void pt_client_retry_init(struct pt_call *c)
{
    /* A call to a fixed target (a health probe, a URL) is never retried:
     * a probe must see the failure, and there is nowhere else to go. */
    if (c->req.target)
        return;
    const struct pt_upstream *u = c->req.up;
    start_deadline(c);
    if (u->retry.attempts <= 1)
        return;
    c->retry_on = true;
    if (u->state)
        pt_retry_budget_request(&u->state->retry_budget, now_s(c));
    /* Hold the body for a replay when all of it fits (a chunked body as
     * long as it does). */
    bool body = c->req.chunked || c->req.content_length > 0;
    c->hold = body && u->retry.max_replay_body > 0 &&
              (c->req.chunked || (uint64_t)c->req.content_length <= u->retry.max_replay_body);
}

/* ---- the held body ---- */

pt_slice pt_client_held_peek(struct pt_call *c, bool *eos)
{
    /* eos only when the caller has nothing after the held bytes. */
    bool ceos = false;
    pt_slice more = c->ops->body_peek(c->user, &ceos);
    *eos = more.len == 0 && ceos;
    return (pt_slice){c->held + c->held_pos, (size_t)(c->held_len - c->held_pos)};
}

/* Room for `n` more held bytes: a Content-Length body gets its size at
 * once; a chunked one grows by doubling up to max_replay_body. */
static bool hold_room(struct pt_call *c, size_t n)
{
    uint64_t need = c->held_len + n, cap = c->req.up->retry.max_replay_body;
    if (need <= c->held_cap)
        return true;
    if (need > cap)
        return false;
    uint64_t sz;
    if (!c->req.chunked)
        sz = (uint64_t)c->req.content_length;
    else
        for (sz = c->held_cap ? c->held_cap * 2 : 4096; sz < need; sz *= 2)
            ;
    sz = PT_MIN(sz, cap);
    char *p = pt_arena_alloc(c->req.arena, sz);
    if (!p)
        return false;
    if (c->held_len)
        memcpy(p, c->held, c->held_len);
    c->held = p;
    c->held_cap = sz;
    return true;
}

void pt_client_hold(struct pt_call *c, size_t n)
{
    if (!c->hold || !hold_room(c, n)) {
        /* Past max_replay_body (or never held): this body can't be sent
         * again; what was held is dropped with the arena. */
        c->hold = false;
        c->held_lost = true;
        return;
    }
    bool eos;
    pt_slice s = c->ops->body_peek(c->user, &eos); /* the bytes being consumed */
    memcpy(c->held + c->held_len, s.p, n);
    c->held_len += n;
    c->held_pos = c->held_len;
}

/* ---- the decision ---- */

static uint32_t condition_of(enum pt_call_fail why)
{
    switch (why) {
    case PT_CALL_FAIL_CONNECT:
    case PT_CALL_FAIL_CONNECT_TO:
        return PT_RETRY_ON_CONNECT;
    case PT_CALL_FAIL_RESET:
    case PT_CALL_FAIL_WRITE:
        return PT_RETRY_ON_RESET;
    case PT_CALL_FAIL_TIMEOUT:
        return PT_RETRY_ON_TIMEOUT;
    default:
        return 0; /* protocol errors, our own limits, a stalled client */
    }
}

static bool safe_to_resend(const struct pt_call *c)
{
    if (c->held_lost)
        return false;
    return c->head_sent == 0 || pt_client_idempotent(c->req.method_id);
}

/* Back to the state of a call that has a target and no connection. */
static void reset_attempt(struct pt_call *c)
{
    c->phase = PT_CALL_CONNECTING;
    c->reused = false;
    c->sent_all = false;
    c->body_abandoned = false;
    c->bytes_sent = 0;
    c->t_connect_ns = 0; /* p2c_ewma's sample is this attempt's own */
    c->t_head_ns = 0;
    c->head_sent = 0;
    c->readable = c->writable = c->hup = false;
    c->body_eos_sent = false;
    c->chunk_line_len = c->chunk_line_sent = 0;
    c->chunk_left = 0;
    c->chunk_crlf = false;
    c->req_left =
        c->req.content_length > 0 && !c->req.chunked ? (uint64_t)c->req.content_length : 0;
    c->retries = 0;
    c->res_prev = 0;
    c->res_any = false;
    c->interim_ready = false;
    memset(&c->final, 0, sizeof(c->final));
    c->res_left = 0;
    c->res_ready = 0;
    c->res_eos = false;
    c->reusable = false;
    c->reported = false;
    c->held_pos = 0;
}

bool pt_client_retry(struct pt_call *c, enum pt_call_fail why, int status)
{
    const struct pt_upstream *u = c->req.up;
    const struct pt_retry_conf *rc = &u->retry;
    if (why != PT_CALL_FAIL_NONE && !(rc->on & condition_of(why)))
        return false;
    if (c->attempts >= rc->attempts || c->shown || c->phase >= PT_CALL_BODY || !safe_to_resend(c))
        return false;
    const struct pt_target *prev = c->target;
    uint32_t ntried = c->ntried;
    const struct pt_target *next = pt_client_pick(c);
    if (!next)
        return false;
    if (u->state && !pt_retry_budget_take(&u->state->retry_budget, rc->budget, now_s(c))) {
        c->ntried = ntried;
        c->budget_refused = true;
        return false;
    }
    /* This attempt's outcome goes to its own target. */
    pt_client_trace_end(c, status, why);
    pt_client_report_attempt(
        c, why == PT_CALL_FAIL_NONE ? !pt_status_in(&u->failure_statuses, status) : false);
    if (c->uc) {
        pt_uconn_close(c->uc);
        c->uc = NULL;
    }
    /* The active count moves with the request. */
    if (c->counted)
        pt_state_active_dec(prev->state);
    c->target = next;
    pt_state_active_inc(next->state);
    c->counted = true;
    reset_attempt(c);
    c->attempts++;
    c->req.rand = c->req.rand * 6364136223846793005ull + 1442695040888963407ull;
    pt_client_trace_begin(c);
    /* Host names the target when the caller sent none, traceparent the
     * new attempt's span: a new head. */
    if (((c->req.add_host && next != prev) || c->req.trace) && !pt_client_build_head(c)) {
        pt_client_fail_now(c, PT_CALL_FAIL_RESOURCES, "out of memory");
        return true;
    }
    start_deadline(c);
    pt_client_take_connection(c, false);
    return true;
}
