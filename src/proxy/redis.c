/*
 * redis.c — see redis.h. One worker's connection to the shared store.
 *
 * The connection is a small state machine driven by the worker's loop:
 *
 *   IDLE ──first eval──▶ CONNECTING ──connected──▶ UP
 *                            │  ▲                   │
 *            refused/timeout │  │ retry timer       │ reset, EOF, stall,
 *                            ▼  │                   │ bad reply, AUTH refused
 *                           WAIT ◀──────────────────┘
 *
 * Pending commands form one FIFO in the order their bytes went out, which
 * is the order Redis answers them. A command nobody waits for any more
 * (timed out, cancelled, AUTH/SELECT) keeps its place so that the reply it
 * gets is matched to it and dropped. A NOSCRIPT answer to an EVALSHA whose
 * caller still waits sends the same call again as EVAL: the resent bytes
 * go out behind everything already sent, so the command moves from the
 * head of the FIFO to its tail, where its next answer will arrive.
 *
 * One timer serves the connection: the connect timeout (CONNECTING), the
 * stall check and a deferred failure (UP), the retry (WAIT). Each command
 * carries its own timeout timer.
 *
 * Re-entrancy: callbacks resume requests, which may issue new commands on
 * this connection (a pipelined request). Those only append to the FIFO and
 * the output buffer; a send that fails then is handled from the timer, not
 * there and then, and the reply loop notices a connection that changed
 * under it (its epoch) and stops.
 */
#include "proxy/redis.h"

#include "core/log.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>

#define RETRY_MIN_MS 100
#define RETRY_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 1000
#define STALL_MS 1000
#define MAX_PENDING 16384 /* commands in flight on one connection */
#define CMD_CACHE_MAX 1024
#define MAX_ARGV 512 /* numkeys + keys + args of one eval */

enum cmd_kind { CMD_SETUP, CMD_EVAL };

struct pt_redis_cmd {
    struct pt_redis_cmd *next; /* FIFO / free list */
    struct pt_redis *r;
    pt_redis_cb cb; /* NULL: nobody waits for the answer any more */
    void *ud;
    struct pt_arena *arena; /* the caller's; NULL once nobody waits */
    const struct pt_redis_script *script;
    /* The caller's keys and args (its arena, valid while it waits): what
     * an EVAL after NOSCRIPT sends again, formatted only then. */
    const pt_slice *keys, *args;
    uint32_t nkeys, nargs;
    uint64_t sent_ms;
    struct pt_timer timer;
    uint8_t kind;
    bool resent; /* already sent again as EVAL */
};

enum conn_state { ST_IDLE, ST_CONNECTING, ST_UP, ST_WAIT };

struct pt_redis {
    struct pt_loop *loop;
    struct pt_redis_cfg cfg; /* strings in strs */
    char *strs;
    struct pt_io io;
    enum conn_state st;
    bool down;           /* commands fail at once */
    bool logged_down;    /* "lost" was logged; "restored" is next */
    const char *fail;    /* UP: a failure to act on from the timer */
    uint32_t setup_left; /* AUTH / SELECT answers this connection awaits */
    uint64_t epoch;      /* bumped whenever the connection is closed */
    uint64_t backoff_ms;
    uint64_t rng; /* jitter of the retry delay */
    redisReader *reader;
    struct pt_redis_cmd *head, *tail;
    uint32_t npending;
    struct pt_redis_cmd *cache;
    uint32_t ncache;
    char *out; /* bytes not sent yet: out[ooff..olen) */
    size_t olen, ooff, ocap;
    struct pt_timer timer;
};

static void conn_start(struct pt_redis *r);
static void conn_lost(struct pt_redis *r, const char *why);
static void on_timer(struct pt_loop *loop, struct pt_timer *t);

/* ---- commands ---- */

static struct pt_redis_cmd *cmd_get(struct pt_redis *r)
{
    struct pt_redis_cmd *c = r->cache;
    if (c) {
        r->cache = c->next;
        r->ncache--;
    } else {
        c = malloc(sizeof(*c));
        if (!c)
            return NULL;
    }
    memset(c, 0, sizeof(*c));
    c->r = r;
    return c;
}

