/*
 * admin.c — the admin API (DESIGN.md §7), served by the main thread.
 *
 * A deliberately small HTTP/1.1 server: non-blocking sockets registered on
 * the control thread's event loop (the listener and each client are
 * pt_io's, each client's deadline a pt_timer), one request per connection
 * (Connection: close),
 * requests parsed by the same strict parser as the data plane. It never
 * touches a worker's state except through atomics the workers publish.
 *
 *   GET  /status     version, generation, workers, connections, requests
 *   GET  /routes     the route table in match order facts: name, match,
 *                    upstream (or split, sticky, override_header),
 *                    effective filters (in run order)
 *   GET  /upstreams  upstreams and their targets
 *   POST /reload     same as SIGHUP; 200 with the new generation or 400
 *                    with the file:line:col errors
 *
 * When `admin.token` is set every request needs `Authorization: Bearer
 * <token>` (compared in constant time); the loader refuses a non-loopback
 * admin address without one.
 */
#include "control/admin.h"

#include "control/config_yaml.h"
#include "core/log.h"
#include "gateway/respond.h"
#include "http/h1.h"
#include "proxy/balance.h"
#include "proxy/state.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define ADMIN_MAX_CLIENTS 32
#define ADMIN_REQ_MAX 8192
#define ADMIN_HEAD_MS 2000    /* to send the whole request */
#define ADMIN_ANSWER_MS 10000 /* to read the response */

