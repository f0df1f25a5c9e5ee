/*
 * config.c — the config loader: portico.yaml → an immutable generation
 * (DESIGN.md §3, CONFIG.md), plus the diagnostics list `portico validate`
 * prints.
 *
 * Flow: read the file → node tree with positions (config_yaml.c) → walk it
 * with the schema below, filling a generation in its own arena → compile
 * regexes, filter configs and per-route chains → build the router. Every
 * problem is collected with its line:col, none stops the walk, and they
 * are printed in file order at the end; a file with any error yields no
 * generation, so a half-valid config can never start serving.
 *
 * The schema is strict on purpose. An unknown key is an error (with a
 * "did you mean" when one is close), and so is a key CONFIG.md reserves
 * for a feature this build does not have yet: a setting that is accepted
 * but not enforced is worse than one that is refused.
 *
 * This file has the entry point, the root and the small sections
 * (workers, listeners, admin, limits, access log) and the helpers every
 * section shares (config_int.h); the larger sections have their own files:
 * config_upstreams.c, config_filters.c (filter blocks, field tables,
 * compile hooks) and config_routes.c (match rules, rewrites, chains).
 *
 * Ownership: the generation and everything in it live in g->arena (PCRE2
 * codes are tracked in g->regexes and freed by pt_generation_free). The
 * node tree and the error list are temporary and freed before returning.
 */
#include "control/config_int.h"
#include "gateway/router.h"
#include "http/path.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* A config file is hand-written text; anything bigger is a mistake
 * (wrong file) and would only make the error list useless. */
#define MAX_CONFIG_BYTES (16u << 20)

#define DEFAULT_ADMIN_ADDRESS "127.0.0.1:9901"

/* Top-level sections. */
static void walk_root(struct cfg *c, const struct pt_ynode *root);
static void walk_workers(struct cfg *c, const struct pt_ynode *n);
static void walk_io_backend(struct cfg *c, const struct pt_ynode *n);
static void walk_listeners(struct cfg *c, const struct pt_ynode *n);
static void walk_admin(struct cfg *c, const struct pt_ynode *n);
static void walk_limits(struct cfg *c, const struct pt_ynode *n);
static void walk_rl_store(struct cfg *c, const struct pt_ynode *n);
static void walk_cache_store(struct cfg *c, const struct pt_ynode *n);
static void walk_metrics(struct cfg *c, const struct pt_ynode *n);
static void walk_access_log(struct cfg *c, const struct pt_ynode *n);
static void walk_error_log(struct cfg *c, const struct pt_ynode *level,
                           const struct pt_ynode *format, const struct pt_ynode *path);
static void check_address_conflicts(struct cfg *c, const struct pt_ynode *admin);

/* Helpers. */

/* ---- diagnostics ---- */

void pt_diag_init(struct pt_diag *d)
{
    d->lines = NULL;
    d->n = d->cap = 0;
}

void pt_diag_add(struct pt_diag *d, const char *file, int line, int col, const char *fmt, ...)
{
    char *msg = NULL, *full = NULL;
    va_list ap;
    va_start(ap, fmt);
    int r = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (r < 0)
        return;
    if (line > 0 && col > 0)
        r = asprintf(&full, "%s:%d:%d: %s", file, line, col, msg);
    else if (line > 0)
        r = asprintf(&full, "%s:%d: %s", file, line, msg);
    else
        r = asprintf(&full, "%s: %s", file, msg);
    free(msg);
    if (r < 0)
        return;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 8;
        char **lines = realloc(d->lines, cap * sizeof(*lines));
        if (!lines) {
            free(full);
            return;
        }
        d->lines = lines;
        d->cap = cap;
    }
    d->lines[d->n++] = full;
}

void pt_diag_print(const struct pt_diag *d, FILE *out)
{
    for (size_t i = 0; i < d->n; i++)
        fprintf(out, "%s\n", d->lines[i]);
}

void pt_diag_free(struct pt_diag *d)
{
    for (size_t i = 0; i < d->n; i++)
        free(d->lines[i]);
    free(d->lines);
    pt_diag_init(d);
}

/* ---- loading ---- */

