/*
 * lint.c — see lint.h. The rules, one function each, in the order
 * docs/operations.md lists them; each comment states its exact trigger.
 *
 * Every rule reads the YAML tree the loader itself reads (config_yaml.h),
 * after the loader has accepted the file: values are known to be well
 * formed, and the tree has the positions the warnings point at. A route's
 * *effective* filter is its own `filters:` entry for that name, else the
 * top-level default of the same name; `name: off` on the route removes it
 * (the loader's rule, config_routes.c).
 *
 * Ownership: nothing outlives a call; messages go through the loader's
 * error collector (sorted by position, prefixed with the file name) into
 * the caller's pt_diag.
 */
#include "control/lint.h"

#include "control/config_yaml.h"
#include "core/units.h"

#include <stdlib.h>
#include <strings.h>

#define RULE_DEFAULT_OFF "default-filter-mostly-off"
#define RULE_BODY "body-transform-without-limit"
#define RULE_VERSION "unversioned-path"
#define RULE_SINGLE_TARGET "single-target-without-health-check"
#define RULE_TIMEOUT "long-timeout-without-retries"
#define RULE_AUTH "unauthenticated-sibling"
#define RULE_TRANSFORMS "too-many-transforms"
#define RULE_CACHE_OBJECT "cache-object-above-shard-budget"

/* A route timeout above this, with no retries, is flagged. */
#define LINT_LONG_TIMEOUT_MS 60000
/* More transforms than this on one route are flagged. */
#define LINT_MAX_TRANSFORMS 3

/* Filters that establish who the caller is. */
static const char *const auth_filters[] = {"jwt",           "key_auth",  "ext_auth",
                                           "introspection", "mtls_auth", NULL};
static const char *const transform_filters[] = {"request_transform", "response_transform", NULL};
/* Body rules as CONFIG.md names them. */
static const char *const body_keys[] = {"rename_body_fields", "remove_body_fields",
                                        "add_body_fields", NULL};
/* What counts as one transform: each of these keys with at least one
 * entry, in a route's effective request_transform or response_transform. */
static const char *const transform_ops[] = {
    "remove_headers",     "rename_headers",     "set_headers",     "add_headers",
    "rename_body_fields", "remove_body_fields", "add_body_fields", NULL};

struct lint {
    const struct pt_ynode *root;
    const struct pt_ynode *defaults;  /* top-level `filters:` (a mapping) or NULL */
    const struct pt_ynode *routes;    /* `routes:` (a sequence) or NULL */
    const struct pt_ynode *upstreams; /* `upstreams:` (a mapping) or NULL */
    struct pt_cfg_errors out;
};

__attribute__((format(printf, 4, 5))) static void warn(struct lint *l, const struct pt_ynode *at,
                                                       const char *rule, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pt_cfg_error_add(&l->out, at ? at->line : 0, at ? at->col : 0, "warning: %s [%s]", msg, rule);
}

/* ---- reading the tree ---- */

static const char *scalar(const struct pt_ynode *n)
{
    return n && n->kind == PT_YSCALAR && !n->is_null ? n->str : NULL;
}

static bool is_off(const struct pt_ynode *n)
{
    const char *s = scalar(n);
    return s && strcmp(s, "off") == 0;
}

/* The key node of `key` in mapping `map`, or NULL. */
static const struct pt_ynode *key_of(const struct pt_ynode *map, const char *key)
{
    if (!map || map->kind != PT_YMAP)
        return NULL;
    for (uint32_t i = 0; i < map->n; i++)
        if (strcmp(map->pairs[i].key->str, key) == 0)
            return map->pairs[i].key;
    return NULL;
}

/* A value with at least one entry: a non-empty list or mapping, or a
 * scalar (`remove_headers: Server`). */
static bool non_empty(const struct pt_ynode *n)
{
    if (!n)
        return false;
    if (n->kind == PT_YSCALAR)
        return !n->is_null;
    return n->n > 0;
}

static const char *route_name(const struct pt_ynode *route, uint32_t i, char *buf, size_t len)
{
    const char *s = scalar(pt_ynode_get(route, "name"));
    if (s)
        return s;
    snprintf(buf, len, "#%u", i + 1); /* the loader's name for it is not in the tree */
    return buf;
}

