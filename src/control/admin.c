/*
 * admin.c — the admin API (DESIGN.md §7), served by the main thread: the
 * server and the dispatch; the endpoints are in admin_*.c (admin_int.h).
 *
 * A deliberately small HTTP/1.1 server: non-blocking sockets registered on
 * the control thread's event loop (the listener and each client are
 * pt_io's, each client's deadline a pt_timer), one request per connection
 * (Connection: close), requests parsed by the same strict parser as the
 * data plane. The head is read into the client's fixed buffer (8 KiB);
 * a Content-Length body (PUT /config, consumers) up to ADMIN_BODY_MAX is
 * then read into a buffer of that size as it arrives (413 beyond; chunked
 * bodies get 411). It never touches a worker's state except through
 * atomics the workers publish.
 *
 *   GET  /healthz /readyz       liveness; readiness (503 before the first
 *                               generation serves and while draining)
 *   GET  /status /routes /upstreams                   (admin_info.c)
 *   POST /reload                same as SIGHUP
 *   GET|PUT /config, POST /config/validate            (admin_config.c)
 *   GET|POST /consumers, GET|PUT|DELETE /consumers/{name}  (admin_consumers.c)
 *   GET  /debug/match?method=&host=&path=&header=     (admin_match.c)
 *   GET|DELETE /cache[?route=&prefix=]  response cache size; purge (admin_cache.c)
 *   GET  /metrics               Prometheus text (control/metrics_text.c)
 *
 * When `admin.token` is set every request needs `Authorization: Bearer
 * <token>` (compared in constant time); the loader refuses a non-loopback
 * admin address without one. /healthz and /readyz need it too: a probe
 * that cannot send it should use the public port's routes.
 */
#include "control/admin.h"

#include "control/admin_int.h"
#include "control/config_yaml.h"
#include "core/log.h"
#include "gateway/respond.h"
#include "http/h1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_MAX_CLIENTS 32
#define ADMIN_REQ_MAX 8192
#define ADMIN_BODY_MAX (4u << 20) /* PUT /config, consumers: 413 beyond */
#define ADMIN_HEAD_MS 2000        /* to send the whole head */
#define ADMIN_BODY_MS 10000       /* to send the body */
#define ADMIN_ANSWER_MS 10000     /* to read the response */

struct admin_client {
    struct pt_io io;
    struct pt_timer timer; /* deadline_ms */
    struct pt_admin *a;
    int slot; /* index in a->clients */
    bool closed;
    bool have_head;                 /* req/hs describe in[0..head_len) */
    struct admin_client *free_next; /* freed after the loop turn */
    uint64_t deadline_ms;
    size_t in_len, head_len;
    char in[ADMIN_REQ_MAX];
    struct pt_h1_request req;
    struct pt_h1_header hs[64];
    char *body; /* malloc'd: Content-Length + 1 bytes */
    size_t body_len, body_want;
    char *out; /* malloc'd response */
    size_t out_len, out_sent;
};

struct pt_admin {
    struct pt_loop *loop;
    struct pt_io lio; /* the listener; fd -1 when none */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    struct admin_client *clients[ADMIN_MAX_CLIENTS];
    const struct pt_admin_hooks *hooks;
    void *ctx;
    struct admin_client *to_free; /* closed this loop turn */
};

static void on_accept(struct pt_loop *loop, struct pt_io *io, uint32_t events);

static int open_admin_socket(const struct sockaddr_storage *addr, socklen_t addrlen)
{
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)addr, addrlen) < 0 || listen(fd, 64) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

struct pt_admin *pt_admin_open(struct pt_loop *loop, const struct pt_generation *g,
                               const struct pt_admin_hooks *hooks, void *ctx)
{
    struct pt_admin *a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->loop = loop;
    a->lio.fd = -1;
    a->lio.cb = on_accept;
    a->hooks = hooks;
    a->ctx = ctx;
    if (pt_admin_sync(a, g) < 0) {
        free(a);
        return NULL;
    }
    return a;
}

/* Replaces the listening socket (fd < 0: none) on the loop. */
static void set_listener(struct pt_admin *a, int fd)
{
    pt_io_close(a->loop, &a->lio);
    a->lio.fd = fd;
    if (fd >= 0 && pt_loop_add(a->loop, &a->lio, EPOLLIN) < 0)
        pt_error("admin: cannot watch the listener: %s", strerror(errno));
}