static void set_defaults(struct pt_generation *g)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    g->workers = cpus > 0 ? (int)cpus : 1;
    g->limits = (struct pt_limits){
        .max_header_bytes = 16u << 10,
        .max_headers = 100,
        .max_body_bytes = 8u << 20,
        .normalize_path = true,
        .merge_slashes = true,
        .escaped_slashes = PT_ESC_REJECT,
        .semicolons = PT_SEMI_REJECT,
        .max_uri_bytes = 8u << 10,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .max_connections = 20000,
        .drain_timeout_ms = 30000,
        .min_body_rate = 1024,
        .body_rate_window_ms = 10000,
    };
    g->access_log.mode = PT_ALOG_STDOUT;
    g->log = (struct pt_log_cfg){.level = PT_LOG_INFO, .format = PT_LOG_TEXT, .error_log = NULL};
    g->metrics_enabled = true;
    g->rl_max_keys = PT_RL_DEFAULT_MAX_KEYS;
    g->cache_max_bytes = PT_CACHE_DEFAULT_MAX_BYTES;
    g->cache_shards = PT_CACHE_DEFAULT_SHARDS;
}

struct pt_generation *pt_config_load(const char *path, uint64_t id, struct pt_diag *diag)
{
    return pt_config_load_with(path, NULL, 0, NULL, id, diag);
}

struct pt_generation *pt_config_load_with(const char *path, const char *source, size_t source_len,
                                          const struct pt_resolver *dns, uint64_t id,
                                          struct pt_diag *diag)
{
    struct pt_config_src src = {.path = path, .text = source, .len = source_len};
    return pt_config_load_src(&src, dns, id, diag);
}

struct pt_generation *pt_config_load_src(const struct pt_config_src *src,
                                         const struct pt_resolver *dns, uint64_t id,
                                         struct pt_diag *diag)
{
    const char *path = src->path, *source = src->text;
    size_t source_len = src->len;
    struct pt_generation *g = NULL;
    struct pt_ydoc doc = {0};
    bool have_doc = false;
    char *text = NULL;
    size_t len = 0;
    struct cfg c = {.file = path, .dns = dns, .src = src};
    char err[512];

    if (source) {
        text = malloc(source_len + 1);
        if (text) {
            memcpy(text, source, source_len);
            text[source_len] = 0;
            len = source_len;
        } else {
            pt_diag_add(diag, path, 0, 0, "out of memory");
            goto out;
        }
    } else if (pt_cfg_read_file(path, &text, &len, err, sizeof(err)) < 0) {
        pt_diag_add(diag, path, 0, 0, "%s", err);
        goto out;
    }
    g = calloc(1, sizeof(*g));
    if (!g) {
        pt_diag_add(diag, path, 0, 0, "out of memory");
        goto out;
    }
    pt_arena_init(&g->arena, 64 * 1024);
    g->id = id;
    set_defaults(g);
    c.g = g;
    c.a = &g->arena;
    c.w.arena = &g->arena;
    g->source_path = pt_arena_strdup(c.a, path);
    g->source_text = pt_arena_strndup(c.a, text, len);
    g->source_len = len;
    const char *slash = strrchr(path, '/');
    c.dir = slash ? pt_arena_strndup(c.a, path, slash == path ? 1 : (size_t)(slash - path)) : ".";
    if (!g->source_path || !c.dir || !g->source_text)
        oom(&c);

    have_doc = true;
    if (pt_ydoc_parse(&doc, path, text, len, &c.w.errs) == 0) {
        if (!doc.root)
            pt_cfg_error_add(&c.w.errs, 0, 0,
                             "the file is empty (a config needs at least `listeners`)");
        else
            walk_root(&c, doc.root);
    }
    if (c.w.errs.n == 0 && !c.w.errs.oom && !c.w.oom)
        pt_cfg_build_url_upstreams(&c);

    if (c.w.errs.n == 0 && !c.w.errs.oom && !c.w.oom) {
        g->router = pt_router_build(g, err, sizeof(err));
        if (!g->router)
            pt_cfg_error_add(&c.w.errs, 0, 0, "%s", err);
    }

out:
    if (c.w.errs.n || c.w.errs.oom || c.w.oom || !g || c.cons_errs.n || c.cons_errs.oom) {
        pt_cfg_errors_flush(&c.w.errs, path, diag);
        pt_cfg_errors_flush(&c.cons_errs, c.cons_path ? c.cons_path : path, diag);
        pt_generation_free(g);
        g = NULL;
    }
    pt_cfg_errors_free(&c.w.errs);
    pt_cfg_errors_free(&c.cons_errs);
    free(c.cons_path);
    if (have_doc)
        pt_ydoc_free(&doc);
    free(c.defaults.v);
    free(c.listener_at);
    free(c.upstreams.keys);
    free(c.upstreams.vals);
    free(c.urls);
    free(c.urls_ca);
    free(text);
    return g;
}

