/*
 * test_exchange.c — the protocol-neutral exchange (DESIGN.md §4a) driven
 * by a fake codec, on a worker-like setup of real parts: an epoll loop, a
 * buffer pool, the outbound client, a request-arena pool, a generation
 * loaded with pt_config_load (pin counters and shared target state set up
 * as the runtime does) and a loopback upstream served by a helper thread.
 *
 * The fake codec does what h1_server does, minus the bytes: it fills
 * ex->req / ex->reqh, starts the exchange, pumps it whenever the exchange
 * wakes it (and only then: an exchange that forgets to wake its codec
 * hangs the test), takes the response body through peek/consume and ends
 * the exchange. The request body it offers is an in-memory string opened
 * a window at a time, so backpressure shows as what was consumed.
 *
 * Filters the registry does not offer are test-only pt_filter_defs, built
 * into a loaded route's chain with pt_chain_build. Request arenas give
 * every block back to malloc (max_free 0), so ASan sees a completion that
 * runs into an ended exchange.
 */
#include "control/config.h"
#include "core/log.h"
#include "gateway/exchange.h"
#include "proxy/state.h"
#include "unit.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

static bool slice_is(pt_slice s, const char *want)
{
    return s.len == strlen(want) && (s.len == 0 || memcmp(s.p, want, s.len) == 0);
}

#define CHECK_SLICE(s, want)                                                                       \
    CHECK_MSG(slice_is((s), (want)), "\"%.*s\" != \"%s\"", (int)(s).len, (s).p ? (s).p : "", (want))

/* ------------------------------------------------------------------ */
/* The loopback upstream: a thread per connection, one request each,   */
/* answered by path (what the gateway sent upstream).                  */

#define SRV_MAXCONN 128

static struct {
    int lfd, port;
    pthread_t thread;
    pthread_t conns[SRV_MAXCONN];
    int nconns;
    _Atomic bool stop;
    pthread_mutex_t mu;
    /* the latest request, whole */
    int requests;
    char head[4096];
    char body[4096];
    size_t body_len;
    int late_answers; /* /slow answers written after their delay */
} srv = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Reads more into buf; false on close, error, or stop. */
static bool srv_read(int fd, char *buf, size_t *n, size_t cap)
{
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {fd, POLLIN, 0};
        int r = poll(&p, 1, 20);
        if (r <= 0)
            continue;
        if (*n >= cap)
            return false;
        ssize_t k = recv(fd, buf + *n, cap - *n, 0);
        if (k <= 0)
            return false;
        *n += (size_t)k;
        return true;
    }
    return false;
}

/* Sleeps ms unless the server stops; true when the time passed. */
static bool srv_sleep(int ms)
{
    for (int i = 0; i < ms / 10; i++) {
        if (atomic_load(&srv.stop))
            return false;
        usleep(10000);
    }
    return true;
}

static bool srv_send(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
        if (k <= 0)
            return false;
        s += k;
        n -= (size_t)k;
    }
    return true;
}

static void srv_answer(int fd, const char *extra, const char *body, size_t blen)
{
    char h[512];
    int n = snprintf(h, sizeof(h),
                     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\nConnection: close\r\n%s\r\n", blen,
                     extra);
    if (srv_send(fd, h, (size_t)n))
        srv_send(fd, body, blen);
}

static void *srv_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    static _Thread_local char buf[65536];
    size_t n = 0;
    char *end;
    while (!(end = memmem(buf, n, "\r\n\r\n", 4)))
        if (!srv_read(fd, buf, &n, sizeof(buf)))
            goto out;
    size_t hl = (size_t)(end - buf) + 4;
    size_t cl = 0;
    for (char *l = strstr(buf, "\r\n"); l && l < end; l = strstr(l + 2, "\r\n"))
        if (strncasecmp(l + 2, "Content-Length:", 15) == 0)
            cl = strtoul(l + 17, NULL, 10);
    while (n < hl + cl)
        if (!srv_read(fd, buf, &n, sizeof(buf)))
            goto out;
    char path[256] = "";
    sscanf(buf, "%*s %255s", path);
    pthread_mutex_lock(&srv.mu);
    srv.requests++;
    snprintf(srv.head, sizeof(srv.head), "%.*s", (int)hl, buf);
    srv.body_len = PT_MIN(cl, sizeof(srv.body));
    memcpy(srv.body, buf + hl, srv.body_len);
    pthread_mutex_unlock(&srv.mu);

    if (strstr(path, "/hang")) {
        /* Never answers: holds the connection until the gateway closes it. */
        n = 0;
        while (srv_read(fd, buf, &n, sizeof(buf)))
            n = 0;
    } else if (strstr(path, "/slow")) {
        if (srv_sleep(300)) {
            srv_answer(fd, "", "late", 4);
            pthread_mutex_lock(&srv.mu);
            srv.late_answers++;
            pthread_mutex_unlock(&srv.mu);
        }
    } else if (strstr(path, "/auth")) {
        srv_answer(fd, "X-Auth-User: alice\r\n", "alice", 5);
    } else if (strstr(path, "/echo")) {
        srv_answer(fd, "X-Up: echo\r\n", buf + hl, cl);
    } else if (strstr(path, "/upper")) {
        /* Two writes, apart: the body reaches the gateway in pieces. */
        const char *h = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n"
                        "X-Up: yes\r\n\r\nhello ";
        if (srv_send(fd, h, strlen(h)) && srv_sleep(40))
            srv_send(fd, "world", 5);
    } else {
        static const char body[] = "hello from upstream";
        srv_answer(fd, "Content-Type: text/plain\r\nX-Up: yes\r\n", body, sizeof(body) - 1);
    }
out:
    close(fd);
    return NULL;
}

static void *srv_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd p = {srv.lfd, POLLIN, 0};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept4(srv.lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (srv.nconns == SRV_MAXCONN ||
            pthread_create(&srv.conns[srv.nconns], NULL, srv_conn, (void *)(intptr_t)fd) != 0) {
            close(fd);
            continue;
        }
        srv.nconns++;
    }
    return NULL;
}

/* A loopback listening socket; returns its port. */
static int listen_loopback(int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) < 0) {
        perror("upstream socket");
        exit(2);
    }
    *fd_out = fd;
    return ntohs(a.sin_port);
}

static void srv_start(void)
{
    srv.port = listen_loopback(&srv.lfd);
    if (pthread_create(&srv.thread, NULL, srv_main, NULL) != 0)
        exit(2);
}

