/*
 * config_upstreams.c — the `upstreams:` section of the config (CONFIG.md):
 * each upstream's targets, balance, timeouts and keepalive, read into
 * g->upstreams and registered by name in the loader's c->upstreams, which
 * routes and filters resolve against. Part of the loader (config.c,
 * config_int.h); everything read lives in the generation's arena.
 */
#include "control/config_int.h"
#include "control/resolver.h"
#include "proxy/fetch.h"
#include "proxy/hash_ring.h"

#include <strings.h>

/* `resolve_every` below this would be a DNS flood, not discovery. */
#define PT_RESOLVE_EVERY_MIN_MS 100
#define PT_RESOLVE_EVERY_DEFAULT_MS 30000

static const char *const upstream_keys[] = {
    "targets", "balance",       "connect_timeout", "read_timeout",     "keepalive", "health_check",
    "hash_on", "resolve_every", "circuit_breaker", "failure_statuses", "retries",   "tls",
    NULL};
static const char *const upstream_planned[] = {"protocol", NULL};
static const char *const hc_keys[] = {"active", "passive", NULL};
static const char *const hc_active_keys[] = {"path",      "interval", "timeout", "healthy",
                                             "unhealthy", "host",     NULL};

/* active: { path, interval, timeout, healthy, unhealthy, host } */
static void walk_active(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    struct pt_health_active *hc = &u->hc;
    if (!pt_cfg_want_map(&c->w, n, "`active`"))
        return;
    const struct pt_ynode *a[6] = {0};
    pt_cfg_bind_keys(&c->w, n, hc_active_keys, NULL, "in health_check.active", a, NULL);
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
/* health_check: { active: {...}, passive: {...} }: either or both. */
static void walk_health_check(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    if (!pt_cfg_want_map(&c->w, n, "`health_check`"))
        return;
    const struct pt_ynode *v[2] = {0};
    pt_cfg_bind_keys(&c->w, n, hc_keys, NULL, "in health_check", v, NULL);
    if (v[0])
        walk_active(c, v[0], u);
    if (v[1])
        pt_cfg_walk_passive(c, v[1], u);
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
        else if (!pt_cfg_is_token(name))
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

enum target_kind { TARGET_BAD, TARGET_ADDRESS, TARGET_NAME };

/* A host name (not an IP literal, not `localhost`) and port in "host:port",
 * for a DNS target; false when `s` is anything else (an IP, or an address
 * pt_cfg_want_address explains the problem with). */
static bool host_name_target(const char *s, char *host, size_t hostlen, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (s[0] == '[' || !colon || memchr(s, ':', (size_t)(colon - s)) ||
        (size_t)(colon - s) >= hostlen)
        return false;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    uint64_t pn;
    if (!host[0] || pt_dns_is_ip_literal(host) || strcasecmp(host, "localhost") == 0 ||
        !pt_cfg_parse_u64(colon + 1, &pn) || pn < 1 || pn > 65535)
        return false;
    *port = (uint16_t)pn;
    return true;
}

static enum target_kind walk_target(struct cfg *c, const struct pt_ynode *item, struct pt_target *t,
                                    struct pt_dns_target *d)
{
    const struct pt_ynode *addr_node = item;
    uint64_t weight = 1;
    if (item->kind == PT_YMAP) {
        const struct pt_ynode *v[2] = {0};
        uint32_t refused = pt_cfg_bind_keys(&c->w, item, target_keys, NULL, "in target", v, NULL);
        if (!v[0]) {
            if (!refused)
                err_at(c, item, "target has no `address` (e.g. `address: 127.0.0.1:9001`)");
            return TARGET_BAD;
        }
        addr_node = v[0];
        if (v[1] && !pt_cfg_want_uint(&c->w, v[1], "`weight`", 1, 1000, &weight))
            return TARGET_BAD;
    } else if (item->kind != PT_YSCALAR || item->is_null) {
        char buf[64];
        err_at(c, item, "expected `host:port` or a mapping for each target, got %s",
               pt_cfg_describe(item, buf, sizeof(buf)));
        return TARGET_BAD;
    }
    const char *addr = pt_cfg_want_str(&c->w, addr_node, "the target address");
    if (!addr)
        return TARGET_BAD;
    char host[256];
    uint16_t port;
    if (host_name_target(addr, host, sizeof(host), &port)) {
        /* Resolved on the control thread, never here: validate needs no DNS. */
        if (!pt_dns_valid_name(host)) {
            err_at(c, addr_node,
                   "address `%s`: `%s` is neither an IP address nor a valid host name", addr, host);
            return TARGET_BAD;
        }
        d->written = dup_str(c, addr);
        d->host = dup_str(c, host);
        d->port = port;
        d->weight = (int)weight;
        return d->written && d->host ? TARGET_NAME : TARGET_BAD;
    }
    t->address = dup_str(c, addr);
    t->weight = (int)weight;
    return t->address && pt_cfg_want_address(&c->w, addr_node, addr, false, &t->addr, &t->addrlen)
               ? TARGET_ADDRESS
               : TARGET_BAD;
}

/* Adds a target per address of each host-name target's last good answer
 * (none yet: none), after the IP targets. An address already in the
 * upstream is left out: an answer never makes a config invalid. */
static void expand_dns(struct cfg *c, struct pt_upstream *u)
{
    uint32_t total = u->ntargets;
    const struct pt_dns_addr *v;
    for (uint32_t i = 0; i < u->ndns; i++)
        total += pt_resolver_lookup(c->dns, u->dns[i].host, &v);
    if (total == u->ntargets)
        return;
    struct pt_target *t = pt_arena_zalloc(c->a, sizeof(*t) * total);
    if (!t)
        return oom(c);
    if (u->ntargets)
        memcpy(t, u->targets, sizeof(*t) * u->ntargets);
    u->targets = t;
    for (uint32_t i = 0; i < u->ndns; i++) {
        struct pt_dns_target *d = &u->dns[i];
        uint32_t n = pt_resolver_lookup(c->dns, d->host, &v);
        for (uint32_t k = 0; k < n; k++) {
            struct pt_target *x = &t[u->ntargets];
            x->addrlen = pt_dns_sockaddr(&v[k], d->port, &x->addr);
            bool dup = false;
            for (uint32_t j = 0; j < u->ntargets && !dup; j++)
                dup = pt_cfg_same_addr(&t[j].addr, &x->addr);
            if (dup) {
                memset(x, 0, sizeof(*x));
                continue;
            }
            char text[64];
            pt_dns_format(&v[k], d->port, text, sizeof(text));
            x->address = dup_str(c, text);
            x->name = d->written;
            x->weight = d->weight;
            x->index = u->ntargets++;
            d->naddrs++;
        }
    }
}

/* `targets:`: IP targets as they are, host-name targets into u->dns and
 * then expanded from the resolver's answers. */
static void walk_targets(struct cfg *c, const struct pt_ynode *tn, struct pt_upstream *u)
{
    u->targets = pt_arena_zalloc(c->a, sizeof(*u->targets) * tn->n);
    u->dns = pt_arena_zalloc(c->a, sizeof(*u->dns) * tn->n);
    if (!u->targets || !u->dns)
        return oom(c);
    for (uint32_t i = 0; i < tn->n; i++) {
        struct pt_target *t = &u->targets[u->ntargets];
        struct pt_dns_target *d = &u->dns[u->ndns];
        enum target_kind k = walk_target(c, tn->items[i], t, d);
        bool dup = false;
        for (uint32_t j = 0; k == TARGET_ADDRESS && j < u->ntargets && !dup; j++)
            dup = pt_cfg_same_addr(&u->targets[j].addr, &t->addr);
        for (uint32_t j = 0; k == TARGET_NAME && j < u->ndns && !dup; j++)
            dup = strcasecmp(u->dns[j].written, d->written) == 0;
        if (dup) {
            err_at(c, tn->items[i],
                   "target `%s` is listed twice in upstream `%s` (raise its `weight` instead)",
                   k == TARGET_NAME ? d->written : t->address, u->name);
            continue;
        }
        if (k == TARGET_ADDRESS)
            t->index = u->ntargets++;
        else if (k == TARGET_NAME)
            u->ndns++;
    }
    expand_dns(c, u);
}

static void walk_upstream(struct cfg *c, const struct pt_ynode *key, const struct pt_ynode *n,
                          struct pt_upstream *u)
{
    u->connect_timeout_ms = 1000;
    u->read_timeout_ms = 30000;
    u->keepalive = 64;
    u->balance = PT_BALANCE_ROUND_ROBIN;
    u->resolve_every_ms = PT_RESOLVE_EVERY_DEFAULT_MS;
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
    const struct pt_ynode *v[12] = {0};
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
            walk_targets(c, tn, u);
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
    if (v[7] && pt_cfg_want_duration(&c->w, v[7], "`resolve_every`", true, &u->resolve_every_ms) &&
        u->resolve_every_ms < PT_RESOLVE_EVERY_MIN_MS)
        err_at(c, v[7], "`resolve_every` must be at least %dms", PT_RESOLVE_EVERY_MIN_MS);
    if (v[8])
        pt_cfg_walk_breaker(c, v[8], u);
    if (v[9])
        pt_cfg_walk_failure_statuses(c, v[9], u);
    if (v[10])
        pt_cfg_walk_retries(c, v[10], u);
    if (v[11])
        u->tls = pt_cfg_walk_upstream_tls(c, v[11]);
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

/* ---- DNS servers and URL authorities ---- */

void pt_cfg_walk_resolver(struct cfg *c, const struct pt_ynode *n)
{
    struct pt_strlist list;
    if (!pt_cfg_want_strlist(&c->w, n, "`resolver`", &list))
        return;
    if (list.n == 0) {
        err_at(c, n,
               "`resolver` is empty: list DNS servers (`[127.0.0.1:53]`) or leave it out "
               "to use /etc/resolv.conf");
        return;
    }
    size_t cap = (size_t)list.n * 64 + 1, k = 0;
    char *csv = pt_arena_alloc(c->a, cap);
    if (!csv)
        return oom(c);
    csv[0] = 0;
    for (uint32_t i = 0; i < list.n; i++) {
        const struct pt_ynode *at = n->kind == PT_YSEQ ? n->items[i] : n;
        char one[64];
        const char *why = NULL;
        if (pt_dns_server_entry(list.v[i], one, sizeof(one), &why) < 0) {
            err_at(c, at, "`resolver`: `%s`: %s", list.v[i], why);
            continue;
        }
        k += (size_t)snprintf(csv + k, cap - k, "%s%s", k ? "," : "", one);
    }
    c->g->resolver = csv;
}

static void url_upstream_defaults(struct pt_upstream *u)
{
    memset(u, 0, sizeof(*u));
    u->connect_timeout_ms = 1000;
    u->read_timeout_ms = 30000;
    u->keepalive = 16;
    u->retry.attempts = 1;
    u->resolve_every_ms = PT_RESOLVE_EVERY_DEFAULT_MS;
    for (int st = 502; st <= 504; st++)
        pt_status_add(&u->failure_statuses, st);
}

/* A URL upstream slot in c->urls (grown as needed), set to the defaults. */
static struct pt_upstream *url_slot(struct cfg *c)
{
    if (c->nurls == c->capurls) {
        uint32_t cap = c->capurls ? c->capurls * 2 : 4;
        struct pt_upstream *v = realloc(c->urls, cap * sizeof(*v));
        if (v)
            c->urls = v;
        const char **cas = v ? realloc(c->urls_ca, cap * sizeof(*cas)) : NULL;
        if (!cas) {
            oom(c);
            return NULL;
        }
        c->urls_ca = cas;
        c->capurls = cap;
    }
    struct pt_upstream *u = &c->urls[c->nurls];
    url_upstream_defaults(u);
    return u;
}

/* An https:// URL with an IP literal (or localhost): a one-target URL
 * upstream all the same, for its TLS setting. */
static bool url_fixed_target(struct cfg *c, const char *url, const char *host,
                             struct pt_upstream *u)
{
    struct pt_target *t = pt_arena_zalloc(c->a, sizeof(*t));
    pt_slice path, query;
    if (!t) {
        oom(c);
        return false;
    }
    if (pt_fetch_parse_url(url, c->a, t, &path, &query) < 0)
        return false;
    if (strcmp(host, "localhost") == 0)
        t->name = t->address; /* SNI and the certificate's name: localhost */
    u->targets = t;
    u->ntargets = 1;
    return true;
}

bool pt_cfg_register_url(struct cfg *c, const struct pt_ynode *n, const char *url,
                         const struct pt_ynode *ca_at)
{
    char host[256];
    uint16_t port;
    pt_slice auth, path, query;
    if (pt_fetch_split_url(url, host, sizeof(host), &port, &auth, &path, &query) < 0) {
        err_at(c, n, "`%s` is not an http:// or https:// URL with a host (and an optional port)",
               url);
        return false;
    }
    bool https = pt_fetch_url_https(url);
    if (ca_at && !https) {
        err_at(c, ca_at, "`tls_ca` is for an https:// URL; `%s` is plain http", url);
        return false;
    }
    bool direct = pt_dns_is_ip_literal(host) || strcmp(host, "localhost") == 0;
    if (direct && !https)
        return true; /* reached directly */
    if (!direct && !pt_dns_valid_name(host)) {
        err_at(c, n, "URL `%s`: `%s` is neither an IP address nor a valid host name", url, host);
        return false;
    }
    const char *ca = ca_at ? ca_at->str : NULL;
    for (uint32_t i = 0; i < c->nurls; i++) {
        if (!pt_fetch_url_name_eq(c->urls[i].name, https, auth))
            continue;
        const char *had = c->urls[i].tls ? c->urls_ca[i] : NULL;
        if (https && (had ? !ca || strcmp(had, ca) != 0 : ca != NULL)) {
            err_at(c, ca_at ? ca_at : n,
                   "URL `%s`: https://%.*s is used elsewhere with another `tls_ca`: one CA per "
                   "authority",
                   url, (int)auth.len, auth.p);
            return false;
        }
        return true;
    }
    struct pt_upstream *u = url_slot(c);
    if (!u)
        return false;
    u->name = https ? pt_arena_sprintf(c->a, "https://%.*s", (int)auth.len, auth.p)
                    : pt_arena_strndup(c->a, auth.p, auth.len);
    if (!u->name) {
        oom(c);
        return false;
    }
    if (https && !(u->tls = pt_cfg_url_tls(c, n, ca_at)))
        return false;
    if (direct) {
        if (!url_fixed_target(c, url, host, u))
            return false;
    } else {
        struct pt_dns_target *d = pt_arena_zalloc(c->a, sizeof(*d));
        if (!d) {
            oom(c);
            return false;
        }
        d->written = pt_arena_strndup(c->a, auth.p, auth.len);
        d->host = dup_str(c, host);
        d->port = port;
        d->weight = 1;
        u->dns = d;
        u->ndns = 1;
        if (!d->written || !d->host)
            return false;
    }
    c->urls_ca[c->nurls] = ca;
    u->index = c->nurls++;
    return true;
}

void pt_cfg_build_url_upstreams(struct cfg *c)
{
    if (!c->nurls)
        return;
    struct pt_generation *g = c->g;
    g->url_upstreams = pt_arena_zalloc(c->a, sizeof(*g->url_upstreams) * c->nurls);
    if (!g->url_upstreams)
        return oom(c);
    memcpy(g->url_upstreams, c->urls, sizeof(*c->urls) * c->nurls);
    g->nurl_upstreams = c->nurls;
    for (uint32_t i = 0; i < c->nurls; i++)
        expand_dns(c, &g->url_upstreams[i]);
}
