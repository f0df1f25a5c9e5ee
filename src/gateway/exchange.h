/*
 * exchange.h — one client request and its response, whatever protocol
 * carried it (DESIGN.md §4a).
 *
 * Three kinds of code meet here:
 *   - a server codec (h1_server.c today; HTTP/2 and WebSocket next) turns
 *     bytes into a request meta and renders the exchange's response back
 *     into bytes; it owns framing, keep-alive and its connection's timers;
 *   - the exchange owns everything between: generation pin, route,
 *     rewrite, forwarding headers, identity, the filter cursor and its
 *     pending async work, the upstream call and the log record;
 *   - the outbound client (proxy/client.h) carries the upstream call.
 *
 * Bodies cross it as pulls: the call pulls request payload from the codec
 * (ops->body_peek / body_consumed), the codec pulls response payload from
 * the exchange (pt_exchange_body_peek / _consume). Nothing is copied for a
 * route without body filters; backpressure is the pull itself.
 *
 * Driving: the codec runs its pump, which calls pt_exchange_pump(); any
 * event the exchange gets on its own (upstream socket, filter timer or
 * call, suspend deadline) ends in ops->wake(codec), tail-called, so the
 * codec pumps again. pt_exchange_* functions never call the codec back.
 *
 * Ownership: the codec allocates the exchange in its request arena and
 * keeps it until pt_exchange_end(), which cancels whatever is pending
 * (call, filter timer or call — with on_cancel), writes the log line and
 * unpins the generation. Gateway-made responses are data (status, error,
 * extra fields, body) that the codec renders.
 */
#ifndef PT_GATEWAY_EXCHANGE_H
#define PT_GATEWAY_EXCHANGE_H

#include "core/cidr.h"
#include "gateway/router.h"
#include "gateway/trace.h"
#include "gateway/worker.h"
#include "proxy/admission.h"
#include "proxy/client.h"
#include "proxy/fetch.h"

struct pt_codec_ops {
    /* Request body payload ready now (borrowed until consumed); *eos when
     * the body is complete after these bytes. */
    pt_slice (*body_peek)(void *conn, bool *eos);
    void (*body_consumed)(void *conn, size_t n);
    /* Something changed: the codec pumps again. Tail-called. */
    void (*wake)(void *conn);
};

/* A protocol switch the client asked for (exchange.c; see "Tunnels"). */
enum pt_upgrade { PT_UPGRADE_NONE = 0, PT_UPGRADE_WEBSOCKET };

/* What a codec knows of a request when its head is complete. */
struct pt_request_meta {
    pt_slice method;
    int method_id;
    pt_slice target; /* as sent */
    pt_slice path;   /* origin-form path */
    pt_slice query;
    pt_slice host;          /* Host or the absolute-form authority */
    pt_slice scheme;        /* the listener's: "http" / "https" */
    int64_t content_length; /* -1: none (or chunked) */
    bool chunked;           /* body of unknown length */
    bool http10;            /* an HTTP/1.0 client (Host may be absent) */
    bool h2;                /* came on an HTTP/2 stream (h2_server) */
    /* The client asked to switch to this protocol (HTTP/1.1: Connection:
     * upgrade + Upgrade: websocket; HTTP/2: extended CONNECT with
     * :protocol websocket, mapped as below). Only WebSocket is ever asked
     * upstream; any other Upgrade (h2c included) is left at NONE and the
     * field is dropped as hop-by-hop. */
    uint8_t upgrade;
};

/* Where the response the codec renders comes from. */
enum pt_resp_kind {
    PT_RESP_NONE = 0, /* not decided yet */
    PT_RESP_GATEWAY,  /* made here: gw_* fields */
    PT_RESP_UPSTREAM, /* the call's: status/reason/headers, body by pull */
};

