/*
 * h1_server.h — private to the HTTP/1.1 server codec (h1_server.c: the
 * connection's life, events and timers; h1_server_io.c: reading requests
 * and writing responses). See h1_server.c for what the codec owns.
 */
#ifndef PT_GATEWAY_H1_SERVER_H
#define PT_GATEWAY_H1_SERVER_H

#include "core/tls.h"
#include "gateway/exchange.h"

/* BODY_TUNNEL: after a 101, every client byte until its EOF (exchange.h). */
enum body_mode { BODY_NONE, BODY_CL, BODY_CHUNKED, BODY_TUNNEL };
/* How the response body is delimited toward the client. */
/* OUT_TUNNEL: raw bytes after a 101 until the upstream's EOF, then our FIN. */
enum out_mode { OUT_NONE, OUT_LENGTH, OUT_CHUNKED, OUT_CLOSE, OUT_TUNNEL };

struct h1_txn;
struct pt_h2s;

struct pt_conn {
    struct pt_io io;
    struct pt_tls *tls; /* TLS listeners: the session over io; NULL: plain */
    /* A TLS listener that expects a PROXY header: the session, started
     * once the header is taken (moves to `tls`). */
    struct pt_tls *tls_wait;
    struct pt_worker *w;
    struct pt_timer timer; /* idle / header / send timeout */
    struct pt_buf *rbuf;   /* client bytes; NULL while idle */
    struct pt_conn *next, *prev;
    struct pt_conn *free_next;
    struct pt_arena arena;       /* per-request allocations; blocks go back to the
                                    worker's pool after each request */
    struct h1_txn *txn;          /* the request in progress, or NULL */
    struct pt_h2s *h2;           /* handed to the HTTP/2 codec (h2_server.h), or NULL */
    char remote[PT_IP_TEXT_MAX]; /* the peer, canonical text */
    struct pt_ip remote_ip;      /* the same, parsed (family 0: not an IP) */
    char listener[32];           /* copied: listeners can be replaced by a reload (names ≤ 31) */
    const char *scheme;
    uint8_t remote_len;
    uint8_t lslot;           /* the worker's connection counts slot for `listener` (metrics.h) */
    uint32_t hs_timeout_ms;  /* TLS: the handshake's time limit (listeners[].tls) */
    bool readable, writable; /* edge-triggered readiness not yet consumed */
    bool hup;                /* peer half-closed or errored: read until EOF */
    bool hup_unjudged;       /* hangup reported before its request was complete */
    bool hup_reset;          /* the hangup was a reset or error, not a FIN */
    bool closed;
    bool http2;            /* the listener takes HTTP/2: sniff the first bytes */
    bool want_proxy;       /* a PROXY header is due before any HTTP byte */
    bool in_run;           /* conn_run is on the stack: a wake only marks `again` */
    bool again;            /* woken during conn_run: pump once more */
    bool head_started;     /* some bytes of the next head have arrived */
    uint64_t head_ns;      /* when they did (the loop's clock): request time starts there */
    bool lingering;        /* response sent, write side shut, discarding input */
    bool next_pipelined;   /* the next request's bytes came while one was in progress */
    uint64_t idle_since;   /* ms: when it last went idle between requests (eviction LRU) */
    bool cut;              /* closing mid-response: drop what is in flight */
    uint64_t linger_bytes; /* discarded while lingering */
    uint64_t requests;     /* transactions started */
    uint64_t hup_req;      /* with hup_unjudged: the request the hangup follows */
};

struct h1_txn {
    struct pt_exchange ex;
    struct pt_conn *c;
    int minor_version;
    bool expect_continue;
    bool head_only; /* HEAD: no body in the response */
    bool pipelined; /* sent while the previous request was in progress */

    /* request body, client → exchange */
    enum body_mode req_mode;
    uint64_t req_left; /* BODY_CL: bytes still to hand over */
    struct pt_chunked req_ck;
    uint32_t req_ready; /* BODY_CHUNKED: payload bytes at rbuf start */
    bool req_scan_done; /* chunked: terminator seen */
    bool req_done;      /* whole body handed over (or none) */
    bool input_settled; /* `readable` checked once the request was complete */
    uint64_t body_limit;
    uint64_t body_seen; /* chunked payload bytes received */
    /* limits.min_body_rate: body bytes received, the count at the current
     * window's start, and the window's timer (armed only while a body is
     * being received and nothing of a response went out). */
    uint64_t body_rx, rate_mark;
    struct pt_timer rate_timer;

