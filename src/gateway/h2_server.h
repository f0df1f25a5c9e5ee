/*
 * h2_server.h — private to the HTTP/2 server codec (h2_session.c: the
 * connection, nghttp2's session, reading, writing, timers, flood guards,
 * GOAWAY; h2_stream.c: one stream = one exchange, request head and body
 * in, response out). See h2_session.c for what the codec owns.
 */
#ifndef PT_GATEWAY_H2_SERVER_H
#define PT_GATEWAY_H2_SERVER_H

#include "gateway/h1_server.h"

#include <nghttp2/nghttp2.h>

/* SETTINGS_MAX_CONCURRENT_STREAMS we advertise (and enforce). */
#define PT_H2_MAX_STREAMS 100
/* Per-stream receive window: the request body a stream buffers at most. */
#define PT_H2_STREAM_WINDOW 65535u
/* Connection receive window. */
#define PT_H2_CONN_WINDOW (1u << 20)
/* Control frames (SETTINGS, PING, PRIORITY, WINDOW_UPDATE on stream 0,
 * empty DATA, HEADERS without END_HEADERS) a client may send per window
 * before it gets GOAWAY ENHANCE_YOUR_CALM. */
#define PT_H2_FLOOD_WINDOW_MS 1000
#define PT_H2_MAX_CTL_PER_WINDOW 500
/* Streams reset before their response is complete (by the client, or by
 * nghttp2 for the client's protocol error), per 10 s, before GOAWAY
 * ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487; MadeYouReset): more
 * than this many, and more than half the streams opened in the window.
 * A browser cancelling a navigation resets up to 100 at once (the stream
 * cap): four of those in 10 s pass; a busy connection that cancels some
 * of many never trips; our own resets (an upstream cut, the send timeout)
 * never count. nghttp2's own token bucket (burst 1000, 33/s) also applies. */
#define PT_H2_RESET_WINDOW_MS 10000
#define PT_H2_MAX_RESETS_PER_WINDOW (4 * PT_H2_MAX_STREAMS)
/* Header block bytes (HPACK-compressed, over HEADERS + CONTINUATION) per
 * request at most: a multiple of max_header_bytes. Beyond: GOAWAY. */
#define PT_H2_HEADER_BLOCK_FACTOR 2

struct pt_h2s;

struct h2_stream {
    struct pt_exchange ex; /* first: the exchange's conn is the stream */
    struct pt_arena arena;
    struct pt_h2s *h;
    struct h2_stream *next, *prev; /* the connection's open streams */
    /* On the connection's ready list: the stream has something to pump
     * (its exchange woke, request DATA or END_STREAM came, its response
     * body was drained into frames). Only ready streams are pumped. */
    struct h2_stream *rnext, *rprev;
    bool queued;
    int32_t id;

    /* request head, from the header callbacks */
    pt_slice method, path, scheme, authority, host, cookie, protocol;
    int64_t content_length; /* -1: none */
    uint32_t nfields;       /* regular fields of the current section (head, trailers) */
    uint64_t hbytes;        /* decoded bytes, 32 per field added (RFC 7541 §4.1) */
    uint64_t hblock;        /* header block bytes on the wire */
    int hfail;              /* a status to answer instead (400 / 431), 0: fine */
    const char *hwhy;       /* and why */
    bool tfail;             /* the trailers are over the caps: reset the stream */
    bool started;           /* pt_exchange_start ran */
    bool ended;             /* pt_exchange_end ran */
    bool req_eos;           /* END_STREAM received */
    bool discard;           /* request DATA is dropped (the exchange won't read it) */
    bool head_only;         /* HEAD */
    bool nghttp2_closed;    /* the stream is gone from the session */
    /* RFC 8441 WebSocket (h2_tunnel.c): an extended CONNECT mapped onto
     * the exchange's tunnel; open once the upstream's 101 was checked
     * (from then on the stream's DATA are tunnel bytes both ways). */
    bool tunnel;
    bool tunnel_open;
    char ws_key[25]; /* the Sec-WebSocket-Key we sent upstream */

    /* request body: DATA not yet pulled by the exchange (≤ the window) */
    char *body;
    uint32_t bstart, bend, bcap;
    uint64_t body_in;
    uint64_t body_limit;
    /* limits.min_body_rate (h2_stream.c): body_in at the current window's
     * start, and the window's timer (armed only while the body is due and
     * no response was made). */
    uint64_t rate_mark;
    struct pt_timer rate_timer;