static void srv_stop(void)
{
    atomic_store(&srv.stop, true);
    pthread_join(srv.thread, NULL);
    for (int i = 0; i < srv.nconns; i++)
        pthread_join(srv.conns[i], NULL);
    close(srv.lfd);
}

static int srv_requests(void)
{
    pthread_mutex_lock(&srv.mu);
    int n = srv.requests;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

/* The latest request head holds `field` (a whole "Name: value" line). */
static bool srv_saw(const char *field)
{
    char want[512];
    snprintf(want, sizeof(want), "\r\n%s\r\n", field);
    pthread_mutex_lock(&srv.mu);
    bool yes = strstr(srv.head, want) != NULL;
    pthread_mutex_unlock(&srv.mu);
    return yes;
}

static bool srv_request_line(const char *line)
{
    pthread_mutex_lock(&srv.mu);
    bool yes = strncmp(srv.head, line, strlen(line)) == 0 && srv.head[strlen(line)] == '\r';
    pthread_mutex_unlock(&srv.mu);
    return yes;
}

/* ------------------------------------------------------------------ */
/* Test-only filters.                                                  */

enum tf_mode {
    TF_TIMER_CONTINUE, /* timer, then resume CONTINUE (adds X-Timer upstream) */
    TF_TIMER_RESPOND,  /* timer, then resume RESPOND 401 with WWW-Authenticate */
    TF_CALL,           /* call the upstream, then resume with what it got */
    TF_SUSPEND_BARE,   /* SUSPEND with nothing pending */
};

struct tf_conf {
    enum tf_mode mode;
    uint64_t delay_ms;    /* timer */
    uint64_t deadline_ms; /* suspend_deadline_ms (0: the default) */
    const char *path;     /* call */
};

struct tf_state {
    const struct tf_conf *conf;
    int magic;
};

static struct {
    int on_request, timer_done, call_done, on_cancel, cancel_bad_state;
    int start_rc;
    /* what the call completion got */
    enum pt_call_error call_error;
    int call_status;
    char call_body[64];
    char call_field[64];
    /* response head / body / log filters */
    int rh_calls, body_calls, body_eos, log_calls, log_null_state, log_no_reqid;
} tf;

static void tf_timer_done(struct pt_filter_ctx *ctx, void *state)
{
    struct tf_state *st = state;
    tf.timer_done++;
    if (st->conf->mode == TF_TIMER_RESPOND) {
        ctx->respond_status = 401;
        ctx->respond_body = PT_SLICE("denied\n");
        ctx->respond_content_type = PT_SLICE("text/plain");
        pt_headers_add(ctx->resp_headers, ctx->arena, PT_SLICE("WWW-Authenticate"),
                       PT_SLICE("Bearer realm=\"test\""));
        ctx->resume(ctx, PT_FILTER_RESPOND);
        return;
    }
    pt_headers_set(ctx->req_headers, ctx->arena, PT_SLICE("X-Timer"), PT_SLICE("fired"));
    ctx->resume(ctx, PT_FILTER_CONTINUE);
}

static void tf_call_done(struct pt_filter_ctx *ctx, void *state,
                         const struct pt_filter_call_res *res)
{
    tf.call_done++;
    tf.call_error = res->error;
    tf.call_status = res->status;
    snprintf(tf.call_body, sizeof(tf.call_body), "%.*s", (int)res->body.len,
             res->body.p ? res->body.p : "");
    struct pt_hfield *f =
        pt_headers_find((struct pt_headers *)&res->headers, PT_SLICE("X-Auth-User"));
    snprintf(tf.call_field, sizeof(tf.call_field), "%.*s", f ? (int)f->value.len : 0,
             f ? f->value.p : "");
    if (res->error != PT_CALL_OK) {
        ctx->respond_status = 503;
        ctx->resume(ctx, PT_FILTER_RESPOND);
        return;
    }
    /* What the call returned goes upstream with the proxied request. */
    pt_headers_set(ctx->req_headers, ctx->arena, PT_SLICE("X-Auth-User"),
                   (pt_slice){pt_arena_strdup(ctx->arena, tf.call_body), strlen(tf.call_body)});
    ctx->resume(ctx, PT_FILTER_CONTINUE);
}

static int tf_on_request(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    const struct tf_conf *c = conf;
    struct tf_state *st = state;
    tf.on_request++;
    st->conf = c;
    st->magic = 0x7e57;
    ctx->suspend_deadline_ms = c->deadline_ms;
    switch (c->mode) {
    case TF_TIMER_CONTINUE:
    case TF_TIMER_RESPOND:
        tf.start_rc = ctx->svc->timer(ctx, c->delay_ms, tf_timer_done);
        break;
    case TF_CALL: {
        struct pt_filter_call_req req = {
            .upstream = "backend", .path = {c->path, strlen(c->path)}, .max_body = 64};
        tf.start_rc = ctx->svc->call(ctx, &req, tf_call_done);
        break;
    }
    case TF_SUSPEND_BARE:
        break;
    }
    return tf.start_rc == 0 ? PT_FILTER_SUSPEND : PT_FILTER_ERROR;
}

static void tf_on_cancel(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    struct tf_state *st = state;
    tf.on_cancel++;
    if (!st || st->magic != 0x7e57)
        tf.cancel_bad_state++;
}

static const struct pt_filter_def tf_def = {
    .name = "test_suspend",
    .config_size = sizeof(struct tf_conf),
    .state_size = sizeof(struct tf_state),
    .on_request = tf_on_request,
    .on_cancel = tf_on_cancel,
};

/* on_response_head: replaces the upstream's answer (RESPOND) or fails. */
static int rh_respond(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    tf.rh_calls++;
    ctx->respond_status = 403;
    ctx->respond_body = PT_SLICE("replaced\n");
    pt_headers_add(ctx->resp_headers, ctx->arena, PT_SLICE("X-Replaced"), PT_SLICE("yes"));
    return PT_FILTER_RESPOND;
}

static int rh_error(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    tf.rh_calls++;
    return PT_FILTER_ERROR;
}

static const struct pt_filter_def rh_respond_def = {.name = "test_rh_respond",
                                                    .on_response_head = rh_respond};
static const struct pt_filter_def rh_error_def = {.name = "test_rh_error",
                                                  .on_response_head = rh_error};

/* on_response_body: uppercases every chunk into bytes of its own. */
static int upper_body(struct pt_filter_ctx *ctx, const void *conf, void *state, pt_slice *chunk,
                      bool eos)
{
    tf.body_calls++;
    tf.body_eos += eos;
    char *o = pt_arena_alloc(ctx->arena, chunk->len + 1);
    if (!o)
        return PT_FILTER_ERROR;
    for (size_t i = 0; i < chunk->len; i++)
        o[i] = (char)(chunk->p[i] >= 'a' && chunk->p[i] <= 'z' ? chunk->p[i] - 32 : chunk->p[i]);
    *chunk = (pt_slice){o, chunk->len};
    return PT_FILTER_CONTINUE;
}

static const struct pt_filter_def upper_def = {.name = "test_upper",
                                               .on_response_body = upper_body};

/* on_log with per-request state: what a log phase filter may rely on. */
static void log_hook(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    tf.log_calls++;
    tf.log_null_state += state == NULL;
    tf.log_no_reqid += ctx->request_id.len == 0;
}

static const struct pt_filter_def log_def = {
    .name = "test_log", .state_size = 16, .on_log = log_hook};

static const struct tf_conf conf_timer_continue = {TF_TIMER_CONTINUE, 30, 0, NULL};
static const struct tf_conf conf_timer_respond = {TF_TIMER_RESPOND, 30, 0, NULL};
static const struct tf_conf conf_call = {TF_CALL, 0, 0, "/auth?who=me"};
/* Never resumes in time: the deadline comes first. */
static const struct tf_conf conf_timer_never = {TF_TIMER_CONTINUE, 300, 50, NULL};
static const struct tf_conf conf_call_hang = {TF_CALL, 0, 80, "/hang"};
/* Pending long enough for the client to go away first. */
static const struct tf_conf conf_timer_long = {TF_TIMER_CONTINUE, 200, 0, NULL};
static const struct tf_conf conf_call_slow = {TF_CALL, 0, 0, "/slow"};
static const struct tf_conf conf_bare = {TF_SUSPEND_BARE, 0, 0, NULL};

/* ------------------------------------------------------------------ */
/* The worker-like setup.                                              */

static struct pt_worker W;
static struct pt_generation *G;
static struct pt_state_registry *REG;

static struct pt_route *find_route(const char *name)
{
    for (uint32_t i = 0; i < G->nroutes; i++)
        if (strcmp(G->routes[i].name, name) == 0)
            return &G->routes[i];
    fprintf(stderr, "no route %s\n", name);
    exit(2);
}

static void set_chain(const char *route, const struct pt_filter_def *def, const void *conf)
{
    struct pt_filter_inst inst = {def, conf, 0};
    if (pt_chain_build(&find_route(route)->chain, &inst, 1, &G->arena) != 0)
        exit(2);
}

static void load_generation(int dead_port)
{
    char yaml[4096];
    snprintf(
        yaml, sizeof(yaml),
        "listeners:\n"
        "  - address: 127.0.0.1:18099\n"
        "upstreams:\n"
        "  backend:\n"
        "    targets: [127.0.0.1:%d]\n"
        "    read_timeout: 2s\n"
        "  sick:\n"
        "    targets: [127.0.0.1:%d]\n"
        "  refused:\n"
        "    targets: [127.0.0.1:%d]\n"
        "routes:\n"
        "  - name: plain\n"
        "    match: { path_prefix: /plain }\n"
        "    upstream: backend\n"
        "    strip_prefix: /plain\n"
        "  - name: only-get\n"
        "    match: { path: /only-get, methods: [GET, PUT] }\n"
        "    upstream: backend\n"
        "  - name: small\n"
        "    match: { path: /small }\n"
        "    upstream: backend\n"
        "    max_body_bytes: 16\n"
        "  - name: refused\n"
        "    match: { path: /refused }\n"
        "    upstream: refused\n"
        "  - name: read-timeout\n"
        "    match: { path: /t/hang }\n"
        "    upstream: backend\n"
        "    timeout: 150ms\n"
        "  - name: sick\n"
        "    match: { path: /sick }\n"
        "    upstream: sick\n"
        "  - { name: f-timer-continue, match: { path: /f/timer-continue }, upstream: backend }\n"
        "  - { name: f-timer-respond, match: { path: /f/timer-respond }, upstream: backend }\n"
        "  - { name: f-call, match: { path: /f/call }, upstream: backend }\n"
        "  - { name: f-timer-never, match: { path: /f/timer-never }, upstream: backend }\n"
        "  - { name: f-call-hang, match: { path: /f/call-hang }, upstream: backend }\n"
        "  - { name: f-timer-long, match: { path: /f/timer-long }, upstream: backend }\n"
        "  - { name: f-call-slow, match: { path: /f/call-slow }, upstream: backend }\n"
        "  - { name: f-bare, match: { path: /f/bare }, upstream: backend }\n"
        "  - { name: rh-respond, match: { path: /rh/respond }, upstream: backend }\n"
        "  - { name: rh-error, match: { path: /rh/error }, upstream: backend }\n"
        "  - { name: upper, match: { path: /upper }, upstream: backend }\n"
        "  - name: logged\n"
        "    match: { path: /logged }\n"
        "    upstream: backend\n"
        "    max_body_bytes: 16\n",
        srv.port, srv.port, dead_port);
    char path[] = "/tmp/portico-exunit-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    if (fd < 0 || write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml)) {
        perror(path);
        exit(2);
    }
    close(fd);
    struct pt_diag d;
    pt_diag_init(&d);
    G = pt_config_load(path, 1, &d);
    unlink(path);
    if (!G) {
        pt_diag_print(&d, stderr);
        exit(2);
    }
    pt_diag_free(&d);
    /* What the runtime's gen_prepare does before it publishes one. */
    REG = pt_state_registry_new();
    if (!REG || pt_generation_init_pins(G, 1) < 0 ||
        pt_state_attach_upstreams(REG, G->upstreams, G->nupstreams) < 0)
        exit(2);

    set_chain("f-timer-continue", &tf_def, &conf_timer_continue);
    set_chain("f-timer-respond", &tf_def, &conf_timer_respond);
    set_chain("f-call", &tf_def, &conf_call);
    set_chain("f-timer-never", &tf_def, &conf_timer_never);
    set_chain("f-call-hang", &tf_def, &conf_call_hang);
    set_chain("f-timer-long", &tf_def, &conf_timer_long);
    set_chain("f-call-slow", &tf_def, &conf_call_slow);
    set_chain("f-bare", &tf_def, &conf_bare);
    set_chain("rh-respond", &rh_respond_def, NULL);
    set_chain("rh-error", &rh_error_def, NULL);
    set_chain("upper", &upper_def, NULL);
    set_chain("logged", &log_def, NULL);
}

