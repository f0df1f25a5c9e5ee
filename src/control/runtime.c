/*
 * runtime.c — see runtime.h.
 *
 * The control thread runs an event loop of the same kind as the workers'
 * (always epoll): the signalfd, the admin listener and its clients are
 * pt_io's on it, reclamation is a timer, and it has its own buffer pool
 * and outbound pools so that control-plane code (health checks, JWKS
 * fetches) can make upstream calls from it.
 *
 * Reclamation: after publishing a new generation the control thread wakes
 * every worker; a retired generation is freed once each worker has begun
 * a loop turn on a newer one (it can no longer pick the old one up) and no
 * request pins it (every request that started on it has been logged). The
 * retired list has no cap: requests held for hours on old generations
 * never block a reload.
 *
 * Shared state: before a generation is published its targets are attached
 * to their cells in the state registry (proxy/state.h), and detached when
 * it is freed, so cells live as long as a generation that uses them.
 *
 * DNS: host-name targets are resolved on this loop (resolver.h). A
 * config is loaded with the resolver's last good answers; names it has
 * never had an answer for are waited for first, bounded by
 * PT_DNS_FIRST_WAIT_MS, before the generation is published (start-up, a
 * reload adding a name). When an answer changes later, the current
 * generation's own source is loaded again with the new answers and
 * published like a reload: requests in flight finish on the old
 * generation's targets, so an address that disappears drains.
 */
#include "control/runtime.h"

#include "control/admin.h"
#include "control/config.h"
#include "control/config_yaml.h"
#include "control/health.h"
#include "control/metrics_text.h"
#include "control/resolver.h"
#include "core/log.h"
#include "core/version.h"
#include "gateway/worker.h"
#include "proxy/client.h"
#include "proxy/state.h"

#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

/* How long a load waits for host names the resolver has never answered. */
#define PT_DNS_FIRST_WAIT_MS 3000

/* How often retired generations are looked at while there are any. */
#define PT_RECLAIM_EVERY_MS 50

struct runtime {
    const char *path;
    struct pt_worker *workers;
    int nworkers;
    int io_backend; /* the backend the workers run (a reload cannot change it) */
    struct pt_alog_logger *logger;
    struct pt_generation *retired; /* linked by retired_next, newest first */
    uint32_t nretired;
    uint64_t next_id;
    uint64_t reloads_ok, reloads_failed;
    uint64_t started_ms;
    struct pt_admin *admin;
    struct pt_state_registry *state;
    /* The control loop and what runs on it. */
    struct pt_loop loop;
    struct pt_io sig_io; /* signalfd: HUP, USR1, TERM, INT */
    struct pt_timer reclaim_timer;
    struct pt_bufpool bufs;
    struct pt_outbound ob;
    struct pt_health_checks *health; /* active health checks, on this loop */
    struct pt_resolver *dns;         /* host-name targets, on this loop */
    struct pt_timer dns_timer;       /* applies changed answers */
    bool stopping;                   /* TERM/INT seen: leave the loop and drain */
    bool workers_started;            /* the first generation is serving (/readyz) */
    /* The local rate-limit table of the published generation (one
     * reference); each generation holds its own reference too. */
    struct pt_rl_table *rl_table;
    /* The response cache of the published generation (one reference),
     * as rl_table. */
    struct pt_cache_store *cache_store;
    /* Metric counts of generations already freed (control/metrics_text.h). */
    struct pt_mx_set mx_retired;
};

/* The running runtime, for pt_runtime_loop() and friends. */
static struct runtime *the_rt;

struct pt_loop *pt_runtime_loop(void)
{
    return the_rt ? &the_rt->loop : NULL;
}

struct pt_outbound *pt_runtime_outbound(void)
{
    return the_rt ? &the_rt->ob : NULL;
}

struct pt_state_registry *pt_runtime_state(void)
{
    return the_rt ? the_rt->state : NULL;
}

/* Makes a loaded generation runnable: a pin counter per worker, and every
 * target attached to its shared state cell. 0 or -ENOMEM (g is unchanged
 * but for what gen_free undoes). */