struct pt_exchange {
    /* ---- set by the codec ---- */
    struct pt_worker *w;
    struct pt_arena *arena; /* the codec's request arena */
    const struct pt_codec_ops *codec;
    void *conn;
    struct pt_request_meta req;
    struct pt_headers reqh; /* editable; what goes upstream */
    const char *listener;
    /* The address of whoever sent the bytes: the socket's peer, or the
     * address a PROXY protocol header carried. The codec sets it, and only
     * the codec; the exchange derives `client` from it. */
    pt_slice peer;
    /* The connection's TLS session (core/tls.h), NULL on plain TCP: set by
     * the codec; the mtls_auth filter and the 421 check read it. */
    struct pt_tls *tls;
    uint64_t t_start;

    /* ---- the request's way ---- */
    struct pt_generation *gen;
    const struct pt_route *route;
    struct pt_route_result rr;
    const struct pt_upstream *up; /* the route's, or the side its split picked */
    /* The Set-Cookie value of a sticky cookie the gateway made for this
     * request (exchange_split.c); len 0: none. */
    pt_slice set_cookie;
    pt_slice path; /* after strip_prefix / rewrite */
    char reqid_buf[33];
    pt_slice reqid;
    struct pt_identity identity;
    /* The real client (pt_exchange_find_client): the peer, or from a
     * trusted peer the X-Forwarded-For walk's answer (http/forwarded.h),
     * in canonical text. What ${remote_addr}, the access log's
     * remote_addr, ip_restriction and X-Real-IP see. Empty until the
     * request head is complete: the log then shows the peer. */
    pt_slice client;
    struct pt_ip peer_ip;   /* the peer, parsed by the codec (family 0: none) */
    struct pt_ip client_ip; /* the same, parsed (family 0: the peer had no IP) */
    char client_buf[PT_IP_TEXT_MAX];

    /* filters */
    struct pt_filter_ctx fctx;
    void **states;
    uint32_t cursor;
    bool suspended;                    /* waiting on a filter's async work */
    bool filters_begun;                /* fctx and states set up: log filters may run */
    const struct pt_filter_inst *susp; /* the filter that suspended */
    struct pt_timer ftimer;            /* a filter's timer (svc->timer, svc->park's timeout) */
    pt_filter_timer_cb ftimer_cb;
    /* svc->park: linked on the worker's parked (or parked_run) list */
    struct pt_exchange *park_next, **park_pprev;
    struct pt_timer deadline; /* the suspension's deadline */
    struct pt_fetch *ffetch;  /* a filter's call (svc->call) */
    pt_filter_call_cb ffetch_cb;
    /* a filter's fan-out calls (svc->fan_call, exchange_int.h), newest
     * first, in the request arena; nfan of them are still out */
    struct pt_fan_call *fan;
    uint32_t nfan;
    /* ... and their times (loop clock): since when one has been out, how
     * long some were out in all (upstream time, not the gateway's, for
     * the overhead metric), and the latest of their own deadlines, which
     * the suspension's deadline outlasts. */
    uint64_t fan_since_ns, fan_ns, fan_until_ms;
    struct pt_redis_cmd *feval; /* a filter's script (svc->eval), on feval_redis */
    struct pt_redis *feval_redis;
    pt_filter_eval_cb feval_cb;
    const struct pt_filter_inst *deadline_inst;
    /* metrics (gateway/metrics.h, exchange_metrics.c): ns per filter
     * (fctx.hook_ns, request arena; NULL with metrics off), when the
     * current suspension began, and which request-phase filter stopped the
     * chain (its position, + 1; 0: none) with what outcome. */
    uint64_t t_susp;
    uint32_t fstop_pos;
    uint8_t fstop_outcome;
    bool fcancelled; /* ended while a filter was suspended */

    /* the upstream call */
    struct pt_call *call; /* from dispatch on (request arena); NULL before */
    bool calling;         /* call started and not ended */
    bool dispatched;      /* the request went (or goes) upstream */
    bool want_continue;   /* the codec may answer 100 Continue */
    /* upstreams.*.circuit_breaker (exchange.c admit(), proxy/admission.h):
     * the outcome owed to the breaker and the max_concurrent slot held. */
    struct pt_admission up_adm;

