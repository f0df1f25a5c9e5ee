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
#include "core/tls.h"
#include "proxy/state.h"
#include "proxy/upstream_types.h"

struct pt_upool;
struct pt_outbound;

struct pt_uconn {
    struct pt_io io;
    /* TLS to the upstream (upstreams.*.tls, https:// URLs); NULL: plain.
     * Created by pt_uconn_start_tls once connect() completed; the
     * handshake is done when tls->handshake_done. */
    struct pt_tls *tls;
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
struct pt_uconn *pt_uconn_acquire(struct pt_outbound *ob, const struct pt_target *t,
                                  const struct pt_upstream_tls *tls, bool fresh, bool *reused,
                                  int *err);
/* After EPOLLOUT on a connecting socket: 0 when connected, else -errno. */
int pt_uconn_finish_connect(struct pt_uconn *uc);

/* TLS to the upstream on a connected socket (pool_tls.c): creates uc->tls
 * with SNI (tls->sni, else the target's host name; none for an IP) and,
 * when tls->verify, the name (or the IP address) the certificate must
 * match, offering the pool's last session for resumption. 0 or -ENOMEM. */
int pt_uconn_start_tls(struct pt_uconn *uc, const struct pt_upstream_tls *tls,
                       const struct pt_target *t);
/* Drives the handshake: 1 done, 0 in progress, -1 failed (with the
 * reason, "upstream TLS handshake failed: ...", in *why: a thread-local
 * buffer valid until the next call). */
int pt_uconn_handshake(struct pt_uconn *uc, const char **why);
/* Sets up a client SSL_CTX for pooled use: the session cache keeps each
 * target's last session in its pool (not in the SSL_CTX). */
void pt_outbound_tls_ctx_init(SSL_CTX *ctx);

/* The connection's reads and writes: through TLS when it has it. */
static inline ssize_t pt_uconn_recv(struct pt_uconn *uc, void *buf, size_t len)
{
    if (pt_unlikely(uc->tls != NULL))
        return pt_tls_recv(uc->tls, buf, len);
    return pt_io_recv(uc->ob->loop, &uc->io, buf, len);
}

static inline ssize_t pt_uconn_sendv(struct pt_uconn *uc, const struct iovec *iov, int n)
{
    if (pt_unlikely(uc->tls != NULL))
        return pt_tls_sendv(uc->tls, iov, n);
    return pt_io_sendv(uc->ob->loop, &uc->io, iov, n);
}

/* Half-closes toward the upstream (a tunnel's client side ended):
 * close_notify first over TLS. 0 or -1. */
static inline int pt_uconn_shutdown_wr(struct pt_uconn *uc)
{
    if (pt_unlikely(uc->tls != NULL))
        return pt_tls_shutdown_wr(uc->tls);
    return pt_io_shutdown_wr(uc->ob->loop, &uc->io);
}

/* Returns a healthy, fully-read connection to its pool (closing it when the
 * pool already holds `keepalive` idle connections). An idle connection is
 * closed after `idle_ms` unused, so a middlebox that silently drops idle
 * flows never leaves dead connections in the pool. */
void pt_uconn_release(struct pt_uconn *uc, uint32_t keepalive, uint64_t idle_ms);
void pt_uconn_close(struct pt_uconn *uc);

#endif
