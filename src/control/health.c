/*
 * health.c — active health checks (upstreams.*.health_check.active), run
 * on the control thread's loop through the outbound client, and the
 * control thread's sweep of passive health and circuit breakers.
 *
 * One probe per target of every upstream with a check: a GET of `path`
 * (Host: `host`, else the target's host name or address) every `interval` ±10%, which
 * must answer 2xx within `timeout`. `healthy` passes in a row make a target
 * healthy, `unhealthy` failures in a row unhealthy (pt_state_record_check,
 * which logs each change). Workers read the verdict lock-free from the
 * target's shared cell: an unhealthy target gets no traffic.
 *
 * Health lives in the cells, outside generations: a reload rebuilds the
 * probes for the new generation but keeps every unchanged target's
 * health; a target the reload added starts healthy and is checked at once
 * (as at start).
 *
 * The same object runs the passive side's sweep (every SWEEP_MS over the
 * current generation): targets whose passive-health ejection ended are
 * logged as returned, and circuit breakers whose open_for passed turn
 * half-open, so the log and the admin view move with no traffic.
 *
 * Ownership: the probe set is the control thread's (malloc'd); each probe
 * points into the generation it was built for, and is rebuilt (old probes
 * cancelled and freed) before that generation can be retired.
 */
#include "control/health.h"

#include "core/log.h"
#include "proxy/fetch.h"

#include <stdio.h>
#include <stdlib.h>

struct probe {
    struct pt_timer timer; /* first: the timer callback finds the probe */
    struct pt_health_checks *h;
    const struct pt_upstream *up;
    const struct pt_target *target;
    struct pt_arena arena; /* one check's allocations */
    struct pt_fetch fetch;
    struct pt_headers headers;
    struct pt_hfield host_field;
    bool in_flight;
};

struct pt_health_checks {
    struct pt_loop *loop;
    struct pt_outbound *ob;
    struct probe *probes;
    uint32_t nprobes;
    uint64_t rng;
    /* The passive side's sweep (every SWEEP_MS over the current
     * generation): logs targets back from an ejection and breakers
     * turning half-open, even with no traffic to notice them. */
    struct pt_timer sweep;
    const struct pt_generation *g;
};

#define SWEEP_MS 250

static uint64_t next_random(struct pt_health_checks *h)
{
    return pt_xorshift64s(&h->rng);
}

/* interval ±10%, so probes of many targets do not beat in step. */
static uint64_t jittered(struct pt_health_checks *h, uint64_t interval)
{
    uint64_t span = interval / 5;
    if (span == 0)
        return interval;
    return interval - interval / 10 + next_random(h) % (span + 1);
}

static void probe_start(struct pt_loop *loop, struct pt_timer *t);

static void probe_done(struct pt_fetch *f, void *user)
{
    struct probe *p = user;
    const struct pt_health_active *hc = &p->up->hc;
    p->in_flight = false;
    bool ok = f->fail == PT_CALL_FAIL_NONE && f->status >= 200 && f->status < 300;
    char why[160];
    if (f->fail != PT_CALL_FAIL_NONE)
        snprintf(why, sizeof(why), "health check of %s%s: %s", p->target->address, hc->path,
                 f->fail_text ? f->fail_text : "failed");
    else
        snprintf(why, sizeof(why), "health check of %s%s answered %d", p->target->address, hc->path,
                 f->status);
    pt_state_record_check(p->target->state, ok, hc->healthy, hc->unhealthy, why);
    pt_arena_reset(&p->arena);
    pt_timer_arm(p->h->loop, &p->timer, jittered(p->h, hc->interval_ms), probe_start);
}