int pt_cfg_read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
{
    int rc = -1;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open the config file: %s", strerror(errno));
        goto out;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read the config file: %s", strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        goto out;
    }
    if ((uint64_t)st.st_size > MAX_CONFIG_BYTES) {
        snprintf(err, errlen, "the config file is larger than %u MiB", MAX_CONFIG_BYTES >> 20);
        goto out;
    }
    size_t cap = (size_t)st.st_size + 1, n = 0;
    buf = malloc(cap);
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (;;) {
        if (n == cap) {
            snprintf(err, errlen, "the config file changed while being read");
            goto out;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(err, errlen, "cannot read the config file: %s", strerror(errno));
            goto out;
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *text = buf;
    *len = n;
    buf = NULL;
    rc = 0;
out:
    free(buf);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---- messages and name tables ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

const void *pt_cfg_strtab_put(struct cfg *c, struct strtab *t, const char *key, const void *val)
{
    if ((t->n + 1) * 2 > t->cap) {
        uint32_t cap = t->cap ? t->cap * 2 : 32;
        const char **keys = calloc(cap, sizeof(*keys));
        const void **vals = calloc(cap, sizeof(*vals));
        if (!keys || !vals) {
            free(keys);
            free(vals);
            oom(c);
            return NULL;
        }
        for (uint32_t i = 0; i < t->cap; i++) {
            if (!t->keys[i])
                continue;
            uint32_t j = (uint32_t)hash_str(t->keys[i]) & (cap - 1);
            while (keys[j])
                j = (j + 1) & (cap - 1);
            keys[j] = t->keys[i];
            vals[j] = t->vals[i];
        }
        free(t->keys);
        free(t->vals);
        t->keys = keys;
        t->vals = vals;
        t->cap = cap;
    }
    uint32_t j = (uint32_t)hash_str(key) & (t->cap - 1);
    while (t->keys[j]) {
        if (strcmp(t->keys[j], key) == 0)
            return t->vals[j];
        j = (j + 1) & (t->cap - 1);
    }
    t->keys[j] = key;
    t->vals[j] = val;
    t->n++;
    return NULL;
}

const void *pt_cfg_strtab_get(const struct strtab *t, const char *key)
{
    if (!t->cap)
        return NULL;
    uint32_t j = (uint32_t)hash_str(key) & (t->cap - 1);
    while (t->keys[j]) {
        if (strcmp(t->keys[j], key) == 0)
            return t->vals[j];
        j = (j + 1) & (t->cap - 1);
    }
    return NULL;
}

void pt_cfg_strtab_free(struct strtab *t)
{
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof(*t));
}

/* ---- names ---- */

static bool valid_name(const char *s, size_t max)
{
    if (!*s || strlen(s) > max)
        return false;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '_' || ch == '.'))
            return false;
    }
    return true;
}

const char *pt_cfg_want_name(struct cfg *c, const struct pt_ynode *n, const char *what, size_t max)
{
    const char *s = pt_cfg_want_str(&c->w, n, what);
    if (!s)
        return NULL;
    if (!valid_name(s, max)) {
        err_at(c, n, "%s `%.40s%s` must be 1 to %zu letters, digits, `-`, `_` and `.`", what, s,
               strlen(s) > 40 ? "…" : "", max);
        return NULL;
    }
    return dup_str(c, s);
}

/* ---- addresses ---- */

static bool is_wildcard(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
    if (ss->ss_family == AF_INET6)
        return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
    return false;
}

static bool is_loopback(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return false;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
}

bool pt_cfg_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family || port_of(a) != port_of(b))
        return false;
    if (a->ss_family == AF_INET)
        return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
               ((const struct sockaddr_in *)b)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

/* Two sockets that could not both bind: the same address, or a wildcard
 * and anything on the same port and family. */
static bool addresses_clash(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family || port_of(a) != port_of(b))
        return false;
    return is_wildcard(a) || is_wildcard(b) || pt_cfg_same_addr(a, b);
}

/* ---- top level ---- */

enum {
    K_WORKERS,
    K_LISTENERS,
    K_ADMIN,
    K_LIMITS,
    K_ACCESS_LOG,
    K_UPSTREAMS,
    K_FILTERS,
    K_ROUTES,
    K_IO_BACKEND,
    K_TRUSTED_PROXIES,
    K_FORWARD_REAL_IP,
    K_RESOLVER,
    K_CONSUMERS,
    K_CLUSTER,
    K_RL_STORE,
    K_LOG_LEVEL,
    K_LOG_FORMAT,
    K_ERROR_LOG,
    K_CONSUMERS_FILE,
    K_TRACING,
    K_METRICS,
    K_CACHE_STORE,
    K_ROOT_N
};