/* Where a warning about a route as a whole points: its name, else the
 * route's mapping. */
static const struct pt_ynode *route_at(const struct pt_ynode *route)
{
    const struct pt_ynode *n = pt_ynode_get(route, "name");
    return n ? n : route;
}

static const struct pt_ynode *route_item(const struct lint *l, uint32_t i)
{
    const struct pt_ynode *r = l->routes->items[i];
    return r->kind == PT_YMAP ? r : NULL;
}

static uint32_t nroutes(const struct lint *l)
{
    return l->routes ? l->routes->n : 0;
}

/* The route's written path: `path_prefix`, `path` or `path_template`;
 * NULL with `path_regex` (not a path to compare) or no path at all. */
static const struct pt_ynode *route_path(const struct pt_ynode *route)
{
    const struct pt_ynode *m = pt_ynode_get(route, "match");
    static const char *const forms[] = {"path_prefix", "path", "path_template"};
    for (size_t i = 0; i < PT_ARRAY_LEN(forms); i++) {
        const struct pt_ynode *p = pt_ynode_get(m, forms[i]);
        if (scalar(p))
            return p;
    }
    return NULL;
}

/* The route's effective config of filter `name` (see the top): NULL when
 * it has none or switches it off; *inherited says it is the default. */
static const struct pt_ynode *route_filter(const struct lint *l, const struct pt_ynode *route,
                                           const char *name, bool *inherited)
{
    const struct pt_ynode *own = pt_ynode_get(pt_ynode_get(route, "filters"), name);
    *inherited = false;
    if (own)
        return is_off(own) ? NULL : own;
    const struct pt_ynode *def = pt_ynode_get(l->defaults, name);
    if (!def || is_off(def))
        return NULL;
    *inherited = true;
    return def;
}

/* The first effective auth filter of a route, or NULL. */
static const char *route_auth(const struct lint *l, const struct pt_ynode *route)
{
    bool inh;
    for (const char *const *f = auth_filters; *f; f++)
        if (route_filter(l, route, *f, &inh))
            return *f;
    return NULL;
}

/* ---- paths ---- */

