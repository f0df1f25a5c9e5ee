/*
 * worker.h — data-plane threads (DESIGN.md §2, §3).
 *
 * Each worker owns an epoll loop, its own SO_REUSEPORT listening sockets,
 * its client connections, its upstream pools and its buffer pool. Nothing
 * on the request path is shared except the published generation pointer
 * (read once per loop turn) and a per-process connection counter.
 *
 * Generations are reclaimed by quiescent states: each worker publishes the
 * id of the generation it saw at the top of its latest loop turn
 * (`seen_gen`) and the ids of the generations its requests still pin
 * (`pinned_ids`, one per pin slot). The control thread frees a retired
 * generation once every worker has seen a newer one and none pins it.
 */
#ifndef PT_GATEWAY_WORKER_H
#define PT_GATEWAY_WORKER_H

#include "core/buf.h"
#include "core/loop.h"
#include "gateway/access_log.h"
#include "gateway/generation.h"
#include "proxy/pool.h"

#include <pthread.h>
#include <stdatomic.h>

struct pt_conn;

struct pt_wlistener {
    struct pt_io io;
    struct pt_worker *w;
    const char *name; /* points into the generation that opened it, copied */
    char name_buf[64];
    const char *scheme; /* "http" (TLS listeners will say "https"): X-Forwarded-Proto */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool paused; /* accept paused (EMFILE / max_connections) */
};

#define PT_MAX_PINNED 16

struct pt_worker {
    int id;
    pthread_t thread;
    struct pt_loop loop;
    struct pt_bufpool bufs;
    struct pt_arena_pool arena_pool; /* request arena blocks */
    struct pt_outbound ob;
    struct pt_io wake_io; /* eventfd: reload, shutdown */

    struct pt_generation *gen; /* snapshot for this loop turn */
    uint64_t listeners_gen;    /* generation id whose listeners are open */
    struct pt_wlistener *listeners;
    uint32_t nlisteners;

    /* Pins: generations with live requests on this worker. */
    struct {
        struct pt_generation *gen;
        uint32_t count;
    } pinned[PT_MAX_PINNED];
    _Atomic uint64_t seen_gen;
    _Atomic uint64_t pinned_ids[PT_MAX_PINNED]; /* pinned[i].gen->id, 0 when free */

    /* Round-robin state, rebuilt when the generation changes. */
    struct pt_rr_state *rr;
    int *rr_current; /* backing store of every rr[i].current */
    uint64_t rr_gen;

    struct pt_conn *conns; /* all client connections (for drain/shutdown) */
    uint32_t nconns;
    struct pt_conn *to_free;
    struct pt_conn *conn_cache; /* recycled connection objects */
    uint32_t nconn_cache;

    struct pt_alog_ring alog;
    uint64_t rng;            /* request-id generator state */
    _Atomic uint64_t served; /* requests completed; written by the worker only */
    _Atomic bool draining;
};

/* Process-wide state shared by workers and the control thread. */
extern _Atomic(struct pt_generation *) pt_gen_current;
extern _Atomic uint64_t pt_active_connections;

int pt_worker_start(struct pt_worker *w, int id);
/* Wakes the worker so it notices a new generation or a drain request. */
void pt_worker_wake(struct pt_worker *w);
/* Stops accepting and lets in-flight requests finish; the thread exits when
 * it has no connections left or the drain deadline passes. */
void pt_worker_drain(struct pt_worker *w);
void pt_worker_join(struct pt_worker *w);

/* Called by the codecs and the exchange */
/* The generation a request starting now must use (the newest published):
 * a reload that has been logged applies to the very next request. */
struct pt_generation *pt_worker_refresh_gen(struct pt_worker *w);
void pt_worker_pin(struct pt_worker *w, struct pt_generation *g);
void pt_worker_unpin(struct pt_worker *w, struct pt_generation *g);
/* Round-robin state for u, or NULL when g is not the generation of this
 * loop turn. */
struct pt_rr_state *pt_worker_rr(struct pt_worker *w, const struct pt_generation *g,
                                 const struct pt_upstream *u);

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
#define PT_REQ_ARENA_BLOCK 4096
/* h1_server.c: frees the calling worker thread's parse scratch space. */
void pt_conn_thread_exit(void);

#endif