int pt_admin_sync(struct pt_admin *a, const struct pt_generation *g)
{
    if (!g->has_admin) {
        set_listener(a, -1);
        return 0;
    }
    if (a->lio.fd >= 0 && a->addrlen == g->admin.addrlen &&
        memcmp(&a->addr, &g->admin.addr, a->addrlen) == 0)
        return 0;
    int fd = open_admin_socket(&g->admin.addr, g->admin.addrlen);
    if (fd == -EADDRINUSE && a->lio.fd >= 0 && pt_addr_overlaps(&a->addr, &g->admin.addr)) {
        /* Held by our own socket (127.0.0.1:9901 → 0.0.0.0:9901): let it
         * go and try again, and take it back if that fails. */
        set_listener(a, -1);
        fd = open_admin_socket(&g->admin.addr, g->admin.addrlen);
        if (fd < 0) {
            int back = open_admin_socket(&a->addr, a->addrlen);
            if (back < 0)
                pt_error("admin: the previous address could not be taken back: the admin API is "
                         "closed until a reload opens it");
            set_listener(a, back);
        }
    }
    if (fd < 0) {
        pt_error("admin: cannot listen on %s: %s", g->admin.address, strerror(-fd));
        return fd;
    }
    set_listener(a, fd);
    memcpy(&a->addr, &g->admin.addr, g->admin.addrlen);
    a->addrlen = g->admin.addrlen;
    pt_info("admin API on %s", g->admin.address);
    return 0;
}

/* Closes a client; its memory goes after the loop turn (pt_admin_reap),
 * as an event for it may still be queued in this turn's batch. */
static void client_close(struct pt_admin *a, struct admin_client *cl)
{
    if (cl->closed)
        return;
    cl->closed = true;
    pt_timer_cancel(a->loop, &cl->timer);
    pt_io_close(a->loop, &cl->io);
    free(cl->out);
    cl->out = NULL;
    free(cl->body);
    cl->body = NULL;
    a->clients[cl->slot] = NULL;
    cl->free_next = a->to_free;
    a->to_free = cl;
}

static void on_deadline(struct pt_loop *loop, struct pt_timer *t)
{
    struct admin_client *cl = pt_container_of(t, struct admin_client, timer);
    (void)loop;
    client_close(cl->a, cl);
}

/* A client that does not finish its request within ADMIN_HEAD_MS, or read
 * its response within ADMIN_ANSWER_MS, is dropped. */
static void set_deadline(struct admin_client *cl, uint64_t delay_ms)
{
    cl->deadline_ms = pt_loop_now(cl->a->loop) + delay_ms;
    pt_timer_arm(cl->a->loop, &cl->timer, delay_ms, on_deadline);
}

/* Sets the answer and its deadline. Out of memory for it, the client is
 * closed (cl->closed): the request is over either way, so no path may
 * read it again — callers check cl->out || cl->closed. */
static void set_response(struct admin_client *cl, int status, const char *ctype, const char *body,
                         size_t blen)
{
    char head[256];
    int h = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, pt_reason_phrase(status), ctype, blen);
    free(cl->body); /* the request is answered: its body is not needed */
    cl->body = NULL;
    cl->body_len = cl->body_want = 0;
    cl->out = malloc((size_t)h + blen);
    if (!cl->out) {
        pt_warn("admin: out of memory for a %d answer: closing the connection", status);
        client_close(cl->a, cl);
        return;
    }
    memcpy(cl->out, head, (size_t)h);
    if (blen)
        memcpy(cl->out + h, body, blen);
    cl->out_len = (size_t)h + blen;
    cl->out_sent = 0;
    set_deadline(cl, ADMIN_ANSWER_MS);
}

/* A free client slot. When all are taken, the client that has waited
 * longest without sending a whole request gives its slot up: idle
 * connections (anyone can open them, before any token is checked) must not
 * lock the operator out of the admin API. */
static int client_slot(struct pt_admin *a)
{
    int victim = -1;
    for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
        struct admin_client *cl = a->clients[i];
        if (!cl)
            return i;
        if (!cl->out && (victim < 0 || cl->deadline_ms < a->clients[victim]->deadline_ms))
            victim = i;
    }
    if (victim >= 0)
        client_close(a, a->clients[victim]);
    return victim;
}

