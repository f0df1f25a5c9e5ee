/*
 * exchange.c — see exchange.h. The request's way through the gateway:
 * request checks, routing, rewrite, forwarding headers, the upstream call
 * and the response head and body it produces, and the log line.
 *
 * Filters and the services they get (timers, calls, resume, cancel) are
 * in exchange_filters.c.
 */
#include "gateway/exchange.h"
#include "gateway/exchange_int.h"

#include "core/log.h"
#include "core/tls.h"
#include "filters/registry.h"
#include "gateway/respond.h"
#include "http/cookie.h"
#include "http/h1_write.h"
#include "http/path.h"
#include "http/websocket.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

/* Per worker, no syscalls: request ids need to be unique, not
 * unpredictable. */
uint64_t pt_worker_random(struct pt_worker *w)
{
    return pt_xorshift64s(&w->rng);
}

static void gen_request_id(struct pt_worker *w, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        uint64_t x = pt_worker_random(w);
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

void pt_exchange_init(struct pt_exchange *ex, struct pt_worker *w, struct pt_arena *a,
                      const struct pt_codec_ops *codec, void *conn)
{
    memset(ex, 0, sizeof(*ex));
    ex->w = w;
    ex->arena = a;
    ex->codec = codec;
    ex->conn = conn;
    ex->gen = w->gen;
    pt_worker_pin(w, ex->gen);
    ex->content_length = -1;
    ex->fctx.identity = &ex->identity;
    gen_request_id(w, ex->reqid_buf);
    ex->reqid = (pt_slice){ex->reqid_buf, 32};
}

void pt_exchange_set_request_id(struct pt_exchange *ex, pt_slice client_value)
{
    if (valid_request_id(client_value))
        ex->reqid = client_value;
}

/* ---- gateway-made responses ---- */

void pt_exchange_respond(struct pt_exchange *ex, int status, const char *error, bool close)
{
    pt_exchange_respond_body(ex, status, error, (pt_slice){0}, (pt_slice){0}, close);
}

static void call_over(struct pt_exchange *ex);

void pt_exchange_respond_body(struct pt_exchange *ex, int status, const char *error, pt_slice body,
                              pt_slice ctype, bool close)
{
    if (ex->calling) {
        pt_call_abort(ex->call);
        ex->calling = false;
        call_over(ex);
    }
    if (pt_unlikely(ex->rb_gathering))
        pt_exchange_gather_stop(ex);
    if (ex->response_started) {
        /* A second response would land inside the first one's body. */
        if (!ex->status)
            ex->status = status;
        ex->cut = error ? error : pt_error_text(status);
        ex->error = ex->cut;
        return;
    }
    ex->resp = PT_RESP_GATEWAY;
    ex->resp_seq++;
    ex->status = status;
    ex->gw_error = error;
    /* A filter's 204 (a CORS preflight) or 304 is an answer, not an error
     * (the log line and the trace span say so). */
    ex->error = error ? error : status >= 400 ? pt_error_text(status) : NULL;
    ex->gw_body = body;
    ex->gw_ctype = ctype;
    ex->gw_raw = false;
    ex->close_after |= close;
    ex->bf_have = false;
    pt_exchange_server_timing(ex);
}

/* ---- circuit breaker and max_concurrent (proxy/admission.h) ---- */

static uint64_t now_ms(const struct pt_exchange *ex)
{
    return pt_loop_now_ns(&ex->w->loop) / 1000000u;
}

/* Refused before the upstream was contacted: 503 JSON, with Retry-After
 * when the breaker knows when to ask again; unless a filter answers for
 * the failed upstream first, as on the failed-call path (the cache's
 * stale_if_error while the breaker is open). */
static void refuse(struct pt_exchange *ex, enum pt_admit why, uint32_t retry_after_s)
{
    if (ex->route && pt_exchange_filters_upstream_failed(ex, 503))
        return;
    pt_exchange_respond(ex, 503, pt_admit_text(why), false);
    char *v = retry_after_s ? pt_arena_alloc(ex->arena, 12) : NULL;
    if (v) {
        int n = snprintf(v, 12, "%u", retry_after_s);
        pt_headers_add(&ex->resph, ex->arena, PT_SLICE("Retry-After"), (pt_slice){v, (size_t)n});
    }
}

/* max_concurrent, then the breaker. False when refused (answered). */
static bool admit(struct pt_exchange *ex)
{
    uint32_t retry_after;
    enum pt_admit r = pt_admit(ex->up, &ex->up_adm, now_ms(ex), &retry_after);
    if (pt_likely(r == PT_ADMIT_OK))
        return true;
    refuse(ex, r, retry_after);
    return false;
}

/* The request's final outcome for the breaker, once. */
static void breaker_outcome(struct pt_exchange *ex, int result)
{
    if (pt_unlikely(ex->up_adm.breaker_owed))
        pt_admission_outcome(ex->up, &ex->up_adm, now_ms(ex), result);
}

/* The upstream call is over (or never started): settle what admit took. */
static void call_over(struct pt_exchange *ex)
{
    if (pt_unlikely(ex->up_adm.breaker_owed || ex->up_adm.slot))
        pt_admission_end(ex->up, &ex->up_adm, now_ms(ex));
}

/* An upstream failure: an error response while nothing went out, else
 * the client is cut off (a broken response never looks complete). */
static void upstream_failed(struct pt_exchange *ex)
{
    const struct pt_call *c = ex->call;
    breaker_outcome(ex, pt_admission_result(ex->up, c->fail, 0));
    int status = 502;
    bool close = false;
    switch (c->fail) {
    case PT_CALL_FAIL_CONNECT_TO:
    case PT_CALL_FAIL_TIMEOUT:
        status = 504;
        break;
    case PT_CALL_FAIL_NO_TARGET:
    case PT_CALL_FAIL_RESOURCES:
        status = 503;
        break;
    case PT_CALL_FAIL_BODY_STALL:
        /* The client stalled, not the upstream (408, like nginx's
         * client_body_timeout); the body is unfinished: close. */
        status = 408;
        close = true;
        break;
    default:
        break;
    }
    if (!close && ex->route && pt_exchange_filters_upstream_failed(ex, status))
        return; /* a filter answered (the cache's stale_if_error) */
    pt_exchange_respond(ex, status, c->fail_text, close);
}

/* ---- request start ---- */

static const char *method_list(struct pt_arena *a, uint32_t mask)
{
    size_t cap = 24;
    for (int m = 1; m < PT_METHOD__COUNT; m++)
        cap += pt_method_names[m].len + 2;
    char *o = pt_arena_alloc(a, cap + 16);
    if (!o)
        return NULL;
    size_t n = pt_h1_put(o, PT_SLICE("Allow: "));
    bool first = true;
    for (int m = 1; m < PT_METHOD__COUNT; m++) {
        if (!(mask & (1u << m)))
            continue;
        if (!first) {
            o[n++] = ',';
            o[n++] = ' ';
        }
        n += pt_h1_put(o + n, pt_method_names[m]);
        first = false;
    }
    o[n] = 0;
    return o;
}

/* Request header names with `_` (limits.headers_with_underscores): drops
 * them, or answers 400 and returns false. */
static bool screen_underscores(struct pt_exchange *ex, uint8_t mode)
{
    for (uint32_t i = 0; i < ex->reqh.n; i++) {
        struct pt_hfield *f = &ex->reqh.f[i];
        if (f->dead || !memchr(f->name.p, '_', f->name.len))
            continue;
        if (mode == PT_US_REJECT) {
            pt_exchange_respond(ex, 400, "header name with an underscore", true);
            return false;
        }
        f->dead = true;
    }
    return true;
}

int pt_exchange_path(const struct pt_limits *lim, struct pt_arena *a, pt_slice p, pt_slice *out,
                     const char **why)
{
    bool escaped;
    *out = p;
    *why = pt_path_screen(p.p, p.len, lim->escaped_slashes, lim->semicolons, &escaped);
    if (*why)
        return 400;
    bool decode = escaped && lim->escaped_slashes == PT_ESC_DECODE;
    bool norm = lim->normalize_path && pt_path_needs_normalize(p.p, p.len, lim->merge_slashes);
    if (!decode && !norm)
        return 0;
    char *np = pt_arena_alloc(a, p.len ? p.len : 1);
    if (!np) {
        *why = "out of memory";
        return 500;
    }
    memcpy(np, p.p, p.len);
    size_t n = decode ? pt_path_decode_slashes(np, p.len) : p.len;
    if (lim->normalize_path) {
        long nl = pt_path_normalize(np, n, lim->merge_slashes);
        if (nl < 0) {
            *why = "invalid path: `..` above the root or a bad `%` escape";
            return 400;
        }
        n = (size_t)nl;
    }
    *out = (pt_slice){np, n};
    return 0;
}

/* One spelling of the path for routing, filters and the upstream (a
 * refused path is logged as it was sent). */
static bool normalize(struct pt_exchange *ex)
{
    const char *why;
    int st = pt_exchange_path(&ex->gen->limits, ex->arena, ex->req.path, &ex->req.path, &why);
    if (st) {
        pt_exchange_respond(ex, st, why, true);
        return false;
    }
    return true;
}

static bool has_cors(const struct pt_route *rt)
{
    for (uint32_t i = 0; i < rt->chain.n_all; i++)
        if (rt->chain.all[i].def == &pt_filter_cors)
            return true;
    return false;
}

/* A CORS preflight that no route takes as OPTIONS (405): it asks about
 * another method, so it is routed as that method, then by host and path
 * alone; a route found so answers it only when it has cors. The 405 path
 * only: an ordinary lookup pays nothing. Returns 0 with ex->rr set, or
 * the original 405 with the original result in ex->rr. */
static int route_preflight(struct pt_exchange *ex, struct pt_route_input *in)
{
    const struct pt_hfield *acrm =
        pt_headers_find(&ex->reqh, PT_SLICE("Access-Control-Request-Method"));
    if (!acrm || !acrm->value.len || !pt_headers_find_token(&ex->reqh, PT_TOK_ORIGIN))
        return 405;
    struct pt_route_result saved = ex->rr;
    in->method_id = pt_method_lookup(acrm->value.p, acrm->value.len);
    if (pt_router_match(ex->gen->router, in, &ex->rr) == 0 && has_cors(ex->rr.route))
        return 0;
    in->any_method = true;
    if (pt_router_match(ex->gen->router, in, &ex->rr) == 0 && has_cors(ex->rr.route))
        return 0;
    ex->rr = saved;
    return 405;
}

static bool route(struct pt_exchange *ex)
{
    pt_slice host = pt_router_host(ex->req.host);
    struct pt_route_input in = {host,      ex->req.path, ex->req.query, ex->req.method_id,
                                &ex->reqh, false};
    int st = pt_router_match(ex->gen->router, &in, &ex->rr);
    if (pt_unlikely(st == 405) && ex->req.method_id == PT_METHOD_OPTIONS)
        st = route_preflight(ex, &in);
    if (st != 0) {
        pt_exchange_respond(ex, st, NULL, false);
        if (st == 405) {
            const char *allow = method_list(ex->arena, ex->rr.allow_methods);
            if (allow)
                pt_headers_add(&ex->resph, ex->arena, PT_SLICE("Allow"),
                               (pt_slice){allow + 7, strlen(allow + 7)});
        }
        return false;
    }
    ex->route = ex->rr.route;
    ex->up = ex->route->upstream;
    if (ex->route->split && !pt_exchange_pick_side(ex)) {
        pt_exchange_respond(ex, 500, "out of memory", true);
        return false;
    }
    return true;
}

/* RFC 9110 §15.5.20, nginx's rule: on a listener that asks for client
 * certificates, a request whose Host (port and one trailing dot off, any
 * case) names another server than the SNI the handshake was made for is
 * 421. The certificate was checked under that SNI; a Host switch must not
 * carry it to another virtual server. Only with an SNI to compare. */
static bool misdirected(struct pt_exchange *ex)
{
    const struct pt_tls_info *in = pt_tls_get_info(ex->tls);
    if (!in || !in->client_auth || !in->sni[0] || !ex->req.host.len)
        return false;
    pt_slice host = pt_router_host(ex->req.host);
    pt_slice sni = {in->sni, strlen(in->sni)};
    if (sni.len > 1 && sni.p[sni.len - 1] == '.')
        sni.len--;
    if (pt_slice_ieq(host, sni))
        return false;
    pt_exchange_respond(ex, 421, "misdirected request: Host does not match the TLS server name",
                        false);
    return true;
}

/* An upgrade to WebSocket (exchange.h "Tunnels"): only on a route that
 * allows it, with a well-formed RFC 6455 handshake. False when refused. */
static bool websocket_admit(struct pt_exchange *ex)
{
    if (!ex->route->websocket) {
        /* Envoy's answer (403, "upgrade not allowed"): the client learns at
         * once, where nginx's silent plain forward would leave it waiting
         * on a handshake that never completes. */
        pt_exchange_respond(ex, 403, "websocket not allowed on this route", false);
        return false;
    }
    const struct pt_hfield *key = pt_headers_find(&ex->reqh, PT_SLICE("Sec-WebSocket-Key"));
    const struct pt_hfield *ver = pt_headers_find(&ex->reqh, PT_SLICE("Sec-WebSocket-Version"));
    /* A body would run into the tunnel's bytes: a handshake has none. */
    bool body = ex->req.chunked || ex->req.content_length > 0;
    if (ex->req.method_id != PT_METHOD_GET || body || !key || !pt_ws_key_valid(key->value)) {
        pt_exchange_respond(ex, 400, "invalid websocket handshake", true);
        return false;
    }
    if (!ver || ver->value.len != 2 || memcmp(ver->value.p, "13", 2) != 0) {
        pt_exchange_respond(ex, 426, "unsupported websocket version", false);
        pt_headers_add(&ex->resph, ex->arena, PT_SLICE("Sec-WebSocket-Version"), PT_SLICE("13"));
        return false;
    }
    return true;
}

void pt_exchange_start(struct pt_exchange *ex)
{
    const struct pt_limits *lim = &ex->gen->limits;
    pt_exchange_find_client(ex); /* first: every refusal below logs the client */
    pt_exchange_trace_start(ex);
    /* CONNECT asks for a tunnel, which the gateway does not offer (its
     * authority-form target has no path to route or forward). */
    if (ex->req.method_id == PT_METHOD_CONNECT) {
        pt_exchange_respond(ex, 501, "CONNECT is not supported", true);
        return;
    }
    if (ex->tls && misdirected(ex))
        return;
    if (lim->underscores != PT_US_ALLOW && !screen_underscores(ex, lim->underscores))
        return;
    if (!normalize(ex) || !route(ex))
        return;
    if (pt_unlikely(ex->req.upgrade) && !websocket_admit(ex))
        return;
    uint64_t body_limit =
        ex->route->max_body_bytes ? ex->route->max_body_bytes : lim->max_body_bytes;
    if (ex->req.content_length > 0 && (uint64_t)ex->req.content_length > body_limit) {
        pt_exchange_respond(ex, 413, NULL, true);
        return;
    }
    pt_h1_drop_connection_listed(&ex->reqh);
    int rw = pt_exchange_rewrite_path(ex);
    if (rw < 0) {
        pt_exchange_respond(ex, 400, "invalid path after rewrite", true);
        return;
    }
    if (rw == 0 || !pt_exchange_forwarding_headers(ex)) {
        pt_exchange_respond(ex, 500, "out of memory", true);
        return;
    }
    pt_exchange_filters_begin(ex);
}

/* ---- the upstream call ---- */

static pt_slice call_body_peek(void *user, bool *eos)
{
    struct pt_exchange *ex = user;
    if (pt_unlikely(ex->rb_sending))
        return pt_exchange_gathered_peek(ex, eos);
    return ex->codec->body_peek(ex->conn, eos);
}

static void call_body_consumed(void *user, size_t n)
{
    struct pt_exchange *ex = user;
    if (pt_unlikely(ex->rb_sending)) {
        pt_exchange_gathered_consumed(ex, n);
        return;
    }
    ex->bytes_in += n;
    ex->codec->body_consumed(ex->conn, n);
}

static void call_wake(void *user)
{
    struct pt_exchange *ex = user;
    ex->codec->wake(ex->conn); /* last act */
}

static const struct pt_call_ops call_ops = {call_body_peek, call_body_consumed, call_wake};

/* consistent_hash: the request's key, per the upstream's hash_on (len 0:
 * none, and the balancer falls back to round robin). */
static pt_slice hash_key(struct pt_exchange *ex)
{
    const struct pt_upstream *u = ex->up;
    pt_slice none = {"", 0};
    switch (u->hash_on) {
    case PT_HASH_HEADER: {
        const struct pt_hfield *f =
            pt_headers_find(&ex->reqh, (pt_slice){u->hash_name, strlen(u->hash_name)});
        return f ? f->value : none;
    }
    case PT_HASH_COOKIE: {
        pt_slice v = none;
        pt_cookie_find(&ex->reqh, (pt_slice){u->hash_name, strlen(u->hash_name)}, &v);
        return v;
    }
    case PT_HASH_IP:
        return ex->client;
    case PT_HASH_CONSUMER:
        return ex->identity.consumer;
    case PT_HASH_NONE:
        break;
    }
    return none;
}

void pt_exchange_dispatch(struct pt_exchange *ex)
{
    if (!ex->up) {
        pt_exchange_respond(ex, 502, "route has no upstream", false);
        return;
    }
    if (!admit(ex))
        return;
    struct pt_worker *w = ex->w;
    struct pt_rr_state *rr = pt_worker_rr(w, ex->gen, ex->up);
    struct pt_call_req req = {
        .up = ex->up,
        .rr = rr,
        .rand = pt_worker_random(w),
        .method = ex->req.method,
        .method_id = ex->req.method_id,
        .path = ex->path,
        .query = ex->filters_begun ? ex->fctx.query : ex->req.query, /* a filter may edit it */
        .headers = &ex->reqh,
        .content_length = ex->req.chunked ? -1 : ex->req.content_length,
        .chunked = ex->req.chunked,
        .read_timeout_ms = ex->route->timeout_ms,
        .pool_idle_ms = ex->gen->limits.idle_timeout_ms,
        .arena = ex->arena,
        .max_headers = (uint32_t)ex->gen->limits.max_headers,
        .trace = pt_exchange_trace_upstream(ex),
    };
    if (pt_unlikely(ex->req.upgrade == PT_UPGRADE_WEBSOCKET))
        req.upgrade = PT_SLICE("websocket");
    /* The request goes upstream as HTTP/1.1, where Host is required; an
     * HTTP/1.0 request may have come without one: name the target. */
    req.add_host = !pt_headers_find_token(&ex->reqh, PT_TOK_HOST);
    if (ex->up->balance == PT_BALANCE_CONSISTENT_HASH)
        req.hash_key = hash_key(ex);
    /* Allocated only now: a request waiting on a filter does not carry it
     * (pt_call_start zeroes it). */
    ex->call = pt_arena_alloc(ex->arena, sizeof(*ex->call));
    if (!ex->call) {
        call_over(ex);
        pt_exchange_respond(ex, 500, "out of memory", true);
        return;
    }
    ex->dispatched = true;
    ex->t_up_start = pt_loop_now_ns(&w->loop);
    int r = pt_call_start(ex->call, &w->ob, &req, &call_ops, ex);
    if (r != 0) {
        upstream_failed(ex);
        pt_call_abort(ex->call);
        call_over(ex);
        return;
    }
    ex->calling = true;
    ex->want_continue = true;
}

/* How the body filters' use of this body (filter.h, enum pt_body_use)
 * frames it for the client. Skipped by all: it streams as on a route
 * without them. Observed: framing kept. Taken whole: a chunked or
 * close-delimited body keeps its framing, and a response with a
 * Content-Length holds its head until the filters' output is known (the
 * codec sees nothing until then). Changed chunk by chunk: a length only
 * the end of the body tells, so the response goes chunked. */
static void body_framing(struct pt_exchange *ex)
{
    uint8_t use = ex->fctx.response_body_use;
    ex->bf_active = use != PT_BODY_SKIP;
    ex->bf_whole = use == PT_BODY_WHOLE;
    if (use == PT_BODY_SKIP || use == PT_BODY_OBSERVE || ex->frame == PT_FRAME_NONE)
        return;
    if (use == PT_BODY_WHOLE) {
        if (ex->frame == PT_FRAME_LENGTH) {
            ex->bf_hold = true;
            ex->resp = PT_RESP_NONE;
        }
        return;
    }
    ex->content_length = -1;
    if (ex->frame == PT_FRAME_LENGTH)
        ex->frame = PT_FRAME_CHUNKED;
}

/* The final head came: the response's meta, then the head filters. */
static void response_head(struct pt_exchange *ex)
{
    const struct pt_call_head *h = pt_call_head(ex->call);
    breaker_outcome(ex, pt_admission_result(ex->up, PT_CALL_FAIL_NONE, h->status));
    ex->t_up_head = ex->call->t_head_ns;
    ex->status = h->status;
    ex->reason = h->reason;
    ex->content_length = h->content_length;
    ex->frame = h->frame;
    struct pt_hfield *store = pt_arena_alloc(ex->arena, sizeof(*store) * (h->nfields + 8));
    if (!store) {
        pt_exchange_respond(ex, 502, "out of memory", false);
        return;
    }
    pt_headers_from_h1(&ex->resph, store, (uint32_t)h->nfields + 8, h->fields, h->nfields);
    pt_h1_drop_connection_listed(&ex->resph);
    pt_headers_set(&ex->resph, ex->arena, PT_SLICE("X-Request-ID"), ex->reqid);
    if (ex->set_cookie.len) /* a sticky cookie the gateway made (exchange_split.c) */
        pt_headers_add(&ex->resph, ex->arena, PT_SLICE("Set-Cookie"), ex->set_cookie);
    /* The upstream answered before taking the whole body (e.g. its own
     * 413): the client's connection can't carry another request. */
    if (!ex->call->sent_all)
        ex->close_after = true;
    ex->resp = PT_RESP_UPSTREAM;
    ex->resp_seq++;
    pt_exchange_server_timing(ex);
    if (!pt_exchange_filters_response_head(ex))
        return; /* replaced (a 101 too: the call is aborted, no tunnel) */
    ex->upgraded = ex->call->upgraded;
    if (ex->upgraded) {
        /* The codec sees ex->upgraded before its next body_peek. */
        pt_call_tunnel_open(ex->call);
        return;
    } /* a tunnel's bytes are not a body: body filters stay out */
    if (ex->route->chain.n_response_body)
        body_framing(ex);
}

int pt_exchange_pump(struct pt_exchange *ex)
{
    if (pt_unlikely(ex->rb_gathering))
        return pt_exchange_gather_pump(ex);
    if (!ex->calling)
        return 0;
    int progress = pt_call_pump(ex->call);
    if (ex->call->phase == PT_CALL_FAILED) {
        /* A failed call still holds its target's active count until it is
         * ended: abort it here, or least_conn counts it in flight forever. */
        pt_call_abort(ex->call);
        ex->calling = false;
        upstream_failed(ex);
        call_over(ex);
        return 1;
    }
    if (ex->resp == PT_RESP_NONE && !ex->bf_hold && pt_call_head(ex->call)) {
        response_head(ex);
        return 1;
    }
    if (pt_unlikely(ex->bf_whole))
        progress |= pt_exchange_filters_whole_pump(ex);
    return progress;
}

/* ---- the response for the codec ---- */

const struct pt_call_head *pt_exchange_interim(struct pt_exchange *ex)
{
    if (!ex->calling || ex->resp != PT_RESP_NONE)
        return NULL;
    return pt_call_interim(ex->call);
}

void pt_exchange_interim_done(struct pt_exchange *ex)
{
    pt_call_interim_done(ex->call);
}

bool pt_exchange_hides_interim_field(const struct pt_exchange *ex, pt_slice name)
{
    return ex->route && pt_chain_hides_interim_field(&ex->route->chain, name);
}

pt_slice pt_exchange_body_peek(struct pt_exchange *ex, bool *eos)
{
    *eos = true;
    if (ex->resp != PT_RESP_UPSTREAM)
        return (pt_slice){"", 0};
    if (ex->bf_active && !ex->upgraded)
        return pt_exchange_filters_body_peek(ex, eos);
    if (!ex->calling) {
        *eos = false;
        return (pt_slice){"", 0};
    }
    return pt_call_body_peek(ex->call, eos);
}

void pt_exchange_body_consume(struct pt_exchange *ex, size_t n)
{
    ex->bytes_out += n;
    if (ex->bf_active && !ex->upgraded) {
        pt_exchange_filters_body_consume(ex, n);
        return;
    }
    pt_call_body_consume(ex->call, n);
}

bool pt_exchange_body_done(struct pt_exchange *ex)
{
    if (ex->resp == PT_RESP_GATEWAY)
        return true;
    if (ex->resp != PT_RESP_UPSTREAM)
        return false;
    bool eos = false;
    pt_slice s = pt_exchange_body_peek(ex, &eos);
    return eos && s.len == 0;
}

/* ---- the end ---- */

void pt_exchange_end(struct pt_exchange *ex, bool completed)
{
    if (ex->ended)
        return;
    ex->ended = true;
    pt_exchange_filters_cancel(ex);
    pt_exchange_gather_stop(ex);
    if (ex->calling) {
        /* pt_call_finish pools the connection only when the response was
         * wholly read and the connection is clean; else it closes it. */
        if (completed)
            pt_call_finish(ex->call);
        else
            pt_call_abort(ex->call);
        ex->calling = false;
    }
    call_over(ex);
    if (!completed && ex->status == 0)
        ex->status = 499; /* client went away before a response: nginx's convention */
    if (ex->filters_begun && ex->route->chain.n_log)
        pt_chain_run_log(&ex->route->chain, &ex->fctx, ex->states);
    pt_exchange_trace_end(ex);
    pt_exchange_metrics(ex);
    pt_exchange_log(ex);
    pt_worker_unpin(ex->w, ex->gen);
    /* Single writer: a relaxed load+store is a plain add, no locked
     * instruction, and the admin thread still reads a whole value. */
    atomic_store_explicit(&ex->w->served,
                          atomic_load_explicit(&ex->w->served, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* ---- access log ---- */

void pt_exchange_log(struct pt_exchange *ex)
{
    struct pt_generation *g = ex->gen;
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
    double dur = (double)(now - ex->t_start) / 1e6;
    double up = ex->t_up_start
                    ? (double)((ex->t_up_head ? ex->t_up_head : now) - ex->t_up_start) / 1e6
                    : 0.0;
    size_t plen = ex->req.path.len > 512 ? 512 : ex->req.path.len;
    size_t pe = ex->req.path.p ? pt_json_escape(esc, ex->req.path.p, plen) : 0;
    char rid[6 * 128];
    size_t rl = pt_json_escape(rid, ex->reqid.p, ex->reqid.len);
    char cons[6 * 64];
    size_t cl = pt_json_escape(cons, ex->identity.consumer.p ? ex->identity.consumer.p : "",
                               PT_MIN(ex->identity.consumer.len, 64));
    const struct pt_target *tg = ex->call ? ex->call->target : NULL;
    /* Before the head was complete (a codec error) the client is the peer. */
    pt_slice client = ex->client.len ? ex->client : ex->peer;
    /* Retries (upstreams.*.retries): tries after the first, on every
     * request that reached the outbound call. */
    char att[24 + 96] = "";
    int al = 0;
    if (ex->call && ex->dispatched)
        al = snprintf(att, sizeof(att), ",\"retries\":%u",
                      ex->call->attempts ? ex->call->attempts - 1 : 0);
    /* TLS connections: the protocol version and cipher (static strings). */
    if (ex->tls && al >= 0 && (size_t)al < sizeof(att))
        snprintf(att + al, sizeof(att) - (size_t)al,
                 ",\"tls_version\":\"%s\",\"tls_cipher\":\"%s\"", SSL_get_version(ex->tls->ssl),
                 SSL_get_cipher_name(ex->tls->ssl));
    /* The filters' notes (filter.h: pt_filter_note), e.g. "introspection":"hit". */
    char note[PT_FILTER_NOTES_MAX * 64] = "";
    size_t nl = 0;
    for (uint32_t i = 0; ex->filters_begun && i < ex->fctx.nnotes; i++) {
        int k = snprintf(note + nl, sizeof(note) - nl, ",\"%s\":\"%s\"", ex->fctx.notes[i].key,
                         ex->fctx.notes[i].value);
        if (k < 0 || (size_t)k >= sizeof(note) - nl) {
            note[nl] = '\0'; /* a note that does not fit is left out whole */
            break;
        }
        nl += (size_t)k;
    }
    char trace[80];
    size_t tl = pt_exchange_trace_log(ex, trace);
    int n = snprintf(
        line, sizeof(line),
        "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"request_id\":\"%.*s\","
        "\"remote_addr\":\"%.*s\",\"peer_addr\":\"%.*s\",\"listener\":\"%s\",\"route\":\"%s\","
        "\"upstream\":\"%s\","
        "\"upstream_target\":\"%s\",\"method\":\"%.*s\",\"path\":\"%.*s\",\"protocol\":\"%s\","
        "\"status\":%d,"
        "\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f,\"upstream_ms\":%.3f%s%s%.*s%"
        "s%s%s%s%s%.*s}\n",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        ts.tv_nsec / 1000000, (int)rl, rid, (int)client.len, client.p, (int)ex->peer.len,
        ex->peer.p, ex->listener ? ex->listener : "", ex->route ? ex->route->name : "",
        ex->up ? ex->up->name : "", tg && ex->dispatched ? tg->address : "",
        (int)PT_MIN(ex->req.method.len, 32), ex->req.method.p ? ex->req.method.p : "", (int)pe, esc,
        ex->req.h2       ? "HTTP/2.0"
        : ex->req.http10 ? "HTTP/1.0"
                         : "HTTP/1.1",
        ex->status, (unsigned long long)ex->bytes_in, (unsigned long long)ex->bytes_out, dur, up,
        att, cl ? ",\"consumer\":\"" : "", (int)cl, cons, cl ? "\"" : "",
        ex->error ? ",\"error\":\"" : "", ex->error ? ex->error : "", ex->error ? "\"" : "", note,
        (int)tl, trace);
    if (n > 0)
        pt_alog_push(&ex->w->alog, line, (size_t)PT_MIN(n, (int)sizeof(line) - 1));
}
