/*
 * pool.h — outbound connections: per-worker keep-alive pools keyed by
 * target address and non-blocking connect.
 *
 * Ownership: a pt_uconn belongs either to its pool (idle: the pool watches
 * it and closes it when the peer hangs up) or to exactly one caller
 * (acquired), who must hand it back with pt_uconn_release() or
 * pt_uconn_close(). Pools outlive config generations: they are keyed by the
 * target's socket address, not by a generation's objects, so a reload that
 * keeps a target keeps its warm connections.
 */
#ifndef PT_PROXY_POOL_H
#define PT_PROXY_POOL_H

#include "core/buf.h"
#include "core/loop.h"
#include "proxy/state.h"
#include "proxy/upstream_types.h"

struct pt_upool;
struct pt_outbound;

struct pt_uconn {
    struct pt_io io;
    struct pt_timer timer; /* owned by the current user while acquired */
    struct pt_outbound *ob;
    struct pt_upool *pool;        /* the pool this target's connections return to */
    struct pt_uconn *next, *prev; /* idle list links */
    struct pt_buf *rbuf;          /* response bytes; NULL while idle */
    bool connected;               /* connect() completed */
    bool idle;                    /* sitting in the pool */
    bool closed;                  /* fd closed; memory freed at end of loop turn */
    uint32_t requests;            /* requests served on this connection */
    uint64_t released_turn;       /* loop turn it last went back to the pool in */
    /* While acquired: the user's event handler and context. */
    void (*on_event)(struct pt_uconn *uc, uint32_t events);
    void *user;
    struct pt_uconn *free_next; /* deferred-free list */
};

/* Per-worker outbound state. */
struct pt_outbound {
    struct pt_loop *loop;
    struct pt_bufpool *bufs;
    struct pt_upool **pools; /* open-addressing table by address */
    uint32_t npools, cappools;
    struct pt_uconn *to_free;
    uint64_t connects, reuses; /* counters for metrics */
};

void pt_outbound_init(struct pt_outbound *ob, struct pt_loop *loop, struct pt_bufpool *bufs);
/* Closes every idle connection and frees the pools. */
void pt_outbound_destroy(struct pt_outbound *ob);
/* Frees connections closed during this loop turn; call after each turn. */
void pt_outbound_reap(struct pt_outbound *ob);

/*
 * Gets a connection to `t`: an idle pooled one when available and `fresh`
 * is false (*reused = true), else a new non-blocking socket with connect() in progress
 * (uc->connected false; the caller waits for EPOLLOUT and calls
 * pt_uconn_finish_connect). Returns NULL with *err = -errno on immediate
 * failure (e.g. EMFILE, ECONNREFUSED on loopback).
 */
struct pt_uconn *pt_uconn_acquire(struct pt_outbound *ob, const struct pt_target *t, bool fresh,
                                  bool *reused, int *err);
/* After EPOLLOUT on a connecting socket: 0 when connected, else -errno. */
int pt_uconn_finish_connect(struct pt_uconn *uc);
/* Returns a healthy, fully-read connection to its pool (closing it when the
 * pool already holds `keepalive` idle connections). An idle connection is
 * closed after `idle_ms` unused, so a middlebox that silently drops idle
 * flows never leaves dead connections in the pool. */
void pt_uconn_release(struct pt_uconn *uc, uint32_t keepalive, uint64_t idle_ms);
void pt_uconn_close(struct pt_uconn *uc);

#endif