static int gen_prepare(struct runtime *rt, struct pt_generation *g)
{
    /* the running table while rate_limit_store.max_keys stays the same,
     * so limits keep their state across reloads */
    if (!g->rl_table && rt->rl_table && pt_rl_table_max_keys(rt->rl_table) == g->rl_max_keys) {
        pt_rl_table_ref(rt->rl_table);
        g->rl_table = rt->rl_table;
    } else if (!g->rl_table && !(g->rl_table = pt_rl_table_new(g->rl_max_keys))) {
        return -ENOMEM;
    }
    /* the running cache while cache_store keeps its shards, so a reload
     * keeps every stored answer; a new max_bytes resizes it once the
     * generation is published (adopt_cache_store) */
    if (!g->cache_store && rt->cache_store &&
        pt_cache_store_shards(rt->cache_store) == g->cache_shards) {
        pt_cache_store_ref(rt->cache_store);
        g->cache_store = rt->cache_store;
    } else if (!g->cache_store &&
               !(g->cache_store = pt_cache_store_new(g->cache_max_bytes, g->cache_shards))) {
        return -ENOMEM;
    }
    int e = pt_generation_init_pins(g, (uint32_t)rt->nworkers);
    if (e == 0 && g->metrics_enabled && !g->metrics &&
        !(g->metrics = pt_gen_metrics_new(g, (uint32_t)rt->nworkers)))
        e = -ENOMEM;
    if (e == 0)
        e = pt_state_attach_upstreams(rt->state, g->upstreams, g->nupstreams);
    if (e == 0)
        e = pt_state_attach_upstreams(rt->state, g->url_upstreams, g->nurl_upstreams);
    return e;
}

/* Once g is published: its table becomes the runtime's. */
static void adopt_rl_table(struct runtime *rt, const struct pt_generation *g)
{
    if (g->rl_table == rt->rl_table)
        return;
    if (rt->rl_table)
        pt_info("rate_limit_store.max_keys: %llu → %llu: a new local rate-limit table; local "
                "limits start over",
                (unsigned long long)pt_rl_table_max_keys(rt->rl_table),
                (unsigned long long)g->rl_max_keys);
    pt_rl_table_unref(rt->rl_table);
    pt_rl_table_ref(g->rl_table);
    rt->rl_table = g->rl_table;
}

/* Once g is published: its cache becomes the runtime's. A new max_bytes
 * resizes the running store in place (shrinking evicts its least recently
 * used entries); new shards start an empty one (entries are not moved: a
 * rare change, and a cold cache is only slower). */
static void adopt_cache_store(struct runtime *rt, const struct pt_generation *g)
{
    if (g->cache_store == rt->cache_store) {
        uint64_t was = pt_cache_store_max_bytes(rt->cache_store);
        if (was != g->cache_max_bytes) {
            pt_cache_store_resize(rt->cache_store, g->cache_max_bytes);
            pt_info("cache_store: max_bytes %llu → %llu, entries kept", (unsigned long long)was,
                    (unsigned long long)g->cache_max_bytes);
        }
        return;
    }
    if (rt->cache_store)
        pt_info("cache_store: %llu bytes in %u shards → %llu in %u: a new, empty response cache",
                (unsigned long long)pt_cache_store_max_bytes(rt->cache_store),
                pt_cache_store_shards(rt->cache_store), (unsigned long long)g->cache_max_bytes,
                g->cache_shards);
    pt_cache_store_unref(rt->cache_store);
    pt_cache_store_ref(g->cache_store);
    rt->cache_store = g->cache_store;
}

static void gen_free(struct pt_generation *g)
{
    if (!g)
        return;
    pt_state_detach_upstreams(g->upstreams, g->nupstreams);
    pt_state_detach_upstreams(g->url_upstreams, g->nurl_upstreams);
    pt_generation_free(g);
}

/*
 * Workers bind with SO_REUSEPORT, which would let a second portico (or any
 * process using SO_REUSEPORT as the same user) silently share a port and
 * take part of its traffic. So before a listener address is first opened,
 * a plain bind proves nobody holds it. Addresses a running generation
 * already has are skipped: we hold them ourselves.
 */