static void worker_setup(void)
{
    memset(&W, 0, sizeof(W));
    W.id = 0;
    if (pt_loop_init(&W.loop) < 0 || pt_alog_ring_init(&W.alog) < 0)
        exit(2);
    pt_bufpool_init(&W.bufs, 64);
    /* Every request-arena block goes back to malloc: ASan sees late use. */
    W.arena_pool = (struct pt_arena_pool){.max_free = 0};
    pt_outbound_init(&W.ob, &W.loop, &W.bufs);
    W.rng = 0x9E3779B97F4A7C15ull;
    /* As a worker's loop turn starts: adopt the generation (balancer
     * state sized for it), publish what it saw. */
    atomic_store(&pt_gen_current, G);
    pt_worker_refresh_gen(&W);
    atomic_store(&W.seen_gen, G->id);
}

static void worker_teardown(void)
{
    pt_outbound_destroy(&W.ob);
    pt_outbound_reap(&W.ob);
    pt_loop_run_once(&W.loop, 0);
    pt_arena_pool_destroy(&W.arena_pool);
    pt_bufpool_destroy(&W.bufs);
    pt_alog_ring_free(&W.alog);
    pt_loop_destroy(&W.loop);
    free(W.rr);
    free(W.rr_current);
    atomic_store(&pt_gen_current, NULL);
    pt_state_detach_upstreams(G->upstreams, G->nupstreams);
    pt_generation_free(G);
    pt_state_registry_free(REG);
}