static void json_error(struct admin_client *cl, int status, const char *msg)
{
    struct admin_resp r = {0};
    admin_error(&r, status, msg);
    set_response(cl, status, "application/json", r.body.p ? r.body.p : "", r.body.len);
    free(r.body.p);
}

/* Constant-time comparison: the token must not leak through timing. */
static bool token_ok(pt_slice got, const char *want)
{
    size_t n = strlen(want);
    unsigned char diff = (unsigned char)(got.len != n);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(want[i] ^ (i < got.len ? got.p[i] : 0));
    return diff == 0;
}

static bool authorized(const struct pt_generation *g, const struct pt_h1_request *req)
{
    if (!g->admin_token)
        return true;
    pt_slice auth = {0};
    for (size_t i = 0; i < req->num_headers; i++)
        if (req->headers[i].token == PT_TOK_AUTHORIZATION)
            auth = req->headers[i].value;
    return auth.len >= 7 && strncasecmp(auth.p, "Bearer ", 7) == 0 &&
           token_ok((pt_slice){auth.p + 7, auth.len - 7}, g->admin_token);
}

static bool path_is(const struct admin_req *rq, const char *p)
{
    return pt_slice_eq_cstr(rq->path, p);
}

/* The endpoint for rq; false when the path is unknown. A known path with
 * another method gets 405. */
static bool dispatch(const struct admin_req *rq, struct admin_resp *out)
{
    int m = rq->method;
    bool get = m == PT_METHOD_GET;
    typedef void (*endpoint)(const struct admin_req *, struct admin_resp *);
    endpoint fn = NULL;
    if (path_is(rq, "/healthz") || path_is(rq, "/readyz")) {
        if (get) {
            bool live = path_is(rq, "/healthz") || rq->hooks->ready(rq->ctx);
            out->status = live ? 200 : 503;
            sb_printf(&out->body, "{\"status\":\"%s\",\"generation\":%llu}\n",
                      live ? "ok" : "not ready", (unsigned long long)rq->g->id);
            return true;
        }
    } else if (path_is(rq, "/status")) {
        fn = get ? admin_status : NULL;
    } else if (path_is(rq, "/routes")) {
        fn = get ? admin_routes : NULL;
    } else if (path_is(rq, "/upstreams")) {
        fn = get ? admin_upstreams : NULL;
    } else if (path_is(rq, "/config")) {
        fn = get ? admin_config_get : m == PT_METHOD_PUT ? admin_config_put : NULL;
    } else if (path_is(rq, "/config/validate")) {
        fn = m == PT_METHOD_POST ? admin_config_validate : NULL;
    } else if (path_is(rq, "/debug/match")) {
        fn = get ? admin_debug_match : NULL;
    } else if (path_is(rq, "/consumers") ||
               (rq->path.len > 11 && memcmp(rq->path.p, "/consumers/", 11) == 0)) {
        fn = admin_consumers;
    } else if (path_is(rq, "/cache")) {
        fn = admin_cache;
    } else if (path_is(rq, "/reload")) {
        if (m == PT_METHOD_POST) {
            char *errors = NULL;
            uint64_t id = 0;
            if (rq->hooks->reload(rq->ctx, &id, &errors) == 0) {
                sb_printf(&out->body, "{\"reloaded\":true,\"generation\":%llu}\n",
                          (unsigned long long)id);
            } else {
                out->status = 400;
                sb_printf(&out->body, "{\"reloaded\":false,\"errors\":");
                sb_json_str(&out->body, errors ? errors : "reload failed");
                sb_printf(&out->body, "}\n");
            }
            free(errors);
            return true;
        }
    } else {
        return false;
    }
    if (!fn)
        admin_error(out, 405, "method not allowed");
    else
        fn(rq, out);
    return true;
}

/* GET /metrics: the runtime's exposition (control/metrics_text.c), sent
 * in place: the head goes into the headroom just before the text. */
