/*
 * client.h — the outbound client: the only code that talks to upstreams
 * (DESIGN.md §4a). Proxying, ext_auth checks, health checks (and later
 * JWKS fetches, introspection, BFF sub-requests, trace export) are all
 * calls of this one API, so they share pools, timeouts, framing rules and
 * result reporting.
 *
 * A call is one HTTP/1.1 request and its response:
 *
 *   pt_call_start   pick a target (balancer, healthy ones only), take a
 *                   pooled connection or connect, write the head;
 *   body            pulled from the caller through ops->body_peek /
 *                   body_consumed (payload bytes: the client frames them,
 *                   Content-Length or chunked);
 *   response        parsed here (strict, as the server side): 1xx heads
 *                   are offered one at a time (pt_call_interim), then the
 *                   final head (pt_call_head), then payload bytes with the
 *                   framing removed (pt_call_body_peek / _consume);
 *   end             pt_call_finish returns a clean connection to the pool;
 *                   pt_call_abort closes it. Either reports the outcome to
 *                   the target's shared state (balanced calls only: a call
 *                   to a fixed target, such as a health probe, is not
 *                   traffic).
 *   retries         (upstreams.*.retries, client_retry.c) a failed attempt
 *                   — or a final head with a listed status, before the
 *                   caller sees it — starts another on another target when
 *                   attempts, the budget and safety allow; the caller only
 *                   notices through its wake (and c->attempts).
 *
 * Driving (the "wake" model of h2o's and HAProxy's streams): socket
 * events and timers make the client do its I/O, then it tail-calls
 * ops->wake(user) once, as its last act, so the caller can pull what is
 * new. Functions the caller calls (pt_call_pump and the rest) never call
 * back. Backpressure is the pull itself: the client reads the upstream
 * only when the caller has consumed what it holds, and sends body bytes
 * only as the caller offers them.
 *
 * Ownership: the caller owns the struct pt_call (embedded in its own
 * object) and the memory req points at until the call ends; the client
 * owns the connection while the call runs. A failure inside
 * pt_call_start returns an error and never wakes (libuv's rule).
 */
#ifndef PT_PROXY_CLIENT_H
#define PT_PROXY_CLIENT_H

#include "core/arena.h"
#include "http/h1.h"
#include "http/headers.h"
#include "proxy/balance.h"
#include "proxy/pool.h"

/* Why a call failed (also what filters see: filter.h mirrors these). */
enum pt_call_fail {
    PT_CALL_FAIL_NONE = 0,
    PT_CALL_FAIL_CONNECT,    /* refused / unreachable */
    PT_CALL_FAIL_CONNECT_TO, /* connect timeout */
    PT_CALL_FAIL_TIMEOUT,    /* no (complete) answer in read_timeout */
    PT_CALL_FAIL_RESET,      /* closed or reset before a complete answer */
    PT_CALL_FAIL_PROTOCOL,   /* not valid HTTP/1.1, or a 101 nobody asked for */
    PT_CALL_FAIL_NO_TARGET,  /* every target unhealthy */
    PT_CALL_FAIL_RESOURCES,  /* the gateway's own limits: fds, memory, ports */
    PT_CALL_FAIL_BODY_STALL, /* the caller's request body stopped coming */
    PT_CALL_FAIL_WRITE,      /* the upstream stopped taking the request head */
};

enum pt_call_phase {
    PT_CALL_IDLE = 0,
    PT_CALL_CONNECTING,
    PT_CALL_WAITING, /* request going out / waiting for the final head */
    PT_CALL_BODY,    /* final head parsed; body bytes flow */
    PT_CALL_DONE,    /* whole response parsed and handed to the caller */
    PT_CALL_FAILED,
};

/* How the response body is delimited on the upstream connection. */
enum pt_body_frame { PT_FRAME_NONE, PT_FRAME_LENGTH, PT_FRAME_CHUNKED, PT_FRAME_CLOSE };

struct pt_call_ops {
    /* Request body bytes ready to send (borrowed until body_consumed);
     * *eos when nothing follows them. Pure: no side effects. */
    pt_slice (*body_peek)(void *user, bool *eos);
    void (*body_consumed)(void *user, size_t n);
    /* The client made progress or failed on its own: pull what is new.
     * Tail-called; the call may be finished or aborted from inside. */
    void (*wake)(void *user);
};