/* One key a line (kept so by clang-format off): branches adding keys merge. */
// clang-format off
static const char *const root_keys[] = {"workers",
                                        "listeners",
                                        "admin",
                                        "limits",
                                        "access_log",
                                        "upstreams",
                                        "filters",
                                        "routes",
                                        "io_backend",
                                        "trusted_proxies",
                                        "forward_real_ip",
                                        "resolver",
                                        "consumers",
                                        "cluster",
                                        "rate_limit_store",
                                        "log_level",
                                        "log_format",
                                        "error_log",
                                        "consumers_file",
                                        "tracing",
                                        "metrics",
                                        "cache_store",
                                        NULL};
// clang-format on

static void walk_root(struct cfg *c, const struct pt_ynode *root)
{
    char buf[64];
    if (root->kind != PT_YMAP) {
        if (root->is_null)
            pt_cfg_error_add(&c->w.errs, 0, 0,
                             "the file is empty (a config needs at least `listeners`)");
        else
            err_at(c, root, "expected a mapping of settings at the top level, got %s",
                   pt_cfg_describe(root, buf, sizeof(buf)));
        return;
    }
    const struct pt_ynode *v[K_ROOT_N] = {0};
    pt_cfg_bind_keys(&c->w, root, root_keys, NULL, "at the top level", v, NULL);

    if (v[K_WORKERS])
        walk_workers(c, v[K_WORKERS]);
    if (v[K_IO_BACKEND])
        walk_io_backend(c, v[K_IO_BACKEND]);
    if (v[K_LISTENERS])
        walk_listeners(c, v[K_LISTENERS]);
    /* Only when none were written: invalid ones are reported already. */
    const struct pt_ynode *ln = v[K_LISTENERS];
    if (!ln || ln->is_null || (ln->kind == PT_YSEQ && ln->n == 0))
        err_at(c, v[K_LISTENERS],
               "no listeners: add one, e.g. `listeners: [{ address: 0.0.0.0:8080 }]`");
    if (v[K_ADMIN])
        walk_admin(c, v[K_ADMIN]);
    check_address_conflicts(c, v[K_ADMIN]);
    if (v[K_LIMITS])
        walk_limits(c, v[K_LIMITS]);
    if (v[K_ACCESS_LOG])
        walk_access_log(c, v[K_ACCESS_LOG]);
    walk_error_log(c, v[K_LOG_LEVEL], v[K_LOG_FORMAT], v[K_ERROR_LOG]);
    if (v[K_TRUSTED_PROXIES])
        pt_cfg_want_cidrs(&c->w, v[K_TRUSTED_PROXIES], "`trusted_proxies`", &c->g->trusted_proxies);
    if (v[K_FORWARD_REAL_IP])
        pt_cfg_want_bool(&c->w, v[K_FORWARD_REAL_IP], "`forward_real_ip`", &c->g->forward_real_ip);
    if (v[K_RESOLVER])
        pt_cfg_walk_resolver(c, v[K_RESOLVER]);
    pt_cfg_walk_consumers(c, v[K_CONSUMERS], v[K_CONSUMERS_FILE]);
    /* The shared store before filters: rate_limit's compile checks it. */
    pt_cfg_walk_cluster(c, v[K_CLUSTER]);
    if (v[K_RL_STORE])
        walk_rl_store(c, v[K_RL_STORE]);
    if (v[K_TRACING])
        pt_cfg_walk_tracing(c, v[K_TRACING]);
    if (v[K_METRICS])
        walk_metrics(c, v[K_METRICS]);
    if (v[K_CACHE_STORE])
        walk_cache_store(c, v[K_CACHE_STORE]);
    /* Upstreams and default filters before routes, wherever they are in
     * the file: routes refer to both. */
    if (v[K_UPSTREAMS])
        pt_cfg_walk_upstreams(c, v[K_UPSTREAMS]);
    if (v[K_FILTERS]) {
        c->defaults_at = v[K_FILTERS];
        pt_cfg_walk_filter_block(c, v[K_FILTERS], false, &c->defaults);
    }
    if (v[K_ROUTES])
        pt_cfg_walk_routes(c, v[K_ROUTES]);
}