static void cmd_put(struct pt_redis *r, struct pt_redis_cmd *c)
{
    pt_timer_cancel(r->loop, &c->timer);
    if (r->ncache >= CMD_CACHE_MAX) {
        free(c);
        return;
    }
    c->next = r->cache;
    r->cache = c;
    r->ncache++;
}

static void fifo_push(struct pt_redis *r, struct pt_redis_cmd *c)
{
    c->next = NULL;
    c->sent_ms = pt_loop_now(r->loop);
    if (r->tail)
        r->tail->next = c;
    else
        r->head = c;
    r->tail = c;
    r->npending++;
    /* The stall check runs while something is pending. */
    if (r->st == ST_UP && !pt_timer_armed(&r->timer))
        pt_timer_arm(r->loop, &r->timer, STALL_MS, on_timer);
}

static struct pt_redis_cmd *fifo_pop(struct pt_redis *r)
{
    struct pt_redis_cmd *c = r->head;
    if (!c)
        return NULL;
    r->head = c->next;
    if (!r->head)
        r->tail = NULL;
    r->npending--;
    c->next = NULL;
    return c;
}

/* ---- output ---- */

static int out_append(struct pt_redis *r, const char *p, size_t n)
{
    if (r->ooff == r->olen)
        r->ooff = r->olen = 0;
    if (r->olen + n > r->ocap) {
        size_t cap = r->ocap ? r->ocap : 4096;
        while (cap < r->olen + n)
            cap *= 2;
        char *o = realloc(r->out, cap);
        if (!o)
            return -1;
        r->out = o;
        r->ocap = cap;
    }
    memcpy(r->out + r->olen, p, n);
    r->olen += n;
    return 0;
}

/* A failure noticed where acting on it would pull the connection from
 * under a caller: the timer acts on it, at the next tick. */
static void fail_later(struct pt_redis *r, const char *why)
{
    if (r->fail)
        return;
    r->fail = why;
    pt_timer_arm(r->loop, &r->timer, 0, on_timer);
}

static void flush(struct pt_redis *r)
{
    if (r->st != ST_UP || r->fail)
        return;
    while (r->ooff < r->olen) {
        struct iovec iov = {r->out + r->ooff, r->olen - r->ooff};
        ssize_t n = pt_io_sendv(r->loop, &r->io, &iov, 1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                fail_later(r, "send failed");
            return; /* EAGAIN: EPOLLOUT resumes it */
        }
        r->ooff += (size_t)n;
    }
    r->ooff = r->olen = 0;
}

/* ---- replies ---- */

static const struct pt_redis_result res_unavailable = {PT_REDIS_ERR_UNAVAILABLE,
                                                       "shared store unavailable", NULL, 0};
static const struct pt_redis_result res_timeout = {PT_REDIS_ERR_TIMEOUT, "shared store timeout",
                                                   NULL, 0};

/* The answer of an eval as integers in the caller's arena. */
static void result_of(const redisReply *rep, struct pt_arena *a, struct pt_redis_result *res)
{
    *res = (struct pt_redis_result){PT_REDIS_ERR_REPLY, "unexpected reply type", NULL, 0};
    if (rep->type == REDIS_REPLY_ERROR) {
        size_t n = rep->len < 200 ? rep->len : 200;
        const char *t = pt_arena_strndup(a, rep->str, n);
        res->error_text = t ? t : "error reply";
        return;
    }
    if (rep->type == REDIS_REPLY_INTEGER) {
        int64_t *v = pt_arena_alloc(a, sizeof(*v));
        if (!v) {
            res->error_text = "out of memory";
            return;
        }
        *v = rep->integer;
        *res = (struct pt_redis_result){PT_REDIS_OK, NULL, v, 1};
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements > UINT32_MAX)
        return;
    int64_t *v = pt_arena_alloc(a, sizeof(*v) * (rep->elements ? rep->elements : 1));
    if (!v) {
        res->error_text = "out of memory";
        return;
    }
    for (size_t i = 0; i < rep->elements; i++) {
        if (rep->element[i]->type != REDIS_REPLY_INTEGER) {
            res->error_text = "reply array holds something other than integers";
            return;
        }
        v[i] = rep->element[i]->integer;
    }
    *res = (struct pt_redis_result){PT_REDIS_OK, NULL, v, (uint32_t)rep->elements};
}

