/*
 * config_upstreams.c — the `upstreams:` section of the config (CONFIG.md):
 * each upstream's targets, balance, timeouts and keepalive, read into
 * g->upstreams and registered by name in the loader's c->upstreams, which
 * routes and filters resolve against. Part of the loader (config.c,
 * config_int.h); everything read lives in the generation's arena.
 */
#include "control/config_int.h"

static const char *const upstream_keys[] = {"targets",      "balance",   "connect_timeout",
                                            "read_timeout", "keepalive", "health_check",
                                            "retries",      NULL};
static const char *const upstream_planned[] = {"hash_on", "protocol", "tls", "circuit_breaker",
                                               NULL};
static const char *const hc_keys[] = {"active", NULL};
static const char *const hc_planned[] = {"passive", NULL};
static const char *const hc_active_keys[] = {"path",      "interval", "timeout", "healthy",
                                             "unhealthy", "host",     NULL};

/* health_check: { active: { path, interval, timeout, healthy, unhealthy, host } } */
static void walk_health_check(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    struct pt_health_active *hc = &u->hc;
    if (!pt_cfg_want_map(&c->w, n, "`health_check`"))
        return;
    const struct pt_ynode *v[1] = {0};
    pt_cfg_bind_keys(&c->w, n, hc_keys, hc_planned, "in health_check", v, NULL);
    if (!v[0] || !pt_cfg_want_map(&c->w, v[0], "`active`"))
        return;
    const struct pt_ynode *a[6] = {0};
    pt_cfg_bind_keys(&c->w, v[0], hc_active_keys, NULL, "in health_check.active", a, NULL);
    hc->enabled = true;
    hc->path = "/";
    hc->interval_ms = 5000;
    hc->timeout_ms = 1000;
    hc->healthy = 2;
    hc->unhealthy = 3;
    if (a[0]) {
        const char *p = pt_cfg_want_str(&c->w, a[0], "`path`");
        if (p && p[0] != '/')
            err_at(c, a[0], "health check `path` must start with `/`, got `%s`", p);
        else if (p && strpbrk(p, " \t\r\n#"))
            err_at(c, a[0], "health check `path` holds a space, control or `#` character");
        else if (p)
            hc->path = dup_str(c, p);
    }
    if (a[1])
        pt_cfg_want_duration(&c->w, a[1], "`interval`", true, &hc->interval_ms);
    if (a[2])
        pt_cfg_want_duration(&c->w, a[2], "`timeout`", true, &hc->timeout_ms);
    uint64_t x;
    if (a[3] && pt_cfg_want_uint(&c->w, a[3], "`healthy`", 1, 1000, &x))
        hc->healthy = (uint32_t)x;
    if (a[4] && pt_cfg_want_uint(&c->w, a[4], "`unhealthy`", 1, 1000, &x))
        hc->unhealthy = (uint32_t)x;
    if (a[5]) {
        const char *h = pt_cfg_want_str(&c->w, a[5], "`host`");
        if (h && strpbrk(h, " \t\r\n/"))
            err_at(c, a[5], "health check `host` must be a host name, got `%s`", h);
        else if (h)
            hc->host = dup_str(c, h);
    }
}
static const char *const balance_planned[] = {"least_conn", "p2c_ewma", "consistent_hash", NULL};
static const char *const target_keys[] = {"address", "weight", NULL};

static bool walk_target(struct cfg *c, const struct pt_ynode *item, struct pt_target *t)
{
    const struct pt_ynode *addr_node = item;
    uint64_t weight = 1;
    if (item->kind == PT_YMAP) {
        const struct pt_ynode *v[2] = {0};
        uint32_t refused = pt_cfg_bind_keys(&c->w, item, target_keys, NULL, "in target", v, NULL);
        if (!v[0]) {
            if (!refused)
                err_at(c, item, "target has no `address` (e.g. `address: 127.0.0.1:9001`)");
            return false;
        }
        addr_node = v[0];
        if (v[1] && !pt_cfg_want_uint(&c->w, v[1], "`weight`", 1, 1000, &weight))
            return false;
    } else if (item->kind != PT_YSCALAR || item->is_null) {
        char buf[64];
        err_at(c, item, "expected `host:port` or a mapping for each target, got %s",
               pt_cfg_describe(item, buf, sizeof(buf)));
        return false;
    }
    const char *addr = pt_cfg_want_str(&c->w, addr_node, "the target address");
    if (!addr)
        return false;
    t->address = dup_str(c, addr);
    t->weight = (int)weight;
    return t->address && pt_cfg_want_address(&c->w, addr_node, addr, false, &t->addr, &t->addrlen);
}

