/*
 * config_upstreams.c — the `upstreams:` section of the config (CONFIG.md):
 * each upstream's targets, balance, timeouts and keepalive, read into
 * g->upstreams and registered by name in the loader's c->upstreams, which
 * routes and filters resolve against. Part of the loader (config.c,
 * config_int.h); everything read lives in the generation's arena.
 */
#include "control/config_int.h"
#include "proxy/hash_ring.h"

static const char *const upstream_keys[] = {"targets",      "balance",   "connect_timeout",
                                            "read_timeout", "keepalive", "health_check",
                                            "hash_on",      NULL};
static const char *const upstream_planned[] = {"protocol", "tls", "circuit_breaker", "retries",
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
/* RFC 9110 tchar: header names, and cookie names (RFC 6265 uses token). */
static bool is_token_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("!#$%&'*+-.^_`|~", ch)))
            return false;
    }
    return true;
}

/* hash_on: header:NAME | cookie:NAME | ip | consumer. */
static void walk_hash_on(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    const char *h = pt_cfg_want_str(&c->w, n, "`hash_on`");
    if (!h)
        return;
    if (strcmp(h, "ip") == 0) {
        u->hash_on = PT_HASH_IP;
        return;
    }
    if (strcmp(h, "consumer") == 0) {
        u->hash_on = PT_HASH_CONSUMER;
        return;
    }
    const char *colon = strchr(h, ':');
    const char *name = colon ? colon + 1 : "";
    size_t plen = colon ? (size_t)(colon - h) : strlen(h);
    bool header = plen == 6 && strncmp(h, "header", 6) == 0;
    bool cookie = plen == 6 && strncmp(h, "cookie", 6) == 0;
    if (header || cookie) {
        if (!*name)
            err_at(c, n, "`hash_on: %.*s:` needs a %s name (e.g. `%s`)", (int)plen, h,
                   header ? "header" : "cookie", header ? "header:X-User-ID" : "cookie:session");
        else if (!is_token_name(name))
            err_at(c, n, "`hash_on`: `%s` is not a valid %s name", name,
                   header ? "header" : "cookie");
        else {
            u->hash_on = header ? PT_HASH_HEADER : PT_HASH_COOKIE;
            u->hash_name = dup_str(c, name);
        }
        return;
    }
    /* Suggest with the name the user gave: `hedaer:X-User` → `header:X-User`. */
    char hc[2][160], hint[200];
    snprintf(hc[0], sizeof(hc[0]), "header:%s", *name ? name : "NAME");
    snprintf(hc[1], sizeof(hc[1]), "cookie:%s", *name ? name : "NAME");
    const char *const cands[] = {hc[0], hc[1], "ip", "consumer"};
    err_at(c, n, "unknown `hash_on` `%s`%s; expected header:NAME, cookie:NAME, ip or consumer", h,
           pt_cfg_did_you_mean(h, cands, PT_ARRAY_LEN(cands), hint, sizeof(hint)));
}

/* balance, and hash_on which only consistent_hash takes (and needs). The
 * ring is built here, once per generation, in its arena. */
static void walk_balance(struct cfg *c, const struct pt_ynode *bn, const struct pt_ynode *hn,
                         struct pt_upstream *u)
{
    /* In enum pt_balance's order. */
    static const char *const names[] = {"round_robin", "least_conn", "p2c_ewma", "consistent_hash"};
    if (bn) {
        const char *b = pt_cfg_want_str(&c->w, bn, "`balance`");
        if (!b)
            return;
        size_t i = 0;
        while (i < PT_ARRAY_LEN(names) && strcmp(b, names[i]) != 0)
            i++;
        if (i == PT_ARRAY_LEN(names)) {
            char hint[96];
            err_at(c, bn, "unknown balance `%s`%s", b,
                   pt_cfg_did_you_mean(b, names, PT_ARRAY_LEN(names), hint, sizeof(hint)));
            return;
        }
        u->balance = (enum pt_balance)i;
    }
    if (u->balance != PT_BALANCE_CONSISTENT_HASH) {
        if (hn)
            err_at(c, hn,
                   "`hash_on` applies only to `balance: consistent_hash` (upstream `%s` "
                   "balances by %s)",
                   u->name, names[u->balance]);
        return;
    }
    if (!hn) {
        err_at(c, bn,
               "balance `consistent_hash` needs `hash_on` (header:NAME, cookie:NAME, ip or "
               "consumer)");
        return;
    }
    walk_hash_on(c, hn, u);
    if (u->ntargets && !(u->ring = pt_hash_ring_build(c->a, u)))
        oom(c);
}

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
    walk_balance(c, v[1], v[6], u);
    if (v[2])
        pt_cfg_want_duration(&c->w, v[2], "`connect_timeout`", true, &u->connect_timeout_ms);
    if (v[3])
        pt_cfg_want_duration(&c->w, v[3], "`read_timeout`", true, &u->read_timeout_ms);
    uint64_t ka;
    if (v[4] && pt_cfg_want_uint(&c->w, v[4], "`keepalive`", 0, 100000, &ka))
        u->keepalive = (uint32_t)ka;
    if (v[5])
        walk_health_check(c, v[5], u);
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