/* The setup commands were answered: the connection works. */
static void restored(struct pt_redis *r)
{
    r->backoff_ms = RETRY_MIN_MS;
    r->down = false;
    if (r->logged_down) {
        pt_info("redis %s: connection restored", r->cfg.url);
        r->logged_down = false;
    }
}

static int format_call(struct pt_redis *r, const char *verb, size_t vlen, const char *body,
                       size_t blen, const struct pt_redis_cmd *c, struct pt_arena *arena);

/* NOSCRIPT: the same call as EVAL with the script's text, behind
 * everything sent so far. 0, or -1 (the caller then gets the error). */
static int resend_as_eval(struct pt_redis *r, struct pt_redis_cmd *c)
{
    if (format_call(r, "EVAL", 4, c->script->text, strlen(c->script->text), c, c->arena) < 0)
        return -1; /* nothing appended then */
    c->resent = true;
    fifo_push(r, c);
    flush(r);
    return 0;
}

static void setup_reply(struct pt_redis *r, struct pt_redis_cmd *c, const redisReply *rep)
{
    cmd_put(r, c);
    if (rep->type == REDIS_REPLY_ERROR) {
        /* Redis's error text never repeats the password. */
        char why[160];
        snprintf(why, sizeof(why), "connection setup refused: %.*s",
                 (int)(rep->len < 120 ? rep->len : 120), rep->str);
        conn_lost(r, why);
        return;
    }
    if (--r->setup_left == 0)
        restored(r);
}

static void eval_reply(struct pt_redis *r, struct pt_redis_cmd *c, const redisReply *rep)
{
    if (rep->type == REDIS_REPLY_ERROR && rep->len >= 8 && memcmp(rep->str, "NOSCRIPT", 8) == 0 &&
        c->cb && !c->resent && resend_as_eval(r, c) == 0)
        return;
    pt_redis_cb cb = c->cb;
    void *ud = c->ud;
    struct pt_redis_result res;
    if (cb)
        result_of(rep, c->arena, &res);
    cmd_put(r, c);
    if (cb)
        cb(ud, &res);
}

/* Matches every complete reply to the head of the FIFO. False when the
 * connection went away meanwhile. */
static bool drain_replies(struct pt_redis *r)
{
    uint64_t ep = r->epoch;
    for (;;) {
        void *reply = NULL;
        if (redisReaderGetReply(r->reader, &reply) != REDIS_OK) {
            conn_lost(r, "protocol error in a reply");
            return false;
        }
        if (!reply)
            return true;
        struct pt_redis_cmd *c = fifo_pop(r);
        if (!c) {
            freeReplyObject(reply);
            conn_lost(r, "a reply nobody asked for");
            return false;
        }
        if (c->kind == CMD_SETUP)
            setup_reply(r, c, reply);
        else
            eval_reply(r, c, reply);
        freeReplyObject(reply);
        if (r->epoch != ep)
            return false;
    }
}

static void on_readable(struct pt_redis *r)
{
    char buf[16384];
    for (;;) {
        ssize_t n = pt_io_recv(r->loop, &r->io, buf, sizeof(buf));
        if (n > 0) {
            if (redisReaderFeed(r->reader, buf, (size_t)n) != REDIS_OK) {
                conn_lost(r, "protocol error in a reply");
                return;
            }
            if (!drain_replies(r))
                return;
            continue;
        }
        if (n == 0) {
            conn_lost(r, "closed by the server");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_lost(r, strerror(errno));
        return;
    }
}

/* ---- the connection ---- */

static void connected(struct pt_redis *r)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(r->io.fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr) {
        conn_lost(r, strerror(soerr));
        return;
    }
    pt_io_connected(r->loop, &r->io);
    pt_timer_cancel(r->loop, &r->timer);
    r->st = ST_UP;
    /* What waited for the connect is measured from now. */
    uint64_t now = pt_loop_now(r->loop);
    for (struct pt_redis_cmd *c = r->head; c; c = c->next)
        c->sent_ms = now;
    if (r->head)
        pt_timer_arm(r->loop, &r->timer, STALL_MS, on_timer);
    flush(r);
}