    /* The request body gathered for whole-body filters (exchange_body.c;
     * request arena): parts while a chunked body comes in, then one
     * slice, sent from rb_off on; rb_eos: it is the whole body (else the
     * codec's rest follows it). */
    bool rb_gathering, rb_sending, rb_eos;
    void *rb_first, *rb_last;
    pt_slice rb_body;
    size_t rb_len, rb_off;

    /* ---- the response ---- */
    enum pt_resp_kind resp;
    uint32_t resp_seq; /* bumps when a response (re)places the previous */
    int status;
    pt_slice reason;
    struct pt_headers resph;
    int64_t content_length;   /* -1 unknown */
    enum pt_body_frame frame; /* upstream body delimiting (codec picks its own) */
    bool close_after;         /* the codec closes the connection after it */
    /* gateway-made */
    const char *gw_error;
    pt_slice gw_body, gw_ctype;
    bool gw_raw; /* gw_body and gw_ctype as they are (filter.h respond_raw) */
    /* response body filters' output (routes with on_response_body only) */
    pt_slice bf_out;
    bool bf_eos, bf_have;
    /* The body filters see this response's body (some did not skip it),
     * one of them takes it whole (filter.h PT_BODY_WHOLE), and its head
     * is held until their output starts (a Content-Length to recompute;
     * resp stays PT_RESP_NONE meanwhile). */
    bool bf_active, bf_whole, bf_hold;
    bool response_started; /* the codec wrote some of the final response */
    /* The upstream answered 101 to req.upgrade: the exchange is a tunnel
     * (see "Tunnels" below). Set with resp = PT_RESP_UPSTREAM. */
    bool upgraded;
    const char *cut; /* set: the codec must cut the client off (why) */

    /* tracing (exchange_trace.c; untouched when `tracing` is off) */
    struct pt_trace_ctx trace;
    struct pt_call_trace up_trace; /* the upstream call's attempts */
    uint8_t up_span[8];            /* the current attempt's span */
    uint64_t up_span_start;
    struct pt_call_trace aux_trace; /* a filter's call */
    uint8_t aux_span[8];
    uint64_t aux_span_start;
    const char *aux_name; /* the filter's name: the span's */

    /* log record */
    const char *error;
    uint64_t bytes_in, bytes_out;
    uint64_t t_up_start, t_up_head;
    bool ended;
};