static uint32_t pins(void)
{
    return atomic_load(&G->pins[W.id].count);
}

/* The latest access-log line the worker pushed (and takes every line). */
static const char *last_log(void)
{
    static char all[65536], line[4096];
    struct pt_alog_ring *r = &W.alog;
    uint64_t head = atomic_load(&r->head), tail = atomic_load(&r->tail);
    if (head - tail >= sizeof(all))
        tail = head - sizeof(all) + 1;
    size_t n = 0;
    for (uint64_t i = tail; i < head; i++)
        all[n++] = r->buf[i & (PT_ALOG_RING_SIZE - 1)];
    all[n] = 0;
    atomic_store(&r->tail, head);
    line[0] = 0;
    if (n == 0)
        return line;
    all[n - 1] = 0; /* the last newline */
    char *nl = strrchr(all, '\n');
    const char *from = nl ? nl + 1 : all;
    size_t len = PT_MIN(strlen(from), sizeof(line) - 1);
    memcpy(line, from, len);
    line[len] = 0;
    return line;
}

static void run_loop_for(uint64_t ms)
{
    uint64_t end = pt_now_ms() + ms;
    while (pt_now_ms() < end) {
        pt_loop_run_once(&W.loop, 10);
        pt_outbound_reap(&W.ob);
    }
}

/* ------------------------------------------------------------------ */
/* The fake codec.                                                     */

struct fconn {
    struct pt_arena arena;
    struct pt_exchange *ex;
    /* request body: offered a window at a time */
    const char *body;
    size_t body_len, offered, consumed;
    bool over_consumed;
    int wakes;
    /* the response body as the codec saw it */
    char out[8192];
    size_t out_len;
    int out_chunks;
    bool out_eos;
};

static pt_slice fc_body_peek(void *conn, bool *eos)
{
    struct fconn *c = conn;
    *eos = c->offered == c->body_len;
    return (pt_slice){c->body ? c->body + c->consumed : "", c->offered - c->consumed};
}

static void fc_body_consumed(void *conn, size_t n)
{
    struct fconn *c = conn;
    c->consumed += n;
    c->over_consumed |= c->consumed > c->offered;
}

static void fc_wake(void *conn)
{
    struct fconn *c = conn;
    c->wakes++;
}

static const struct pt_codec_ops fc_ops = {fc_body_peek, fc_body_consumed, fc_wake};

/* Sets up an exchange as a codec does once a request head is complete. */
static struct pt_exchange *fc_begin(struct fconn *c, const char *method, const char *target,
                                    int64_t content_length)
{
    memset(c, 0, sizeof(*c));
    pt_arena_init_pooled(&c->arena, PT_REQ_ARENA_BLOCK, &W.arena_pool);
    struct pt_exchange *ex = pt_arena_zalloc(&c->arena, sizeof(*ex));
    if (!ex)
        exit(2);
    pt_exchange_init(ex, &W, &c->arena, &fc_ops, c);
    c->ex = ex;
    ex->listener = "test";
    ex->peer = PT_SLICE("192.0.2.1");
    ex->t_start = pt_loop_now_ns(&W.loop);
    ex->req.method = (pt_slice){method, strlen(method)};
    ex->req.method_id = pt_method_lookup(method, strlen(method));
    ex->req.target = (pt_slice){target, strlen(target)};
    const char *q = strchr(target, '?');
    ex->req.path = (pt_slice){target, q ? (size_t)(q - target) : strlen(target)};
    ex->req.query = q ? (pt_slice){q + 1, strlen(q + 1)} : (pt_slice){"", 0};
    ex->req.host = PT_SLICE("api.test");
    ex->req.scheme = PT_SLICE("http");
    ex->req.content_length = content_length;
    pt_headers_add(&ex->reqh, &c->arena, PT_SLICE("Host"), PT_SLICE("api.test"));
    pt_headers_add(&ex->reqh, &c->arena, PT_SLICE("User-Agent"), PT_SLICE("exunit"));
    return ex;
}

/* One codec pump: the exchange's I/O, interim heads, the response body. */
static void fc_pump(struct fconn *c)
{
    struct pt_exchange *ex = c->ex;
    for (int guard = 0; guard < 10000; guard++) {
        if (ex->suspended)
            return;
        int progress = pt_exchange_pump(ex) > 0;
        while (pt_exchange_interim(ex))
            pt_exchange_interim_done(ex);
        if (ex->resp == PT_RESP_UPSTREAM && !c->out_eos) {
            bool eos = false;
            pt_slice s = pt_exchange_body_peek(ex, &eos);
            if (s.len) {
                size_t k = PT_MIN(s.len, sizeof(c->out) - c->out_len);
                memcpy(c->out + c->out_len, s.p, k);
                c->out_len += k;
                c->out_chunks++;
                pt_exchange_body_consume(ex, s.len);
                progress = 1;
            }
            if (eos) {
                c->out_eos = true;
                progress = 1;
            }
        }
        if (!progress)
            return;
    }
}

static bool fc_finished(struct fconn *c)
{
    return c->ex->resp == PT_RESP_GATEWAY || (c->ex->resp == PT_RESP_UPSTREAM && c->out_eos);
}

static bool fc_consumed_offer(struct fconn *c)
{
    return c->consumed == c->offered;
}

/* Runs the loop, pumping the exchange each time it wakes the codec, until
 * `done` or ms pass. */