static void admin_metrics(struct pt_admin *a, struct admin_client *cl)
{
    size_t n = 0;
    char *buf = a->hooks->metrics ? a->hooks->metrics(a->ctx, &n) : NULL;
    if (!buf) {
        json_error(cl, 500, "out of memory");
        return;
    }
    char head[PT_ADMIN_HEADROOM];
    int h = snprintf(head, sizeof(head),
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; "
                     "charset=utf-8\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
                     "Connection: close\r\n\r\n",
                     n);
    free(cl->body); /* the request is answered: its body is not needed */
    cl->body = NULL;
    cl->body_len = cl->body_want = 0;
    memcpy(buf + PT_ADMIN_HEADROOM - h, head, (size_t)h);
    cl->out = buf;
    cl->out_sent = PT_ADMIN_HEADROOM - (size_t)h;
    cl->out_len = PT_ADMIN_HEADROOM + n;
    set_deadline(cl, ADMIN_ANSWER_MS);
}

static void handle(struct pt_admin *a, struct admin_client *cl)
{
    const struct pt_h1_request *req = &cl->req;
    const struct pt_generation *g = a->hooks->current(a->ctx);
    if (!authorized(g, req)) {
        json_error(cl, 401, "admin token required");
        return;
    }
    if (pt_slice_eq_cstr(req->path, "/metrics")) {
        if (req->method_id == PT_METHOD_GET)
            admin_metrics(a, cl);
        else
            json_error(cl, 405, "method not allowed");
        return;
    }
    struct admin_req rq = {.method = req->method_id,
                           .path = req->path,
                           .query = req->query,
                           .headers = req->headers,
                           .nheaders = req->num_headers,
                           .body = cl->body ? cl->body : "",
                           .body_len = cl->body ? cl->body_len : 0,
                           .g = g,
                           .hooks = a->hooks,
                           .ctx = a->ctx};
    struct admin_resp out = {.status = 200, .ctype = "application/json"};
    if (!dispatch(&rq, &out)) {
        admin_error(&out, 404,
                    "unknown admin endpoint (try /status, /routes, /upstreams, /config, "
                    "/consumers, /cache, /debug/match, /metrics, /healthz, /readyz, POST /reload)");
    }
    if (out.body.oom)
        admin_error(&out, 500, "out of memory");
    set_response(cl, out.status, out.ctype, out.body.p ? out.body.p : "", out.body.len);
    free(out.body.p);
}

/* The head is complete: a body to read (into cl->body), or an answer. */
static void head_done(struct pt_admin *a, struct admin_client *cl)
{
    const struct pt_h1_request *req = &cl->req;
    if (req->framing.chunked) {
        json_error(cl, 411, "send the body with a Content-Length");
        return;
    }
    int64_t cl_len = req->framing.content_length;
    if (cl_len > (int64_t)ADMIN_BODY_MAX) {
        json_error(cl, 413, "request body larger than 4 MiB");
        return;
    }
    if (cl_len > 0) {
        cl->body_want = (size_t)cl_len;
        cl->body = malloc(cl->body_want + 1);
        if (!cl->body) {
            json_error(cl, 500, "out of memory");
            return;
        }
        size_t have = cl->in_len - cl->head_len;
        if (have > cl->body_want)
            have = cl->body_want;
        memcpy(cl->body, cl->in + cl->head_len, have);
        cl->body_len = have;
        cl->body[have] = 0;
        if (have < cl->body_want && req->expect_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            struct iovec iov = {(void *)cont, sizeof(cont) - 1};
            (void)pt_io_sendv(a->loop, &cl->io, &iov, 1); /* best effort: the client
                                                             sends anyway after a wait */
        }
        set_deadline(cl, ADMIN_BODY_MS);
    }
    cl->have_head = true;
}

/* Reads what the socket has: into the head buffer until the head parses,
 * then into the body buffer. Returns 1 with the whole request, 0 for
 * "wait for more", -1 when the client was closed or answered. */
