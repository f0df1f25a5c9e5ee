/*
 * resolver.c — see resolver.h.
 *
 * c-ares on the control loop: the channel tells us (sock_state_cb) which
 * of its sockets to watch for what, and we hand readiness back with
 * ares_process_fd; a timer armed from ares_timeout handles its query
 * timeouts and retries. The loop is edge-triggered, and c-ares may stop
 * reading a socket before it is empty, so after each event the socket is
 * polled (zero timeout) and processed again while it is readable.
 *
 * Queries are ares_getaddrinfo with AF_UNSPEC (A and AAAA in parallel;
 * c-ares's default lookup order, /etc/hosts then DNS) and ARES_AI_NOSORT
 * (we sort ourselves, so order means nothing). A query gives up after
 * PT_DNS_TRIES tries of PT_DNS_TIMEOUT_MS per server.
 */
#include "control/resolver.h"

#include "core/log.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#define PT_DNS_TIMEOUT_MS 1000
#define PT_DNS_TRIES 2
/* c-ares uses one socket per server (UDP, and TCP for truncated answers). */
#define PT_DNS_SLOTS 32

struct slot {
    struct pt_io io;
    struct pt_resolver *r;
    bool used;
    bool rd, wr;
};

struct entry {
    struct pt_resolver *r;
    char *host;
    struct pt_dns_addr *addrs; /* last good answer, sorted */
    uint32_t naddrs;
    bool have;     /* addrs is an answer (possibly an old one) */
    bool wanted;   /* the running config names it */
    bool inflight; /* a query is running */
    bool failing;  /* the last query failed (logged once) */
    bool doomed;   /* pruned with a query in flight: freed by its callback */
    uint64_t every_ms;
    uint64_t due_ms; /* next query (pt_now_ms) */
    char **users;    /* "upstream users target users.internal:9001", for logs */
    uint32_t nusers;
    struct entry *next;
};

struct pt_resolver {
    struct pt_loop *loop;
    ares_channel ch;
    bool ch_ok;
    bool init_failed_logged;
    char *servers; /* the channel's `resolver` csv; NULL: resolv.conf */
    struct slot slots[PT_DNS_SLOTS];
    struct pt_timer ares_timer; /* c-ares's own timeouts */
    struct pt_timer tick;       /* next re-resolution */
    struct entry *entries;
    uint32_t inflight;
    bool changed;
    pt_resolver_changed_cb changed_cb;
    void *user;
};

static void query(struct pt_resolver *r, struct entry *e);
static void arm_tick(struct pt_resolver *r);

/* ---- helpers ---- */

bool pt_dns_is_ip_literal(const char *host)
{
    struct in6_addr a6;
    struct in_addr a4;
    return inet_pton(AF_INET, host, &a4) == 1 || inet_pton(AF_INET6, host, &a6) == 1;
}

bool pt_dns_valid_name(const char *host)
{
    size_t len = strlen(host);
    if (len && host[len - 1] == '.')
        len--;
    if (len == 0 || len > 253)
        return false;
    size_t label = 0;
    for (size_t i = 0; i < len; i++) {
        char ch = host[i];
        if (ch == '.') {
            if (label == 0 || host[i - 1] == '-')
                return false;
            label = 0;
            continue;
        }
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '_' || (ch == '-' && label > 0);
        if (!ok || ++label > 63)
            return false;
    }
    return label > 0 && host[len - 1] != '-';
}