/*
 * Tunnels (WebSocket; routes[].websocket). A codec that sees an upgrade
 * request sets req.upgrade = PT_UPGRADE_WEBSOCKET and starts the exchange
 * as usual. pt_exchange_start refuses it with 403 on a route without
 * `websocket: true`, checks the handshake fields (GET, Sec-WebSocket-Key
 * of 16 bytes in base64 → else 400, Sec-WebSocket-Version 13 → else 426
 * with `Sec-WebSocket-Version: 13`), and the upstream call asks for
 * `Upgrade: websocket` itself (the client's Connection/Upgrade fields are
 * hop-by-hop and never forwarded). Only a 101 switches (a 200 or anything
 * else is an ordinary response), and only with `Upgrade: websocket` and
 * the Sec-WebSocket-Accept the key calls for (client.c switch_agreed; else
 * the call fails: 502); then ex->upgraded (from then on the
 * codec's body_peek must give tunnel bytes), ex->status 101,
 * ex->resph holds the upstream's end-to-end fields (Sec-WebSocket-Accept,
 * -Protocol, -Extensions; its Connection/Upgrade are dropped: the codec
 * writes its own), and both bodies become raw byte streams:
 *   - client → upstream: the codec's body_peek/body_consumed hand over
 *     every byte the client sends, unframed; *eos once the client has
 *     closed its side (HTTP/1.1: read EOF; HTTP/2: END_STREAM) — the
 *     upstream then gets a FIN (half-close);
 *   - upstream → client: pt_exchange_body_peek/_consume, eos when the
 *     upstream closed its side; the codec then half-closes the client
 *     (HTTP/1.1: shutdown(SHUT_WR); HTTP/2: END_STREAM).
 * The tunnel is over when both directions ended: the codec calls
 * pt_exchange_end(ex, true), which closes the upstream connection, logs
 * one line (status 101, bytes_in/bytes_out both ways, the whole duration)
 * and unpins the generation. The pin never blocks a reload (generations
 * retire when their last pin goes). Idle: the route's `timeout` (else the
 * upstream's read_timeout) bounds the silence of both directions; when it
 * passes, the call fails and ex->cut is set: the codec closes the client.
 *
 * For HTTP/2 (RFC 8441): map `:method CONNECT` + `:protocol websocket` to
 * method GET (req.method_id PT_METHOD_GET), req.upgrade = WEBSOCKET, add
 * `Sec-WebSocket-Key` (pt_ws_make_key, http/websocket.h) and
 * `Sec-WebSocket-Version: 13` to reqh (keep the client's -Protocol and
 * -Extensions), start. On ex->upgraded (the accept was checked against
 * the key by the outbound client), drop Sec-WebSocket-Accept from resph
 * and answer 200 instead of 101; DATA frames are the tunnel's bytes.
 */

/* Sets up an exchange at the codec's arena. Pins the newest generation. */
void pt_exchange_init(struct pt_exchange *ex, struct pt_worker *w, struct pt_arena *a,
                      const struct pt_codec_ops *codec, void *conn);
/* The request id: the client's when valid, else a new one. */
void pt_exchange_set_request_id(struct pt_exchange *ex, pt_slice client_value);
/* The request head is complete (ex->req and ex->reqh filled): route,
 * filters, dispatch. The codec then pumps. */
void pt_exchange_start(struct pt_exchange *ex);
/* A response made here (error JSON when body is empty). Replaces anything
 * not yet sent; after the response started, it cuts the client instead. */
void pt_exchange_respond(struct pt_exchange *ex, int status, const char *error, bool close);
/* Runs the upstream call's I/O and turns what it produced into the
 * exchange's response. 1 on progress. */
int pt_exchange_pump(struct pt_exchange *ex);
/* Response body payload for the codec (borrowed until consumed). */
pt_slice pt_exchange_body_peek(struct pt_exchange *ex, bool *eos);
void pt_exchange_body_consume(struct pt_exchange *ex, size_t n);
/* An interim (1xx) head waiting for the codec, or NULL. */
const struct pt_call_head *pt_exchange_interim(struct pt_exchange *ex);
void pt_exchange_interim_done(struct pt_exchange *ex);
/* Whether a field of an interim head must not reach the client. */
bool pt_exchange_hides_interim_field(const struct pt_exchange *ex, pt_slice name);
/* True when the whole response body was handed to the codec. */
bool pt_exchange_body_done(struct pt_exchange *ex);
/* Ends it: cancels pending work, logs, unpins. `completed`: the response
 * went out whole. The codec releases the arena afterwards. */
void pt_exchange_end(struct pt_exchange *ex, bool completed);

/* The path the router, the filters and the upstream see for the request
 * path `p` as sent, under `lim` (generation.h): the path rules
 * (pt_path_screen), then `%2F` decoding and normalisation (http/path.h)
 * in a copy from `a` when they change anything. 0 with *out; 400 with
 * *why, the rule broken (the client's answer); 500 out of memory. Pure:
 * /debug/match answers with it too. */
int pt_exchange_path(const struct pt_limits *lim, struct pt_arena *a, pt_slice p, pt_slice *out,
                     const char **why);

/* Fast per-worker PRNG (xorshift64*). */
uint64_t pt_worker_random(struct pt_worker *w);

#endif