static bool fc_run(struct fconn *c, bool (*done)(struct fconn *), uint64_t ms)
{
    uint64_t end = pt_now_ms() + ms;
    fc_pump(c);
    while (!done(c)) {
        if (pt_now_ms() >= end)
            return false;
        int before = c->wakes;
        pt_loop_run_once(&W.loop, 10);
        pt_outbound_reap(&W.ob);
        if (c->wakes != before)
            fc_pump(c);
    }
    return true;
}

/* Runs a started exchange to its response. */
static bool fc_wait(struct fconn *c)
{
    bool ok = fc_run(c, fc_finished, 3000);
    CHECK_MSG(ok, "no response for %.*s", (int)c->ex->req.target.len, c->ex->req.target.p);
    return ok;
}

/* Starts the exchange and runs it to its response. */
static bool fc_exchange(struct fconn *c)
{
    pt_exchange_start(c->ex);
    return fc_wait(c);
}

/* Ends it as the codec does (the exchange, then the arena). */
static void fc_end(struct fconn *c, bool completed)
{
    pt_exchange_end(c->ex, completed);
    c->ex = NULL;
    pt_arena_release(&c->arena);
}

static pt_slice resp_field(struct pt_exchange *ex, const char *name)
{
    struct pt_hfield *f = pt_headers_find(&ex->resph, (pt_slice){name, strlen(name)});
    return f && !f->dead ? f->value : (pt_slice){NULL, 0};
}

#define CHECK_LOG(line, frag) CHECK_MSG(strstr((line), (frag)) != NULL, "%s not in %s", frag, line)

/* ------------------------------------------------------------------ */
/* Tests.                                                              */

static void test_plain_get(void)
{
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/plain/thing?x=1", -1);
    CHECK_EQ_INT(pins(), 1);
    uint64_t served = atomic_load(&W.served);
    char rid[40];
    snprintf(rid, sizeof(rid), "%.*s", (int)ex->reqid.len, ex->reqid.p);
    CHECK_EQ_INT(strlen(rid), 32);
    if (!fc_exchange(&c))
        return;
    CHECK_EQ_INT(ex->resp, PT_RESP_UPSTREAM);
    CHECK_EQ_INT(ex->resp_seq, 1);
    CHECK_EQ_INT(ex->status, 200);
    CHECK_SLICE(ex->reason, "OK");
    CHECK_SLICE(resp_field(ex, "X-Up"), "yes");
    CHECK_SLICE(resp_field(ex, "Content-Type"), "text/plain");
    CHECK_SLICE(resp_field(ex, "X-Request-ID"), rid);
    CHECK_EQ_INT(ex->content_length, 19);
    CHECK_EQ_INT(ex->frame, PT_FRAME_LENGTH);
    CHECK_EQ_INT(c.out_len, 19);
    CHECK(c.out_len == 19 && memcmp(c.out, "hello from upstream", 19) == 0);
    CHECK(pt_exchange_body_done(ex));
    CHECK(c.wakes > 0);
    /* What went upstream: the stripped path, the query, forwarding fields. */
    CHECK(srv_request_line("GET /thing?x=1 HTTP/1.1"));
    char f[128];
    snprintf(f, sizeof(f), "X-Request-ID: %s", rid);
    CHECK(srv_saw(f));
    CHECK(srv_saw("X-Forwarded-For: 192.0.2.1"));
    CHECK(srv_saw("X-Forwarded-Proto: http"));
    CHECK(srv_saw("X-Forwarded-Host: api.test"));
    CHECK(srv_saw("Host: api.test"));
    CHECK(srv_saw("User-Agent: exunit"));
    CHECK_EQ_INT(pins(), 1);
    fc_end(&c, true);
    CHECK_EQ_INT(pins(), 0);
    CHECK_EQ_INT(atomic_load(&W.served), served + 1);
    const char *log = last_log();
    CHECK_LOG(log, "\"status\":200");
    CHECK_LOG(log, "\"route\":\"plain\"");
    CHECK_LOG(log, "\"upstream\":\"backend\"");
    CHECK_LOG(log, "\"method\":\"GET\"");
    CHECK_LOG(log, "\"path\":\"/plain/thing\"");
    CHECK_LOG(log, "\"bytes_out\":19");
    snprintf(f, sizeof(f), "\"request_id\":\"%s\"", rid);
    CHECK_LOG(log, f);
    CHECK(strstr(log, "\"error\"") == NULL);
}

static void test_request_id_from_client(void)
{
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/plain/rid", -1);
    pt_exchange_set_request_id(ex, PT_SLICE("bad id")); /* a space: refused */
    CHECK_EQ_INT(ex->reqid.len, 32);
    pt_exchange_set_request_id(ex, PT_SLICE("client-rid-1"));
    CHECK_SLICE(ex->reqid, "client-rid-1");
    if (fc_exchange(&c)) {
        CHECK(srv_saw("X-Request-ID: client-rid-1"));
        CHECK_SLICE(resp_field(ex, "X-Request-ID"), "client-rid-1");
    }
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"request_id\":\"client-rid-1\"");
}

/* The call pulls the request body as the codec offers it, never more. */
static void test_request_body_backpressure(void)
{
    static const char body[] = "abcdefghijklmnopqrstuvwxyz0123456789"; /* 36 */
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "POST", "/plain/echo", 36);
    c.body = body;
    c.body_len = 36;
    pt_exchange_start(ex);
    CHECK(ex->calling);
    /* Nothing offered: nothing taken, however long the loop runs. */
    fc_run(&c, fc_finished, 100);
    CHECK_EQ_INT(c.consumed, 0);
    CHECK(!fc_finished(&c));
    static const size_t steps[] = {10, 11, 25, 36};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        c.offered = steps[i];
        /* The codec read more of the body: it pumps. */
        CHECK_MSG(fc_run(&c, fc_consumed_offer, 2000), "offer %zu: consumed %zu", c.offered,
                  c.consumed);
        CHECK_EQ_INT(c.consumed, steps[i]);
        CHECK(!c.over_consumed);
        if (i + 1 < sizeof(steps) / sizeof(steps[0]))
            CHECK(!fc_finished(&c)); /* the upstream still waits for the rest */
    }
    CHECK(fc_run(&c, fc_finished, 3000));
    CHECK_EQ_INT(ex->status, 200);
    CHECK_SLICE(resp_field(ex, "X-Up"), "echo");
    CHECK(c.out_len == 36 && memcmp(c.out, body, 36) == 0);
    CHECK_EQ_INT(ex->bytes_in, 36);
    CHECK(srv_request_line("POST /echo HTTP/1.1"));
    CHECK(srv_saw("Content-Length: 36"));
    CHECK(ex->call->sent_all);
    CHECK(!c.over_consumed);
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"bytes_in\":36");
    CHECK_EQ_INT(pins(), 0);
}

