/*
 * worker.h — data-plane threads (DESIGN.md §2, §3, §6).
 *
 * Each worker owns an epoll loop, its own SO_REUSEPORT listening sockets,
 * its client connections, its upstream pools and its buffer pool. Nothing
 * on the request path is shared except the published generation pointer
 * (read once per loop turn), a per-process connection counter and the
 * per-target state cells (proxy/state.h).
 *
 * Generations are reclaimed by quiescent states: each worker publishes the
 * id of the generation it saw at the top of its latest loop turn
 * (`seen_gen`) and counts its requests on each generation in that
 * generation's `pins[worker id]` (no cap on how many generations). The
 * control thread frees a retired generation once every worker has seen a
 * newer one and no worker's count on it is above zero (pt_worker_holds).
 *
 * Other threads talk to a worker through its message queue
 * (pt_worker_post): a lock-free MPSC queue behind the wake eventfd.
 */
#ifndef PT_GATEWAY_WORKER_H
#define PT_GATEWAY_WORKER_H

#include "core/buf.h"
#include "core/loop.h"
#include "core/mpsc.h"
#include "gateway/access_log.h"
#include "gateway/generation.h"
#include "gateway/tls_listener.h"
#include "gateway/trace.h"
#include "gateway/metrics.h"
#include "proxy/balance.h"
#include "proxy/pool.h"
#include "proxy/redis.h"

#include <pthread.h>
#include <stdatomic.h>

struct pt_conn;

struct pt_wlistener {
    struct pt_io io;
    struct pt_worker *w;
    const char *name; /* points into the generation that opened it, copied */
    char name_buf[64];
    const char *scheme; /* "http", or "https" on a TLS listener: X-Forwarded-Proto */
    /* TLS listeners: the generation's context (a reference of our own,
     * gateway/tls_listener.h) and the handshake timeout; NULL: plain. */
    SSL_CTX *tls_ctx;
    uint64_t handshake_timeout_ms;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool paused;         /* accept paused (EMFILE / max_connections) */
    bool proxy_protocol; /* connections start with a PROXY v1/v2 header */
    bool http2;          /* HTTP/2 taken (h2_server.h) */
    /* Socket peers allowed to send it (malloc'd copy: the generation that
     * opened the listener may go first); none: any peer. */
    struct pt_cidr *proxy_from;
    uint32_t nproxy_from;
};

struct pt_worker;

/*
 * A message to a worker (DESIGN.md §6: a new JWKS, a health change, a cache
 * purge). Ownership: the poster allocates and fills it (usually embedded in
 * a struct of its own, reached with pt_container_of). Once pt_worker_post
 * returns 0 the message is the worker's: it calls `run` exactly once, on
 * its own thread, in posting order per poster; `run` frees the message or
 * hands it back (for instance by posting a reply to the control loop).
 * Messages still queued when the worker stops run on its thread during
 * shutdown, after its connections are closed. Never posted on the request
 * path.
 */
struct pt_wmsg {
    struct pt_mpsc_node node; /* the queue's link */
    uint32_t kind;            /* the poster's tag: what the message carries */
    void (*run)(struct pt_worker *w, struct pt_wmsg *m);
};

/* Connections to the shared store one worker keeps besides the newest
 * generation's (worker.redis_retired), and how long an unused one stays. */
#define PT_WORKER_MAX_REDIS 8
#define PT_WORKER_REDIS_IDLE_MS 10000

struct pt_worker {
    int id;
    pthread_t thread;
    struct pt_loop loop;
    struct pt_bufpool bufs;
    struct pt_arena_pool arena_pool; /* request arena blocks */
    struct pt_outbound ob;
    struct pt_io wake_io; /* eventfd: reload, shutdown, messages */
    struct pt_mpsc inbox; /* pt_wmsg queue, drained on wake */

    struct pt_generation *gen; /* snapshot for this loop turn */
    uint64_t listeners_gen;    /* generation id whose listeners are open */
    struct pt_wlistener *listeners;
    uint32_t nlisteners;

    /* Generation id at the top of the latest loop turn; UINT64_MAX once
     * the worker has stopped. (Pin counts live in each generation.) */
    _Atomic uint64_t seen_gen;

    /* Round-robin state, rebuilt when the generation changes. */
    struct pt_rr_state *rr;
    int *rr_current; /* backing store of every rr[i].current */
    uint64_t rr_gen;

    struct pt_conn *conns; /* all client connections (for drain/shutdown) */
    uint32_t nconns;
    struct pt_conn *to_free;
    struct pt_conn *conn_cache; /* recycled connection objects */
    uint32_t nconn_cache;

    /* The shared store (`cluster.redis`, proxy/redis.h): this worker's
     * connection for the newest generation's config, made on first use.
     * Connections for other configs (older generations still finishing
     * requests after a reload changed cluster.redis) are kept by config in
     * redis_retired, at most PT_WORKER_MAX_REDIS, so requests of two
     * generations share two connections instead of reopening one at each
     * switch; each is freed between loop turns once nobody waits on it and
     * nobody used it for PT_WORKER_REDIS_IDLE_MS. */
    struct pt_redis *redis;
    struct pt_worker_redis_slot {
        struct pt_redis *r;
        uint64_t used_ms; /* loop time of the last request on it */
    } redis_retired[PT_WORKER_MAX_REDIS];
    uint32_t nredis_retired;

