/*
 * pool.c — see pool.h.
 *
 * Idle connections stay registered with epoll (EPOLLIN|EPOLLRDHUP): any
 * event on an idle connection means the upstream closed it or sent
 * something unsolicited, and either way it can no longer carry a request,
 * so it is closed at once. That removes most of the "reused a connection
 * the server just closed" race before a request is ever written to it.
 */
#include "proxy/pool.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <unistd.h>

#include "proxy/pool_int.h"

void pt_outbound_init(struct pt_outbound *ob, struct pt_loop *loop, struct pt_bufpool *bufs)
{
    memset(ob, 0, sizeof(*ob));
    ob->loop = loop;
    ob->bufs = bufs;
}

static uint64_t addr_hash(const struct sockaddr_storage *a, socklen_t len)
{
    const unsigned char *p = (const unsigned char *)a;
    uint64_t h = 1469598103934665603ull;
    for (socklen_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 1099511628211ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static bool addr_eq(const struct pt_upool *p, const struct pt_target *t, uint64_t tls_key,
                    pt_slice name)
{
    if (p->tls_key != tls_key || p->addrlen != t->addrlen ||
        memcmp(&p->addr, &t->addr, t->addrlen) != 0)
        return false;
    if (pt_likely(!p->tls_name))
        return name.len == 0;
    return strlen(p->tls_name) == name.len && memcmp(p->tls_name, name.p, name.len) == 0;
}

static uint32_t pool_slot(const struct sockaddr_storage *a, socklen_t len, uint64_t tls_key,
                          const char *name, size_t nlen)
{
    uint64_t h = addr_hash(a, len) ^ tls_key;
    if (nlen)
        h ^= name_hash(name, nlen);
    return (uint32_t)h;
}

static void pools_grow(struct pt_outbound *ob)
{
    uint32_t ncap = ob->cappools ? ob->cappools * 2 : 16;
    struct pt_upool **np = calloc(ncap, sizeof(*np));
    if (!np)
        return;
    for (uint32_t i = 0; i < ob->cappools; i++) {
        struct pt_upool *p = ob->pools[i];
        if (!p)
            continue;
        uint32_t j = pool_slot(&p->addr, p->addrlen, p->tls_key, p->tls_name,
                               p->tls_name ? strlen(p->tls_name) : 0) &
                     (ncap - 1);
        while (np[j])
            j = (j + 1) & (ncap - 1);
        np[j] = p;
    }
    free(ob->pools);
    ob->pools = np;
    ob->cappools = ncap;
}

/* Finds or creates the pool for a target address and TLS setting (with
 * TLS, and the name it verifies) (allocation happens once per distinct
 * key per worker, not per request). */
static struct pt_upool *pool_for(struct pt_outbound *ob, const struct pt_target *t,
                                 const struct pt_upstream_tls *tls)
{
    if (ob->npools * 2 >= ob->cappools)
        pools_grow(ob);
    if (!ob->pools)
        return NULL;
    uint64_t tls_key = tls ? tls->pool_key : 0;
    pt_slice name = pt_unlikely(tls != NULL) ? pt_tls_target_name(tls, t) : (pt_slice){NULL, 0};
    uint32_t mask = ob->cappools - 1;
    uint32_t j = pool_slot(&t->addr, t->addrlen, tls_key, name.p, name.len) & mask;
    while (ob->pools[j]) {
        if (addr_eq(ob->pools[j], t, tls_key, name))
            return ob->pools[j];
        j = (j + 1) & mask;
    }
    struct pt_upool *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    if (name.len && !(p->tls_name = strndup(name.p, name.len))) {
        free(p);
        return NULL;
    }
    memcpy(&p->addr, &t->addr, t->addrlen);
    p->addrlen = t->addrlen;
    p->tls_key = tls_key;
    ob->pools[j] = p;
    ob->npools++;
    return p;
}

static void idle_unlink(struct pt_uconn *uc)
{
    struct pt_upool *p = uc->pool;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        p->idle = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    uc->next = uc->prev = NULL;
    uc->idle = false;
    p->nidle--;
}

void pt_uconn_close(struct pt_uconn *uc)
{
    if (uc->closed)
        return;
    struct pt_outbound *ob = uc->ob;
    if (uc->idle)
        idle_unlink(uc);
    pt_timer_cancel(ob->loop, &uc->timer);
    if (uc->tls) {
        pt_tls_free(uc->tls); /* the SSL only: the fd is the pt_io's */
        uc->tls = NULL;
    }
    pt_io_close(ob->loop, &uc->io); /* also unregisters it */
    if (uc->rbuf) {
        pt_buf_put(ob->bufs, uc->rbuf);
        uc->rbuf = NULL;
    }
    uc->closed = true;
    uc->on_event = NULL;
    uc->free_next = ob->to_free;
    ob->to_free = uc;
}

void pt_outbound_reap(struct pt_outbound *ob)
{
    while (ob->to_free) {
        struct pt_uconn *uc = ob->to_free;
        ob->to_free = uc->free_next;
        free(uc);
    }
}

void pt_outbound_destroy(struct pt_outbound *ob)
{
    for (uint32_t i = 0; i < ob->cappools; i++) {
        struct pt_upool *p = ob->pools[i];
        if (!p)
            continue;
        while (p->idle)
            pt_uconn_close(p->idle);
        if (p->tls_session)
            SSL_SESSION_free(p->tls_session);
        free(p->tls_name);
        free(p);
    }
    free(ob->pools);
    ob->pools = NULL;
    ob->cappools = ob->npools = 0;
    pt_outbound_reap(ob);
}

static void uconn_io(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_uconn *uc = pt_container_of(io, struct pt_uconn, io);
    if (uc->closed)
        return;
    if (uc->idle) {
        /* Peer closed (or sent stray bytes on) an idle connection. */
        pt_uconn_close(uc);
        return;
    }
    if (uc->on_event)
        uc->on_event(uc, events);
}

/* Input is waiting on a connection: on the socket, or inside TLS. */
static bool has_input(struct pt_outbound *ob, struct pt_uconn *uc)
{
    return pt_io_has_input(ob->loop, &uc->io) || (uc->tls && pt_tls_has_buffered(uc->tls));
}

struct pt_uconn *pt_uconn_acquire(struct pt_outbound *ob, const struct pt_target *t,
                                  const struct pt_upstream_tls *tls, bool fresh, bool *reused,
                                  int *err)
{
    struct pt_upool *p = pool_for(ob, t, tls);
    if (!p) {
        *err = -ENOMEM;
        return NULL;
    }
    /* Not one released during this loop turn: whatever the upstream sent
     * after its response (stray bytes, a close) has not been looked at
     * yet. The loop's next wait reports it (io_uring arms the receive at
     * the end of the turn; epoll's edge for it is still queued), and the
     * pool's idle handler closes the connection. A pipelined request in
     * the same turn takes another connection. */
    struct pt_uconn *uc = fresh ? NULL : p->idle;
    while (uc) {
        struct pt_uconn *next = uc->next;
        if (uc->released_turn == ob->loop->turn) {
            uc = next;
            continue;
        }
        /* Stray bytes or a close on this idle connection are in the
         * current batch of events, not handled yet: the request would read
         * them as its response. */
        if (has_input(ob, uc)) {
            pt_uconn_close(uc);
            uc = next;
            continue;
        }
        break;
    }
    if (uc) {
        idle_unlink(uc);
        pt_timer_cancel(ob->loop, &uc->timer); /* the pool's idle timeout */
        *reused = true;
        ob->reuses++;
        return uc;
    }
    *reused = false;
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        return NULL;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(fd, (const struct sockaddr *)&t->addr, t->addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        *err = -errno;
        close(fd);
        return NULL;
    }
    uc = calloc(1, sizeof(*uc));
    if (!uc) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    uc->io.fd = fd;
    uc->io.cb = uconn_io;
    uc->ob = ob;
    uc->pool = p;
    uc->connected = rc == 0;
    int arc = pt_loop_add_stream(ob->loop, &uc->io, !uc->connected);
    if (arc < 0) {
        *err = arc;
        close(fd);
        free(uc);
        return NULL;
    }
    ob->connects++;
    return uc;
}

int pt_uconn_finish_connect(struct pt_uconn *uc)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(uc->io.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return -errno;
    if (soerr)
        return -soerr;
    uc->connected = true;
    pt_io_connected(uc->ob->loop, &uc->io);
    return 0;
}

static void idle_expired(struct pt_loop *loop, struct pt_timer *tm)
{
    (void)loop;
    pt_uconn_close(pt_container_of(tm, struct pt_uconn, timer));
}

void pt_uconn_release(struct pt_uconn *uc, uint32_t keepalive, uint64_t idle_ms)
{
    struct pt_upool *p = uc->pool;
    struct pt_outbound *ob = uc->ob;
    pt_timer_cancel(ob->loop, &uc->timer);
    uc->released_turn = ob->loop->turn;
    if ((uc->rbuf && pt_buf_len(uc->rbuf) > 0) || has_input(ob, uc) ||
        (uc->tls && (pt_tls_write_pending(uc->tls) || uc->tls->eof))) {
        /* Unexpected bytes (or the upstream's close) after a complete
         * response: not reusable. */
        pt_uconn_close(uc);
        return;
    }
    if (p->nidle >= keepalive) {
        pt_uconn_close(uc);
        return;
    }
    if (uc->rbuf) {
        pt_buf_put(ob->bufs, uc->rbuf); /* idle connections hold no buffers */
        uc->rbuf = NULL;
    }
    uc->on_event = NULL;
    uc->user = NULL;
    uc->idle = true;
    uc->prev = NULL;
    uc->next = p->idle;
    if (p->idle)
        p->idle->prev = uc;
    p->idle = uc;
    p->nidle++;
    pt_timer_arm(ob->loop, &uc->timer, idle_ms, idle_expired);
}