struct admin_client {
    struct pt_io io;
    struct pt_timer timer; /* deadline_ms */
    struct pt_admin *a;
    int slot; /* index in a->clients */
    bool closed;
    struct admin_client *free_next; /* freed after the loop turn */
    uint64_t deadline_ms;
    size_t in_len;
    char in[ADMIN_REQ_MAX];
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

/* A growable text buffer for JSON bodies. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = (b->cap ? b->cap * 2 : 1024) + (size_t)n;
        char *np = realloc(b->p, ncap);
        if (!np)
            return;
        b->p = np;
        b->cap = ncap;
    }
}

/* Appends a JSON string literal (with quotes). */
static void sb_json_str(struct sbuf *b, const char *s)
{
    if (!s) {
        sb_printf(b, "null");
        return;
    }
    size_t n = strlen(s);
    char *esc = malloc(6 * n + 1);
    if (!esc)
        return;
    size_t e = pt_json_escape(esc, s, n);
    sb_printf(b, "\"%.*s\"", (int)e, esc);
    free(esc);
}

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

static void set_response(struct admin_client *cl, int status, const char *ctype, const char *body,
                         size_t blen)
{
    char head[256];
    int h = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Cache-Control: no-store\r\nConnection: close\r\n\r\n",
                     status, pt_reason_phrase(status), ctype, blen);
    cl->out = malloc((size_t)h + blen);
    if (!cl->out)
        return;
    memcpy(cl->out, head, (size_t)h);
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
    struct sbuf b = {0};
    sb_printf(&b, "{\"error\":");
    sb_json_str(&b, msg);
    sb_printf(&b, ",\"status\":%d}\n", status);
    set_response(cl, status, "application/json", b.p ? b.p : "", b.len);
    free(b.p);
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

static const char *method_name(int m)
{
    return m > 0 && m < PT_METHOD__COUNT ? pt_method_names[m].p : "?";
}

/* A route's split: its sides (in the order they own the key space), the
 * sticky key and the override header (null when off). */
static void split_json(struct sbuf *b, const struct pt_route_split *s)
{
    sb_printf(b, ",\"split\":[");
    for (uint32_t i = 0; i < s->nsides; i++) {
        sb_printf(b, "%s{\"upstream\":", i ? "," : "");
        sb_json_str(b, s->sides[i].up->name);
        sb_printf(b, ",\"weight\":%u}", s->sides[i].weight);
    }
    sb_printf(b, "],\"sticky\":");
    if (s->sticky == PT_STICKY_NONE)
        sb_printf(b, "null");
    else
        sb_printf(b, "\"%s:%.*s\"", s->sticky == PT_STICKY_HEADER ? "header" : "cookie",
                  (int)s->sticky_name.len, s->sticky_name.p);
    sb_printf(b, ",\"override_header\":");
    if (s->override_header.len)
        sb_printf(b, "\"%.*s\"", (int)s->override_header.len, s->override_header.p);
    else
        sb_printf(b, "null");
}

/* The local rate-limit table in /status: its size and how it is doing
 * (a scan of every cell for `live`; the admin thread's time only). */
static void rl_status_json(struct sbuf *b, struct pt_rl_table *t)
{
    if (!t)
        return;
    struct pt_rl_stats st;
    pt_rl_table_stats(t, &st);
    sb_printf(b,
              ",\"rate_limit\":{\"max_keys\":%llu,\"slots\":%llu,\"live\":%llu,"
              "\"inserts\":%llu,\"evictions\":%llu,\"fail_opens\":%llu}",
              (unsigned long long)pt_rl_table_max_keys(t), (unsigned long long)st.slots,
              (unsigned long long)st.live, (unsigned long long)st.inserts,
              (unsigned long long)st.evictions, (unsigned long long)st.fail_opens);
}

static void routes_json(struct sbuf *b, const struct pt_generation *g)
{
    sb_printf(b, "{\"generation\":%llu,\"routes\":[", (unsigned long long)g->id);
    for (uint32_t i = 0; i < g->nroutes; i++) {
        const struct pt_route *r = &g->routes[i];
        const struct pt_route_match *m = &r->match;
        sb_printf(b, "%s{\"name\":", i ? "," : "");
        sb_json_str(b, r->name);
        sb_printf(b, ",\"priority\":%d,\"match\":{\"hosts\":[", r->priority);
        for (uint32_t h = 0; h < m->nhosts; h++) {
            sb_printf(b, "%s", h ? "," : "");
            sb_json_str(b, m->hosts[h]);
        }
        sb_printf(b, "]");
        if (m->path) {
            sb_printf(b, ",\"path\":");
            sb_json_str(b, m->path);
        } else if (m->path_prefix) {
            sb_printf(b, ",\"path_prefix\":");
            sb_json_str(b, m->path_prefix);
        } else if (m->path_template) {
            sb_printf(b, ",\"path_template\":");
            sb_json_str(b, m->path_template);
        } else if (m->path_regex) {
            sb_printf(b, ",\"path_regex\":");
            sb_json_str(b, m->path_regex);
        }
        sb_printf(b, ",\"methods\":[");
        bool first = true;
        for (int k = 1; k < PT_METHOD__COUNT; k++) {
            if (m->methods & (1u << k)) {
                sb_printf(b, "%s\"%s\"", first ? "" : ",", method_name(k));
                first = false;
            }
        }
        sb_printf(b, "],\"headers\":%u,\"query\":%u},\"upstream\":", m->nheaders, m->nquery);
        sb_json_str(b, r->upstream ? r->upstream->name : NULL);
        if (r->split)
            split_json(b, r->split);
        if (r->strip_prefix) {
            sb_printf(b, ",\"strip_prefix\":");
            sb_json_str(b, r->strip_prefix);
        }
        if (r->rewrite) {
            sb_printf(b, ",\"rewrite\":");
            sb_json_str(b, r->rewrite);
        }
        /* The timeout in force: the route's, else its upstream's read_timeout. */
        uint64_t tmo = r->timeout_ms ? r->timeout_ms
                       : r->upstream ? r->upstream->read_timeout_ms
                                     : 0;
        sb_printf(b, ",\"timeout_ms\":%llu,\"filters\":[", (unsigned long long)tmo);
        for (uint32_t f = 0; f < r->chain.n_all; f++) {
            sb_printf(b, "%s", f ? "," : "");
            sb_json_str(b, r->chain.all[f].def->name);
        }
        sb_printf(b, "]}");
    }
    sb_printf(b, "]}\n");
}

/* An upstream's circuit breaker and concurrency cap, or null. */
static void breaker_json(struct sbuf *b, const struct pt_upstream *u, uint64_t now_ms)
{
    if (!u->breaker.enabled) {
        sb_printf(b, ",\"circuit_breaker\":null");
        return;
    }
    const struct pt_upstream_state *us = u->state;
    const struct pt_breaker_state *bs = us ? &us->breaker : NULL;
    enum pt_breaker_phase ph = bs ? pt_breaker_phase(bs) : PT_BREAKER_CLOSED;
    uint64_t since = bs ? atomic_load_explicit(&bs->since_ms, memory_order_relaxed) : 0;
    uint64_t until = bs ? atomic_load_explicit(&bs->open_until_ms, memory_order_relaxed) : 0;
    uint64_t req = 0, fail = 0;
    if (bs)
        pt_breaker_window(bs, &u->breaker, now_ms, &req, &fail);
    sb_printf(
        b, ",\"circuit_breaker\":{\"state\":\"%s\",\"since_ms_ago\":", pt_breaker_phase_names[ph]);
    if (since)
        sb_printf(b, "%llu", (unsigned long long)(now_ms > since ? now_ms - since : 0));
    else
        sb_printf(b, "null");
    sb_printf(b,
              ",\"open_remaining_ms\":%llu,\"opened\":%llu,\"window\":{\"requests\":%llu,"
              "\"failures\":%llu,\"window_ms\":%llu},\"error_rate\":%g,\"min_requests\":%u,"
              "\"open_for_ms\":%llu,\"half_open_requests\":%u,\"probes_in_flight\":%u,"
              "\"max_concurrent\":",
              (unsigned long long)(ph == PT_BREAKER_OPEN && until > now_ms ? until - now_ms : 0),
              bs ? (unsigned long long)atomic_load(&bs->opened) : 0ull, (unsigned long long)req,
              (unsigned long long)fail, (unsigned long long)u->breaker.window_ms,
              u->breaker.error_rate, u->breaker.min_requests,
              (unsigned long long)u->breaker.open_for_ms, u->breaker.half_open_requests,
              bs && ph == PT_BREAKER_HALF_OPEN ? atomic_load(&bs->probes) : 0u);
    if (u->breaker.max_concurrent)
        sb_printf(b, "%u", u->breaker.max_concurrent);
    else
        sb_printf(b, "\"unlimited\"");
    sb_printf(b, ",\"active_requests\":%u,\"overflows\":%llu}",
              us ? atomic_load_explicit(&us->active, memory_order_relaxed) : 0u,
              us ? (unsigned long long)atomic_load(&us->overflows) : 0ull);
}

static void target_json(struct sbuf *b, const struct pt_upstream *u, const struct pt_target *t,
                        uint64_t now_ms)
{
    const struct pt_target_state *st = t->state;
    uint64_t until = st ? atomic_load_explicit(&st->ejected_until_ms, memory_order_relaxed) : 0;
    bool out = until > now_ms;
    sb_printf(b, "{\"address\":");
    sb_json_str(b, t->address);
    if (t->name) { /* resolved from this host-name target */
        sb_printf(b, ",\"name\":");
        sb_json_str(b, t->name);
    }
    if (u->balance == PT_BALANCE_P2C_EWMA && st) {
        /* The latency p2c_ewma weighs (0: no answer yet). */
        uint64_t e = atomic_load_explicit(&st->ewma_ns, memory_order_relaxed);
        sb_printf(b, ",\"latency_ewma_ms\":%.3f", (double)e / 1e6);
    }
    sb_printf(b,
              ",\"weight\":%d,\"healthy\":%s,\"usable\":%s,\"active_requests\":%u,"
              "\"consecutive_failures\":%u,\"call_failures\":%llu,\"ejected\":%s,"
              "\"ejected_remaining_ms\":%llu,\"ejections\":%u,\"ejections_total\":%llu}",
              t->weight, pt_state_healthy(st) ? "true" : "false",
              pt_state_usable(st, now_ms) ? "true" : "false", pt_state_active(st),
              st ? atomic_load_explicit(&st->traffic_fails, memory_order_relaxed) : 0,
              st ? (unsigned long long)atomic_load(&st->call_failures) : 0ull,
              out ? "true" : "false", out ? (unsigned long long)(until - now_ms) : 0ull,
              st ? atomic_load_explicit(&st->ejections, memory_order_relaxed) : 0u,
              st ? (unsigned long long)atomic_load(&st->ejections_total) : 0ull);
}

/* An upstream with retries: its settings and its budget's window now. */
static void retries_json(struct sbuf *b, const struct pt_upstream *u)
{
    const struct pt_retry_conf *r = &u->retry;
    if (r->attempts <= 1)
        return;
    uint64_t reqs = 0, rets = 0;
    if (u->state)
        pt_retry_budget_window(&u->state->retry_budget, pt_now_ms() / 1000u, &reqs, &rets);
    sb_printf(b,
              ",\"retries\":{\"attempts\":%u,\"per_try_timeout_ms\":%llu,\"budget\":%.4g,"
              "\"max_replay_body\":%llu,\"window_requests\":%llu,\"window_retries\":%llu}",
              r->attempts, (unsigned long long)r->per_try_timeout_ms, r->budget,
              (unsigned long long)r->max_replay_body, (unsigned long long)reqs,
              (unsigned long long)rets);
}

static void upstreams_json(struct sbuf *b, const struct pt_generation *g)
{
    uint64_t now_ms = pt_now_ns() / 1000000u; /* the workers' monotonic clock */
    sb_printf(b, "{\"generation\":%llu,\"upstreams\":[", (unsigned long long)g->id);
    for (uint32_t i = 0; i < g->nupstreams; i++) {
        const struct pt_upstream *u = &g->upstreams[i];
        sb_printf(b, "%s{\"name\":", i ? "," : "");
        sb_json_str(b, u->name);
        sb_printf(b, ",\"balance\":\"%s\"", pt_balance_name(u->balance));
        if (u->balance == PT_BALANCE_CONSISTENT_HASH) {
            static const char *const on[] = {"", "header:", "cookie:", "ip", "consumer"};
            char hb[160];
            snprintf(hb, sizeof(hb), "%s%s", on[u->hash_on], u->hash_name ? u->hash_name : "");
            sb_printf(b, ",\"hash_on\":");
            sb_json_str(b, hb);
        }
        sb_printf(b,
                  ",\"connect_timeout_ms\":%llu,"
                  "\"read_timeout_ms\":%llu,\"keepalive\":%u,\"health_check\":%s,"
                  "\"failure_statuses\":[",
                  (unsigned long long)u->connect_timeout_ms, (unsigned long long)u->read_timeout_ms,
                  u->keepalive, u->hc.enabled ? "true" : "false");
        bool first = true;
        for (int st = 200; st < 600; st++) {
            if (pt_status_in(&u->failure_statuses, st)) {
                sb_printf(b, "%s%d", first ? "" : ",", st);
                first = false;
            }
        }
        sb_printf(b, "],\"passive_health\":");
        if (u->passive.enabled)
            sb_printf(b,
                      "{\"consecutive_failures\":%u,\"eject_for_ms\":%llu,"
                      "\"max_ejected_percent\":%u}",
                      u->passive.consecutive_failures, (unsigned long long)u->passive.eject_for_ms,
                      u->passive.max_ejected_percent);
        else
            sb_printf(b, "null");
        breaker_json(b, u, now_ms);
        sb_printf(b, ",\"targets\":[");
        for (uint32_t t = 0; t < u->ntargets; t++) {
            sb_printf(b, "%s", t ? "," : "");
            target_json(b, u, &u->targets[t], now_ms);
        }
        sb_printf(b, "]");
        retries_json(b, u);
        sb_printf(b, "}");
    }
    sb_printf(b, "]}\n");
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
    memcpy(buf + PT_ADMIN_HEADROOM - h, head, (size_t)h);
    cl->out = buf;
    cl->out_sent = PT_ADMIN_HEADROOM - (size_t)h;
    cl->out_len = PT_ADMIN_HEADROOM + n;
    set_deadline(cl, ADMIN_ANSWER_MS);
}

static void handle(struct pt_admin *a, struct admin_client *cl, const struct pt_h1_request *req)
{
    const struct pt_generation *g = a->hooks->current(a->ctx);
    if (g->admin_token) {
        pt_slice auth = {0};
        for (size_t i = 0; i < req->num_headers; i++)
            if (req->headers[i].token == PT_TOK_AUTHORIZATION)
                auth = req->headers[i].value;
        if (auth.len < 7 || strncasecmp(auth.p, "Bearer ", 7) != 0 ||
            !token_ok((pt_slice){auth.p + 7, auth.len - 7}, g->admin_token)) {
            json_error(cl, 401, "admin token required");
            return;
        }
    }
    struct sbuf b = {0};
    bool get = req->method_id == PT_METHOD_GET;
    if (pt_slice_eq_cstr(req->path, "/status") && get) {
        struct pt_admin_status st;
        a->hooks->status(a->ctx, &st);
        sb_printf(&b, "{\"version\":\"%s\",\"generation\":%llu,\"config\":", st.version,
                  (unsigned long long)g->id);
        sb_json_str(&b, g->source_path);
        sb_printf(&b,
                  ",\"workers\":%d,\"uptime_seconds\":%llu,\"connections_active\":%llu,"
                  "\"requests_served\":%llu,\"reloads\":{\"ok\":%llu,\"failed\":%llu},"
                  "\"routes\":%u,\"upstreams\":%u",
                  st.workers, (unsigned long long)st.uptime_s, (unsigned long long)st.connections,
                  (unsigned long long)st.requests, (unsigned long long)st.reloads_ok,
                  (unsigned long long)st.reloads_failed, g->nroutes, g->nupstreams);
        rl_status_json(&b, g->rl_table);
        sb_printf(&b, "}\n");
    } else if (pt_slice_eq_cstr(req->path, "/routes") && get) {
        routes_json(&b, g);
    } else if (pt_slice_eq_cstr(req->path, "/upstreams") && get) {
        upstreams_json(&b, g);
    } else if (pt_slice_eq_cstr(req->path, "/reload") && req->method_id == PT_METHOD_POST) {
        char *errors = NULL;
        uint64_t id = 0;
        if (a->hooks->reload(a->ctx, &id, &errors) == 0) {
            sb_printf(&b, "{\"reloaded\":true,\"generation\":%llu}\n", (unsigned long long)id);
        } else {
            sb_printf(&b, "{\"reloaded\":false,\"errors\":");
            sb_json_str(&b, errors ? errors : "reload failed");
            sb_printf(&b, "}\n");
            set_response(cl, 400, "application/json", b.p ? b.p : "", b.len);
            free(b.p);
            free(errors);
            return;
        }
        free(errors);
    } else if (pt_slice_eq_cstr(req->path, "/metrics") && get) {
        admin_metrics(a, cl);
        return;
    } else if (pt_slice_eq_cstr(req->path, "/status") || pt_slice_eq_cstr(req->path, "/routes") ||
               pt_slice_eq_cstr(req->path, "/upstreams") ||
               pt_slice_eq_cstr(req->path, "/reload")) {
        json_error(cl, 405, "method not allowed");
        return;
    } else {
        json_error(cl, 404,
                   "unknown admin endpoint (try /status, /routes, /upstreams, "
                   "POST /reload)");
        return;
    }
    set_response(cl, 200, "application/json", b.p ? b.p : "", b.len);
    free(b.p);
}

static void client_read(struct pt_admin *a, struct admin_client *cl)
{
    bool eof = false;
    for (;;) {
        if (cl->in_len == sizeof(cl->in)) {
            json_error(cl, 431, "request too large");
            return;
        }
        ssize_t n = pt_io_recv(a->loop, &cl->io, cl->in + cl->in_len, sizeof(cl->in) - cl->in_len);
        if (n > 0) {
            cl->in_len += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EAGAIN)
            break;
        /* A client may shut down its write side right after its request
         * (nc -N, scripts): a complete request still gets its answer. */
        if (n == 0 && cl->in_len > 0) {
            eof = true;
            break;
        }
        client_close(a, cl);
        return;
    }
    struct pt_h1_header hs[64];
    struct pt_h1_request req;
    struct pt_h1_limits lim = {64, sizeof(cl->in), 2048};
    int r = pt_h1_parse_request(cl->in, cl->in_len, 0, &req, hs, &lim);
    if (r == PT_H1_INCOMPLETE) {
        if (eof)
            client_close(a, cl);
        return;
    }
    if (r < 0) {
        json_error(cl, req.error_status ? req.error_status : 400,
                   req.error_reason ? req.error_reason : "bad request");
        return;
    }
    handle(a, cl, &req);
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