static int client_fill(struct pt_admin *a, struct admin_client *cl)
{
    for (;;) {
        char *dst;
        size_t room;
        if (cl->have_head) {
            if (cl->body_len == cl->body_want)
                return 1;
            dst = cl->body + cl->body_len;
            room = cl->body_want - cl->body_len;
        } else {
            if (cl->in_len == sizeof(cl->in)) {
                json_error(cl, 431, "request head too large");
                return -1;
            }
            dst = cl->in + cl->in_len;
            room = sizeof(cl->in) - cl->in_len;
        }
        ssize_t n = pt_io_recv(a->loop, &cl->io, dst, room);
        if (n > 0) {
            if (cl->have_head) {
                cl->body_len += (size_t)n;
                cl->body[cl->body_len] = 0;
                continue;
            }
            size_t prev = cl->in_len;
            cl->in_len += (size_t)n;
            struct pt_h1_limits lim = {64, sizeof(cl->in), 2048};
            int r = pt_h1_parse_request(cl->in, cl->in_len, prev, &cl->req, cl->hs, &lim);
            if (r == PT_H1_INCOMPLETE)
                continue;
            if (r < 0) {
                json_error(cl, cl->req.error_status ? cl->req.error_status : 400,
                           cl->req.error_reason ? cl->req.error_reason : "bad request");
                return -1;
            }
            cl->head_len = (size_t)r;
            head_done(a, cl);
            if (cl->out || cl->closed)
                return -1; /* answered (an error), or closed for want of memory */
            continue;
        }
        if (n < 0 && errno == EAGAIN)
            return cl->have_head && cl->body_len == cl->body_want ? 1 : 0;
        /* A client may shut down its write side right after its request
         * (nc -N, scripts): a complete request still gets its answer. */
        if (n == 0 && cl->have_head && cl->body_len == cl->body_want)
            return 1;
        client_close(a, cl);
        return -1;
    }
}

static void client_read(struct pt_admin *a, struct admin_client *cl)
{
    if (client_fill(a, cl) == 1)
        handle(a, cl);
}

static void client_write(struct pt_admin *a, struct admin_client *cl)
{
    while (cl->out_sent < cl->out_len) {
        struct iovec iov = {cl->out + cl->out_sent, cl->out_len - cl->out_sent};
        ssize_t n = pt_io_sendv(a->loop, &cl->io, &iov, 1);
        if (n > 0) {
            cl->out_sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN)
            return; /* the next EPOLLOUT resumes */
        break;
    }
    client_close(a, cl);
}

/* Edge-triggered: reads until EAGAIN while the request is incomplete, then
 * writes the answer until EAGAIN or done. */
static void on_client(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct admin_client *cl = pt_container_of(io, struct admin_client, io);
    (void)loop;
    (void)events;
    if (cl->closed)
        return;
    if (!cl->out)
        client_read(cl->a, cl);
    if (!cl->closed && cl->out)
        client_write(cl->a, cl);
}

static void on_accept(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_admin *a = pt_container_of(io, struct pt_admin, lio);
    (void)events;
    /* Clients first: a request that arrived in this batch is served before
     * a new connection may evict its client (client_slot). The loop hands
     * every io its batch events before running any callback. */
    for (int i = 0; i < ADMIN_MAX_CLIENTS; i++) {
        struct admin_client *cl = a->clients[i];
        if (cl && cl->io.pending) {
            uint32_t ev = cl->io.pending;
            cl->io.pending = 0;
            on_client(loop, &cl->io, ev);
        }
    }
    while (a->lio.fd >= 0) {
        int fd = accept4(a->lio.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            break;
        int slot = client_slot(a);
        struct admin_client *cl = slot >= 0 ? calloc(1, sizeof(*cl)) : NULL;
        if (!cl) {
            close(fd);
            continue;
        }
        cl->a = a;
        cl->slot = slot;
        cl->io.fd = fd;
        cl->io.cb = on_client;
        if (pt_loop_add_stream(loop, &cl->io, false) < 0) {
            close(fd);
            free(cl);
            continue;
        }
        a->clients[slot] = cl;
        set_deadline(cl, ADMIN_HEAD_MS);
    }
}

void pt_admin_reap(struct pt_admin *a)
{
    if (!a)
        return;
    while (a->to_free) {
        struct admin_client *cl = a->to_free;
        a->to_free = cl->free_next;
        free(cl);
    }
}

void pt_admin_close(struct pt_admin *a)
{
    if (!a)
        return;
    for (int i = 0; i < ADMIN_MAX_CLIENTS; i++)
        if (a->clients[i])
            client_close(a, a->clients[i]);
    set_listener(a, -1);
    pt_admin_reap(a);
    free(a);
}