/* A gateway-made response: no call, logged, unpinned. */
static void expect_gateway(struct fconn *c, int status, const char *error)
{
    struct pt_exchange *ex = c->ex;
    int before = srv_requests();
    pt_exchange_start(ex);
    CHECK_EQ_INT(ex->resp, PT_RESP_GATEWAY);
    CHECK_EQ_INT(ex->status, status);
    CHECK(!ex->calling);
    CHECK(!ex->dispatched);
    if (error)
        CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", error);
    else
        CHECK(ex->gw_error == NULL);
    CHECK(pt_exchange_body_done(ex));
    CHECK_EQ_INT(c->wakes, 0); /* answered inline: nothing to wake for */
    fc_end(c, true);
    CHECK_EQ_INT(pins(), 0);
    char want[32];
    snprintf(want, sizeof(want), "\"status\":%d", status);
    CHECK_LOG(last_log(), want);
    CHECK_EQ_INT(srv_requests(), before);
}

static void test_routing_errors(void)
{
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/nowhere", -1);
    int before = srv_requests();
    pt_exchange_start(ex);
    CHECK(ex->route == NULL);
    CHECK_EQ_INT(ex->status, 404);
    CHECK(!ex->close_after);
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":404");
    CHECK_EQ_INT(srv_requests(), before);
    fc_begin(&c, "GET", "/nowhere", -1);
    expect_gateway(&c, 404, NULL);

    /* 405 names the methods the path takes. */
    ex = fc_begin(&c, "POST", "/only-get", -1);
    pt_exchange_start(ex);
    CHECK_EQ_INT(ex->status, 405);
    CHECK_EQ_INT(ex->resp, PT_RESP_GATEWAY);
    CHECK_SLICE(resp_field(ex, "Allow"), "GET, HEAD, PUT"); /* GET brings HEAD */
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":405");
    CHECK_EQ_INT(pins(), 0);

    /* CONNECT: a tunnel the gateway does not offer; the connection closes. */
    ex = fc_begin(&c, "CONNECT", "/plain/x", -1);
    pt_exchange_start(ex);
    CHECK_EQ_INT(ex->status, 501);
    CHECK(ex->close_after);
    CHECK(ex->route == NULL);
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":501");
    fc_begin(&c, "CONNECT", "/plain/x", -1);
    expect_gateway(&c, 501, "CONNECT is not supported");

    /* 413 from the announced length, before a byte of body is read. */
    ex = fc_begin(&c, "POST", "/small", 17);
    c.body = "0123456789abcdefg";
    c.body_len = 17;
    c.offered = 17;
    pt_exchange_start(ex);
    CHECK_EQ_INT(ex->status, 413);
    CHECK(ex->close_after);
    CHECK_EQ_INT(c.consumed, 0);
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":413");
    fc_begin(&c, "POST", "/small", 17);
    expect_gateway(&c, 413, NULL);
    /* At the limit it goes upstream. */
    ex = fc_begin(&c, "POST", "/small", 16);
    c.body = "0123456789abcdef";
    c.body_len = 16;
    c.offered = 16;
    if (fc_exchange(&c))
        CHECK_EQ_INT(ex->status, 200);
    CHECK_EQ_INT(c.consumed, 16);
    fc_end(&c, true);
    last_log();
    CHECK_EQ_INT(pins(), 0);
}

static void test_filter_timer_continue(void)
{
    memset(&tf, 0, sizeof(tf));
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/f/timer-continue", -1);
    pt_exchange_start(ex);
    CHECK_EQ_INT(tf.on_request, 1);
    CHECK(ex->suspended);
    CHECK(!ex->dispatched);
    CHECK_EQ_INT(ex->resp, PT_RESP_NONE);
    CHECK(pt_timer_armed(&ex->deadline));
    if (fc_wait(&c)) {
        CHECK_EQ_INT(tf.timer_done, 1);
        CHECK(c.wakes > 0);
        CHECK(!ex->suspended);
        CHECK(!pt_timer_armed(&ex->deadline));
        CHECK_EQ_INT(ex->status, 200);
        CHECK(srv_request_line("GET /f/timer-continue HTTP/1.1"));
        CHECK(srv_saw("X-Timer: fired"));
        CHECK(c.out_len == 19);
    }
    fc_end(&c, true);
    CHECK_EQ_INT(tf.on_cancel, 0);
    CHECK_EQ_INT(pins(), 0);
    CHECK_LOG(last_log(), "\"status\":200");
}

static void test_filter_timer_respond(void)
{
    memset(&tf, 0, sizeof(tf));
    int before = srv_requests();
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/f/timer-respond", -1);
    if (fc_exchange(&c)) {
        CHECK_EQ_INT(tf.timer_done, 1);
        CHECK_EQ_INT(ex->resp, PT_RESP_GATEWAY);
        CHECK_EQ_INT(ex->status, 401);
        /* The fields the filter added go with its answer, and its body
         * with its content type. */
        CHECK_SLICE(resp_field(ex, "WWW-Authenticate"), "Bearer realm=\"test\"");
        CHECK_SLICE(ex->gw_body, "denied\n");
        CHECK_SLICE(ex->gw_ctype, "text/plain");
        CHECK(!ex->dispatched);
        CHECK(!pt_timer_armed(&ex->deadline));
    }
    CHECK_EQ_INT(srv_requests(), before);
    fc_end(&c, true);
    CHECK_EQ_INT(tf.on_cancel, 0);
    CHECK_LOG(last_log(), "\"status\":401");
}

static void test_filter_call(void)
{
    memset(&tf, 0, sizeof(tf));
    int before = srv_requests();
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/f/call", -1);
    pt_exchange_start(ex);
    CHECK(ex->suspended);
    CHECK(ex->ffetch != NULL);
    if (fc_wait(&c)) {
        CHECK_EQ_INT(tf.call_done, 1);
        CHECK_EQ_INT(tf.call_error, PT_CALL_OK);
        CHECK_EQ_INT(tf.call_status, 200);
        CHECK_STR(tf.call_body, "alice");
        CHECK_STR(tf.call_field, "alice");
        CHECK(ex->ffetch == NULL);
        /* The filter's call, then the proxied request carrying its result. */
        CHECK_EQ_INT(srv_requests(), before + 2);
        CHECK(srv_request_line("GET /f/call HTTP/1.1"));
        CHECK(srv_saw("X-Auth-User: alice"));
        CHECK_EQ_INT(ex->status, 200);
    }
    fc_end(&c, true);
    CHECK_EQ_INT(tf.on_cancel, 0);
    CHECK_EQ_INT(pins(), 0);
    last_log();
}