    /* response */
    bool submitted; /* HEADERS submitted for built_seq */
    uint32_t built_seq;
    bool deferred; /* the data provider said DEFERRED */
    bool gateway;  /* the body is gw (whole, here) */
    pt_slice gw;   /* gateway-made body */
    uint32_t gw_off;
    bool out_eos; /* END_STREAM sent */
    bool rst_sent;
    uint64_t out_ms; /* when response bytes last left (the send timeout) */
};

struct pt_h2s {
    nghttp2_session *s;
    struct pt_conn *c;
    struct h2_stream *streams;            /* open */
    struct h2_stream *ready, *ready_tail; /* streams to pump (pt_h2_stream_ready) */
    struct pt_h2s *fnext;                 /* the worker's flush list (w->h2_flush) */
    bool flush_queued;                    /* on it */
    uint32_t nstreams;
    uint32_t nheads;    /* open streams whose header block is not complete */
    const uint8_t *out; /* nghttp2_session_mem_send output not yet written */
    size_t out_len;
    bool in_run, again;
    bool goaway;    /* GOAWAY submitted: no new streams */
    bool term;      /* the session is over (error, guard, timeout): read no more */
    bool calm;      /* a flood guard tripped: GOAWAY ENHANCE_YOUR_CALM due */
    bool had_req;   /* a request head arrived (the header timeout is over) */
    bool out_block; /* the socket took less than offered */
    uint8_t timer_mode;
    uint64_t ctl_win_ms, rst_win_ms;
    uint32_t ctl_frames, resets, win_streams; /* in the current windows */
    uint64_t requests;
};

/* h2_session.c */
/* Runs every connection on the worker's flush list (end of a loop turn). */
void pt_h2s_flush_turn(struct pt_worker *w);
/* Queues the connection's run for the end of this loop turn (or for the
 * next pass of the run on the stack). */
void pt_h2s_defer(struct pt_h2s *h);
/* Puts a stream on its connection's ready list (idempotent) / takes it
 * off (a stream being freed). */
void pt_h2_stream_ready(struct pt_h2s *h, struct h2_stream *st);
void pt_h2_stream_unready(struct pt_h2s *h, struct h2_stream *st);
/* Takes over the accepted connection: bytes in c->rbuf are the start of
 * the HTTP/2 stream (the client preface). Returns false when it closed c. */
bool pt_h2s_adopt(struct pt_conn *c);
void pt_h2s_run(struct pt_conn *c);
/* From pt_h1s_close: ends every stream, drops the session. */
void pt_h2s_close(struct pt_conn *c);
/* From pt_conn_reap: frees what close kept (the run may still be on the
 * stack when close happens). */
void pt_h2s_free(struct pt_conn *c);
/* Drain: GOAWAY (last stream id), in-flight streams finish, then close. */
void pt_h2s_drain(struct pt_conn *c);
/* Frees the worker thread's nghttp2 callbacks and options. */
void pt_h2s_thread_exit(void);
/* Counts a stream the client opened / reset before its response was
 * complete; trips `calm` over budget. */
void pt_h2s_count_stream(struct pt_h2s *h);
void pt_h2s_count_reset(struct pt_h2s *h);
/* For max_connections: whether the connection is idle between requests
 * (a request was served, no stream is open, nothing is left to write),
 * so it may give way; and giving way (GOAWAY NO_ERROR, then closed). */
bool pt_h2s_idle(const struct pt_conn *c);
void pt_h2s_evict(struct pt_conn *c);

/* h2_stream.c */
void pt_h2_set_stream_callbacks(nghttp2_session_callbacks *cb);
/* One pass over a stream's exchange: pump, render the response, resume
 * the body. 1 on progress. */
int pt_h2_stream_pump(struct pt_h2s *h, struct h2_stream *st);
/* Ends the stream's exchange (once) and gives its memory back. */
void pt_h2_stream_free(struct pt_h2s *h, struct h2_stream *st, bool completed);
/* Whether the stream's response has bytes ready that the client's
 * flow-control window (the stream's or the connection's) holds back. */
bool pt_h2_stream_window_shut(struct pt_h2s *h, struct h2_stream *st);
/* Resets the stream (RST_STREAM code), its exchange logs `why`. */
void pt_h2_stream_reset(struct pt_h2s *h, struct h2_stream *st, uint32_t code, const char *why);

/* h2_tunnel.c */
/* The head of a CONNECT stream: `:protocol websocket` becomes the
 * exchange's WebSocket upgrade (true); anything else is refused (hfail
 * set: plain CONNECT 405, another :protocol 501). */
bool pt_h2_tunnel_request(struct h2_stream *st);
/* The upstream switched (ex->upgraded): checks Sec-WebSocket-Accept
 * against our key and turns the 101 into the stream's 200 (true); a
 * mismatch becomes a 502 (false). */
bool pt_h2_tunnel_switched(struct h2_stream *st);

#endif