int pt_dns_server_entry(const char *s, char *out, size_t outlen, const char **why)
{
    char host[64];
    const char *port = NULL;
    bool v6 = false;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || (size_t)(close - s - 1) >= sizeof(host)) {
            *why = "an IPv6 address needs `[` and `]`, as in `[::1]:53`";
            return -EINVAL;
        }
        snprintf(host, sizeof(host), "%.*s", (int)(close - s - 1), s + 1);
        if (close[1] == ':')
            port = close + 2;
        else if (close[1]) {
            *why = "expected `:PORT` after `]`";
            return -EINVAL;
        }
        v6 = true;
    } else {
        const char *colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':')) {
            *why = "an IPv6 address needs brackets, as in `[::1]:53`";
            return -EINVAL;
        }
        size_t hl = colon ? (size_t)(colon - s) : strlen(s);
        if (hl >= sizeof(host)) {
            *why = "not an IP address";
            return -EINVAL;
        }
        snprintf(host, sizeof(host), "%.*s", (int)hl, s);
        port = colon ? colon + 1 : NULL;
    }
    struct in6_addr a6;
    struct in_addr a4;
    if (v6 ? inet_pton(AF_INET6, host, &a6) != 1 : inet_pton(AF_INET, host, &a4) != 1) {
        *why = "a DNS server must be an IP address (a name would need a resolver itself)";
        return -EINVAL;
    }
    unsigned long pn = 53;
    if (port) {
        char *end = NULL;
        pn = *port >= '0' && *port <= '9' ? strtoul(port, &end, 10) : 0;
        if (!end || *end || pn < 1 || pn > 65535) {
            *why = "the port must be a number from 1 to 65535";
            return -EINVAL;
        }
    }
    int n = snprintf(out, outlen, v6 ? "[%s]:%lu" : "%s:%lu", host, pn);
    if (n < 0 || (size_t)n >= outlen) {
        *why = "too long";
        return -EINVAL;
    }
    return 0;
}

void pt_dns_format(const struct pt_dns_addr *a, uint16_t port, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];
    inet_ntop(a->family, &a->a, ip, sizeof(ip));
    if (a->family == AF_INET6)
        snprintf(out, outlen, "[%s]:%u", ip, (unsigned)port);
    else
        snprintf(out, outlen, "%s:%u", ip, (unsigned)port);
}

socklen_t pt_dns_sockaddr(const struct pt_dns_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (a->family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        s6->sin6_addr = a->a.v6;
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    s4->sin_addr = a->a.v4;
    return sizeof(*s4);
}

static int addr_cmp(const void *x, const void *y)
{
    const struct pt_dns_addr *a = x, *b = y;
    if (a->family != b->family)
        return a->family < b->family ? -1 : 1;
    return memcmp(&a->a, &b->a, a->family == AF_INET ? sizeof(a->a.v4) : sizeof(a->a.v6));
}

/* "10.0.0.5, 10.0.0.6" (or "nothing"), for logs. */
static void list_text(const struct pt_dns_addr *v, uint32_t n, char *out, size_t outlen)
{
    size_t k = 0;
    out[0] = 0;
    if (n == 0)
        snprintf(out, outlen, "nothing");
    for (uint32_t i = 0; i < n && k + INET6_ADDRSTRLEN + 8 < outlen; i++) {
        char ip[INET6_ADDRSTRLEN];
        inet_ntop(v[i].family, &v[i].a, ip, sizeof(ip));
        k += (size_t)snprintf(out + k, outlen - k, "%s%s", i ? ", " : "", ip);
    }
    if (n && k + INET6_ADDRSTRLEN + 8 >= outlen)
        snprintf(out + k, outlen - k, ", …");
}

/* ---- the channel on the loop ---- */

static struct slot *find_slot(struct pt_resolver *r, int fd)
{
    for (int i = 0; i < PT_DNS_SLOTS; i++)
        if (r->slots[i].used && r->slots[i].io.fd == fd)
            return &r->slots[i];
    return NULL;
}

static void on_ares_timer(struct pt_loop *loop, struct pt_timer *t);

/* Re-arms the timer c-ares's next timeout needs (none: cancelled). */
static void arm_ares_timer(struct pt_resolver *r)
{
    struct timeval tv, *tp = r->ch_ok && r->inflight ? ares_timeout(r->ch, NULL, &tv) : NULL;
    if (!tp) {
        pt_timer_cancel(r->loop, &r->ares_timer);
        return;
    }
    uint64_t ms = (uint64_t)tp->tv_sec * 1000 + (uint64_t)tp->tv_usec / 1000 + 1;
    pt_timer_arm(r->loop, &r->ares_timer, ms, on_ares_timer);
}

static void on_ares_timer(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_resolver *r = pt_container_of(t, struct pt_resolver, ares_timer);
    (void)loop;
    ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    arm_ares_timer(r);
}

static void on_io(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct slot *s = pt_container_of(io, struct slot, io);
    struct pt_resolver *r = s->r;
    int fd = io->fd;
    (void)loop;
    if (!s->used || !r->ch_ok)
        return;
    bool rd = events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP);
    ares_process_fd(r->ch, rd ? fd : ARES_SOCKET_BAD, (events & EPOLLOUT) ? fd : ARES_SOCKET_BAD);
    /* Edge-triggered: whatever c-ares left unread would never be
     * reported again. */
    for (int i = 0; i < 64; i++) {
        struct slot *now = find_slot(r, fd);
        struct pollfd p = {fd, POLLIN, 0};
        if (!now || !now->rd || poll(&p, 1, 0) <= 0)
            break;
        ares_process_fd(r->ch, fd, ARES_SOCKET_BAD);
    }
    arm_ares_timer(r);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct pt_resolver *r = data;
    struct slot *s = find_slot(r, fd);
    if (!readable && !writable) {
        if (s) {
            pt_loop_del(r->loop, &s->io);
            s->used = false;
            s->io.fd = -1;
        }
        return;
    }
    uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
    if (s) {
        s->rd = readable;
        s->wr = writable;
        if (pt_loop_mod(r->loop, &s->io, ev) < 0)
            pt_warn("dns: cannot watch a resolver socket: %s", strerror(errno));
        return;
    }
    for (int i = 0; i < PT_DNS_SLOTS && !s; i++)
        if (!r->slots[i].used)
            s = &r->slots[i];
    if (!s) {
        pt_warn("dns: more than %d resolver sockets; a query may time out", PT_DNS_SLOTS);
        return;
    }
    memset(&s->io, 0, sizeof(s->io));
    s->io.fd = fd;
    s->io.cb = on_io;
    s->r = r;
    s->rd = readable;
    s->wr = writable;
    s->used = true;
    if (pt_loop_add(r->loop, &s->io, ev) < 0) {
        pt_warn("dns: cannot watch a resolver socket: %s", strerror(errno));
        s->used = false;
    }
}