/* A filter that never resumes: its deadline answers 504 and cancels it. */
static void test_filter_deadline(void)
{
    memset(&tf, 0, sizeof(tf));
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/f/timer-never", -1);
    uint64_t t0 = pt_now_ms();
    if (fc_exchange(&c)) {
        uint64_t took = pt_now_ms() - t0;
        CHECK_MSG(took >= 45 && took < 250, "deadline after %llu ms", (unsigned long long)took);
        CHECK_EQ_INT(ex->status, 504);
        CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", "filter timeout");
        CHECK_EQ_INT(tf.on_cancel, 1);
        CHECK_EQ_INT(tf.cancel_bad_state, 0);
        CHECK(!ex->suspended);
        CHECK(!pt_timer_armed(&ex->ftimer));
    }
    /* Past the filter's own timer: it was cancelled with the suspension. */
    int wakes = c.wakes;
    run_loop_for(350);
    CHECK_EQ_INT(tf.timer_done, 0);
    CHECK_EQ_INT(c.wakes, wakes);
    fc_end(&c, true);
    CHECK_EQ_INT(tf.on_cancel, 1); /* not again at the end */
    CHECK_LOG(last_log(), "\"status\":504");

    /* The same with a call that never answers. */
    memset(&tf, 0, sizeof(tf));
    ex = fc_begin(&c, "GET", "/f/call-hang", -1);
    if (fc_exchange(&c)) {
        CHECK_EQ_INT(ex->status, 504);
        CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", "filter timeout");
        CHECK_EQ_INT(tf.on_cancel, 1);
        CHECK(ex->ffetch == NULL);
    }
    run_loop_for(100);
    CHECK_EQ_INT(tf.call_done, 0);
    fc_end(&c, true);
    CHECK_EQ_INT(tf.on_cancel, 1);
    CHECK_EQ_INT(pins(), 0);
    CHECK_LOG(last_log(), "\"status\":504");

    /* SUSPEND with nothing pending could never resume: 500 at once. */
    memset(&tf, 0, sizeof(tf));
    ex = fc_begin(&c, "GET", "/f/bare", -1);
    pt_exchange_start(ex);
    CHECK(!ex->suspended);
    CHECK_EQ_INT(ex->status, 500);
    CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", "filter suspended without pending work");
    CHECK(!pt_timer_armed(&ex->deadline));
    fc_end(&c, true);
    CHECK_EQ_INT(tf.on_cancel, 0);
    last_log();
}

/* The client goes away while a filter waits: the work is cancelled, the
 * filter told once, and nothing completes into the freed exchange. */
static void test_cancel_suspended(void)
{
    memset(&tf, 0, sizeof(tf));
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/f/timer-long", -1);
    pt_exchange_start(ex);
    CHECK(ex->suspended);
    run_loop_for(30);
    CHECK_EQ_INT(tf.timer_done, 0);
    fc_end(&c, false);
    CHECK_EQ_INT(tf.on_cancel, 1);
    CHECK_EQ_INT(tf.cancel_bad_state, 0);
    CHECK_EQ_INT(pins(), 0);
    const char *log = last_log();
    CHECK_LOG(log, "\"status\":499");
    CHECK_LOG(log, "\"route\":\"f-timer-long\"");
    int wakes = c.wakes;
    run_loop_for(300); /* past the timer */
    CHECK_EQ_INT(tf.timer_done, 0);
    CHECK_EQ_INT(tf.on_cancel, 1);
    CHECK_EQ_INT(c.wakes, wakes);

    /* Suspended on a call: the upstream answers after the end. */
    memset(&tf, 0, sizeof(tf));
    int before = srv_requests();
    pthread_mutex_lock(&srv.mu);
    int late = srv.late_answers;
    pthread_mutex_unlock(&srv.mu);
    ex = fc_begin(&c, "GET", "/f/call-slow", -1);
    pt_exchange_start(ex);
    CHECK(ex->suspended);
    for (int i = 0; i < 100 && srv_requests() == before; i++)
        run_loop_for(5);
    CHECK_EQ_INT(srv_requests(), before + 1); /* the call reached the upstream */
    fc_end(&c, false);
    CHECK_EQ_INT(tf.on_cancel, 1);
    CHECK_EQ_INT(pins(), 0);
    CHECK_LOG(last_log(), "\"status\":499");
    wakes = c.wakes;
    for (int i = 0; i < 100; i++) {
        run_loop_for(10);
        pthread_mutex_lock(&srv.mu);
        bool answered = srv.late_answers > late;
        pthread_mutex_unlock(&srv.mu);
        if (answered)
            break;
    }
    run_loop_for(100); /* whatever the answer stirs on the loop */
    CHECK_EQ_INT(tf.call_done, 0);
    CHECK_EQ_INT(tf.on_cancel, 1);
    CHECK_EQ_INT(c.wakes, wakes);
    CHECK_EQ_INT(srv_requests(), before + 1); /* nothing was proxied */
}

/* The client goes away while the upstream call runs (no filter). */
static void test_cancel_calling(void)
{
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/plain/slow", -1);
    int before = srv_requests();
    pt_exchange_start(ex);
    CHECK(ex->calling);
    for (int i = 0; i < 100 && srv_requests() == before; i++)
        run_loop_for(5);
    fc_end(&c, false);
    CHECK_EQ_INT(pins(), 0);
    const char *log = last_log();
    CHECK_LOG(log, "\"status\":499");
    char want[64];
    snprintf(want, sizeof(want), "\"upstream_target\":\"127.0.0.1:%d\"", srv.port);
    CHECK_LOG(log, want);
    int wakes = c.wakes;
    run_loop_for(400);
    CHECK_EQ_INT(c.wakes, wakes);
}