struct pt_call;

/*
 * Tracing (optional; the caller's, alive as long as the call): a span per
 * attempt. begin runs as an attempt starts (the first and each retry),
 * before its head is written; the head then carries `traceparent: ` with
 * the value begin left in `traceparent` (a client-sent copy in the
 * headers is not sent). end runs once per attempt as it ends: status is
 * the final head's (0: none came), fail why it failed (NONE: it did not).
 * Neither may start or end calls.
 */
struct pt_call_trace {
    void (*begin)(struct pt_call_trace *t, const struct pt_call *c);
    void (*end)(struct pt_call_trace *t, const struct pt_call *c, int status,
                enum pt_call_fail fail);
    char traceparent[56]; /* 55 bytes, set by begin */
    bool open;            /* begin ran and end did not: the client's */
};

struct pt_call_req {
    const struct pt_upstream *up;   /* timeouts, keepalive; targets unless `target` */
    const struct pt_target *target; /* a fixed target (a URL's); NULL: balance over up */
    struct pt_rr_state *rr; /* round-robin state for up (first pick only); NULL: weighted random */
    uint64_t rand;          /* randomness for the pick */
    pt_slice hash_key;      /* consistent_hash: the request's key (len 0: none) */
    pt_slice method;
    int method_id;                    /* enum pt_method: HEAD has no response body */
    pt_slice path, query;             /* origin-form; query without '?' (len 0: none) */
    const struct pt_headers *headers; /* sent as-is but hop-by-hop, Expect and framing */
    bool add_host;                    /* no Host field: send the picked target's address */
    int64_t content_length;           /* -1: no body, or chunked when `chunked` */
    bool chunked;                     /* body of unknown length, sent chunked */
    /* A protocol to switch to (e.g. "websocket"; len 0: none): the head
     * carries `Connection: Upgrade` and `Upgrade: <it>`, and a 101 (and
     * only a 101) makes the call a tunnel: from then on body_peek's bytes
     * go out unframed (eos: shutdown(SHUT_WR) toward the upstream) and the
     * response "body" is every byte the upstream sends until it closes
     * (PT_FRAME_CLOSE). read_timeout then bounds the silence of both
     * directions together (any byte either way restarts it). */
    pt_slice upgrade;
    uint64_t read_timeout_ms;    /* 0: up->read_timeout_ms */
    uint64_t pool_idle_ms;       /* a released connection is closed after this idle */
    struct pt_arena *arena;      /* where the head is built and the response head copied */
    uint32_t max_headers;        /* response field cap */
    struct pt_call_trace *trace; /* NULL: untraced */
};

struct pt_call_head {
    int status;
    pt_slice reason;
    struct pt_h1_header *fields; /* in the call's arena: valid until the call's arena goes */
    size_t nfields;
    int64_t content_length; /* -1 when not given */
    enum pt_body_frame frame;
};

struct pt_call {
    /* public, read-only for the caller */
    enum pt_call_phase phase;
    enum pt_call_fail fail;
    const char *fail_text;            /* static, for logs and error bodies */
    const struct pt_target *target;   /* the one picked (NULL before / with NO_TARGET) */
    bool reused;                      /* on a pooled connection */
    bool sent_all;                    /* the whole request (head and body) went out */
    bool body_abandoned;              /* the upstream answered before taking the body */
    uint64_t bytes_sent;              /* request body payload bytes sent */
    uint64_t t_connect_ns, t_head_ns; /* loop times: connection asked for, final head */
    uint32_t attempts;   /* tries made (retries.attempts counts them; the stale-connection
                          * retry is not one) */
    bool budget_refused; /* a retry was due but the upstream's retry budget refused it */
    bool upgraded;       /* a 101 came for req.upgrade: the call is a tunnel */
    bool tunnel_open;    /* the caller took the 101: its body_peek gives tunnel bytes */
    bool tunnel_wr_shut; /* tunnel: the caller's bytes ended, the upstream got our FIN */