static void on_io(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct pt_redis *r = pt_container_of(io, struct pt_redis, io);
    (void)loop;
    if (io->fd < 0)
        return; /* closed earlier in this turn */
    if (r->st == ST_CONNECTING) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        connected(r);
        if (r->st != ST_UP)
            return;
    }
    if (r->st != ST_UP)
        return;
    if (events & EPOLLOUT)
        flush(r);
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
        on_readable(r);
}

/* The retry delay: the backoff ±20 %, so the workers of one gateway and
 * the gateways of a cluster do not reconnect in lockstep. */
static uint64_t jittered(struct pt_redis *r)
{
    r->rng ^= r->rng << 13; /* xorshift64 */
    r->rng ^= r->rng >> 7;
    r->rng ^= r->rng << 17;
    uint64_t span = r->backoff_ms * 2 / 5; /* 40 % of it, centred */
    return r->backoff_ms - span / 2 + (span ? r->rng % (span + 1) : 0);
}

/* Fails every pending command (UNAVAILABLE) and waits to retry. */
static void conn_lost(struct pt_redis *r, const char *why)
{
    pt_timer_cancel(r->loop, &r->timer);
    if (r->io.fd >= 0)
        pt_io_abort(r->loop, &r->io);
    r->epoch++;
    r->st = ST_WAIT;
    r->down = true;
    r->fail = NULL;
    r->setup_left = 0;
    r->olen = r->ooff = 0;
    if (!r->logged_down) {
        pt_warn("redis %s: connection lost (%s); cluster decisions fail over until it is back",
                r->cfg.url, why);
        r->logged_down = true;
    }
    pt_timer_arm(r->loop, &r->timer, jittered(r), on_timer);
    r->backoff_ms = r->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : r->backoff_ms * 2;
    /* Detached first: a callback may issue a command (it fails fast now,
     * the connection being down) or cancel one of these. */
    struct pt_redis_cmd *list = r->head;
    r->head = r->tail = NULL;
    r->npending = 0;
    for (struct pt_redis_cmd *c = list; c; c = c->next)
        pt_timer_cancel(r->loop, &c->timer);
    for (struct pt_redis_cmd *c = list; c; c = c->next) {
        pt_redis_cb cb = c->cb;
        c->cb = NULL;
        c->arena = NULL;
        if (cb)
            cb(c->ud, &res_unavailable);
    }
    while (list) {
        struct pt_redis_cmd *next = list->next;
        cmd_put(r, list);
        list = next;
    }
}

static int queue_setup(struct pt_redis *r, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return -1;
    struct pt_redis_cmd *c = cmd_get(r);
    int rc = c && out_append(r, cmd, (size_t)n) == 0 ? 0 : -1;
    redisFreeCommand(cmd);
    if (rc < 0) {
        if (c)
            cmd_put(r, c);
        return -1;
    }
    c->kind = CMD_SETUP;
    fifo_push(r, c);
    r->setup_left++;
    return 0;
}

/* AUTH, SELECT and a PING, ahead of any command on a new connection.
 * The connection counts as working once they are answered: a server that
 * accepts connections but does not answer (stopped, overloaded) stays
 * down, and commands keep failing fast. */
static int queue_setup_all(struct pt_redis *r)
{
    if (r->cfg.password) {
        const char *argv[] = {"AUTH", r->cfg.password};
        const size_t lens[] = {4, strlen(r->cfg.password)};
        if (queue_setup(r, 2, argv, lens) < 0)
            return -1;
    }
    if (r->cfg.db) {
        char db[16];
        int n = snprintf(db, sizeof(db), "%u", (unsigned)r->cfg.db);
        const char *argv[] = {"SELECT", db};
        const size_t lens[] = {6, (size_t)n};
        if (queue_setup(r, 2, argv, lens) < 0)
            return -1;
    }
    const char *ping[] = {"PING"};
    const size_t plen[] = {4};
    return queue_setup(r, 1, ping, plen);
}