static int probe_listeners(const struct pt_generation *g, const struct pt_generation *old)
{
    for (uint32_t i = 0; i < g->nlisteners; i++) {
        const struct pt_listener_cfg *l = &g->listeners[i];
        bool held = false;
        const struct pt_listener_cfg *near = NULL;
        for (uint32_t j = 0; old && j < old->nlisteners && !held; j++) {
            held = old->listeners[j].addrlen == l->addrlen &&
                   memcmp(&old->listeners[j].addr, &l->addr, l->addrlen) == 0;
            if (pt_addr_overlaps(&old->listeners[j].addr, &l->addr))
                near = &old->listeners[j];
        }
        if (held)
            continue;
        int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        int rc = bind(fd, (const struct sockaddr *)&l->addr, l->addrlen);
        int e = errno;
        close(fd);
        if (rc < 0 && near) {
            /* Our own socket on the same port is in the way, and skipping
             * the probe could let another process share the port unseen
             * (SO_REUSEPORT): this move needs a restart. */
            pt_error("listener %s: %s shares its port with the running listener %s (%s): a "
                     "reload cannot move a listener between an address and the wildcard on one "
                     "port; use another port, or restart",
                     l->name, l->address, near->name, near->address);
            return -e;
        }
        if (rc < 0) {
            pt_error("listener %s: cannot use %s: %s", l->name, l->address, strerror(e));
            return -e;
        }
    }
    return 0;
}

/* Opens g's access log, always (the same path too: that is how a rotated
 * file is let go). On failure the current destination keeps logging. */
static int open_access_log(struct runtime *rt, const struct pt_generation *g)
{
    int e = pt_alog_set_target(rt->logger, (int)g->access_log.mode, g->access_log.path);
    if (e < 0)
        pt_error("access_log: cannot open %s: %s", g->access_log.path, strerror(-e));
    return e;
}

/* Applies g's log_level, log_format and error_log (core/log.h). */
static int apply_error_log(const struct pt_generation *g)
{
    int e = pt_log_configure(g->log.level, g->log.format, g->log.error_log);
    if (e < 0)
        pt_error("error_log: cannot open %s: %s", g->log.error_log, strerror(-e));
    return e;
}

/* SIGUSR1 (logrotate's postrotate): both log files opened again at their
 * paths, so lines go to new files where the renamed ones were. The
 * access log's file is swapped under the logger's lock, between drains. */
static void reopen_logs(struct runtime *rt)
{
    const struct pt_generation *g = atomic_load(&pt_gen_current);
    int e = pt_log_reopen();
    if (e < 0)
        pt_error("error_log: cannot reopen %s: %s; still writing to the old file", g->log.error_log,
                 strerror(-e));
    if (g->access_log.mode == PT_ALOG_FILE)
        open_access_log(rt, g);
    pt_info("log files reopened");
}

/* How long a reload waits for every worker to take the new generation. */
#define PT_RELOAD_ADOPT_WAIT_MS 2000

static void reclaim(struct runtime *rt)
{
    for (struct pt_generation **pp = &rt->retired; *pp;) {
        struct pt_generation *g = *pp;
        bool busy = false;
        for (int w = 0; w < rt->nworkers && !busy; w++)
            busy = pt_worker_holds(&rt->workers[w], g);
        if (busy) {
            pp = &g->retired_next;
            continue;
        }
        *pp = g->retired_next;
        rt->nretired--;
        pt_debug("generation %llu freed: no worker can see it any more", (unsigned long long)g->id);
        /* No worker writes g's metric blocks any more: its counts join the
         * retired totals, so counters never go backwards across reloads. */
        if (pt_mx_set_add_generation(&rt->mx_retired, g) < 0)
            pt_error("metrics: out of memory folding generation %llu; its counts are lost",
                     (unsigned long long)g->id);
        gen_free(g);
    }
}

static void on_reclaim_timer(struct pt_loop *loop, struct pt_timer *t)
{
    struct runtime *rt = pt_container_of(t, struct runtime, reclaim_timer);
    reclaim(rt);
    if (rt->retired)
        pt_timer_arm(loop, t, PT_RECLAIM_EVERY_MS, on_reclaim_timer);
}