/* The channel, created on first use with the configured servers. */
static bool channel(struct pt_resolver *r)
{
    if (r->ch_ok)
        return true;
    struct ares_options o;
    memset(&o, 0, sizeof(o));
    o.sock_state_cb = sock_state;
    o.sock_state_cb_data = r;
    o.timeout = PT_DNS_TIMEOUT_MS;
    o.tries = PT_DNS_TRIES;
    int st =
        ares_init_options(&r->ch, &o, ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (st == ARES_SUCCESS && r->servers)
        st = ares_set_servers_ports_csv(r->ch, r->servers);
    if (st != ARES_SUCCESS) {
        if (!r->init_failed_logged)
            pt_error("dns: cannot set up the resolver%s%s: %s", r->servers ? " for " : "",
                     r->servers ? r->servers : "", ares_strerror(st));
        r->init_failed_logged = true;
        ares_destroy(r->ch);
        return false;
    }
    r->init_failed_logged = false;
    r->ch_ok = true;
    return true;
}

/* Ends the channel: queries in flight complete with ARES_EDESTRUCTION. */
static void channel_close(struct pt_resolver *r)
{
    if (!r->ch_ok)
        return;
    r->ch_ok = false;
    ares_destroy(r->ch);
    pt_timer_cancel(r->loop, &r->ares_timer);
    for (int i = 0; i < PT_DNS_SLOTS; i++) {
        if (r->slots[i].used)
            pt_loop_del(r->loop, &r->slots[i].io);
        r->slots[i].used = false;
    }
}

/* ---- entries ---- */

static void free_users(struct entry *e)
{
    for (uint32_t i = 0; i < e->nusers; i++)
        free(e->users[i]);
    free(e->users);
    e->users = NULL;
    e->nusers = 0;
}

static void free_entry(struct entry *e)
{
    free_users(e);
    free(e->addrs);
    free(e->host);
    free(e);
}

static void unlink_entry(struct pt_resolver *r, struct entry *e)
{
    for (struct entry **pp = &r->entries; *pp; pp = &(*pp)->next)
        if (*pp == e) {
            *pp = e->next;
            return;
        }
}

/* ---- answers ---- */

/* One line per config item naming the host: "upstream users target
 * users.internal:9001 <msg>". */
static void log_users(const struct entry *e, enum pt_log_level level, const char *msg)
{
    for (uint32_t i = 0; i < e->nusers; i++)
        pt_log(level, "%s %s", e->users[i], msg);
}

static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct entry *e = arg;
    struct pt_resolver *r = e->r;
    (void)timeouts;
    e->inflight = false;
    r->inflight--;
    if (e->doomed || status == ARES_EDESTRUCTION || status == ARES_ECANCELLED) {
        if (res)
            ares_freeaddrinfo(res);
        if (e->doomed) { /* no config names it any more (pt_resolver_prune) */
            unlink_entry(r, e);
            free_entry(e);
        }
        return;
    }
    e->due_ms = pt_now_ms() + e->every_ms;
    uint32_t n = 0;
    for (struct ares_addrinfo_node *a = res ? res->nodes : NULL; a; a = a->ai_next)
        n++;
    struct pt_dns_addr *v = n ? calloc(n, sizeof(*v)) : NULL;
    uint32_t k = 0;
    for (struct ares_addrinfo_node *a = res ? res->nodes : NULL; v && a; a = a->ai_next) {
        struct pt_dns_addr x = {.family = a->ai_family};
        if (a->ai_family == AF_INET)
            x.a.v4 = ((struct sockaddr_in *)a->ai_addr)->sin_addr;
        else if (a->ai_family == AF_INET6)
            x.a.v6 = ((struct sockaddr_in6 *)a->ai_addr)->sin6_addr;
        else
            continue;
        v[k++] = x;
    }
    if (res)
        ares_freeaddrinfo(res);
    if (k > 1)
        qsort(v, k, sizeof(*v), addr_cmp);
    uint32_t u = 0; /* unique */
    for (uint32_t i = 0; i < k; i++)
        if (u == 0 || addr_cmp(&v[u - 1], &v[i]) != 0)
            v[u++] = v[i];
    char now[512], was[512], msg[1200];
    list_text(e->addrs, e->naddrs, was, sizeof(was));
    if (status != ARES_SUCCESS || u == 0) {
        free(v);
        if (!e->failing) {
            snprintf(msg, sizeof(msg), "could not be resolved (%s): %s%s",
                     status != ARES_SUCCESS ? ares_strerror(status) : "no address records",
                     e->have ? "keeping the last good answer, " : "it has no address yet",
                     e->have ? was : "");
            log_users(e, PT_LOG_WARN, msg);
        }
        e->failing = true;
        arm_tick(r);
        return;
    }
    if (e->failing)
        log_users(e, PT_LOG_INFO, "resolves again");
    e->failing = false;
    bool same = e->have && e->naddrs == u && memcmp(e->addrs, v, u * sizeof(*v)) == 0;
    if (same) {
        free(v);
    } else {
        list_text(v, u, now, sizeof(now));
        if (e->have)
            snprintf(msg, sizeof(msg), "now resolves to %s (was %s)", now, was);
        else
            snprintf(msg, sizeof(msg), "resolves to %s", now);
        log_users(e, PT_LOG_INFO, msg);
        free(e->addrs);
        e->addrs = v;
        e->naddrs = u;
        e->have = true;
        /* A name the running config no longer names (a refused reload
         * asked for it) changes nothing that runs. */
        if (e->wanted) {
            r->changed = true;
            if (r->changed_cb)
                r->changed_cb(r->user);
        }
    }
    arm_tick(r);
}