static void conn_start(struct pt_redis *r)
{
    if (r->reader)
        redisReaderFree(r->reader);
    r->reader = redisReaderCreate();
    r->setup_left = 0;
    r->olen = r->ooff = 0;
    if (!r->reader || queue_setup_all(r) < 0) {
        conn_lost(r, "out of memory");
        return;
    }
    int fd = socket(r->cfg.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        conn_lost(r, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int rc = connect(fd, (const struct sockaddr *)&r->cfg.addr, r->cfg.addrlen);
    if (rc < 0 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        conn_lost(r, strerror(e));
        return;
    }
    r->io.fd = fd;
    r->io.cb = on_io;
    int arc = pt_loop_add_stream(r->loop, &r->io, true);
    if (arc < 0) {
        close(fd);
        r->io.fd = -1;
        conn_lost(r, strerror(-arc));
        return;
    }
    r->st = ST_CONNECTING;
    pt_timer_arm(r->loop, &r->timer, CONNECT_TIMEOUT_MS, on_timer);
}

static void on_timer(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_redis *r = pt_container_of(t, struct pt_redis, timer);
    switch (r->st) {
    case ST_CONNECTING:
        conn_lost(r, "connect timed out");
        return;
    case ST_WAIT:
        conn_start(r);
        return;
    case ST_UP:
        if (r->fail) {
            conn_lost(r, r->fail);
            return;
        }
        if (!r->head)
            return;
        uint64_t now = pt_loop_now(loop);
        if (now - r->head->sent_ms >= STALL_MS) {
            conn_lost(r, "no answer for 1 s");
            return;
        }
        pt_timer_arm(loop, t, r->head->sent_ms + STALL_MS - now, on_timer);
        return;
    case ST_IDLE:
        return;
    }
}

/* ---- API ---- */

static size_t str_size(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

static const char *str_put(char **p, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*p, s, n);
    const char *r = *p;
    *p += n;
    return r;
}

struct pt_redis *pt_redis_new(struct pt_loop *loop, const struct pt_redis_cfg *cfg)
{
    struct pt_redis *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    size_t n = str_size(cfg->url) + str_size(cfg->password) + str_size(cfg->prefix);
    r->strs = malloc(n ? n : 1);
    if (!r->strs) {
        free(r);
        return NULL;
    }
    r->cfg = *cfg;
    char *p = r->strs;
    r->cfg.url = cfg->url ? str_put(&p, cfg->url) : "redis";
    r->cfg.password = str_put(&p, cfg->password);
    r->cfg.prefix = str_put(&p, cfg->prefix);
    r->loop = loop;
    r->io.fd = -1;
    r->st = ST_IDLE;
    r->backoff_ms = RETRY_MIN_MS;
    r->rng = pt_mix64(pt_now_ns() ^ (uint64_t)(uintptr_t)r) | 1;
    return r;
}

void pt_redis_free(struct pt_redis *r)
{
    if (!r)
        return;
    pt_timer_cancel(r->loop, &r->timer);
    if (r->io.fd >= 0)
        pt_io_abort(r->loop, &r->io);
    while (r->head)
        cmd_put(r, fifo_pop(r));
    while (r->cache) {
        struct pt_redis_cmd *c = r->cache;
        r->cache = c->next;
        free(c);
    }
    if (r->reader)
        redisReaderFree(r->reader);
    free(r->out);
    free(r->strs);
    free(r);
}

const char *pt_redis_url(const struct pt_redis *r)
{
    return r->cfg.url;
}

bool pt_redis_connected(const struct pt_redis *r)
{
    return r->st == ST_UP && r->setup_left == 0 && !r->fail;
}

bool pt_redis_same_cfg(const struct pt_redis *r, const struct pt_redis_cfg *cfg)
{
    const char *a = r->cfg.password ? r->cfg.password : "";
    const char *b = cfg->password ? cfg->password : "";
    return r->cfg.addrlen == cfg->addrlen && memcmp(&r->cfg.addr, &cfg->addr, cfg->addrlen) == 0 &&
           r->cfg.db == cfg->db && strcmp(a, b) == 0;
}

bool pt_redis_waiting(const struct pt_redis *r)
{
    for (const struct pt_redis_cmd *c = r->head; c; c = c->next)
        if (c->cb)
            return true;
    return false;
}

/* A command's own timeout: its caller hears TIMEOUT; the command keeps
 * its place in the FIFO for the answer that may still come. */
static void cmd_timeout(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_redis_cmd *c = pt_container_of(t, struct pt_redis_cmd, timer);
    pt_redis_cb cb = c->cb;
    (void)loop;
    c->cb = NULL;
    c->arena = NULL;
    if (cb)
        cb(c->ud, &res_timeout);
}

/* Formats `verb body numkeys keys... args...` (c's) into the output
 * buffer: EVALSHA with the SHA-1, or EVAL with the text. 0, or -1 with
 * nothing appended. */
static int format_call(struct pt_redis *r, const char *verb, size_t vlen, const char *body,
                       size_t blen, const struct pt_redis_cmd *c, struct pt_arena *arena)
{
    int argc = 3 + (int)c->nkeys + (int)c->nargs;
    const char **argv = pt_arena_alloc(arena, sizeof(*argv) * (size_t)argc);
    size_t *lens = pt_arena_alloc(arena, sizeof(*lens) * (size_t)argc);
    if (!argv || !lens)
        return -1;
    char nk[16];
    argv[0] = verb;
    lens[0] = vlen;
    argv[1] = body;
    lens[1] = blen;
    lens[2] = (size_t)snprintf(nk, sizeof(nk), "%u", (unsigned)c->nkeys);
    argv[2] = nk;
    for (uint32_t i = 0; i < c->nkeys; i++) {
        argv[3 + i] = c->keys[i].p ? c->keys[i].p : "";
        lens[3 + i] = c->keys[i].len;
    }
    for (uint32_t i = 0; i < c->nargs; i++) {
        argv[3 + c->nkeys + i] = c->args[i].p ? c->args[i].p : "";
        lens[3 + c->nkeys + i] = c->args[i].len;
    }
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    if (n < 0)
        return -1;
    int rc = out_append(r, cmd, (size_t)n);
    redisFreeCommand(cmd);
    return rc;
}

struct pt_redis_cmd *pt_redis_eval(struct pt_redis *r, const struct pt_redis_eval_req *req,
                                   struct pt_arena *arena, pt_redis_cb cb, void *ud)
{
    if (r->st == ST_IDLE)
        conn_start(r);
    if (r->down || r->st == ST_WAIT || r->fail) {
        errno = ENOTCONN;
        return NULL;
    }
    if (r->npending >= MAX_PENDING || req->nkeys + req->nargs > MAX_ARGV) {
        errno = req->nkeys + req->nargs > MAX_ARGV ? EINVAL : ENOBUFS;
        return NULL;
    }
    struct pt_redis_cmd *c = cmd_get(r);
    if (!c) {
        errno = ENOMEM;
        return NULL;
    }
    c->keys = req->keys;
    c->args = req->args;
    c->nkeys = req->nkeys;
    c->nargs = req->nargs;
    if (format_call(r, "EVALSHA", 7, req->script->sha1, 40, c, arena) < 0) {
        cmd_put(r, c);
        errno = ENOMEM;
        return NULL;
    }
    c->kind = CMD_EVAL;
    c->cb = cb;
    c->ud = ud;
    c->arena = arena;
    c->script = req->script;
    fifo_push(r, c);
    if (req->timeout_ms)
        pt_timer_arm(r->loop, &c->timer, req->timeout_ms, cmd_timeout);
    flush(r);
    return c;
}

void pt_redis_cancel(struct pt_redis *r, struct pt_redis_cmd *c)
{
    if (!c)
        return;
    c->cb = NULL;
    c->arena = NULL;
    pt_timer_cancel(r->loop, &c->timer);
}