static void walk_upstream(struct cfg *c, const struct pt_ynode *key, const struct pt_ynode *n,
                          struct pt_upstream *u)
{
    u->connect_timeout_ms = 1000;
    u->read_timeout_ms = 30000;
    u->keepalive = 64;
    u->balance = PT_BALANCE_ROUND_ROBIN;
    /* Documented defaults of the traffic-management keys (a key left out
     * keeps them; a section left out keeps its feature off). */
    for (int st = 502; st <= 504; st++)
        pt_status_add(&u->failure_statuses, st);
    u->passive = (struct pt_health_passive){false, 5, 30000, 50};
    u->breaker = (struct pt_breaker_conf){false, 0.5, 20, 10000, 5000, 1, 0};
    u->retry.attempts = 1;
    u->retry.budget = 0.2;
    u->retry.max_replay_body = 64 * 1024;
    u->pos = (struct pt_src_pos){key->line, key->col};
    if (!pt_cfg_want_map(&c->w, n, "an upstream"))
        return;
    const struct pt_ynode *v[7] = {0};
    uint32_t refused =
        pt_cfg_bind_keys(&c->w, n, upstream_keys, upstream_planned, "in upstream", v, NULL);

    const struct pt_ynode *tn = v[0];
    if (!tn) {
        if (!refused)
            err_at(c, key, "upstream `%s` has no `targets`", u->name);
    } else if (pt_cfg_want_seq(&c->w, tn, "`targets`")) {
        if (tn->n == 0) {
            err_at(c, tn, "upstream `%s` has no targets (`targets` is empty)", u->name);
        } else {
            u->targets = pt_arena_zalloc(c->a, sizeof(*u->targets) * tn->n);
            if (!u->targets)
                return oom(c);
            for (uint32_t i = 0; i < tn->n; i++) {
                struct pt_target *t = &u->targets[u->ntargets];
                if (!walk_target(c, tn->items[i], t))
                    continue;
                bool dup = false;
                for (uint32_t j = 0; j < u->ntargets && !dup; j++)
                    dup = pt_cfg_same_addr(&u->targets[j].addr, &t->addr);
                if (dup) {
                    err_at(c, tn->items[i],
                           "target `%s` is listed twice in upstream `%s` (raise its `weight` "
                           "instead)",
                           t->address, u->name);
                    continue;
                }
                t->index = u->ntargets++;
            }
        }
    }
    if (v[1]) {
        const char *b = pt_cfg_want_str(&c->w, v[1], "`balance`");
        static const char *const known[] = {"round_robin", "least_conn", "p2c_ewma",
                                            "consistent_hash"};
        char hint[96];
        if (!b || strcmp(b, "round_robin") == 0)
            ; /* the default */
        else if (pt_cfg_in_list(b, balance_planned))
            err_at(c, v[1], "balance `%s` is not supported by this build yet", b);
        else
            err_at(c, v[1], "unknown balance `%s`%s", b,
                   pt_cfg_did_you_mean(b, known, PT_ARRAY_LEN(known), hint, sizeof(hint)));
    }
    if (v[2])
        pt_cfg_want_duration(&c->w, v[2], "`connect_timeout`", true, &u->connect_timeout_ms);
    if (v[3])
        pt_cfg_want_duration(&c->w, v[3], "`read_timeout`", true, &u->read_timeout_ms);
    uint64_t ka;
    if (v[4] && pt_cfg_want_uint(&c->w, v[4], "`keepalive`", 0, 100000, &ka))
        u->keepalive = (uint32_t)ka;
    if (v[5])
        walk_health_check(c, v[5], u);
    if (v[6])
        pt_cfg_walk_retries(c, v[6], u);
}

void pt_cfg_walk_upstreams(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_map(&c->w, n, "`upstreams`") || n->n == 0)
        return;
    struct pt_generation *g = c->g;
    g->upstreams = pt_arena_zalloc(c->a, sizeof(*g->upstreams) * n->n);
    if (!g->upstreams)
        return oom(c);
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *key = n->pairs[i].key;
        struct pt_upstream *u = &g->upstreams[g->nupstreams];
        /* Registered even when invalid, so that routes naming it do not
         * add "unknown upstream" to the real error. */
        u->name = pt_cfg_want_name(c, key, "upstream name", PT_NAME_MAX);
        if (!u->name)
            continue;
        u->index = g->nupstreams++;
        pt_cfg_strtab_put(c, &c->upstreams, u->name, u);
        walk_upstream(c, key, n->pairs[i].value, u);
    }
}