    /* response, exchange → client */
    uint32_t built_seq; /* ex.resp_seq the head below was built for */
    bool head_built;
    pt_slice chead; /* response head (or whole gateway response) */
    uint32_t chead_sent;
    enum out_mode out;
    bool out_gateway; /* chead holds the whole response */
    bool out_end;     /* chunked: last-chunk queued */
    bool need_crlf;   /* chunked: the previous chunk's CRLF is still due */
    char frame[32];   /* chunked framing before/after payload */
    uint32_t frame_len, frame_sent;
    uint32_t chunk_left; /* payload bytes of the chunk in flight */
    bool body_finished;  /* every body byte (and framing) is out */
    pt_slice interim;    /* 1xx interim heads not yet sent */
    uint32_t interim_sent;
    char *interim_buf;
    uint32_t interim_cap;
    bool continue_done;
    bool close_after;

    /* tunnel (a 101 to Upgrade: websocket): both sides raw until each EOF */
    bool tunnel;
    bool tunnel_eof;     /* the client closed its side (read EOF) */
    bool tunnel_wr_shut; /* the upstream's side ended: our FIN went to the client */
};

/* The connection's byte stream: TLS when the listener terminates it, the
 * socket otherwise (same semantics, core/tls.h). */
static inline ssize_t pt_conn_recv(struct pt_conn *c, void *buf, size_t len)
{
    if (c->tls)
        return pt_tls_recv(c->tls, buf, len);
    return pt_io_recv(&c->w->loop, &c->io, buf, len);
}

static inline ssize_t pt_conn_sendv(struct pt_conn *c, const struct iovec *iov, int n)
{
    if (c->tls)
        return pt_tls_sendv(c->tls, iov, n);
    return pt_io_sendv(&c->w->loop, &c->io, iov, n);
}

static inline int pt_conn_shutdown_wr(struct pt_conn *c)
{
    if (c->tls)
        return pt_tls_shutdown_wr(c->tls);
    return pt_io_shutdown_wr(&c->w->loop, &c->io);
}

/* Input is known to be waiting: the socket's, or bytes TLS holds. */
static inline bool pt_conn_has_input(struct pt_conn *c)
{
    return pt_io_has_input(&c->w->loop, &c->io) || (c->tls && pt_tls_has_buffered(c->tls));
}

/* TLS records the client is owed still wait for room in the socket (the
 * side buffer): closing now would cut the last response short. */
static inline bool pt_conn_tls_owes(const struct pt_conn *c)
{
    return c->tls && pt_tls_write_pending(c->tls);
}

/* h1_server.c */
void pt_h1s_close(struct pt_conn *c);
void pt_h1s_cut(struct h1_txn *t, const char *why);
void pt_h1s_txn_end(struct h1_txn *t, bool completed);
struct h1_txn *pt_h1s_txn_new(struct pt_conn *c);
void pt_h1s_codec_error(struct pt_conn *c, int status, const char *why);
void pt_h1s_timeout(struct pt_loop *loop, struct pt_timer *tm);
/* The one place the connection's peer (c->remote: the exchange's
 * `remote`, X-Forwarded-For, the log's remote_addr) is set: from the
 * socket at accept, then from a PROXY header when the listener takes one. */
void pt_h1s_set_peer(struct pt_conn *c, const struct sockaddr_storage *peer);

/* Per-thread parse scratch, grown to n fields; NULL on OOM. */
struct pt_h1_header *pt_h1s_scratch_headers(size_t n);

/* TLS: the handshake ended (counted per listener; a failure is logged at
 * debug and closes the connection without a response). */
void pt_h1s_tls_done(struct pt_conn *c, bool ok, const char *why);

/* h1_server_io.c: pumps until nothing can move. */
void pt_h1s_run(struct pt_conn *c);
/* Starts judging the request body's rate (limits.min_body_rate). */
void pt_h1s_body_rate_start(struct h1_txn *t);

#endif