static void retire(struct runtime *rt, struct pt_generation *g)
{
    g->retired_next = rt->retired;
    rt->retired = g;
    rt->nretired++;
    if (!pt_timer_armed(&rt->reclaim_timer))
        pt_timer_arm(&rt->loop, &rt->reclaim_timer, PT_RECLAIM_EVERY_MS, on_reclaim_timer);
}

/* Waits (bounded) until every worker has begun a loop turn on generation
 * `id`: its new listeners are open and its next request uses it. Only then
 * is a reload logged and answered, so a client acting on "reloaded" (a
 * deploy script, a test) never finds a new port refusing connections. A
 * worker that has stopped publishes UINT64_MAX. */
static void wait_adopted(struct runtime *rt, uint64_t id)
{
    uint64_t deadline = pt_now_ms() + PT_RELOAD_ADOPT_WAIT_MS;
    for (int i = 0; i < rt->nworkers; i++) {
        while (atomic_load_explicit(&rt->workers[i].seen_gen, memory_order_acquire) < id) {
            if (pt_now_ms() >= deadline) {
                pt_warn("worker %d has not taken generation %llu after %d ms; it will at its "
                        "next loop turn",
                        i, (unsigned long long)id, PT_RELOAD_ADOPT_WAIT_MS);
                return;
            }
            struct timespec ts = {0, 200 * 1000};
            nanosleep(&ts, NULL);
        }
    }
}

/* Refuses a loaded generation that cannot be put in place: counts and
 * logs the failure, hands the admin API the reason, frees g. Returns -1. */