static void walk_workers(struct cfg *c, const struct pt_ynode *n)
{
    uint64_t w;
    if (n->kind == PT_YSCALAR && strcmp(n->str, "auto") == 0)
        return; /* the default, set already */
    if (n->kind == PT_YSCALAR && !n->is_null && pt_cfg_parse_u64(n->str, &w) && w >= 1 &&
        w <= 1024) {
        c->g->workers = (int)w;
        return;
    }
    char buf[64];
    err_at(c, n, "`workers` must be `auto` or a number from 1 to 1024, got %s",
           pt_cfg_describe(n, buf, sizeof(buf)));
}

static void walk_io_backend(struct cfg *c, const struct pt_ynode *n)
{
    for (int b = 0; b < PT_IO_BACKENDS && n->kind == PT_YSCALAR && !n->is_null; b++) {
        if (strcmp(n->str, pt_io_backend_names[b]) == 0) {
            c->g->io_backend = (enum pt_io_backend)b;
            return;
        }
    }
    char buf[64];
    err_at(c, n, "`io_backend` must be `epoll` or `io_uring`, got %s",
           pt_cfg_describe(n, buf, sizeof(buf)));
}

/* ---- listeners and admin ---- */

static const char *const listener_keys[] = {
    "name", "address", "proxy_protocol", "proxy_protocol_from", "http2", "tls", NULL};
enum { L_NAME, L_ADDRESS, L_PROXY, L_PROXY_FROM, L_HTTP2, L_TLS, L_NKEYS };

/* `proxy_protocol: true|false` and `proxy_protocol_from: [CIDR, ...]`. */
static bool walk_proxy_protocol(struct cfg *c, struct pt_listener_cfg *l, const struct pt_ynode *on,
                                const struct pt_ynode *from, const struct pt_ynode *from_key)
{
    if (on && !pt_cfg_want_bool(&c->w, on, "`proxy_protocol`", &l->proxy_protocol))
        return false;
    if (!from)
        return true;
    if (!l->proxy_protocol) {
        err_at(c, from_key ? from_key : from,
               "`proxy_protocol_from` needs `proxy_protocol: true` on the same listener");
        return false;
    }
    struct pt_strlist list;
    if (!pt_cfg_want_strlist(&c->w, from, "`proxy_protocol_from`", &list))
        return false;
    l->proxy_from = pt_arena_zalloc(c->a, sizeof(*l->proxy_from) * (list.n ? list.n : 1));
    if (!l->proxy_from) {
        oom(c);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < list.n; i++) {
        const char *why;
        const struct pt_ynode *at = from->kind == PT_YSEQ ? from->items[i] : from;
        if (pt_cidr_parse(list.v[i], &l->proxy_from[l->nproxy_from], &why) < 0) {
            err_at(c, at, "`proxy_protocol_from`: `%s`: %s", list.v[i], why);
            ok = false;
            continue;
        }
        l->nproxy_from++;
    }
    return ok;
}

static void walk_listeners(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_seq(&c->w, n, "`listeners`") || n->n == 0)
        return;
    struct pt_generation *g = c->g;
    g->listeners = pt_arena_zalloc(c->a, sizeof(*g->listeners) * n->n);
    c->listener_at = calloc(n->n, sizeof(*c->listener_at));
    if (!g->listeners || !c->listener_at)
        return oom(c);
    struct strtab names = {0};
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *item = n->items[i];
        if (!pt_cfg_want_map(&c->w, item, "each listener"))
            continue;
        const struct pt_ynode *v[L_NKEYS] = {0}, *k[L_NKEYS] = {0};
        uint32_t refused = pt_cfg_bind_keys(&c->w, item, listener_keys, NULL, "in listener", v, k);
        struct pt_listener_cfg *l = &g->listeners[g->nlisteners];
        l->name = v[0] ? pt_cfg_want_name(c, v[0], "listener name", PT_LISTENER_NAME_MAX)
                       : pt_arena_sprintf(c->a, "listener-%u", i + 1);
        if (!v[0] && !l->name)
            return oom(c);
        if (!v[1]) {
            if (!refused)
                err_at(c, item, "listener has no `address` (e.g. `address: 0.0.0.0:8080`)");
            continue;
        }
        const char *addr = pt_cfg_want_str(&c->w, v[1], "`address`");
        if (!l->name || !addr)
            continue;
        const struct pt_ynode *first = pt_cfg_strtab_put(c, &names, l->name, v[0] ? v[0] : item);
        if (first) {
            err_at(c, v[0] ? v[0] : item,
                   "duplicate listener name `%s` (first defined at %s:%d:%d)", l->name, c->file,
                   first->line, first->col);
            continue;
        }
        l->address = dup_str(c, addr);
        if (!l->address || !pt_cfg_want_address(&c->w, v[1], addr, true, &l->addr, &l->addrlen))
            continue;
        if (!walk_proxy_protocol(c, l, v[L_PROXY], v[L_PROXY_FROM], k[L_PROXY_FROM]))
            continue;
        if (v[L_HTTP2] && !pt_cfg_want_bool(&c->w, v[L_HTTP2], "`http2`", &l->http2))
            continue;
        if (v[L_TLS] && !pt_cfg_walk_listener_tls(c, v[L_TLS], l))
            continue;
        c->listener_at[g->nlisteners++] = v[1];
    }
    pt_cfg_strtab_free(&names);
}

