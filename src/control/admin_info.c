/*
 * admin_info.c — GET /status, /routes and /upstreams (admin_int.h): the
 * running generation's facts and the live state workers publish (target
 * health, ejections, breaker, active requests), read with relaxed loads.
 */
#include "control/admin_int.h"
#include "core/log.h"
#include "proxy/balance.h"
#include "proxy/state.h"

#include <stdio.h>

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

void admin_status(const struct admin_req *rq, struct admin_resp *out)
{
    const struct pt_generation *g = rq->g;
    struct sbuf *b = &out->body;
    struct pt_admin_status st;
    rq->hooks->status(rq->ctx, &st);
    sb_printf(b, "{\"version\":\"%s\",\"generation\":%llu,\"config\":", st.version,
              (unsigned long long)g->id);
    sb_json_str(b, g->source_path);
    sb_printf(b, ",\"consumers_file\":");
    sb_json_str(b, g->consumers_path);
    sb_printf(b,
              ",\"workers\":%d,\"uptime_seconds\":%llu,\"connections_active\":%llu,"
              "\"requests_served\":%llu,\"reloads\":{\"ok\":%llu,\"failed\":%llu},"
              "\"routes\":%u,\"upstreams\":%u,\"consumers\":%u,\"ready\":%s",
              st.workers, (unsigned long long)st.uptime_s, (unsigned long long)st.connections,
              (unsigned long long)st.requests, (unsigned long long)st.reloads_ok,
              (unsigned long long)st.reloads_failed, g->nroutes, g->nupstreams, g->consumers.n,
              rq->hooks->ready(rq->ctx) ? "true" : "false");
    rl_status_json(b, g->rl_table);
    sb_printf(b, "}\n");
}

void admin_routes(const struct admin_req *rq, struct admin_resp *out)
{
    routes_json(&out->body, rq->g);
}

void admin_upstreams(const struct admin_req *rq, struct admin_resp *out)
{
    upstreams_json(&out->body, rq->g);
}