static void test_response_head_filters(void)
{
    memset(&tf, 0, sizeof(tf));
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/rh/respond", -1);
    if (fc_exchange(&c)) {
        CHECK_EQ_INT(tf.rh_calls, 1);
        CHECK(ex->dispatched);
        CHECK_EQ_INT(ex->resp, PT_RESP_GATEWAY);
        CHECK_EQ_INT(ex->resp_seq, 2); /* the upstream's, then the filter's */
        CHECK_EQ_INT(ex->status, 403);
        CHECK_SLICE(ex->gw_body, "replaced\n");
        CHECK(!ex->calling); /* the upstream call is over */
        /* The upstream's answer is replaced: its fields are gone. */
        CHECK(resp_field(ex, "X-Up").p == NULL);
        CHECK(resp_field(ex, "Content-Type").p == NULL);
        /* filter.h: a filter returning RESPOND puts its extra response
         * fields in resp_headers; they go with its answer. */
        CHECK_MSG(slice_is(resp_field(ex, "X-Replaced"), "yes"),
                  "exchange_filters.c pt_exchange_filters_response_head clears resph after the "
                  "filters ran: a RESPOND's own fields are dropped");
    }
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":403");

    memset(&tf, 0, sizeof(tf));
    ex = fc_begin(&c, "GET", "/rh/error", -1);
    if (fc_exchange(&c)) {
        CHECK_EQ_INT(tf.rh_calls, 1);
        CHECK_EQ_INT(ex->resp, PT_RESP_GATEWAY);
        CHECK_EQ_INT(ex->status, 500);
        CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", "filter error");
        CHECK(resp_field(ex, "X-Up").p == NULL);
        CHECK(!ex->calling);
    }
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":500");
    CHECK_EQ_INT(pins(), 0);
}

static void test_response_body_filter(void)
{
    memset(&tf, 0, sizeof(tf));
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/upper", -1);
    if (fc_exchange(&c)) {
        CHECK_EQ_INT(ex->status, 200);
        /* The length is the filters' to change: re-framed chunked. */
        CHECK_EQ_INT(ex->frame, PT_FRAME_CHUNKED);
        CHECK_EQ_INT(ex->content_length, -1);
        CHECK_MSG(c.out_len == 11 && memcmp(c.out, "HELLO WORLD", 11) == 0, "got \"%.*s\"",
                  (int)c.out_len, c.out);
        CHECK(tf.body_calls >= 2); /* each piece as it came */
        CHECK_EQ_INT(tf.body_eos, 1);
        CHECK(c.out_chunks >= 2);
        CHECK_SLICE(resp_field(ex, "X-Up"), "yes");
        CHECK(pt_exchange_body_done(ex));
    }
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"bytes_out\":11");
    CHECK_EQ_INT(pins(), 0);
}

static void test_upstream_failures(void)
{
    struct fconn c;
    /* Refused: 502. */
    struct pt_exchange *ex = fc_begin(&c, "GET", "/refused", -1);
    if (fc_exchange(&c)) {
        CHECK_EQ_INT(ex->status, 502);
        CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", "upstream connection refused");
        CHECK(!ex->calling);
    }
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":502");

    /* No answer within the route's timeout: 504. */
    const struct pt_target_state *bst = find_route("read-timeout")->upstream->targets[0].state;
    uint32_t active0 = pt_state_active(bst);
    ex = fc_begin(&c, "GET", "/t/hang", -1);
    uint64_t t0 = pt_now_ms();
    if (fc_exchange(&c)) {
        uint64_t took = pt_now_ms() - t0;
        CHECK_EQ_INT(ex->status, 504);
        CHECK_MSG(took >= 140 && took < 1500, "timeout after %llu ms", (unsigned long long)took);
        CHECK(!ex->calling);
    }
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":504");
    /* A call that failed on its own gives its active count back
     * (least_conn would shun the target forever). */
    CHECK_MSG(pt_state_active(bst) == active0, "active count %u after a failed call, was %u",
              pt_state_active(bst), active0);

    /* Every target unhealthy: 503, nothing sent. */
    const struct pt_upstream *sick = find_route("sick")->upstream;
    CHECK(pt_state_set_health(sick->targets[0].state, PT_UNHEALTHY, "test"));
    int before = srv_requests();
    ex = fc_begin(&c, "GET", "/sick", -1);
    pt_exchange_start(ex);
    CHECK_EQ_INT(ex->status, 503);
    CHECK_STR(ex->gw_error ? ex->gw_error : "(null)", "no healthy upstream target");
    CHECK(!ex->calling);
    fc_end(&c, true);
    CHECK_LOG(last_log(), "\"status\":503");
    CHECK_EQ_INT(srv_requests(), before);
    /* Healthy again: served. */
    pt_state_set_health(sick->targets[0].state, PT_HEALTHY, "test");
    ex = fc_begin(&c, "GET", "/sick", -1);
    if (fc_exchange(&c))
        CHECK_EQ_INT(ex->status, 200);
    fc_end(&c, true);
    last_log();
    CHECK_EQ_INT(pins(), 0);
}

/* A route's log filters run at the end of every exchange on it; filter.h
 * promises each hook its zeroed state (state_size > 0) and the request's
 * context. */
static void test_log_filter_state(void)
{
    memset(&tf, 0, sizeof(tf));
    struct fconn c;
    struct pt_exchange *ex = fc_begin(&c, "GET", "/logged", -1);
    if (fc_exchange(&c))
        CHECK_EQ_INT(ex->status, 200);
    fc_end(&c, true);
    last_log();
    CHECK_EQ_INT(tf.log_calls, 1);
    CHECK_EQ_INT(tf.log_null_state, 0);
    CHECK_EQ_INT(tf.log_no_reqid, 0);

    /* Refused before the filters began (413 on the announced length). */
    memset(&tf, 0, sizeof(tf));
    ex = fc_begin(&c, "POST", "/logged", 100);
    pt_exchange_start(ex);
    CHECK_EQ_INT(ex->status, 413);
    fc_end(&c, true);
    last_log();
    CHECK_MSG(tf.log_calls == 0 || (tf.log_null_state == 0 && tf.log_no_reqid == 0),
              "exchange.c pt_exchange_end runs on_log on a route whose filters never began: "
              "NULL state (%d) and an unset ctx (no request id: %d)",
              tf.log_null_state, tf.log_no_reqid);
}

int main(void)
{
    pt_log_min_level = PT_LOG_ERROR; /* the deadline tests warn by design */
    srv_start();
    int dead_fd;
    int dead_port = listen_loopback(&dead_fd);
    close(dead_fd); /* nobody listens there now: connections are refused */
    load_generation(dead_port);
    worker_setup();

    test_plain_get();
    test_request_id_from_client();
    test_request_body_backpressure();
    test_routing_errors();
    test_filter_timer_continue();
    test_filter_timer_respond();
    test_filter_call();
    test_filter_deadline();
    test_cancel_suspended();
    test_cancel_calling();
    test_response_head_filters();
    test_response_body_filter();
    test_upstream_failures();
    test_log_filter_state();

    worker_teardown();
    srv_stop();
    return unit_report("exchange");
}