    struct pt_alog_ring alog;
    struct pt_trace_ring trace; /* sampled spans waiting for export (gateway/trace.h) */
    uint64_t rng;               /* request-id generator state */
    _Atomic uint64_t served;    /* requests completed; written by the worker only */
    /* Client connections opened/closed per listener name (metrics.h);
     * written by the worker only, read by the scrape. */
    struct pt_conn_counts conn_counts;
    _Atomic bool draining;
    /* HTTP/2 connections with work for the end of this loop turn (read,
     * pump woken streams, one write): h2_session.c's flush list, run by
     * pt_h2s_flush_turn after pt_loop_run_once dispatched the turn's
     * events. NULL: nothing to do (one pointer test per turn). */
    struct pt_h2s *h2_flush;
    /* Requests parked by a filter (filter.h svc->park, exchange_detached.c)
     * and those being woken this turn; `unpark` is set by any thread
     * (pt_worker_unpark) before it writes wake_io. */
    struct pt_exchange *parked, *parked_run;
    _Atomic bool unpark;
    /* Detached calls (svc->call_detached) this worker owns. */
    struct pt_detached *detached;
    uint32_t ndetached;
};

/* Process-wide state shared by workers and the control thread. */
extern _Atomic(struct pt_generation *) pt_gen_current;
extern _Atomic uint64_t pt_active_connections;

int pt_worker_start(struct pt_worker *w, int id);
/* Wakes the worker so it notices a new generation or a drain request. */
void pt_worker_wake(struct pt_worker *w);
/* Queues m for w and wakes it (any thread, after pt_worker_start). 0, or
 * -EPIPE when the worker has stopped: m is then still the caller's. */
int pt_worker_post(struct pt_worker *w, struct pt_wmsg *m);
/* Control thread: may w still use g? True until w has begun a loop turn on
 * a newer generation and has no request left on g. A stopped worker holds
 * nothing. */
bool pt_worker_holds(struct pt_worker *w, const struct pt_generation *g);
/* Stops accepting and lets in-flight requests finish; the thread exits when
 * it has no connections left or the drain deadline passes. */
void pt_worker_drain(struct pt_worker *w);
void pt_worker_join(struct pt_worker *w);

/* Called by the codecs and the exchange */
/* The generation a request starting now must use (the newest published):
 * a reload that has been logged applies to the very next request. */
struct pt_generation *pt_worker_refresh_gen(struct pt_worker *w);
/* A request starts / ends on g (g is this turn's generation or a newer
 * one: never one older than seen_gen). A plain add on a counter only this
 * worker writes. */
void pt_worker_pin(struct pt_worker *w, struct pt_generation *g);
void pt_worker_unpin(struct pt_worker *w, struct pt_generation *g);
/* Round-robin state for u, or NULL when g is not the generation of this
 * loop turn. */
struct pt_rr_state *pt_worker_rr(struct pt_worker *w, const struct pt_generation *g,
                                 const struct pt_upstream *u);

/* The worker's connection to g's `cluster.redis` (one per distinct config:
 * reused when one for the same server, password and database exists, else
 * made here), or NULL: g has none, out of memory, or PT_WORKER_MAX_REDIS
 * configs in use at once. */
struct pt_redis *pt_worker_redis(struct pt_worker *w, const struct pt_generation *g);

/* Any thread: wakes the parked requests (svc->park) of every worker whose
 * id % 64 is set in `workers`. */
void pt_worker_unpark(uint64_t workers);
/* exchange_detached.c, on the worker: runs every parked request's
 * callback once; cancels the worker's detached calls (it stops). */
void pt_worker_run_parked(struct pt_worker *w);
void pt_worker_detached_cancel_all(struct pt_worker *w);

/* Resumes accepting on listeners paused by max_connections or EMFILE. */
void pt_worker_resume_accept(struct pt_worker *w);

/* h1_server.c: accepted socket → client connection. */
void pt_conn_accept(struct pt_worker *w, struct pt_wlistener *l, int fd,
                    const struct sockaddr_storage *peer);
/* h1_server.c: close idle keep-alive connections (drain). */
void pt_conn_close_idle(struct pt_worker *w);
/* h1_server.c: at max_connections, close this worker's keep-alive connection
 * idle the longest, so a new client is not locked out by idle ones (nginx
 * does the same when short of connections). False when none is idle. */
bool pt_conn_close_longest_idle(struct pt_worker *w);
/* h1_server.c: forcibly close everything (drain deadline). */
void pt_conn_close_all(struct pt_worker *w);
void pt_conn_reap(struct pt_worker *w);
void pt_conn_cache_free(struct pt_worker *w);
#define PT_CONN_CACHE_MAX 256
/* A request arena's standard block (pooled per worker): a request waiting
 * on a filter (its h1_txn with the exchange, its head and fields) fits in
 * one, so 10,000 suspended requests cost ~3 KiB each; a proxied request
 * takes a second block from the pool while it runs. */
#define PT_REQ_ARENA_BLOCK 3072
/* h1_server.c: frees the calling worker thread's parse scratch space. */
void pt_conn_thread_exit(void);

#endif