    /* private */
    const struct pt_call_ops *ops;
    void *user;
    struct pt_outbound *ob;
    struct pt_call_req req;
    struct pt_uconn *uc;
    char *head; /* request head bytes */
    uint32_t head_len, head_sent;
    bool readable, writable, hup;
    bool body_eos_sent; /* chunked: last-chunk written */
    char chunk_line[24];
    uint32_t chunk_line_len, chunk_line_sent; /* pending chunk framing */
    uint32_t chunk_left;                      /* payload bytes of the chunk in flight */
    bool chunk_crlf;                          /* CRLF after the chunk in flight pending */
    uint64_t req_left;                        /* Content-Length body bytes still to send */
    int retries;                              /* stale-connection retries */
    /* retries (client_retry.c): on only for a balanced call of an upstream
     * with attempts > 1; zero cost otherwise. */
    bool retry_on;
    bool shown;                      /* an interim head was offered: never retried */
    uint32_t tried[PT_MAX_ATTEMPTS]; /* target indices picked, in order */
    uint32_t ntried;
    /* per_try_timeout: loop ms (0: none). Set at the attempt's start,
     * off while the body is being sent, restarted once all is sent. */
    uint64_t try_deadline_ms;
    /* Request body bytes the caller consumed, held for a replay (request
     * arena): held[0..held_len); this attempt re-sent held[0..held_pos). */
    char *held;
    uint64_t held_len, held_cap, held_pos;
    bool hold;      /* still holding what the caller gives */
    bool held_lost; /* a consumed body byte is not held: no resend */
    struct pt_h1_response res;
    struct pt_h1_header *res_hdrs; /* the thread's parse scratch, during a parse */
    uint32_t res_prev;
    bool res_any; /* a byte of a response came: never retried */
    struct pt_call_head interim, final;
    bool interim_ready;
    uint64_t res_left; /* LENGTH: body bytes still to come */
    struct pt_chunked res_ck;
    uint32_t res_ready; /* payload bytes at rbuf start, ready for the caller */
    bool res_eos;       /* the body is complete (after res_ready is consumed) */
    bool reusable;      /* the connection may go back to the pool */
    bool counted;       /* holds one of the target's active-request counts */
    bool reported;      /* the outcome went to the target's shared cell */
};

/*
 * Starts a call. 0, or a pt_call_fail (> 0) when it failed at once
 * (nothing to wake, c->fail_text says why; pt_call_abort still fine).
 */
int pt_call_start(struct pt_call *c, struct pt_outbound *ob, const struct pt_call_req *req,
                  const struct pt_call_ops *ops, void *user);

/* Does whatever I/O is possible now: sends offered body bytes, reads when
 * what was read is consumed. Never wakes. 1 on progress, 0 when nothing
 * could move. After it, check c->phase (PT_CALL_FAILED ends the call). */
int pt_call_pump(struct pt_call *c);

/* The oldest unconsumed 1xx head (never 100 or 101), or NULL. */
const struct pt_call_head *pt_call_interim(struct pt_call *c);
void pt_call_interim_done(struct pt_call *c);

/* The final head once c->phase >= PT_CALL_BODY. */
static inline const struct pt_call_head *pt_call_head(const struct pt_call *c)
{
    return c->phase >= PT_CALL_BODY && c->phase != PT_CALL_FAILED ? &c->final : NULL;
}

/* After a 101 (c->upgraded): the caller has switched its body source to
 * the tunnel's bytes; nothing is sent upstream before this. */
static inline void pt_call_tunnel_open(struct pt_call *c)
{
    c->tunnel_open = true;
}

/* Body payload ready now (borrowed until consumed); *eos when the body is
 * complete after these bytes. */
pt_slice pt_call_body_peek(struct pt_call *c, bool *eos);
void pt_call_body_consume(struct pt_call *c, size_t n);

/* Ends a call whose response was wholly consumed: the connection goes back
 * to the pool when it is clean, else is closed. */
void pt_call_finish(struct pt_call *c);
/* Frees the calling thread's parse scratch (at a loop thread's exit). */
void pt_call_thread_exit(void);

/* Fails a call that ran out of a caller's deadline, as its own timer
 * would (reported to the target as a timeout). Never wakes. */
void pt_call_expire(struct pt_call *c);

/* Ends a call in any phase: the connection is closed. Idempotent. */
void pt_call_abort(struct pt_call *c);

/* Marks the call's response as not reusable (e.g. the caller stops early). */
static inline void pt_call_no_reuse(struct pt_call *c)
{
    c->reusable = false;
}

/* True while the call needs the caller to consume before it reads on. */
bool pt_call_waits_for_caller(const struct pt_call *c);

#endif