static const char *const admin_keys[] = {"address", "token", NULL};

static void walk_admin(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_map(&c->w, n, "`admin`"))
        return;
    const struct pt_ynode *v[2] = {0};
    pt_cfg_bind_keys(&c->w, n, admin_keys, NULL, "in admin", v, NULL);
    struct pt_generation *g = c->g;
    struct pt_listener_cfg *l = &g->admin;
    const char *addr = v[0] ? pt_cfg_want_str(&c->w, v[0], "`address`") : DEFAULT_ADMIN_ADDRESS;
    const char *token = v[1] ? pt_cfg_want_str(&c->w, v[1], "`token`") : NULL;
    if (!addr || (v[1] && !token))
        return;
    if (token) {
        for (const char *p = token; *p; p++) {
            /* It is compared against an Authorization header value. */
            if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
                err_at(c, v[1], "the admin `token` must not contain spaces or control characters");
                return;
            }
        }
    }
    l->name = "admin";
    l->address = dup_str(c, addr);
    if (!l->address ||
        !pt_cfg_want_address(&c->w, v[0] ? v[0] : n, addr, true, &l->addr, &l->addrlen))
        return;
    if (!token && !is_loopback(&l->addr)) {
        err_at(c, v[0],
               "the admin API on `%s` is reachable from other hosts: set `admin.token` "
               "(e.g. `token: \"${PORTICO_ADMIN_TOKEN}\"`) or bind it to 127.0.0.1",
               addr);
        return;
    }
    g->admin_token = token ? dup_str(c, token) : NULL;
    g->has_admin = true;
}

static void check_address_conflicts(struct cfg *c, const struct pt_ynode *admin)
{
    struct pt_generation *g = c->g;
    const struct pt_ynode **where = c->listener_at;
    for (uint32_t i = 1; i < g->nlisteners; i++) {
        for (uint32_t j = 0; j < i; j++) {
            if (!addresses_clash(&g->listeners[i].addr, &g->listeners[j].addr))
                continue;
            err_at(c, where[i], "address `%s` overlaps listener `%s` (`%s`)",
                   g->listeners[i].address, g->listeners[j].name, g->listeners[j].address);
            break;
        }
    }
    if (g->has_admin) {
        const struct pt_ynode *a = pt_ynode_get(admin, "address");
        for (uint32_t j = 0; j < g->nlisteners; j++) {
            if (addresses_clash(&g->admin.addr, &g->listeners[j].addr)) {
                err_at(c, a ? a : admin, "admin address `%s` overlaps listener `%s` (`%s`)",
                       g->admin.address, g->listeners[j].name, g->listeners[j].address);
                break;
            }
        }
    }
}

/* ---- limits, access log ---- */

#define PT_HEAD_BYTES_MAX (1u << 20)

static const char *const limits_keys[] = {"max_header_bytes",
                                          "max_headers",
                                          "max_body_bytes",
                                          "header_timeout",
                                          "idle_timeout",
                                          "max_connections",
                                          "max_uri_bytes",
                                          "drain_timeout",
                                          "headers_with_underscores",
                                          "normalize_path",
                                          "merge_slashes",
                                          "escaped_slashes",
                                          "semicolons",
                                          "min_body_rate",
                                          "body_rate_window",
                                          NULL};

/* One of `names` (a mode key such as headers_with_underscores), with a
 * "did you mean" when the value is close to one. */