/* `v` and one or more digits: v1, v2, v10. */
static bool is_version_segment(const char *s, size_t n)
{
    if (n < 2 || s[0] != 'v')
        return false;
    for (size_t i = 1; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return false;
    return true;
}

/* The next segment of `*p` ('/'-separated) in s/n; false at the end. */
static bool next_segment(const char **p, const char **s, size_t *n)
{
    while (**p == '/')
        (*p)++;
    if (!**p)
        return false;
    *s = *p;
    while (**p && **p != '/')
        (*p)++;
    *n = (size_t)(*p - *s);
    return true;
}

/* Whether any segment is a version segment: `/v<digits>/` anywhere, or
 * the path ending in `/v<digits>`. */
static bool has_version(const char *path)
{
    const char *p = path, *s;
    size_t n;
    while (next_segment(&p, &s, &n))
        if (is_version_segment(s, n))
            return true;
    return false;
}

/* The segment that groups a route with its siblings: the first path
 * segment, or the second when the first is a version segment and there
 * is one (/v1/users → users). None (false) for `/`, or when it is a
 * template parameter. */
static bool group_segment(const char *path, const char **seg, size_t *len)
{
    const char *p = path, *s, *s2;
    size_t n, n2;
    if (!next_segment(&p, &s, &n))
        return false;
    if (is_version_segment(s, n) && next_segment(&p, &s2, &n2)) {
        s = s2;
        n = n2;
    }
    if (memchr(s, '{', n))
        return false;
    *seg = s;
    *len = n;
    return true;
}

/* Whether two routes can see the same host: either has no `hosts`, or
 * they share one as written (case-insensitive). */
static bool hosts_overlap(const struct pt_ynode *a, const struct pt_ynode *b)
{
    const struct pt_ynode *ha = pt_ynode_get(pt_ynode_get(a, "match"), "hosts");
    const struct pt_ynode *hb = pt_ynode_get(pt_ynode_get(b, "match"), "hosts");
    if (!non_empty(ha) || !non_empty(hb))
        return true;
    uint32_t na = ha->kind == PT_YSEQ ? ha->n : 1, nb = hb->kind == PT_YSEQ ? hb->n : 1;
    for (uint32_t i = 0; i < na; i++) {
        const char *x = scalar(ha->kind == PT_YSEQ ? ha->items[i] : ha);
        for (uint32_t j = 0; x && j < nb; j++) {
            const char *y = scalar(hb->kind == PT_YSEQ ? hb->items[j] : hb);
            if (y && strcasecmp(x, y) == 0)
                return true;
        }
    }
    return false;
}

/* ---- the rules ---- */

/*
 * default-filter-mostly-off: a filter in top-level `filters:` that is
 * switched off (`name: off`) on at least half of all routes. The warning
 * is at the filter's key in top-level `filters:`.
 */
static void rule_default_off(struct lint *l)
{
    uint32_t total = nroutes(l);
    if (!l->defaults || l->defaults->kind != PT_YMAP || total == 0)
        return;
    for (uint32_t k = 0; k < l->defaults->n; k++) {
        const struct pt_ynode *key = l->defaults->pairs[k].key;
        uint32_t off = 0;
        for (uint32_t i = 0; i < total; i++) {
            const struct pt_ynode *r = route_item(l, i);
            off += r && is_off(pt_ynode_get(pt_ynode_get(r, "filters"), key->str));
        }
        if (off * 2 >= total)
            warn(l, key, RULE_DEFAULT_OFF,
                 "`%s` is a default for every route but %u of %u routes switch it off: set it "
                 "on the routes that use it instead",
                 key->str, off, total);
    }
}

/*
 * body-transform-without-limit: a route whose effective request_transform
 * or response_transform has a body rule (rename_body_fields,
 * remove_body_fields, add_body_fields) while the route has no
 * `max_body_bytes`. At the body rule's key when the route has the
 * transform itself, else at the route's name.
 */
static void rule_body_limit(struct lint *l, const struct pt_ynode *route, const char *name)
{
    if (pt_ynode_get(route, "max_body_bytes"))
        return;
    for (const char *const *t = transform_filters; *t; t++) {
        bool inherited;
        const struct pt_ynode *conf = route_filter(l, route, *t, &inherited);
        for (const char *const *b = body_keys; conf && *b; b++) {
            if (!pt_ynode_get(conf, *b))
                continue;
            warn(l, inherited ? route_at(route) : key_of(conf, *b), RULE_BODY,
                 "route `%s`: %s%s `%s` rewrites bodies, and the route has no `max_body_bytes`: "
                 "JSON bodies up to `max_transform_bytes` are buffered and longer ones pass "
                 "unchanged; set a bound on the route so that they are refused (413) instead",
                 name, inherited ? "the default " : "", *t, *b);
            break;
        }
    }
}

/* A route's API path for unversioned-path: `path_prefix` or
 * `path_template`. An exact `path:` is one endpoint (a health check, a
 * well-known file) rather than an API surface, and is left out. */
static const struct pt_ynode *api_path(const struct pt_ynode *route)
{
    const struct pt_ynode *m = pt_ynode_get(route, "match");
    const struct pt_ynode *p = pt_ynode_get(m, "path_prefix");
    if (scalar(p))
        return p;
    p = pt_ynode_get(m, "path_template");
    return scalar(p) ? p : NULL;
}

/*
 * unversioned-path: a route whose `path_prefix` or `path_template` has no
 * version segment while another route with the same `upstream:` has one
 * in its `path_prefix` or `path_template`. Exact `path:` and `path_regex`
 * routes, and routes with `split` (no `upstream:`), are not compared. At
 * the unversioned path. Departures from the issue's `/v<digits>/` wording
 * (a trailing `/v1` counts; exact paths are single endpoints such as
 * /healthz, not an API surface) are documented beside the rule in
 * docs/operations.md.
 */
static void rule_version(struct lint *l, uint32_t i, const struct pt_ynode *route, const char *name)
{
    const struct pt_ynode *path = api_path(route);
    const char *up = scalar(pt_ynode_get(route, "upstream"));
    if (!path || !up || has_version(path->str))
        return;
    for (uint32_t j = 0; j < nroutes(l); j++) {
        const struct pt_ynode *other = route_item(l, j);
        const struct pt_ynode *op = other && j != i ? api_path(other) : NULL;
        const char *oup = op ? scalar(pt_ynode_get(other, "upstream")) : NULL;
        if (!oup || strcmp(oup, up) != 0 || !has_version(op->str))
            continue;
        char buf[16];
        warn(l, path, RULE_VERSION,
             "route `%s`: `%s` has no version segment (`/v<digits>`), but route `%s` (line %d) "
             "to the same upstream `%s` has one (`%s`): version every path of an API, or none",
             name, path->str, route_name(other, j, buf, sizeof(buf)), op->line, up, op->str);
        return;
    }
}

/*
 * single-target-without-health-check: an upstream whose `targets` lists
 * exactly one target (as written: a host name counts once) and that has
 * no `health_check.active`. At the upstream's name.
 */
static void rule_single_target(struct lint *l)
{
    if (!l->upstreams || l->upstreams->kind != PT_YMAP)
        return;
    for (uint32_t i = 0; i < l->upstreams->n; i++) {
        const struct pt_ypair *p = &l->upstreams->pairs[i];
        const struct pt_ynode *t = pt_ynode_get(p->value, "targets");
        uint32_t n = !t ? 0 : t->kind == PT_YSEQ ? t->n : 1;
        if (n != 1 || pt_ynode_get(pt_ynode_get(p->value, "health_check"), "active"))
            continue;
        warn(l, p->key, RULE_SINGLE_TARGET,
             "upstream `%s` has a single target and no active health check: nothing notices it "
             "is down before requests fail; add a target or `health_check: { active: {...} }`",
             p->key->str);
    }
}

/* The upstream's `retries.attempts` as written; 1 (no retry) when absent. */
static uint64_t upstream_attempts(const struct lint *l, const char *up)
{
    const struct pt_ynode *u = pt_ynode_get(l->upstreams, up);
    const char *s = scalar(pt_ynode_get(pt_ynode_get(u, "retries"), "attempts"));
    uint64_t n;
    return s && pt_cfg_parse_u64(s, &n) ? n : 1;
}

/* Whether a duration as written is above LINT_LONG_TIMEOUT_MS (a value
 * the lint cannot read, such as a `${ENV}` reference, is not). */
static bool long_duration(const struct pt_ynode *n)
{
    uint64_t ms;
    return scalar(n) && pt_parse_duration_ms(n->str, &ms) == 0 && ms > LINT_LONG_TIMEOUT_MS;
}

/* long-timeout-without-retries for one upstream `up` of a route (`at`:
 * where the route names it). */
static void timeout_side(struct lint *l, const struct pt_ynode *route, const char *name,
                         const struct pt_ynode *at)
{
    const char *up = at->str;
    if (upstream_attempts(l, up) > 1)
        return;
    const struct pt_ynode *t = pt_ynode_get(route, "timeout");
    if (scalar(t)) {
        if (long_duration(t))
            warn(l, t, RULE_TIMEOUT,
                 "route `%s`: `timeout: %s` is above 60s and upstream `%s` has no `retries`: one "
                 "stuck call holds its client that long; add `retries` (with `per_try_timeout`) "
                 "to the upstream or shorten the timeout",
                 name, t->str, up);
        return;
    }
    const struct pt_ynode *rt = pt_ynode_get(pt_ynode_get(l->upstreams, up), "read_timeout");
    if (long_duration(rt))
        warn(l, at, RULE_TIMEOUT,
             "route `%s` has no `timeout` and inherits upstream `%s`'s `read_timeout: %s` (line "
             "%d), above 60s, and the upstream has no `retries`: one stuck call holds its client "
             "that long; add `retries` to the upstream, or a shorter `timeout` to the route",
             name, up, rt->str, rt->line);
}

/*
 * long-timeout-without-retries: a route whose timeout in force is above
 * 60s — its own `timeout`, or with none the `read_timeout` of the
 * upstream it inherits — while that upstream has no retries
 * (`retries.attempts` absent or ≤ 1; retries are configured on the
 * upstream). A split route is checked for each side's upstream. At the
 * route's `timeout` value, or where the route names the upstream whose
 * `read_timeout` it inherits.
 */
static void rule_timeout(struct lint *l, const struct pt_ynode *route, const char *name)
{
    const struct pt_ynode *up = pt_ynode_get(route, "upstream");
    if (scalar(up)) {
        timeout_side(l, route, name, up);
        return;
    }
    const struct pt_ynode *split = pt_ynode_get(route, "split");
    for (uint32_t i = 0; split && split->kind == PT_YSEQ && i < split->n; i++) {
        const struct pt_ynode *side = pt_ynode_get(split->items[i], "upstream");
        if (scalar(side))
            timeout_side(l, route, name, side);
    }
}

/*
 * unauthenticated-sibling: a route with no effective auth filter (jwt,
 * key_auth, ext_auth, introspection, mtls_auth) whose group segment (the
 * first path segment, or the second after a leading version segment)
 * equals that of a route that has one, when the two can see the same host
 * (either has no `hosts`, or they share one). At the unauthenticated
 * route's path. A catch-all `/` has no group segment and is never
 * compared: every route shares the prefix `/` (docs/operations.md says
 * why this departs from the "shares a prefix").
 */
static void rule_auth(struct lint *l, uint32_t i, const struct pt_ynode *route, const char *name)
{
    const struct pt_ynode *path = route_path(route);
    const char *seg, *oseg;
    size_t len, olen;
    if (!path || !group_segment(path->str, &seg, &len) || route_auth(l, route))
        return;
    for (uint32_t j = 0; j < nroutes(l); j++) {
        const struct pt_ynode *other = route_item(l, j);
        const struct pt_ynode *op = other && j != i ? route_path(other) : NULL;
        if (!op || !group_segment(op->str, &oseg, &olen) || olen != len ||
            memcmp(seg, oseg, len) != 0 || !hosts_overlap(route, other))
            continue;
        const char *auth = route_auth(l, other);
        if (!auth)
            continue;
        char buf[16];
        warn(l, path, RULE_AUTH,
             "route `%s` (`%s`) has no auth filter, but route `%s` (line %d) under the same "
             "`/%.*s` has `%s`: make sure this one is meant to be open, or move it out from "
             "under `/%.*s`",
             name, path->str, route_name(other, j, buf, sizeof(buf)), op->line, (int)len, seg, auth,
             (int)len, seg);
        return;
    }
}

/*
 * too-many-transforms: more than 3 transforms on one route, where one
 * transform is one key of the route's effective request_transform or
 * response_transform among remove_headers, rename_headers, set_headers,
 * add_headers, rename_body_fields, remove_body_fields and add_body_fields,
 * with at least one entry. At the route's name.
 */
static void rule_transforms(struct lint *l, const struct pt_ynode *route, const char *name)
{
    uint32_t n = 0;
    char list[256] = "";
    size_t k = 0;
    for (const char *const *t = transform_filters; *t; t++) {
        bool inherited;
        const struct pt_ynode *conf = route_filter(l, route, *t, &inherited);
        for (const char *const *op = transform_ops; conf && *op; op++) {
            if (!non_empty(pt_ynode_get(conf, *op)))
                continue;
            n++;
            if (k < sizeof(list))
                k += (size_t)snprintf(list + k, sizeof(list) - k, "%s%s.%s", n > 1 ? ", " : "", *t,
                                      *op);
        }
    }
    if (n > LINT_MAX_TRANSFORMS)
        warn(l, route_at(route), RULE_TRANSFORMS,
             "route `%s` has %u transforms (%s): more than %d is business logic in the gateway; "
             "move it into the service",
             name, n, list, LINT_MAX_TRANSFORMS);
}

/*
 * cache-object-above-shard-budget: a route whose effective `cache` has a
 * `max_object_bytes` (default 1MiB) above one shard's budget of
 * `cache_store` (max_bytes / shards; defaults 256MiB / 64): a body between
 * the two is fetched for storing and then never stored. At the
 * `max_object_bytes` value when the route sets it, else at the route's
 * name. A value the lint cannot read does not trigger.
 */
static void rule_cache_object(struct lint *l, const struct pt_ynode *route, const char *name)
{
    bool inherited;
    const struct pt_ynode *conf = route_filter(l, route, "cache", &inherited);
    if (!conf)
        return;
    const struct pt_ynode *mo = pt_ynode_get(conf, "max_object_bytes");
    const struct pt_ynode *store = pt_ynode_get(l->root, "cache_store");
    const struct pt_ynode *mb = pt_ynode_get(store, "max_bytes");
    const struct pt_ynode *sh = pt_ynode_get(store, "shards");
    uint64_t obj = 1u << 20, max = 256ull << 20, shards = 64;
    if ((mo && (!scalar(mo) || pt_parse_size(scalar(mo), &obj) < 0)) ||
        (mb && (!scalar(mb) || pt_parse_size(scalar(mb), &max) < 0)))
        return;
    if (sh) {
        char *end = NULL;
        shards = scalar(sh) ? strtoull(scalar(sh), &end, 10) : 0;
        if (!end || *end || shards == 0)
            return;
    }
    if (obj == 0)
        obj = 1u << 20;
    uint64_t budget = max / shards;
    if (obj <= budget)
        return;
    warn(l, mo && !inherited ? mo : route_at(route), RULE_CACHE_OBJECT,
         "route `%s`: cache `max_object_bytes` (%llu) is above one cache_store shard's budget "
         "(max_bytes / shards = %llu): bodies between the two are never stored; raise "
         "`cache_store.max_bytes` or lower `shards`",
         name, (unsigned long long)obj, (unsigned long long)budget);
}

/* ---- entry points ---- */

size_t pt_lint_tree(const char *file, const struct pt_ynode *root, struct pt_diag *out)
{
    struct lint l = {0};
    if (!root || root->kind != PT_YMAP)
        return 0;
    l.root = root;
    l.defaults = pt_ynode_get(root, "filters");
    l.routes = pt_ynode_get(root, "routes");
    l.upstreams = pt_ynode_get(root, "upstreams");
    if (l.routes && l.routes->kind != PT_YSEQ)
        l.routes = NULL;
    rule_default_off(&l);
    rule_single_target(&l);
    for (uint32_t i = 0; i < nroutes(&l); i++) {
        const struct pt_ynode *route = route_item(&l, i);
        if (!route)
            continue;
        char buf[16];
        const char *name = route_name(route, i, buf, sizeof(buf));
        rule_body_limit(&l, route, name);
        rule_version(&l, i, route, name);
        rule_timeout(&l, route, name);
        rule_auth(&l, i, route, name);
        rule_transforms(&l, route, name);
        rule_cache_object(&l, route, name);
    }
    size_t before = out->n;
    pt_cfg_errors_flush(&l.out, file, out);
    pt_cfg_errors_free(&l.out);
    return out->n - before;
}

int pt_lint_main(const char *path, bool strict, FILE *out, FILE *err)
{
    struct pt_diag diag;
    pt_diag_init(&diag);
    struct pt_generation *g = pt_config_load(path, 1, &diag);
    if (!g) {
        pt_diag_print(&diag, err);
        pt_diag_free(&diag);
        return 1;
    }
    /* The loader's tree is gone with the load: parse its text again (the
     * same text, so the same tree and positions). */
    struct pt_ydoc doc = {0};
    struct pt_cfg_errors perr = {0};
    int rc = pt_ydoc_parse(&doc, path, g->source_text, g->source_len, &perr);
    pt_cfg_errors_free(&perr);
    size_t n = rc == 0 ? pt_lint_tree(path, doc.root, &diag) : 0;
    pt_ydoc_free(&doc);
    pt_generation_free(g);
    pt_diag_print(&diag, err);
    pt_diag_free(&diag);
    if (rc != 0) {
        fprintf(err, "%s: cannot read the file again to lint it\n", path);
        return 1;
    }
    if (n == 0)
        fprintf(out, "%s: ok, no warnings\n", path);
    else
        fprintf(out, "%s: %zu warning%s%s\n", path, n, n > 1 ? "s" : "",
                strict ? " (--strict: failing)" : "");
    return strict && n ? 1 : 0;
}