static void query(struct pt_resolver *r, struct entry *e)
{
    if (e->inflight || !channel(r)) {
        e->due_ms = pt_now_ms() + e->every_ms; /* a channel that failed: try later */
        return;
    }
    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_flags = ARES_AI_NOSORT;
    e->inflight = true;
    r->inflight++;
    /* May complete at once (/etc/hosts, a closed channel). */
    ares_getaddrinfo(r->ch, e->host, NULL, &hints, on_answer, e);
    arm_ares_timer(r);
}

/* ---- re-resolution ---- */

static void on_tick(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_resolver *r = pt_container_of(t, struct pt_resolver, tick);
    (void)loop;
    uint64_t now = pt_now_ms();
    for (struct entry *e = r->entries; e; e = e->next)
        if (e->wanted && !e->inflight && e->due_ms <= now)
            query(r, e);
    arm_tick(r);
}

static void arm_tick(struct pt_resolver *r)
{
    uint64_t next = UINT64_MAX, now = pt_now_ms();
    for (struct entry *e = r->entries; e; e = e->next)
        if (e->wanted && !e->inflight && e->due_ms < next)
            next = e->due_ms;
    if (next == UINT64_MAX)
        pt_timer_cancel(r->loop, &r->tick);
    else
        pt_timer_arm(r->loop, &r->tick, next > now ? next - now : 0, on_tick);
}