static int refuse(struct runtime *rt, struct pt_generation *g, const struct pt_generation *old,
                  char **errors, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int refuse(struct runtime *rt, struct pt_generation *g, const struct pt_generation *old,
                  char **errors, const char *fmt, ...)
{
    char why[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    rt->reloads_failed++;
    pt_resolver_sync(rt->dns, old); /* the names the running generation needs */
    pt_resolver_prune(rt->dns);     /* and no other: g's new ones go */
    pt_error("config reload failed: %s; generation %llu keeps serving", why,
             (unsigned long long)old->id);
    if (errors)
        *errors = strdup(why);
    gen_free(g);
    return -1;
}

/* What g was built from: its config text and its consumers file's text
 * as loaded, not the files as they may have been edited since. */
static struct pt_config_src same_source(const struct runtime *rt, const struct pt_generation *g)
{
    return (struct pt_config_src){.path = rt->path,
                                  .text = g->source_text,
                                  .len = g->source_len,
                                  .consumers_given = true,
                                  .consumers_text = g->consumers_text,
                                  .consumers_len = g->consumers_len};
}

/* Hands g's host names to the resolver; when some have never had an
 * answer, waits for them (bounded: a dead DNS server delays a start or a
 * reload by PT_DNS_FIRST_WAIT_MS, not forever). Whenever an answer
 * changed meanwhile, g's source is loaded again with the answers: also
 * with nothing missing, since the sync itself may have asked again and
 * been answered at once (c-ares reads /etc/hosts inside the query call).
 * Returns the generation to use (g, or its rebuild). */
static struct pt_generation *with_first_answers(struct runtime *rt, struct pt_generation *g)
{
    pt_resolver_take_change(rt->dns); /* g was built from every answer so far */
    uint32_t missing = pt_resolver_sync(rt->dns, g);
    if (missing) {
        pt_info("dns: resolving %u host name%s (waiting up to %d ms)", missing,
                missing > 1 ? "s" : "", PT_DNS_FIRST_WAIT_MS);
        pt_resolver_wait(rt->dns, PT_DNS_FIRST_WAIT_MS);
    }
    if (!pt_resolver_take_change(rt->dns))
        return g;
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_config_src src = same_source(rt, g);
    struct pt_generation *again = pt_config_load_src(&src, rt->dns, g->id, &diag);
    pt_diag_free(&diag);
    if (!again)
        return g; /* the same text loaded a moment ago: only memory can fail */
    pt_generation_free(g);
    return again;
}

static int publish(struct runtime *rt, struct pt_generation *g, char **errors, bool dns_change);

/* Loads `src` and publishes it. Returns 0, or -1 with the errors
 * (malloc'd, newline-separated) in *errors when errors is not NULL; when
 * `diag_out` is not NULL a load's errors are moved there instead. */
static int load_publish(struct runtime *rt, const struct pt_config_src *src, char **errors,
                        struct pt_diag *diag_out)
{
    reclaim(rt);
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_generation *g = pt_config_load_src(src, rt->dns, rt->next_id, &diag);
    if (!g && diag_out) {
        rt->reloads_failed++;
        pt_error("config rejected, generation %llu keeps serving",
                 (unsigned long long)(rt->next_id - 1));
        for (size_t i = 0; i < diag.n; i++)
            pt_error("  %s", diag.lines[i]);
        *diag_out = diag;
        return -1;
    }
    if (!g) {
        rt->reloads_failed++;
        pt_error("config reload failed: %s rejected, generation %llu keeps serving", rt->path,
                 (unsigned long long)(rt->next_id - 1));
        size_t total = 1;
        for (size_t i = 0; i < diag.n; i++) {
            pt_error("  %s", diag.lines[i]);
            total += strlen(diag.lines[i]) + 1;
        }
        if (errors && (*errors = malloc(total))) {
            size_t off = 0;
            for (size_t i = 0; i < diag.n; i++)
                off += (size_t)sprintf(*errors + off, "%s%s", i ? "\n" : "", diag.lines[i]);
            (*errors)[off] = 0;
        }
        pt_diag_free(&diag);
        return -1;
    }
    pt_diag_free(&diag);
    return publish(rt, with_first_answers(rt, g), errors, false);
}

/* Loads and publishes the config file (and its consumers file). */
static int reload(struct runtime *rt, char **errors)
{
    struct pt_config_src src = {.path = rt->path};
    return load_publish(rt, &src, errors, NULL);
}

/* Puts a loaded generation in place of the current one: a reload, or
 * (dns_change) the same config with new DNS answers. 0 or -1 as reload. */
static int publish(struct runtime *rt, struct pt_generation *g, char **errors, bool dns_change)
{
    struct pt_generation *old = atomic_load(&pt_gen_current);
    if (gen_prepare(rt, g) < 0)
        return refuse(rt, g, old, errors, "out of memory");
    if (probe_listeners(g, old) < 0)
        return refuse(rt, g, old, errors, "a new listener address is already in use");
    /* A new admin address is opened (and the old one closed) before the
     * swap: one that cannot be opened refuses the reload, as at start-up. */
    if (rt->admin && pt_admin_sync(rt->admin, g) < 0)
        return refuse(rt, g, old, errors, "admin: cannot listen on %s", g->admin.address);
    if (open_access_log(rt, g) < 0) {
        if (rt->admin)
            pt_admin_sync(rt->admin, old); /* back where it was */
        return refuse(rt, g, old, errors, "access_log: cannot open %s", g->access_log.path);
    }
    if (apply_error_log(g) < 0) {
        if (rt->admin)
            pt_admin_sync(rt->admin, old);
        open_access_log(rt, old);
        return refuse(rt, g, old, errors, "error_log: cannot open %s", g->log.error_log);
    }
    rt->next_id++;
    if (g->workers != rt->nworkers)
        pt_warn("workers: %d → %d takes effect at the next restart", rt->nworkers, g->workers);
    if ((int)g->io_backend != rt->io_backend)
        pt_warn("io_backend: %s → %s takes effect at the next restart",
                pt_io_backend_names[rt->io_backend], pt_io_backend_names[g->io_backend]);
    atomic_store_explicit(&pt_gen_current, g, memory_order_release);
    adopt_rl_table(rt, g);
    adopt_cache_store(rt, g);
    /* g's names were handed over (with_first_answers); the answers of
     * names only the old generation had are dropped now that it cannot
     * come back (its targets are copies). */
    pt_resolver_prune(rt->dns);
    if (pt_health_sync(rt->health, g) < 0)
        pt_error("health checks: out of memory; targets keep their last health");
    retire(rt, old);
    for (int i = 0; i < rt->nworkers; i++)
        pt_worker_wake(&rt->workers[i]);
    wait_adopted(rt, g->id);
    if (dns_change) {
        pt_info("dns: generation %llu has the new addresses", (unsigned long long)g->id);
        return 0;
    }
    rt->reloads_ok++;
    pt_info("config reloaded: generation %llu (%u routes, %u upstreams)", (unsigned long long)g->id,
            g->nroutes, g->nupstreams);
    return 0;
}

/* A DNS answer changed: the running config, built again with it. */
static void on_dns_apply(struct pt_loop *loop, struct pt_timer *t)
{
    struct runtime *rt = pt_container_of(t, struct runtime, dns_timer);
    (void)loop;
    if (rt->stopping || !rt->workers || !pt_resolver_take_change(rt->dns))
        return;
    reclaim(rt);
    const struct pt_generation *cur = atomic_load(&pt_gen_current);
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_config_src src = same_source(rt, cur);
    struct pt_generation *g = pt_config_load_src(&src, rt->dns, rt->next_id, &diag);
    if (!g) {
        pt_error("dns: the running config could not be built again with the new addresses; "
                 "generation %llu keeps serving",
                 (unsigned long long)cur->id);
        for (size_t i = 0; i < diag.n; i++)
            pt_error("  %s", diag.lines[i]);
    }
    pt_diag_free(&diag);
    if (g)
        publish(rt, g, NULL, true);
}

static void on_dns_changed(void *user)
{
    struct runtime *rt = user;
    /* Several names may answer in one turn: one rebuild for all. */
    if (!pt_timer_armed(&rt->dns_timer))
        pt_timer_arm(&rt->loop, &rt->dns_timer, 0, on_dns_apply);
}

/* ---- admin hooks ---- */

static const struct pt_generation *hook_current(void *ctx)
{
    (void)ctx;
    return atomic_load(&pt_gen_current);
}

static void hook_status(void *ctx, struct pt_admin_status *st)
{
    struct runtime *rt = ctx;
    st->version = PT_VERSION;
    st->workers = rt->nworkers;
    st->uptime_s = (pt_now_ms() - rt->started_ms) / 1000;
    st->connections = atomic_load_explicit(&pt_active_connections, memory_order_relaxed);
    st->requests = 0;
    for (int i = 0; i < rt->nworkers; i++)
        st->requests += atomic_load_explicit(&rt->workers[i].served, memory_order_relaxed);
    st->reloads_ok = rt->reloads_ok;
    st->reloads_failed = rt->reloads_failed;
}

static int hook_reload(void *ctx, uint64_t *new_id, char **errors)
{
    struct runtime *rt = ctx;
    int r = reload(rt, errors);
    *new_id = atomic_load(&pt_gen_current)->id;
    return r;
}

/* PUT /config and the consumers API: a source in memory, loaded and
 * published like a reload (while draining: refused). */
static int hook_apply(void *ctx, const struct pt_config_src *src, uint64_t *new_id,
                      struct pt_diag *diag, char **errors)
{
    struct runtime *rt = ctx;
    if (rt->stopping) {
        *errors = strdup("the gateway is shutting down");
        return -2;
    }
    struct pt_config_src s = *src;
    s.path = rt->path;
    int r = load_publish(rt, &s, errors, diag);
    *new_id = atomic_load(&pt_gen_current)->id;
    return r < 0 && diag->n ? -1 : r < 0 ? -2 : 0;
}

static bool hook_ready(void *ctx)
{
    struct runtime *rt = ctx;
    return rt->workers_started && !rt->stopping;
}

static char *hook_metrics(void *ctx, size_t *len)
{
    struct runtime *rt = ctx;
    const struct pt_generation *cur = atomic_load(&pt_gen_current);
    const struct pt_generation **live = malloc(sizeof(*live) * (rt->nretired + 1));
    if (!live)
        return NULL;
    uint32_t n = 0;
    live[n++] = cur;
    for (const struct pt_generation *r = rt->retired; r; r = r->retired_next)
        live[n++] = r;
    struct pt_mx_scrape_in in = {.current = cur,
                                 .live = live,
                                 .nlive = n,
                                 .workers = rt->workers,
                                 .nworkers = rt->nworkers,
                                 .reloads_ok = rt->reloads_ok,
                                 .reloads_failed = rt->reloads_failed};
    char *text = pt_mx_scrape(&rt->mx_retired, &in, PT_ADMIN_HEADROOM, len);
    free(live);
    return text;
}

static const struct pt_admin_hooks admin_hooks = {hook_current, hook_status, hook_reload,
                                                  hook_apply,   hook_ready,  hook_metrics};

/* Signals arrive here, on the control loop, never as interruptions.
 * Edge-triggered: read them all. */
static void on_signal(struct pt_loop *loop, struct pt_io *io, uint32_t events)
{
    struct runtime *rt = pt_container_of(io, struct runtime, sig_io);
    struct signalfd_siginfo si;
    (void)loop;
    (void)events;
    while (!rt->stopping && read(io->fd, &si, sizeof(si)) == sizeof(si)) {
        if (si.ssi_signo == SIGHUP) {
            reload(rt, NULL);
        } else if (si.ssi_signo == SIGUSR1) {
            reopen_logs(rt);
        } else {
            pt_info("shutting down: draining in-flight requests (up to %llu ms)",
                    (unsigned long long)atomic_load(&pt_gen_current)->limits.drain_timeout_ms);
            rt->stopping = true;
        }
    }
}

/* The control loop, the signal fd on it, its buffer and outbound pools,
 * and the state registry. 0, or -1 after logging why. */
static int control_init(struct runtime *rt)
{
    int e = pt_loop_init(&rt->loop); /* epoll: the control thread never uses io_uring */
    if (e < 0) {
        pt_error("control loop: %s", strerror(-e));
        return -1;
    }
    pt_bufpool_init(&rt->bufs, 64);
    pt_outbound_init(&rt->ob, &rt->loop, &rt->bufs);
    rt->state = pt_state_registry_new();
    rt->health = pt_health_new(&rt->loop, &rt->ob);
    rt->dns = pt_resolver_new(&rt->loop, on_dns_changed, rt);
    if (!rt->state || !rt->health || !rt->dns) {
        pt_error("state registry: out of memory");
        return -1;
    }
    /* Signals are handled on this thread only, via signalfd; workers
     * inherit the blocked mask. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    rt->sig_io.fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    rt->sig_io.cb = on_signal;
    if (rt->sig_io.fd < 0 || pt_loop_add(&rt->loop, &rt->sig_io, EPOLLIN) < 0) {
        pt_error("signalfd: %s", strerror(errno));
        return -1;
    }
    return 0;
}

/* Undoes control_init (after everything that uses the loop is closed). */
static void control_destroy(struct runtime *rt)
{
    pt_timer_cancel(&rt->loop, &rt->reclaim_timer);
    pt_timer_cancel(&rt->loop, &rt->dns_timer);
    pt_resolver_free(rt->dns);    /* ends queries in flight */
    pt_health_free(rt->health);   /* cancels probes in flight */
    pt_outbound_destroy(&rt->ob); /* closes idle pooled connections */
    pt_call_thread_exit();        /* the probes' parse scratch */
    pt_bufpool_destroy(&rt->bufs);
    if (rt->sig_io.fd >= 0)
        close(rt->sig_io.fd);
    pt_loop_destroy(&rt->loop);
    pt_state_registry_free(rt->state);
}

int pt_runtime_run(const char *config_path)
{
    struct runtime *rt = calloc(1, sizeof(*rt)); /* not on the stack: the loop's wheel is large */
    if (!rt)
        return 1;
    pt_mx_set_init(&rt->mx_retired);
    rt->path = config_path;
    rt->next_id = 1;
    rt->started_ms = pt_now_ms();
    rt->sig_io.fd = -1;
    int rc = 1;
    struct pt_alog_ring **rings = NULL;
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_generation *g = pt_config_load(config_path, rt->next_id++, &diag);
    if (!g) {
        pt_diag_print(&diag, stderr);
        pt_diag_free(&diag);
        free(rt);
        return 1;
    }
    pt_diag_free(&diag);
    if (apply_error_log(g) < 0) {
        pt_generation_free(g);
        free(rt);
        return 1;
    }
    pt_debug("%s loaded: %u routes, %u upstreams, %u listeners, log_level %s, log_format %s",
             config_path, g->nroutes, g->nupstreams, g->nlisteners,
             pt_log_level_names[g->log.level], pt_log_format_names[g->log.format]);
    if (control_init(rt) < 0) {
        pt_generation_free(g);
        goto out_loop;
    }
    the_rt = rt;
    g = with_first_answers(rt, g);
    rt->nworkers = g->workers;
    rt->io_backend = (int)g->io_backend;
    if (gen_prepare(rt, g) < 0) {
        pt_error("out of memory");
        gen_free(g);
        goto out_loop;
    }

    atomic_store(&pt_gen_current, g);
    adopt_rl_table(rt, g);
    adopt_cache_store(rt, g);
    if (probe_listeners(g, NULL) < 0)
        goto out;
    /* The admin listener opens before the data plane: once the public
     * port accepts, the admin API answers too. */
    rt->admin = pt_admin_open(&rt->loop, g, &admin_hooks, rt);
    if (!rt->admin)
        goto out;
    rt->workers = calloc((size_t)rt->nworkers, sizeof(*rt->workers));
    rings = calloc((size_t)rt->nworkers, sizeof(*rings));
    if (!rt->workers || !rings)
        goto out;
    int started = 0;
    for (int i = 0; i < rt->nworkers; i++) {
        int e = pt_worker_start(&rt->workers[i], i);
        if (e < 0) {
            if (g->io_backend == PT_IO_URING)
                pt_error("cannot start worker %d: io_backend io_uring: %s (is io_uring disabled "
                         "by kernel.io_uring_disabled or a seccomp policy? `io_backend: epoll` "
                         "works everywhere)",
                         i, strerror(-e));
            else
                pt_error("cannot start worker %d: %s", i, strerror(-e));
            for (int j = 0; j < started; j++)
                pt_worker_drain(&rt->workers[j]);
            for (int j = 0; j < started; j++)
                pt_worker_join(&rt->workers[j]);
            goto out;
        }
        rings[i] = &rt->workers[i].alog;
        started++;
    }
    rt->logger = pt_alog_start(rings, rt->nworkers);
    if (!rt->logger)
        goto out_stop;
    if (open_access_log(rt, g) < 0)
        goto out_stop;
    for (uint32_t i = 0; i < g->nlisteners; i++)
        pt_info("listening on %s (%s)", g->listeners[i].address, g->listeners[i].name);
    if (pt_health_sync(rt->health, g) < 0)
        goto out_stop;
    rt->workers_started = true;
    pt_info("portico ready: generation %llu, %d workers (%s), %u routes", (unsigned long long)g->id,
            rt->nworkers, pt_io_backend_names[g->io_backend], g->nroutes);

    while (!rt->stopping) {
        pt_loop_run_once(&rt->loop, 1000);
        pt_admin_reap(rt->admin);
        pt_outbound_reap(&rt->ob);
    }
    /* Probes point into the current generation: stop them before it goes. */
    pt_health_free(rt->health);
    rt->health = NULL;
    rc = 0;
out_stop:
    rt->stopping = true;
    for (int i = 0; i < rt->nworkers; i++)
        pt_worker_drain(&rt->workers[i]);
    /* While the workers drain, the admin API keeps answering (/readyz:
     * 503) until the last one has stopped. */
    for (int i = 0; i < rt->nworkers; i++) {
        while (atomic_load(&rt->workers[i].seen_gen) != UINT64_MAX) {
            pt_loop_run_once(&rt->loop, 20);
            pt_admin_reap(rt->admin);
        }
    }
    for (int i = 0; i < rt->nworkers; i++)
        pt_worker_join(&rt->workers[i]);
    pt_alog_stop(rt->logger);
    for (int i = 0; i < rt->nworkers; i++)
        pt_alog_ring_free(&rt->workers[i].alog);
    pt_info("stopped");
out:
    pt_admin_close(rt->admin);
    while (rt->retired) {
        struct pt_generation *r = rt->retired;
        rt->retired = r->retired_next;
        gen_free(r);
    }
    gen_free(atomic_load(&pt_gen_current));
    atomic_store(&pt_gen_current, NULL);
    free(rt->workers);
    free(rings);
out_loop:
    the_rt = NULL;
    pt_rl_table_unref(rt->rl_table);
    pt_cache_store_unref(rt->cache_store);
    pt_mx_set_free(&rt->mx_retired);
    control_destroy(rt);
    free(rt);
    return rc;
}