static void probe_start(struct pt_loop *loop, struct pt_timer *t)
{
    struct probe *p = (struct probe *)t;
    const struct pt_health_active *hc = &p->up->hc;
    const char *host = hc->host ? hc->host : p->target->name ? p->target->name : p->target->address;
    p->host_field = (struct pt_hfield){
        .name = PT_SLICE("Host"), .value = {host, strlen(host)}, .token = PT_TOK_HOST};
    p->headers = (struct pt_headers){&p->host_field, 1, 1};
    const char *q = strchr(hc->path, '?');
    size_t plen = q ? (size_t)(q - hc->path) : strlen(hc->path);
    struct pt_call_req req = {
        .up = p->up,
        .target = p->target,
        .method = PT_SLICE("GET"),
        .method_id = PT_METHOD_GET,
        .path = {hc->path, plen},
        .query = q ? (pt_slice){q + 1, strlen(q + 1)} : (pt_slice){"", 0},
        .headers = &p->headers,
        .read_timeout_ms = hc->timeout_ms,
        .pool_idle_ms = 60000,
        .arena = &p->arena,
        .max_headers = 100,
    };
    p->in_flight = true;
    if (pt_fetch_start(&p->fetch, p->h->ob, &req, (pt_slice){0}, 0, probe_done, p) != 0) {
        /* Failed at once (refused on loopback, no fds): that is a failed
         * check too. */
        probe_done(&p->fetch, p);
    }
}

static void on_sweep(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_health_checks *h = pt_container_of(t, struct pt_health_checks, sweep);
    uint64_t now_ms = pt_loop_now_ns(loop) / 1000000u;
    for (uint32_t i = 0; h->g && i < h->g->nupstreams; i++) {
        const struct pt_upstream *u = &h->g->upstreams[i];
        pt_passive_sweep(u, now_ms);
        if (u->breaker.enabled && u->state)
            pt_breaker_tick(&u->state->breaker, &u->breaker, u->name, now_ms);
    }
    pt_timer_arm(loop, t, SWEEP_MS, on_sweep);
}

static void probes_free(struct pt_health_checks *h)
{
    for (uint32_t i = 0; i < h->nprobes; i++) {
        struct probe *p = &h->probes[i];
        pt_timer_cancel(h->loop, &p->timer);
        if (p->in_flight)
            pt_fetch_cancel(&p->fetch);
        pt_arena_destroy(&p->arena);
    }
    free(h->probes);
    h->probes = NULL;
    h->nprobes = 0;
}

struct pt_health_checks *pt_health_new(struct pt_loop *loop, struct pt_outbound *ob)
{
    struct pt_health_checks *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->loop = loop;
    h->ob = ob;
    h->rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)h;
    return h;
}

void pt_health_free(struct pt_health_checks *h)
{
    if (!h)
        return;
    probes_free(h);
    pt_timer_cancel(h->loop, &h->sweep);
    free(h);
}

int pt_health_sync(struct pt_health_checks *h, const struct pt_generation *g)
{
    probes_free(h);
    h->g = g;
    if (!pt_timer_armed(&h->sweep))
        pt_timer_arm(h->loop, &h->sweep, SWEEP_MS, on_sweep);
    uint32_t n = 0;
    for (uint32_t i = 0; i < g->nupstreams; i++)
        if (g->upstreams[i].hc.enabled)
            n += g->upstreams[i].ntargets;
    if (n == 0)
        return 0;
    h->probes = calloc(n, sizeof(*h->probes));
    if (!h->probes)
        return -ENOMEM;
    for (uint32_t i = 0; i < g->nupstreams; i++) {
        const struct pt_upstream *u = &g->upstreams[i];
        if (!u->hc.enabled)
            continue;
        for (uint32_t t = 0; t < u->ntargets; t++) {
            struct probe *p = &h->probes[h->nprobes++];
            p->h = h;
            p->up = u;
            p->target = &u->targets[t];
            pt_arena_init(&p->arena, 4096);
            /* New targets (and every target at start) are checked at once;
             * a target the reload kept goes on at its own pace. */
            const struct pt_target_state *st = p->target->state;
            bool fresh = !st || atomic_load_explicit(&st->fresh, memory_order_relaxed);
            pt_timer_arm(h->loop, &p->timer, fresh ? 0 : jittered(h, u->hc.interval_ms),
                         probe_start);
        }
    }
    return 0;
}