static void walk_mode(struct cfg *c, const struct pt_ynode *n, const char *key,
                      const char *const *names, int count, uint8_t *out)
{
    for (int m = 0; m < count && n->kind == PT_YSCALAR && !n->is_null; m++) {
        if (strcmp(n->str, names[m]) == 0) {
            *out = (uint8_t)m;
            return;
        }
    }
    char buf[64], hint[96] = "", list[96] = "";
    size_t k = 0;
    for (int m = 0; m < count && k < sizeof(list); m++)
        k += (size_t)snprintf(list + k, sizeof(list) - k, "%s`%s`",
                              m == 0           ? ""
                              : m + 1 == count ? " or "
                                               : ", ",
                              names[m]);
    if (n->kind == PT_YSCALAR && !n->is_null)
        pt_cfg_did_you_mean(n->str, names, (size_t)count, hint, sizeof(hint));
    err_at(c, n, "`%s` must be %s, got %s%s", key, list, pt_cfg_describe(n, buf, sizeof(buf)),
           hint);
}

/* `rate_limit_store: { max_keys: N }`: the local rate-limit table's size
 * (16 bytes a slot, allocated once; filters/rl_table.h). */
static void walk_rl_store(struct cfg *c, const struct pt_ynode *n)
{
    static const char *const keys[] = {"max_keys", NULL};
    if (!pt_cfg_want_map(&c->w, n, "`rate_limit_store`"))
        return;
    const struct pt_ynode *v[1] = {0};
    pt_cfg_bind_keys(&c->w, n, keys, NULL, "in rate_limit_store", v, NULL);
    if (v[0])
        pt_cfg_want_uint(&c->w, v[0], "`rate_limit_store.max_keys`", 1024, PT_RL_MAX_MAX_KEYS,
                         &c->g->rl_max_keys);
}

/* `cache_store: { max_bytes: 256MiB, shards: 64 }`: the shared response
 * cache (filters/cache_store.h); each shard gets max_bytes / shards. The
 * store is made when the first generation is published, not at load. */
static void walk_cache_store(struct cfg *c, const struct pt_ynode *n)
{
    static const char *const keys[] = {"max_bytes", "shards", NULL};
    if (!pt_cfg_want_map(&c->w, n, "`cache_store`"))
        return;
    const struct pt_ynode *v[2] = {0};
    pt_cfg_bind_keys(&c->w, n, keys, NULL, "in cache_store", v, NULL);
    if (v[0] &&
        pt_cfg_want_size(&c->w, v[0], "`cache_store.max_bytes`", true, &c->g->cache_max_bytes) &&
        c->g->cache_max_bytes < PT_CACHE_MIN_MAX_BYTES)
        err_at(c, v[0], "`cache_store.max_bytes` must be at least 64KiB");
    uint64_t shards = c->g->cache_shards;
    if (v[1] &&
        pt_cfg_want_uint(&c->w, v[1], "`cache_store.shards`", 1, PT_CACHE_MAX_SHARDS, &shards))
        c->g->cache_shards = (uint32_t)shards;
}

/* `metrics: { enabled: true }`: off, requests record nothing and
 * /metrics shows only the process's gauges and the totals kept so far. */
static void walk_metrics(struct cfg *c, const struct pt_ynode *n)
{
    static const char *const keys[] = {"enabled", NULL};
    if (!pt_cfg_want_map(&c->w, n, "`metrics`"))
        return;
    const struct pt_ynode *v[1] = {0};
    pt_cfg_bind_keys(&c->w, n, keys, NULL, "in metrics", v, NULL);
    if (v[0])
        pt_cfg_want_bool(&c->w, v[0], "`metrics.enabled`", &c->g->metrics_enabled);
}