/* ---- public ---- */

struct pt_resolver *pt_resolver_new(struct pt_loop *loop, pt_resolver_changed_cb changed,
                                    void *user)
{
    static bool lib_ready;
    if (!lib_ready && ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return NULL;
    lib_ready = true;
    struct pt_resolver *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    r->changed_cb = changed;
    r->user = user;
    for (int i = 0; i < PT_DNS_SLOTS; i++)
        r->slots[i].io.fd = -1;
    return r;
}

void pt_resolver_free(struct pt_resolver *r)
{
    if (!r)
        return;
    channel_close(r); /* callbacks run now, with entries still alive */
    pt_timer_cancel(r->loop, &r->tick);
    while (r->entries) {
        struct entry *e = r->entries;
        r->entries = e->next;
        free_entry(e);
    }
    free(r->servers);
    free(r);
}

static struct entry *get_entry(struct pt_resolver *r, const char *host)
{
    for (struct entry *e = r->entries; e; e = e->next)
        if (strcasecmp(e->host, host) == 0)
            return e;
    struct entry *e = calloc(1, sizeof(*e));
    if (!e || !(e->host = strdup(host))) {
        free(e);
        return NULL;
    }
    e->r = r;
    e->next = r->entries;
    r->entries = e;
    return e;
}

static void add_user(struct entry *e, const char *fmt, const char *a, const char *b)
{
    char **v = realloc(e->users, (e->nusers + 1) * sizeof(*v));
    if (!v)
        return;
    e->users = v;
    if (asprintf(&v[e->nusers], fmt, a, b) >= 0)
        e->nusers++;
}

static void want_upstream(struct pt_resolver *r, const struct pt_upstream *u, bool url)
{
    for (uint32_t i = 0; i < u->ndns; i++) {
        struct entry *e = get_entry(r, u->dns[i].host);
        if (!e)
            continue;
        if (!e->wanted)
            e->every_ms = UINT64_MAX;
        e->wanted = true;
        e->doomed = false; /* named again before its last query ended */
        e->every_ms = PT_MIN(e->every_ms, u->resolve_every_ms ? u->resolve_every_ms : 30000);
        if (url)
            add_user(e, "url target %s%s", u->dns[i].written, "");
        else
            add_user(e, "upstream %s target %s", u->name, u->dns[i].written);
    }
}

uint32_t pt_resolver_sync(struct pt_resolver *r, const struct pt_generation *g)
{
    for (struct entry *e = r->entries; e; e = e->next) {
        e->wanted = false;
        free_users(e);
    }
    for (uint32_t i = 0; i < g->nupstreams; i++)
        want_upstream(r, &g->upstreams[i], false);
    for (uint32_t i = 0; i < g->nurl_upstreams; i++)
        want_upstream(r, &g->url_upstreams[i], true);
    bool same = (!r->servers && !g->resolver) ||
                (r->servers && g->resolver && strcmp(r->servers, g->resolver) == 0);
    if (!same) {
        channel_close(r); /* queries to the old servers end here */
        for (struct entry *e = r->entries; e; e = e->next)
            e->failing = false; /* new servers: worth a wait, and a log line, again */
        free(r->servers);
        r->servers = g->resolver ? strdup(g->resolver) : NULL;
        if (g->resolver && !r->servers)
            pt_error("dns: out of memory; using /etc/resolv.conf");
    }
    uint32_t missing = 0;
    uint64_t now = pt_now_ms();
    for (struct entry *e = r->entries; e; e = e->next) {
        if (!e->wanted)
            continue;
        missing += !e->have && !e->failing; /* a failed one is not waited for again */
        if (e->due_ms > now + e->every_ms)
            e->due_ms = now + e->every_ms; /* a shorter interval than before */
        if (!e->inflight && (!e->have || e->due_ms <= now || !same))
            query(r, e);
    }
    arm_tick(r);
    return missing;
}

static bool waiting(const struct pt_resolver *r)
{
    for (const struct entry *e = r->entries; e; e = e->next)
        if (e->wanted && !e->have && !e->failing && e->inflight)
            return true;
    return false;
}

void pt_resolver_wait(struct pt_resolver *r, uint64_t max_ms)
{
    uint64_t deadline = pt_now_ms() + max_ms;
    while (r->ch_ok && waiting(r)) {
        uint64_t now = pt_now_ms();
        if (now >= deadline)
            break;
        struct pollfd pf[PT_DNS_SLOTS];
        int n = 0;
        for (int i = 0; i < PT_DNS_SLOTS; i++) {
            const struct slot *s = &r->slots[i];
            if (s->used)
                pf[n++] = (struct pollfd){s->io.fd,
                                          (short)((s->rd ? POLLIN : 0) | (s->wr ? POLLOUT : 0)), 0};
        }
        struct timeval maxtv = {(time_t)((deadline - now) / 1000),
                                (suseconds_t)((deadline - now) % 1000) * 1000},
                       tv;
        struct timeval *tp = ares_timeout(r->ch, &maxtv, &tv);
        int ms = (int)(tp->tv_sec * 1000 + tp->tv_usec / 1000) + 1;
        int k = poll(pf, (nfds_t)n, ms);
        if (k <= 0) {
            ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
            continue;
        }
        for (int i = 0; i < n && r->ch_ok; i++) {
            if (!pf[i].revents)
                continue;
            bool rd = pf[i].revents & (POLLIN | POLLERR | POLLHUP);
            ares_process_fd(r->ch, rd ? pf[i].fd : ARES_SOCKET_BAD,
                            (pf[i].revents & POLLOUT) ? pf[i].fd : ARES_SOCKET_BAD);
        }
    }
    arm_ares_timer(r);
}

void pt_resolver_prune(struct pt_resolver *r)
{
    struct entry **pp = &r->entries;
    while (*pp) {
        struct entry *e = *pp;
        if (e->wanted) {
            pp = &e->next;
        } else if (e->inflight) {
            e->doomed = true; /* c-ares still holds e: on_answer frees it */
            pp = &e->next;
        } else {
            *pp = e->next;
            free_entry(e);
        }
    }
}

uint32_t pt_resolver_names(const struct pt_resolver *r)
{
    uint32_t n = 0;
    for (const struct entry *e = r->entries; e; e = e->next)
        n++;
    return n;
}

bool pt_resolver_take_change(struct pt_resolver *r)
{
    bool c = r->changed;
    r->changed = false;
    return c;
}

uint32_t pt_resolver_lookup(const struct pt_resolver *r, const char *host,
                            const struct pt_dns_addr **out)
{
    for (const struct entry *e = r ? r->entries : NULL; e; e = e->next) {
        if (strcasecmp(e->host, host) == 0 && e->have) {
            *out = e->addrs;
            return e->naddrs;
        }
    }
    *out = NULL;
    return 0;
}
