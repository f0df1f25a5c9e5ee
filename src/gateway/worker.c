/*
 * worker.c — see worker.h. The thread body, listening sockets, accept, the
 * message queue, and the worker's half of generation reclamation.
 */
#include "gateway/worker.h"

#include "core/log.h"
#include "gateway/h2_server.h"
#include "gateway/trace_export.h"

#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

_Atomic(struct pt_generation *) pt_gen_current;
_Atomic uint64_t pt_active_connections;

/* ---- generation pins ---- */

/*
 * A request's pin is a count in its generation, in this worker's own slot
 * (g->pins[w->id]): no search, no cap, and no locked instruction. Only this
 * worker writes the slot, so a relaxed load and store make a plain add.
 *
 * Why the control thread may trust what it reads: a request pins only this
 * turn's generation or a newer one, never one older than the seen_gen this
 * worker published (refresh_gen only moves forward). So by the time the
 * control thread sees seen_gen > g->id (an acquire load of a release
 * store), every pin this worker will ever take on g happened before that
 * store and is visible. The store that brings the count to zero is a
 * release: everything this worker read from g happens before the control
 * thread, seeing zero, frees g.
 */
void pt_worker_pin(struct pt_worker *w, struct pt_generation *g)
{
    _Atomic uint32_t *c = &g->pins[w->id].count;
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

void pt_worker_unpin(struct pt_worker *w, struct pt_generation *g)
{
    _Atomic uint32_t *c = &g->pins[w->id].count;
    uint32_t n = atomic_load_explicit(c, memory_order_relaxed);
    assert(n > 0);
    atomic_store_explicit(c, n - 1, memory_order_release);
}

bool pt_worker_holds(struct pt_worker *w, const struct pt_generation *g)
{
    uint64_t seen = atomic_load_explicit(&w->seen_gen, memory_order_acquire);
    if (seen == UINT64_MAX)
        return false; /* stopped: its connections are gone */
    if (seen <= g->id)
        return true; /* may still pick g up */
    return (uint32_t)w->id < g->npins &&
           atomic_load_explicit(&g->pins[w->id].count, memory_order_acquire) > 0;
}

struct pt_rr_state *pt_worker_rr(struct pt_worker *w, const struct pt_generation *g,
                                 const struct pt_upstream *u)
{
    /* The state is sized for the generation of this turn: a request that
     * started on an older one (a filter suspended it across a reload) has
     * none here. */
    return g->id == w->rr_gen ? &w->rr[u->index] : NULL;
}

/* Rebuilds per-upstream balancer state for the generation of this turn.
 * Allocates only on a generation change. */
static void rr_sync(struct pt_worker *w)
{
    struct pt_generation *g = w->gen;
    if (w->rr_gen == g->id && w->rr)
        return;
    free(w->rr_current);
    free(w->rr);
    size_t total = 0;
    for (uint32_t i = 0; i < g->nupstreams; i++)
        total += g->upstreams[i].ntargets;
    w->rr = calloc(g->nupstreams ? g->nupstreams : 1, sizeof(*w->rr));
    int *cur = calloc(total ? total : 1, sizeof(int));
    w->rr_current = cur;
    size_t off = 0;
    for (uint32_t i = 0; i < g->nupstreams; i++) {
        w->rr[i].current = cur + off;
        w->rr[i].n = g->upstreams[i].ntargets;
        off += g->upstreams[i].ntargets;
    }
    w->rr_gen = g->id;
    /* The runtime attaches shared state to every target before it
     * publishes a generation; the request path relies on it. */
    for (uint32_t i = 0; i < g->nupstreams; i++)
        for (uint32_t t = 0; t < g->upstreams[i].ntargets; t++)
            assert(g->upstreams[i].targets[t].state != NULL);
}

/* ---- the shared store ---- */

/* The retired connection for cfg, or -1. */
static int redis_retired_find(const struct pt_worker *w, const struct pt_redis_cfg *cfg)
{
    for (uint32_t i = 0; i < w->nredis_retired; i++)
        if (pt_redis_same_cfg(w->redis_retired[i].r, cfg))
            return (int)i;
    return -1;
}

struct pt_redis *pt_worker_redis(struct pt_worker *w, const struct pt_generation *g)
{
    if (!g->has_redis)
        return NULL;
    if (pt_likely(w->redis && pt_redis_same_cfg(w->redis, &g->redis)))
        return w->redis;
    uint64_t now = pt_loop_now(&w->loop);
    bool newest = g == w->gen;
    int i = redis_retired_find(w, &g->redis);
    struct pt_redis *r;
    if (i >= 0) {
        r = w->redis_retired[i].r;
        if (!newest) {
            w->redis_retired[i].used_ms = now;
            return r;
        }
        /* the newest generation's config again: the two trade places */
        if (w->redis)
            w->redis_retired[i] = (struct pt_worker_redis_slot){w->redis, now};
        else
            w->redis_retired[i] = w->redis_retired[--w->nredis_retired];
        w->redis = r;
        return r;
    }
    /* a config not seen yet: a new connection, kept beside the others */
    bool park = newest ? w->redis != NULL : true;
    if (park && w->nredis_retired >= PT_WORKER_MAX_REDIS)
        return NULL;
    r = pt_redis_new(&w->loop, &g->redis);
    if (!r)
        return NULL;
    if (!newest) {
        w->redis_retired[w->nredis_retired++] = (struct pt_worker_redis_slot){r, now};
        return r;
    }
    if (w->redis)
        w->redis_retired[w->nredis_retired++] = (struct pt_worker_redis_slot){w->redis, now};
    w->redis = r;
    return r;
}

/* Between loop turns: frees retired connections nobody waits on and
 * nobody used for PT_WORKER_REDIS_IDLE_MS (all of them with `all`, as the
 * worker stops). */
static void redis_reap(struct pt_worker *w, bool all)
{
    uint64_t now = pt_loop_now(&w->loop);
    uint32_t k = 0;
    for (uint32_t i = 0; i < w->nredis_retired; i++) {
        struct pt_worker_redis_slot sl = w->redis_retired[i];
        if (all || (now - sl.used_ms >= PT_WORKER_REDIS_IDLE_MS && !pt_redis_waiting(sl.r)))
            pt_redis_free(sl.r);
        else
            w->redis_retired[k++] = sl;
    }
    w->nredis_retired = k;
    if (all) {
        pt_redis_free(w->redis);
        w->redis = NULL;
    }
}

/* ---- listeners ---- */

static void on_accept(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_wlistener *l = pt_container_of(io, struct pt_wlistener, io);
    struct pt_worker *w = l->w;
    for (;;) {
        if (atomic_load_explicit(&w->draining, memory_order_relaxed))
            return;
        uint64_t maxc = w->gen->limits.max_connections;
        if (atomic_load_explicit(&pt_active_connections, memory_order_relaxed) >= maxc) {
            /* At the limit, an idle keep-alive connection gives way to a
             * client that is waiting (poll: only one that is, or the last
             * pass of this loop would close one for nobody). With nothing
             * idle, connections wait in the backlog; a closing connection
             * resumes accepting (pt_conn_reap). */
            struct pollfd pfd = {.fd = io->fd, .events = POLLIN};
            if (poll(&pfd, 1, 0) <= 0)
                return; /* nobody waiting: the next arrival raises an event */
            if (!pt_conn_close_longest_idle(w)) {
                l->paused = true;
                return;
            }
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int fd = accept4(io->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE)
                l->paused = true;
            return;
        }
        pt_conn_accept(w, l, fd, &peer);
    }
    (void)loop;
    (void)events;
}

void pt_worker_resume_accept(struct pt_worker *w)
{
    for (uint32_t i = 0; i < w->nlisteners; i++) {
        if (w->listeners[i].paused && w->listeners[i].io.fd >= 0) {
            w->listeners[i].paused = false;
            on_accept(&w->loop, &w->listeners[i].io, EPOLLIN);
        }
    }
}

static int open_listener(const struct pt_listener_cfg *cfg)
{
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&cfg->addr, cfg->addrlen) < 0 || listen(fd, 4096) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static bool same_addr(const struct sockaddr_storage *a, socklen_t alen,
                      const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static void wlisteners_free(struct pt_wlistener *ls, uint32_t n)
{
    for (uint32_t i = 0; ls && i < n; i++) {
        free(ls[i].proxy_from);
        SSL_CTX_free(ls[i].tls_ctx);
    }
    free(ls);
}

/* Opens listeners the current generation adds and closes the ones it
 * dropped; unchanged addresses keep their sockets (and their backlog). */
static void listeners_sync(struct pt_worker *w)
{
    struct pt_generation *g = w->gen;
    if (w->listeners_gen == g->id)
        return;
    struct pt_wlistener *nl = calloc(g->nlisteners ? g->nlisteners : 1, sizeof(*nl));
    if (!nl)
        return;
    for (uint32_t i = 0; i < g->nlisteners; i++) {
        const struct pt_listener_cfg *cfg = &g->listeners[i];
        struct pt_wlistener *l = &nl[i];
        l->w = w;
        l->io.fd = -1;
        l->io.cb = on_accept;
        snprintf(l->name_buf, sizeof(l->name_buf), "%s", cfg->name);
        l->name = l->name_buf;
        l->scheme = "http";
        if (cfg->tls && cfg->tls->ctx && SSL_CTX_up_ref(cfg->tls->ctx)) {
            l->tls_ctx = cfg->tls->ctx;
            l->handshake_timeout_ms = cfg->tls->handshake_timeout_ms;
            l->scheme = "https";
        } else if (cfg->tls) {
            pt_error("worker %d: listener %s: no TLS context", w->id, cfg->name);
            continue;
        }
        memcpy(&l->addr, &cfg->addr, cfg->addrlen);
        l->addrlen = cfg->addrlen;
        /* Read per connection at accept: a reload that changes them
         * applies to the connections accepted after it. */
        l->proxy_protocol = cfg->proxy_protocol;
        l->http2 = cfg->http2;
        if (cfg->nproxy_from) {
            l->proxy_from = malloc(sizeof(*l->proxy_from) * cfg->nproxy_from);
            if (!l->proxy_from) {
                /* Failing open would let anyone claim an address. */
                pt_error("worker %d: listener %s: out of memory", w->id, cfg->name);
                continue;
            }
            memcpy(l->proxy_from, cfg->proxy_from, sizeof(*l->proxy_from) * cfg->nproxy_from);
            l->nproxy_from = cfg->nproxy_from;
        }
        for (uint32_t j = 0; j < w->nlisteners; j++) {
            struct pt_wlistener *old = &w->listeners[j];
            if (old->io.fd >= 0 && same_addr(&old->addr, old->addrlen, &cfg->addr, cfg->addrlen)) {
                /* Unregister while old->io still names the fd: the
                 * registration carries a pointer to `old`, freed below. */
                pt_loop_del(&w->loop, &old->io);
                l->io.fd = old->io.fd;
                old->io.fd = -1;
                break;
            }
        }
        if (l->io.fd < 0) {
            int fd = open_listener(cfg);
            if (fd < 0) {
                pt_error("worker %d: listener %s (%s): %s", w->id, cfg->name, cfg->address,
                         strerror(-fd));
                continue;
            }
            l->io.fd = fd;
        }
        pt_loop_add(&w->loop, &l->io, EPOLLIN);
    }
    for (uint32_t j = 0; j < w->nlisteners; j++)
        pt_io_close(&w->loop, &w->listeners[j].io);
    wlisteners_free(w->listeners, w->nlisteners);
    w->listeners = nl;
    w->nlisteners = g->nlisteners;
    w->listeners_gen = g->id;
    /* Connections already waiting in the backlog (edge-triggered: no new
     * edge will come for them). */
    for (uint32_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].io.fd >= 0)
            on_accept(&w->loop, &w->listeners[i].io, EPOLLIN);
}

static void close_listeners(struct pt_worker *w)
{
    for (uint32_t i = 0; i < w->nlisteners; i++)
        pt_io_close(&w->loop, &w->listeners[i].io);
}

/* ---- wake-ups and messages ---- */

/* Runs a list of messages taken from the inbox, oldest first. */
static void run_messages(struct pt_worker *w, struct pt_mpsc_node *n)
{
    while (n) {
        struct pt_mpsc_node *next = n->next; /* run may free the message */
        struct pt_wmsg *m = pt_container_of(n, struct pt_wmsg, node);
        m->run(w, m);
        n = next;
    }
}

static void on_wake(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_worker *w = pt_container_of(io, struct pt_worker, wake_io);
    uint64_t v;
    while (read(io->fd, &v, sizeof(v)) > 0)
        ;
    /* After the read: a message pushed after the take writes the eventfd
     * again (the push found the queue empty), so none is left behind. */
    run_messages(w, pt_mpsc_take(&w->inbox));
    if (atomic_exchange_explicit(&w->unpark, false, memory_order_acq_rel))
        pt_worker_run_parked(w);
    (void)loop;
    (void)events;
}

void pt_worker_wake(struct pt_worker *w)
{
    uint64_t one = 1;
    ssize_t r = write(w->wake_io.fd, &one, sizeof(one));
    (void)r;
}

/* Running workers by id, for pt_worker_unpark (set at start, cleared as
 * the thread ends). */
#define MAX_WORKERS 1024
static _Atomic(struct pt_worker *) workers_by_id[MAX_WORKERS];

void pt_worker_unpark(uint64_t workers)
{
    for (unsigned i = 0; workers && i < MAX_WORKERS; i++) {
        if (!(workers & (1ull << (i % 64))))
            continue;
        struct pt_worker *w = atomic_load_explicit(&workers_by_id[i], memory_order_acquire);
        if (!w)
            continue;
        /* the flag first: the wake it reads after its eventfd sees it */
        if (!atomic_exchange_explicit(&w->unpark, true, memory_order_acq_rel))
            pt_worker_wake(w);
    }
}

int pt_worker_post(struct pt_worker *w, struct pt_wmsg *m)
{
    int r = pt_mpsc_push(&w->inbox, &m->node);
    if (r < 0)
        return r;
    /* Only a push onto an empty queue wakes: otherwise a wake is already
     * due for the messages ahead of this one. */
    if (r == 1)
        pt_worker_wake(w);
    return 0;
}

/* The wake eventfd and the inbox behind it. 0 or -errno. */
static int wake_init(struct pt_worker *w)
{
    pt_mpsc_init(&w->inbox);
    w->wake_io.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->wake_io.cb = on_wake;
    if (w->wake_io.fd < 0)
        return -errno;
    return pt_loop_add(&w->loop, &w->wake_io, EPOLLIN);
}

/* On the worker's thread as it stops: refuses later posts and runs what
 * is queued, so every accepted message runs exactly once. */
static void inbox_close(struct pt_worker *w)
{
    run_messages(w, pt_mpsc_close(&w->inbox));
}

/* ---- thread ---- */

struct pt_generation *pt_worker_refresh_gen(struct pt_worker *w)
{
    /* Safe mid-turn: the generation read here is the current one, and the
     * control thread frees nothing this worker's published seen_gen (from
     * the top of this turn) does not prove unreachable; the request pins
     * it before the turn ends. */
    struct pt_generation *g = atomic_load_explicit(&pt_gen_current, memory_order_acquire);
    if (pt_unlikely(g != w->gen)) {
        w->gen = g;
        rr_sync(w);
        pt_trace_worker_sync(w);
    }
    return g;
}

static void begin_turn(struct pt_worker *w)
{
    struct pt_generation *g = pt_worker_refresh_gen(w);
    if (w->listeners_gen != g->id && !atomic_load(&w->draining))
        listeners_sync(w);
    atomic_store_explicit(&w->seen_gen, g->id, memory_order_release);
}

static void *worker_main(void *arg)
{
    struct pt_worker *w = arg;
    bool drain_started = false;
    uint64_t drain_deadline = 0;
    pt_loop_thread_start(&w->loop);
    for (;;) {
        begin_turn(w);
        if (atomic_load(&w->draining)) {
            if (!drain_started) {
                drain_started = true;
                close_listeners(w);
                drain_deadline = pt_loop_now(&w->loop) + w->gen->limits.drain_timeout_ms;
            }
            pt_conn_close_idle(w);
            if (w->nconns == 0)
                break;
            if (pt_loop_now(&w->loop) >= drain_deadline) {
                pt_conn_close_all(w);
                pt_conn_reap(w);
                pt_outbound_reap(&w->ob);
                break;
            }
        }
        /* A listener paused at max_connections resumes when a connection
         * closes on this worker; connections may close on other workers
         * instead, so also retry every 50 ms while paused. */
        bool paused = false;
        for (uint32_t i = 0; i < w->nlisteners; i++)
            paused |= w->listeners[i].paused;
        if (paused)
            pt_worker_resume_accept(w);
        pt_loop_run_once(&w->loop, drain_started || paused ? 50 : 1000);
        if (w->h2_flush)
            pt_h2s_flush_turn(w); /* before reap: the list holds live sessions */
        pt_conn_reap(w);
        pt_outbound_reap(&w->ob);
        if (pt_unlikely(w->nredis_retired))
            redis_reap(w, false);
    }
    close_listeners(w);
    pt_conn_reap(w); /* connections closed by the last drain pass */
    if ((unsigned)w->id < MAX_WORKERS)
        atomic_store(&workers_by_id[w->id], NULL);
    pt_worker_detached_cancel_all(w); /* before the pool and the pin go */
    inbox_close(w);
    pt_conn_cache_free(w);
    pt_arena_pool_destroy(&w->arena_pool);
    pt_trace_worker_stop(w);     /* its post in flight uses the outbound client */
    pt_outbound_destroy(&w->ob); /* closes idle pooled upstream connections */
    redis_reap(w, true);         /* no request is left to wait on it */
    /* Last, on this thread: with io_uring, queued closes and the last
     * responses' bytes only reach the kernel through this thread's ring. */
    pt_loop_flush(&w->loop);
    pt_conn_thread_exit();
    atomic_store(&w->seen_gen, UINT64_MAX);
    return NULL;
}

int pt_worker_start(struct pt_worker *w, int id)
{
    w->id = id;
    int rc = pt_loop_init_backend(&w->loop, atomic_load(&pt_gen_current)->io_backend);
    if (rc < 0)
        return rc;
    pt_bufpool_init(&w->bufs, 1024);
    w->arena_pool = (struct pt_arena_pool){.max_free = 1024};
    pt_outbound_init(&w->ob, &w->loop, &w->bufs);
    if (pt_alog_ring_init(&w->alog) < 0)
        return -ENOMEM;
    if ((rc = wake_init(w)) < 0)
        return rc;
    atomic_init(&w->seen_gen, 0);
    atomic_init(&w->draining, false);
    w->rng = pt_now_ns() ^ ((uint64_t)(id + 1) * 0x9E3779B97F4A7C15ull) ^ (uint64_t)getpid();
    /* Open listeners before the thread starts so bind errors are reported
     * at start-up, before the process says it is ready. */
    w->gen = atomic_load(&pt_gen_current);
    rr_sync(w);
    pt_trace_worker_sync(w);
    listeners_sync(w);
    for (uint32_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].io.fd < 0)
            return -EADDRINUSE;
    atomic_store(&w->seen_gen, w->gen->id);
    if ((unsigned)id < MAX_WORKERS)
        atomic_store(&workers_by_id[id], w);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        atomic_store(&workers_by_id[id], NULL);
        return -errno;
    }
    return 0;
}

void pt_worker_drain(struct pt_worker *w)
{
    atomic_store(&w->draining, true);
    pt_worker_wake(w);
}

void pt_worker_join(struct pt_worker *w)
{
    pthread_join(w->thread, NULL);
    close(w->wake_io.fd);
    pt_loop_destroy(&w->loop);
    pt_bufpool_destroy(&w->bufs);
    wlisteners_free(w->listeners, w->nlisteners);
    free(w->rr_current);
    free(w->rr);
}