static void walk_limits(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_map(&c->w, n, "`limits`"))
        return;
    const struct pt_ynode *v[15] = {0};
    pt_cfg_bind_keys(&c->w, n, limits_keys, NULL, "in limits", v, NULL);
    struct pt_limits *l = &c->g->limits;
    /* A head is read into one buffer per connection (and 32-bit offsets). */
    if (v[0] && pt_cfg_want_size(&c->w, v[0], "`max_header_bytes`", true, &l->max_header_bytes) &&
        l->max_header_bytes > PT_HEAD_BYTES_MAX)
        err_at(c, v[0], "`max_header_bytes` must be at most 1MiB");
    if (v[1])
        pt_cfg_want_uint(&c->w, v[1], "`max_headers`", 1, 100000, &l->max_headers);
    if (v[2])
        pt_cfg_want_size(&c->w, v[2], "`max_body_bytes`", true, &l->max_body_bytes);
    if (v[3])
        pt_cfg_want_duration(&c->w, v[3], "`header_timeout`", true, &l->header_timeout_ms);
    if (v[4])
        pt_cfg_want_duration(&c->w, v[4], "`idle_timeout`", true, &l->idle_timeout_ms);
    if (v[5])
        pt_cfg_want_uint(&c->w, v[5], "`max_connections`", 1, 100000000, &l->max_connections);
    if (v[6] && pt_cfg_want_size(&c->w, v[6], "`max_uri_bytes`", true, &l->max_uri_bytes) &&
        l->max_uri_bytes > PT_HEAD_BYTES_MAX)
        err_at(c, v[6], "`max_uri_bytes` must be at most 1MiB");
    if (v[7])
        pt_cfg_want_duration(&c->w, v[7], "`drain_timeout`", false, &l->drain_timeout_ms);
    if (v[8])
        walk_mode(c, v[8], "headers_with_underscores", pt_underscores_names, PT_US_MODES,
                  &l->underscores);
    if (v[9])
        pt_cfg_want_bool(&c->w, v[9], "`normalize_path`", &l->normalize_path);
    if (v[10])
        pt_cfg_want_bool(&c->w, v[10], "`merge_slashes`", &l->merge_slashes);
    if (v[11])
        walk_mode(c, v[11], "escaped_slashes", pt_escaped_slashes_names, PT_ESC_MODES,
                  &l->escaped_slashes);
    if (v[12])
        walk_mode(c, v[12], "semicolons", pt_semicolons_names, PT_SEMI_MODES, &l->semicolons);
    if (v[13])
        pt_cfg_want_size(&c->w, v[13], "`min_body_rate`", false, &l->min_body_rate);
    if (v[14])
        pt_cfg_want_duration(&c->w, v[14], "`body_rate_window`", true, &l->body_rate_window_ms);
}

static const char *const access_log_keys[] = {"path", "format", NULL};

static void walk_access_log(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_map(&c->w, n, "`access_log`"))
        return;
    const struct pt_ynode *v[2] = {0};
    pt_cfg_bind_keys(&c->w, n, access_log_keys, NULL, "in access_log", v, NULL);
    struct pt_access_log_cfg *al = &c->g->access_log;
    if (v[0]) {
        const char *p = pt_cfg_want_str(&c->w, v[0], "`path`");
        if (!p) {
            /* reported */
        } else if (strcmp(p, "stdout") == 0) {
            al->mode = PT_ALOG_STDOUT;
        } else if (strcmp(p, "off") == 0) {
            al->mode = PT_ALOG_OFF;
        } else if (strcmp(p, "stderr") == 0) {
            err_at(c, v[0],
                   "access_log path `stderr` is not supported: use stdout, off or a "
                   "file path");
        } else {
            al->mode = PT_ALOG_FILE;
            /* Relative to the config file, so the same file works from
             * any working directory. */
            al->path = p[0] == '/' ? dup_str(c, p) : pt_arena_sprintf(c->a, "%s/%s", c->dir, p);
            if (!al->path)
                oom(c);
        }
    }
    if (v[1]) {
        const char *f = pt_cfg_want_str(&c->w, v[1], "`format`");
        if (f && strcmp(f, "json") != 0)
            err_at(c, v[1], "access_log format `%s` is not supported (only `json`)", f);
    }
}

/* `log_level`, `log_format` and `error_log` (each may be NULL: absent). */
static void walk_error_log(struct cfg *c, const struct pt_ynode *level,
                           const struct pt_ynode *format, const struct pt_ynode *path)
{
    struct pt_log_cfg *lc = &c->g->log;
    uint8_t m;
    if (level) {
        m = (uint8_t)lc->level;
        walk_mode(c, level, "log_level", pt_log_level_names, PT_LOG_LEVELS, &m);
        lc->level = (enum pt_log_level)m;
    }
    if (format) {
        m = (uint8_t)lc->format;
        walk_mode(c, format, "log_format", pt_log_format_names, PT_LOG_FORMATS, &m);
        lc->format = (enum pt_log_format)m;
    }
    const char *p = path ? pt_cfg_want_str(&c->w, path, "`error_log`") : NULL;
    if (!p || strcmp(p, "stderr") == 0)
        return;
    /* Relative to the config file, like access_log.path. */
    lc->error_log = p[0] == '/' ? dup_str(c, p) : pt_arena_sprintf(c->a, "%s/%s", c->dir, p);
    if (!lc->error_log)
        oom(c);
}
