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
 * Ownership: the generation and everything in it live in g->arena (PCRE2
 * codes are tracked in g->regexes and freed by pt_generation_free). The
 * node tree and the error list are temporary and freed before returning.
 */
#include "control/config.h"
#include "control/config_yaml.h"
#include "gateway/router.h"
#include "http/path.h"
#include "http/tokens.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* A config file is hand-written text; anything bigger is a mistake
 * (wrong file) and would only make the error list useless. */
#define MAX_CONFIG_BYTES (16u << 20)

#define DEFAULT_ADMIN_ADDRESS "127.0.0.1:9901"

/* One entry of a `filters:` block: a parsed config, or `off`. */
struct filter_entry {
    const struct pt_filter_def *def;
    const void *conf; /* NULL when `off` */
    bool off;
};

struct filter_set {
    struct filter_entry *v;
    uint32_t n;
};

/* A tiny string → pointer hash table for name lookups (route names,
 * upstreams, listeners); thousands of routes must not cost O(n²). */
struct strtab {
    const char **keys;
    const void **vals;
    uint32_t cap, n;
};

/* Loader state for one pt_config_load call. */
struct cfg {
    struct pt_cfg_walk w; /* messages, and w.arena = &g->arena for values read */
    const char *file;     /* as given on the command line: every message starts with it */
    const char *dir;      /* its directory, for relative paths in the file */
    struct pt_generation *g;
    struct pt_arena *a;                  /* &g->arena */
    struct filter_set defaults;          /* top-level `filters:` */
    struct strtab upstreams;             /* name → struct pt_upstream * */
    const struct pt_ynode **listener_at; /* address node of g->listeners[i] */
};

/* Top-level sections. */
static void walk_root(struct cfg *c, const struct pt_ynode *root);
static void walk_workers(struct cfg *c, const struct pt_ynode *n);
static void walk_io_backend(struct cfg *c, const struct pt_ynode *n);
static void walk_listeners(struct cfg *c, const struct pt_ynode *n);
static void walk_admin(struct cfg *c, const struct pt_ynode *n);
static void walk_limits(struct cfg *c, const struct pt_ynode *n);
static void walk_access_log(struct cfg *c, const struct pt_ynode *n);
static void walk_upstreams(struct cfg *c, const struct pt_ynode *n);
static void walk_filter_block(struct cfg *c, const struct pt_ynode *n, bool in_route,
                              struct filter_set *out);
static void walk_routes(struct cfg *c, const struct pt_ynode *n);
static void check_address_conflicts(struct cfg *c, const struct pt_ynode *admin);

/* Helpers. */
static void err_at(struct cfg *c, const struct pt_ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void oom(struct cfg *c);
static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen);

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
        .max_uri_bytes = 8u << 10,
        .header_timeout_ms = 10000,
        .idle_timeout_ms = 60000,
        .max_connections = 20000,
        .drain_timeout_ms = 30000,
    };
    g->access_log.mode = PT_ALOG_STDOUT;
}

struct pt_generation *pt_config_load(const char *path, uint64_t id, struct pt_diag *diag)
{
    struct pt_generation *g = NULL;
    struct pt_ydoc doc = {0};
    bool have_doc = false;
    char *text = NULL;
    size_t len = 0;
    struct cfg c = {.file = path};
    char err[512];

    if (read_file(path, &text, &len, err, sizeof(err)) < 0) {
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
    const char *slash = strrchr(path, '/');
    c.dir = slash ? pt_arena_strndup(c.a, path, slash == path ? 1 : (size_t)(slash - path)) : ".";
    if (!g->source_path || !c.dir)
        oom(&c);

    have_doc = true;
    if (pt_ydoc_parse(&doc, path, text, len, &c.w.errs) == 0) {
        if (!doc.root)
            pt_cfg_error_add(&c.w.errs, 0, 0,
                             "the file is empty (a config needs at least `listeners`)");
        else
            walk_root(&c, doc.root);
    }

    if (c.w.errs.n == 0 && !c.w.errs.oom && !c.w.oom) {
        g->router = pt_router_build(g, err, sizeof(err));
        if (!g->router)
            pt_cfg_error_add(&c.w.errs, 0, 0, "%s", err);
    }

out:
    if (c.w.errs.n || c.w.errs.oom || c.w.oom || !g) {
        pt_cfg_errors_flush(&c.w.errs, path, diag);
        pt_generation_free(g);
        g = NULL;
    }
    pt_cfg_errors_free(&c.w.errs);
    if (have_doc)
        pt_ydoc_free(&doc);
    free(c.defaults.v);
    free(c.listener_at);
    free(c.upstreams.keys);
    free(c.upstreams.vals);
    free(text);
    return g;
}

static int read_file(const char *path, char **text, size_t *len, char *err, size_t errlen)
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

static void err_at(struct cfg *c, const struct pt_ynode *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pt_cfg_verr(&c->w, n, fmt, ap);
    va_end(ap);
}

static void oom(struct cfg *c)
{
    pt_cfg_oom(&c->w);
}

static char lower_ascii(char ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (char)(ch | 0x20) : ch;
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Returns the existing value for `key` (and leaves it), or inserts `val`
 * and returns NULL. Sets c->w.oom on allocation failure. */
static const void *strtab_put(struct cfg *c, struct strtab *t, const char *key, const void *val)
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

static const void *strtab_get(const struct strtab *t, const char *key)
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

static void strtab_free(struct strtab *t)
{
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof(*t));
}

/* ---- typed access to nodes ---- */

static const char *dup_str(struct cfg *c, const char *s)
{
    const char *p = pt_arena_strdup(c->a, s);
    if (!p)
        oom(c);
    return p;
}

/* Names of listeners, upstreams and routes end up in metrics labels,
 * admin URLs and access-log lines: keep them to characters that need no
 * escaping anywhere, and short enough that a log line always fits. */
#define PT_NAME_MAX 128
#define PT_LISTENER_NAME_MAX 31 /* copied into each connection */

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

static const char *want_name(struct cfg *c, const struct pt_ynode *n, const char *what, size_t max)
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

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
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
    return is_wildcard(a) || is_wildcard(b) || same_addr(a, b);
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
    K_ROOT_N
};

static const char *const root_keys[] = {"workers",    "listeners", "admin",   "limits",
                                        "access_log", "upstreams", "filters", "routes",
                                        "io_backend", NULL};
static const char *const root_planned[] = {"tracing", "cluster", "consumers", NULL};

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
    pt_cfg_bind_keys(&c->w, root, root_keys, root_planned, "at the top level", v, NULL);

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
    /* Upstreams and default filters before routes, wherever they are in
     * the file: routes refer to both. */
    if (v[K_UPSTREAMS])
        walk_upstreams(c, v[K_UPSTREAMS]);
    if (v[K_FILTERS])
        walk_filter_block(c, v[K_FILTERS], false, &c->defaults);
    if (v[K_ROUTES])
        walk_routes(c, v[K_ROUTES]);
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

static const char *const listener_keys[] = {"name", "address", NULL};
static const char *const listener_planned[] = {"http2", "tls", NULL};

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
        const struct pt_ynode *v[2] = {0}, *k[2] = {0};
        uint32_t refused =
            pt_cfg_bind_keys(&c->w, item, listener_keys, listener_planned, "in listener", v, k);
        struct pt_listener_cfg *l = &g->listeners[g->nlisteners];
        l->name = v[0] ? want_name(c, v[0], "listener name", PT_LISTENER_NAME_MAX)
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
        const struct pt_ynode *first = strtab_put(c, &names, l->name, v[0] ? v[0] : item);
        if (first) {
            err_at(c, v[0] ? v[0] : item,
                   "duplicate listener name `%s` (first defined at %s:%d:%d)", l->name, c->file,
                   first->line, first->col);
            continue;
        }
        l->address = dup_str(c, addr);
        if (!l->address || !pt_cfg_want_address(&c->w, v[1], addr, true, &l->addr, &l->addrlen))
            continue;
        c->listener_at[g->nlisteners++] = v[1];
    }
    strtab_free(&names);
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

static const char *const limits_keys[] = {
    "max_header_bytes", "max_headers",   "max_body_bytes",
    "header_timeout",   "idle_timeout",  "max_connections",
    "max_uri_bytes",    "drain_timeout", "headers_with_underscores",
    "normalize_path",   "merge_slashes", NULL};

static void walk_underscores(struct cfg *c, const struct pt_ynode *n, uint8_t *out)
{
    for (int m = 0; m < PT_US_MODES && n->kind == PT_YSCALAR && !n->is_null; m++) {
        if (strcmp(n->str, pt_underscores_names[m]) == 0) {
            *out = (uint8_t)m;
            return;
        }
    }
    char buf[64];
    err_at(c, n, "`headers_with_underscores` must be `drop`, `reject` or `allow`, got %s",
           pt_cfg_describe(n, buf, sizeof(buf)));
}

static void walk_limits(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_map(&c->w, n, "`limits`"))
        return;
    const struct pt_ynode *v[11] = {0};
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
        walk_underscores(c, v[8], &l->underscores);
    if (v[9])
        pt_cfg_want_bool(&c->w, v[9], "`normalize_path`", &l->normalize_path);
    if (v[10])
        pt_cfg_want_bool(&c->w, v[10], "`merge_slashes`", &l->merge_slashes);
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

/* ---- upstreams ---- */

static const char *const upstream_keys[] = {"targets",      "balance",   "connect_timeout",
                                            "read_timeout", "keepalive", NULL};
static const char *const upstream_planned[] = {"hash_on",         "protocol", "tls", "health_check",
                                               "circuit_breaker", "retries",  NULL};
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
    u->pos = (struct pt_src_pos){key->line, key->col};
    if (!pt_cfg_want_map(&c->w, n, "an upstream"))
        return;
    const struct pt_ynode *v[5] = {0};
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
                    dup = same_addr(&u->targets[j].addr, &t->addr);
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
}

static void walk_upstreams(struct cfg *c, const struct pt_ynode *n)
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
        u->name = want_name(c, key, "upstream name", PT_NAME_MAX);
        if (!u->name)
            continue;
        u->index = g->nupstreams++;
        strtab_put(c, &c->upstreams, u->name, u);
        walk_upstream(c, key, n->pairs[i].value, u);
    }
}

/* ---- filters ---- */

/* Filters DESIGN.md §5 plans: named in a config, they are refused as not
 * yet supported rather than unknown, until they join the registry. */
static const char *const planned_filters[] = {
    "cors",         "request_id", "jwt",   "key_auth",       "introspection", "mtls_auth",
    "acl",          "rate_limit", "cache", "grpc_transcode", "aggregate",     "ip_restriction",
    "request_size", NULL};

/* Fields CONFIG.md shows for a registered filter that its table does not
 * have yet. */
static const struct {
    const char *filter;
    const char *const *fields; /* NULL-terminated */
} planned_fields[] = {
    {"request_transform", (const char *const[]){"rename_body_fields", NULL}},
};

static const char *const *fields_planned_for(const char *filter)
{
    for (size_t i = 0; i < PT_ARRAY_LEN(planned_fields); i++)
        if (strcmp(planned_fields[i].filter, filter) == 0)
            return planned_fields[i].fields;
    return NULL;
}

/* A compile hook's reports, placed at the node they name: the entry of a
 * list or mapping field (its key, or its value), else the field, else the
 * filter's name. */
struct compile_errs {
    struct pt_filter_errs e;
    struct cfg *c;
    const struct pt_filter_def *def;
    const struct pt_ynode *key, *map;
    int count;
    /* Entries already reported, so that two equal bad entries of one list
     * are each reported at their own position. */
    const struct pt_ynode *placed[32];
    unsigned nplaced;
};

static bool already_placed(const struct compile_errs *ce, const struct pt_ynode *n)
{
    for (unsigned i = 0; i < ce->nplaced; i++)
        if (ce->placed[i] == n)
            return true;
    return false;
}

/* The node of `entry` in a field: in a mapping its key (or, in_value, its
 * value), in a list the first matching item not reported yet; NULL when
 * there is none. */
static const struct pt_ynode *entry_node(const struct compile_errs *ce, const struct pt_ynode *f,
                                         const char *entry, bool in_value)
{
    if (f->kind == PT_YMAP && in_value)
        return pt_ynode_get(f, entry);
    const struct pt_ynode *first = NULL;
    for (uint32_t i = 0; i < f->n; i++) {
        const struct pt_ynode *n = f->kind == PT_YMAP   ? f->pairs[i].key
                                   : f->kind == PT_YSEQ ? f->items[i]
                                                        : NULL;
        if (!n || n->kind != PT_YSCALAR || strcmp(n->str, entry) != 0)
            continue;
        if (!already_placed(ce, n))
            return n;
        if (!first)
            first = n;
    }
    return first;
}

static void compile_report(struct pt_filter_errs *e, const char *field, const char *entry,
                           bool in_value, const char *msg)
{
    struct compile_errs *ce = (struct compile_errs *)e;
    const struct pt_ynode *f = field ? pt_ynode_get(ce->map, field) : NULL;
    const struct pt_ynode *at = f && entry ? entry_node(ce, f, entry, in_value) : NULL;
    if (at && ce->nplaced < PT_ARRAY_LEN(ce->placed) && !already_placed(ce, at))
        ce->placed[ce->nplaced++] = at;
    err_at(ce->c, at ? at : f ? f : ce->key, "filter `%s`: %s", ce->def->name, msg);
    ce->count++;
}

/* Every PT_F_UPSTREAM field of a filter's (top-level) settings names an
 * upstream of this file; reports each that does not, at its value. */
static bool filter_upstreams_exist(struct cfg *c, const struct pt_filter_def *def,
                                   const struct pt_ynode *n, const void *conf)
{
    bool ok = true;
    for (const struct pt_field *f = def->fields; f && f->name; f++) {
        const char *name = f->type == PT_F_UPSTREAM
                               ? *(const char *const *)((const char *)conf + f->offset)
                               : NULL;
        if (!name || strtab_get(&c->upstreams, name))
            continue;
        const char **cands = malloc((c->g->nupstreams + 1) * sizeof(*cands));
        if (!cands) {
            oom(c);
            return false;
        }
        for (uint32_t i = 0; i < c->g->nupstreams; i++)
            cands[i] = c->g->upstreams[i].name;
        char hint[128];
        err_at(c, pt_ynode_get(n, f->name), "filter `%s`: no upstream named `%s`%s", def->name,
               name, pt_cfg_did_you_mean(name, cands, c->g->nupstreams, hint, sizeof(hint)));
        free(cands);
        ok = false;
    }
    return ok;
}

/* Parses `name: {fields}` of one filter with its field table, then runs its
 * compile hook. Returns the config, or NULL after reporting. */
static const void *parse_filter_conf(struct cfg *c, const struct pt_filter_def *def,
                                     const struct pt_ynode *key, const struct pt_ynode *n)
{
    char what[96];
    snprintf(what, sizeof(what), "filter `%s`", def->name);
    if (!pt_cfg_want_map(&c->w, n, what))
        return NULL;
    void *conf = pt_arena_zalloc(c->a, def->config_size ? def->config_size : 1);
    if (!conf) {
        oom(c);
        return NULL;
    }
    bool ok =
        pt_cfg_read_fields(&c->w, def->name, def->fields, fields_planned_for(def->name), n, conf);
    if (!ok || c->w.oom || !filter_upstreams_exist(c, def, n, conf))
        return NULL;
    if (def->compile) {
        struct compile_errs ce = {{compile_report}, c, def, key, n, 0, {0}, 0};
        if (def->compile(conf, c->a, &ce.e) != 0) {
            if (ce.count == 0)
                err_at(c, key, "filter `%s`: invalid configuration", def->name);
            return NULL;
        }
    }
    return conf;
}

static void unknown_filter(struct cfg *c, const struct pt_ynode *key)
{
    const char *name = key->str;
    if (pt_cfg_in_list(name, planned_filters)) {
        err_at(c, key, "filter `%s` is not supported by this build yet", name);
        return;
    }
    size_t n = pt_filter_registry_len + pt_cfg_list_len(planned_filters);
    const char **names = malloc((n + 1) * sizeof(*names));
    if (!names)
        return oom(c);
    size_t k = 0;
    for (size_t i = 0; i < pt_filter_registry_len; i++)
        names[k++] = pt_filter_registry[i]->name;
    for (size_t i = 0; planned_filters[i]; i++)
        names[k++] = planned_filters[i];
    char hint[128];
    err_at(c, key, "unknown filter `%s`%s", name,
           pt_cfg_did_you_mean(name, names, k, hint, sizeof(hint)));
    free(names);
}

/* A `filters:` mapping, top level (defaults) or a route's own. Entries
 * whose config has errors are left out after reporting. */
static void walk_filter_block(struct cfg *c, const struct pt_ynode *n, bool in_route,
                              struct filter_set *out)
{
    out->v = NULL;
    out->n = 0;
    if (!pt_cfg_want_map(&c->w, n, "`filters`") || n->kind != PT_YMAP || n->n == 0)
        return;
    out->v = calloc(n->n, sizeof(*out->v));
    if (!out->v)
        return oom(c);
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *key = n->pairs[i].key, *val = n->pairs[i].value;
        const struct pt_filter_def *def = pt_filter_find(key->str);
        if (!def) {
            unknown_filter(c, key);
            continue;
        }
        struct filter_entry e = {.def = def};
        if (val->kind == PT_YSCALAR && strcmp(val->str, "off") == 0) {
            if (!in_route) {
                err_at(c, val,
                       "`%s: off` only makes sense in a route's `filters` (it switches off a "
                       "default); leave the filter out here instead",
                       def->name);
                continue;
            }
            e.off = true;
        } else {
            if (val->kind == PT_YSCALAR && !val->is_null) {
                err_at(c, val, "expected a mapping of settings for filter `%s`, or `off`, got `%s`",
                       def->name, val->str);
                continue;
            }
            e.conf = parse_filter_conf(c, def, key, val);
            if (!e.conf)
                continue;
        }
        out->v[out->n++] = e;
    }
}

/* ---- routes ---- */

enum {
    R_NAME,
    R_MATCH,
    R_PRIORITY,
    R_UPSTREAM,
    R_STRIP_PREFIX,
    R_REWRITE,
    R_TIMEOUT,
    R_MAX_BODY,
    R_FILTERS,
    R_N
};
static const char *const route_keys[] = {"name",         "match",   "priority", "upstream",
                                         "strip_prefix", "rewrite", "timeout",  "max_body_bytes",
                                         "filters",      NULL};
static const char *const route_planned[] = {"split", "sticky", NULL};

enum {
    M_HOSTS,
    M_PATH,
    M_PATH_PREFIX,
    M_PATH_TEMPLATE,
    M_PATH_REGEX,
    M_METHODS,
    M_HEADERS,
    M_QUERY,
    M_N
};
static const char *const match_keys[] = {"hosts",         "path",       "path_prefix",
                                         "path_template", "path_regex", "methods",
                                         "headers",       "query",      NULL};

/* Path parameters a route defines (template names, regex group names and
 * numbers), for checking `rewrite`. */
struct params {
    const char *names[2 * PT_ROUTE_MAX_PARAMS];
    uint32_t n;
    const char *source; /* "path_template" / "path_regex"; NULL: none */
};

static bool add_regex(struct cfg *c, pcre2_code *re)
{
    struct pt_generation *g = c->g;
    if (g->nregexes == g->capregexes) {
        uint32_t cap = g->capregexes ? g->capregexes * 2 : 8;
        pcre2_code **v = pt_arena_alloc(c->a, cap * sizeof(*v));
        if (!v) {
            pcre2_code_free(re);
            oom(c);
            return false;
        }
        if (g->nregexes)
            memcpy(v, g->regexes, g->nregexes * sizeof(*v));
        g->regexes = v;
        g->capregexes = cap;
    }
    g->regexes[g->nregexes++] = re;
    return true;
}

/* Compiles and JITs a pattern; the code is owned by the generation. */
static pcre2_code *compile_regex(struct cfg *c, const struct pt_ynode *at, const char *pattern,
                                 const char *what)
{
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &errcode, &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        err_at(c, at, "invalid regex in %s: %s at offset %zu", what, (const char *)msg,
               (size_t)erroff);
        return NULL;
    }
    /* JIT can be unavailable (platform, SELinux execmem); the interpreter
     * then gives the same answers, only slower, so this is not an error. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return add_regex(c, re) ? re : NULL;
}

/* RFC 9110 tchar. */
static bool is_token(const char *s)
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

/* Visible ASCII without the characters that end or escape a path. */
static const char *check_path_chars(const char *s)
{
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch <= 0x20 || ch >= 0x7f)
            return "must not contain spaces, control or non-ASCII characters "
                   "(percent-encode them)";
        if (ch == '?')
            return "must not contain `?` (match query parameters with `query`)";
        if (ch == '#')
            return "must not contain `#`";
    }
    return NULL;
}

static bool check_path(struct cfg *c, const struct pt_ynode *n, const char *key, const char *p)
{
    if (p[0] != '/') {
        err_at(c, n, "%s `%s` must start with `/`", key, p);
        return false;
    }
    const char *why = check_path_chars(p);
    if (why) {
        err_at(c, n, "%s `%s` %s", key, p, why);
        return false;
    }
    return true;
}

/* The literal text of a route path or rewrite with each `{param}` standing
 * in as "p" (*raw), and the same normalised as requests are (*lit;
 * limits.normalize_path and limits.merge_slashes: `limits` is read before
 * `routes`). Returns the normalised length, -1 for a path every request
 * of which is refused (a `..` above `/`, a `%` without two hex digits), or
 * -2 when out of memory. Both strings are malloc'd (free them). */
static long normal_literal(struct cfg *c, const char *p, bool always, char **raw, char **lit)
{
    size_t len = strlen(p), k = 0;
    *raw = malloc(len + 1);
    *lit = malloc(len + 1);
    if (!*raw || !*lit)
        return -2;
    for (const char *q = p; *q; q++) {
        const char *end = *q == '{' ? strchr(q, '}') : NULL;
        if (end) {
            (*raw)[k++] = 'p';
            q = end;
        } else {
            (*raw)[k++] = *q;
        }
    }
    (*raw)[k] = 0;
    memcpy(*lit, *raw, k + 1);
    if (!always && !c->g->limits.normalize_path)
        return (long)k;
    long nl = pt_path_normalize(*lit, k, c->g->limits.merge_slashes);
    if (nl >= 0)
        (*lit)[nl] = 0;
    return nl;
}

/* A route path requests can match: the router sees normalised paths only,
 * so `/a/./b`, `/a//b` or `/%7Euser` would never match anything. */
static bool check_path_normal(struct cfg *c, const struct pt_ynode *n, const char *key,
                              const char *p)
{
    char *raw, *lit;
    long nl = normal_literal(c, p, false, &raw, &lit);
    bool ok = nl >= 0 && strcmp(lit, raw) == 0;
    if (nl == -2) {
        oom(c);
    } else if (nl < 0) {
        err_at(c, n,
               "%s `%s` can never match: a request whose path has a `..` above `/` or a `%%` "
               "not followed by two hex digits is refused with 400",
               key, p);
    } else if (!ok && !strchr(p, '{')) {
        err_at(c, n,
               "%s `%s` can never match: request paths are normalised before routing (dot "
               "segments resolved, escaped unreserved characters decoded%s), so write `%s`",
               key, p, c->g->limits.merge_slashes ? ", `//` merged" : "", lit);
    } else if (!ok) {
        err_at(c, n,
               "%s `%s` can never match: request paths are normalised before routing (dot "
               "segments resolved, escaped unreserved characters decoded%s)",
               key, p, c->g->limits.merge_slashes ? ", `//` merged" : "");
    }
    free(raw);
    free(lit);
    return ok;
}

static bool is_param_name(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = s[i];
        if (!(ch == '_' || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9')))
            return false;
    }
    return true;
}

/* "{name}" only as whole segments, names unique and at most
 * PT_ROUTE_MAX_PARAMS of them: the router's template trie relies on it. */
static bool check_template(struct cfg *c, const struct pt_ynode *n, const char *t,
                           struct params *ps)
{
    if (!check_path(c, n, "path_template", t))
        return false;
    ps->source = "path_template";
    const char *seg = t + 1;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t len = end ? (size_t)(end - seg) : strlen(seg);
        if (memchr(seg, '{', len) || memchr(seg, '}', len)) {
            if (len < 2 || seg[0] != '{' || seg[len - 1] != '}' || memchr(seg + 1, '{', len - 2) ||
                memchr(seg + 1, '}', len - 2)) {
                err_at(c, n,
                       "path_template segment `%.*s` must be a whole `{name}` segment, as in "
                       "`/users/{id}`",
                       (int)len, seg);
                return false;
            }
            if (!is_param_name(seg + 1, len - 2)) {
                err_at(c, n,
                       "path_template parameter `%.*s` needs a name of letters, digits and `_`",
                       (int)len, seg);
                return false;
            }
            for (uint32_t i = 0; i < ps->n; i++) {
                if (strlen(ps->names[i]) == len - 2 &&
                    memcmp(ps->names[i], seg + 1, len - 2) == 0) {
                    err_at(c, n, "path_template parameter `%.*s` appears twice", (int)len, seg);
                    return false;
                }
            }
            if (ps->n == PT_ROUTE_MAX_PARAMS) {
                err_at(c, n, "path_template has more than %d parameters", PT_ROUTE_MAX_PARAMS);
                return false;
            }
            ps->names[ps->n] = pt_arena_strndup(c->a, seg + 1, len - 2);
            if (!ps->names[ps->n++]) {
                oom(c);
                return false;
            }
        }
        if (!end)
            break;
        seg = end + 1;
    }
    return true;
}

/* A regex's parameters are its named groups and its group numbers (the
 * router names unnamed groups "1", "2", ...). */
static bool regex_params(struct cfg *c, const struct pt_ynode *n, pcre2_code *re, struct params *ps)
{
    uint32_t ngroups = 0, nnames = 0, esize = 0;
    PCRE2_SPTR table = NULL;
    pcre2_pattern_info(re, PCRE2_INFO_CAPTURECOUNT, &ngroups);
    pcre2_pattern_info(re, PCRE2_INFO_NAMECOUNT, &nnames);
    pcre2_pattern_info(re, PCRE2_INFO_NAMEENTRYSIZE, &esize);
    pcre2_pattern_info(re, PCRE2_INFO_NAMETABLE, &table);
    if (ngroups > PT_ROUTE_MAX_PARAMS) {
        err_at(c, n,
               "path_regex has %u capture groups; at most %d are allowed (use `(?:...)` "
               "for groups that capture nothing)",
               ngroups, PT_ROUTE_MAX_PARAMS);
        return false;
    }
    ps->source = "path_regex";
    for (uint32_t i = 0; i < nnames; i++) {
        const char *name = (const char *)table + (size_t)i * esize + 2;
        /* The table is sorted by name: with (?J) one name can stand for
         * several groups, and a parameter must mean one capture. */
        if (i > 0 && strcmp(name, ps->names[ps->n - 1]) == 0) {
            err_at(c, n, "path_regex names two groups `%s`; give each group its own name", name);
            return false;
        }
        ps->names[ps->n++] = name;
    }
    /* Named groups are params by name, and every group by its number —
     * the same rule the proxy applies (pt_param_lookup). */
    for (uint32_t i = 1; i <= ngroups; i++) {
        ps->names[ps->n] = pt_arena_sprintf(c->a, "%u", i);
        if (!ps->names[ps->n++]) {
            oom(c);
            return false;
        }
    }
    return true;
}

/* Lowercases and validates one `hosts` entry in place. */
static bool check_host(struct cfg *c, const struct pt_ynode *at, char *h)
{
    for (char *p = h; *p; p++)
        *p = lower_ascii(*p);
    const char *name = h;
    if (strncmp(h, "*.", 2) == 0)
        name = h + 2;
    if (strcmp(h, "*") == 0) {
        err_at(c, at, "host `*` matches everything: leave `hosts` out instead");
        return false;
    }
    if (strchr(name, '*')) {
        err_at(c, at,
               "host `%s`: a wildcard is only allowed as a leading `*.`, as in `*.example.com`", h);
        return false;
    }
    if (h[0] == '[') {
        /* An IPv6 literal, as the Host header carries it: `[::1]`. */
        size_t hl = strlen(h);
        char addr[64];
        struct in6_addr a6;
        if (hl < 3 || hl - 2 >= sizeof(addr) || h[hl - 1] != ']') {
            err_at(c, at, "host `%s`: an IPv6 address is written `[::1]`, without a port", h);
            return false;
        }
        memcpy(addr, h + 1, hl - 2);
        addr[hl - 2] = 0;
        if (inet_pton(AF_INET6, addr, &a6) != 1) {
            err_at(c, at, "host `%s` is not a valid IPv6 address", h);
            return false;
        }
        return true;
    }
    if (strchr(name, ':')) {
        err_at(c, at,
               "host `%s` must not include a port (hosts match the Host header without "
               "its port)",
               h);
        return false;
    }
    size_t len = strlen(name);
    if (len == 0 || len > 253) {
        err_at(c, at, "host `%s` is not a valid host name", h);
        return false;
    }
    const char *label = name;
    for (const char *p = name;; p++) {
        if (*p == '.' || *p == '\0') {
            size_t ll = (size_t)(p - label);
            if (ll == 0 || ll > 63 || label[0] == '-' || p[-1] == '-') {
                err_at(c, at, "host `%s` is not a valid host name", h);
                return false;
            }
            if (!*p)
                break;
            label = p + 1;
        } else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                     *p == '_')) {
            err_at(c, at, "host `%s` contains `%c`, which is not allowed in a host name", h, *p);
            return false;
        }
    }
    return true;
}

static const struct {
    const char *name;
    int id;
} methods_table[] = {
#define PT_X(m) {#m, PT_METHOD_##m},
    PT_METHOD_LIST(PT_X)
#undef PT_X
};

static bool walk_methods(struct cfg *c, const struct pt_ynode *n, uint32_t *mask)
{
    struct pt_strlist l;
    if (!pt_cfg_want_strlist(&c->w, n, "`methods`", &l))
        return false;
    if (l.n == 0) {
        err_at(c, n, "`methods` is empty (leave it out to match any method)");
        return false;
    }
    const char *names[PT_ARRAY_LEN(methods_table)];
    for (size_t i = 0; i < PT_ARRAY_LEN(methods_table); i++)
        names[i] = methods_table[i].name;
    bool ok = true;
    for (uint32_t i = 0; i < l.n; i++) {
        const struct pt_ynode *at = n->kind == PT_YSEQ ? n->items[i] : n;
        const char *m = l.v[i];
        size_t j = 0;
        while (j < PT_ARRAY_LEN(methods_table) && strcmp(methods_table[j].name, m) != 0)
            j++;
        if (j < PT_ARRAY_LEN(methods_table)) {
            *mask |= 1u << methods_table[j].id;
            continue;
        }
        ok = false;
        char upper[32];
        size_t k = 0;
        for (; m[k] && k + 1 < sizeof(upper); k++)
            upper[k] = (m[k] >= 'a' && m[k] <= 'z') ? (char)(m[k] - 32) : m[k];
        upper[k] = 0;
        bool known_upper = false;
        for (size_t q = 0; q < PT_ARRAY_LEN(names); q++)
            known_upper |= strcmp(names[q], upper) == 0;
        if (known_upper) {
            /* RFC 9110 §9.1: "get" is a different (unknown) method. */
            err_at(c, at, "methods are case-sensitive: use %s", upper);
            continue;
        }
        char hint[64];
        const char *dym =
            pt_cfg_did_you_mean(upper, names, PT_ARRAY_LEN(names), hint, sizeof(hint));
        if (*dym)
            err_at(c, at, "unknown method `%s`%s", m, dym);
        else
            err_at(c, at,
                   "unknown method `%s` (use GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, "
                   "TRACE or PATCH)",
                   m);
    }
    return ok;
}

/* Printable ASCII only (what a request-target can hold unescaped). */
static bool visible_ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

/* `headers:` / `query:` predicates: exact value, or a regex as "~re". */
static bool walk_kv(struct cfg *c, const struct pt_ynode *n, bool headers, struct pt_kv_match **out,
                    uint32_t *nout)
{
    const char *what = headers ? "`headers`" : "`query`";
    char buf[64];
    if (!pt_cfg_want_map(&c->w, n, what) || n->kind != PT_YMAP)
        return n->is_null;
    if (n->n == 0) {
        err_at(c, n, "%s is empty (leave it out to match anything)", what);
        return false;
    }
    struct pt_kv_match *v = pt_arena_zalloc(c->a, sizeof(*v) * n->n);
    if (!v) {
        oom(c);
        return false;
    }
    bool ok = true;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *key = n->pairs[i].key, *val = n->pairs[i].value;
        const char *name = key->str;
        if (headers && !is_token(name)) {
            err_at(c, key, "`%s` is not a valid header name", name);
            ok = false;
            continue;
        }
        if (headers && strcasecmp(name, "host") == 0) {
            err_at(c, key, "match the Host header with `hosts`, not `headers`");
            ok = false;
            continue;
        }
        if (headers && strchr(name, '_') && c->g->limits.underscores != PT_US_ALLOW) {
            err_at(c, key,
                   "header `%s` can never match: fields whose name has `_` are %s before "
                   "routing (set `limits.headers_with_underscores: allow` to route on them)",
                   name, c->g->limits.underscores == PT_US_DROP ? "dropped" : "refused with 400");
            ok = false;
            continue;
        }
        if (!headers && (!*name || strpbrk(name, "&=#") || !visible_ascii(name))) {
            err_at(c, key,
                   "`%s` is not a valid query parameter name (as it appears in the "
                   "request-target: no `&`, `=`, `#`, spaces or non-ASCII; percent-encoded "
                   "names are compared as sent)",
                   name);
            ok = false;
            continue;
        }
        if (val->kind != PT_YSCALAR || val->is_null) {
            err_at(c, val, "expected a string for `%s` in %s, got %s", name, what,
                   pt_cfg_describe(val, buf, sizeof(buf)));
            ok = false;
            continue;
        }
        struct pt_kv_match *m = &v[k];
        m->name = dup_str(c, name);
        m->token = headers ? pt_token_lookup(name, strlen(name)) : 0;
        if (val->str[0] == '~') {
            char where[160];
            snprintf(where, sizeof(where), "%s `%s`", headers ? "header" : "query parameter", name);
            m->re = compile_regex(c, val, val->str + 1, where);
            if (!m->re) {
                ok = false;
                continue;
            }
        } else {
            if (!headers && (strpbrk(val->str, "&#") || !visible_ascii(val->str))) {
                err_at(c, val,
                       "query parameter `%s`: value `%s` can never match (values are compared "
                       "as sent in the request-target: no `&`, `#`, spaces or non-ASCII; "
                       "percent-encode them, or use `~regex`)",
                       name, val->str);
                ok = false;
                continue;
            }
            m->value = dup_str(c, val->str);
        }
        k++;
    }
    *out = v;
    *nout = k;
    return ok;
}

static void walk_match(struct cfg *c, const struct pt_ynode *n, struct pt_route *r,
                       struct params *ps)
{
    if (!pt_cfg_want_map(&c->w, n, "`match`"))
        return;
    const struct pt_ynode *v[M_N] = {0}, *k[M_N] = {0};
    pt_cfg_bind_keys(&c->w, n, match_keys, NULL, "in route match", v, k);
    struct pt_route_match *m = &r->match;

    if (v[M_HOSTS]) {
        struct pt_strlist hosts;
        if (pt_cfg_want_strlist(&c->w, v[M_HOSTS], "`hosts`", &hosts)) {
            if (hosts.n == 0)
                err_at(c, v[M_HOSTS], "`hosts` is empty (leave it out to match any host)");
            for (uint32_t i = 0; i < hosts.n; i++) {
                const struct pt_ynode *at =
                    v[M_HOSTS]->kind == PT_YSEQ ? v[M_HOSTS]->items[i] : v[M_HOSTS];
                check_host(c, at, (char *)hosts.v[i]);
            }
            m->hosts = hosts.v;
            m->nhosts = hosts.n;
        }
    }

    /* At most one path form; the later one (in the file) is the error. */
    int first = -1;
    for (int i = M_PATH; i <= M_PATH_REGEX; i++) {
        if (!k[i])
            continue;
        if (first < 0 || k[i]->line < k[first]->line ||
            (k[i]->line == k[first]->line && k[i]->col < k[first]->col))
            first = i;
    }
    for (int i = M_PATH; i <= M_PATH_REGEX; i++) {
        if (!k[i] || i == first)
            continue;
        err_at(c, k[i],
               "`%s` conflicts with `%s` (at %s:%d:%d): set only one of path, path_prefix, "
               "path_template and path_regex",
               match_keys[i], match_keys[first], c->file, k[first]->line, k[first]->col);
    }
    if (first == M_PATH) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH], "`path`");
        if (p && check_path(c, v[M_PATH], "path", p) && check_path_normal(c, v[M_PATH], "path", p))
            m->path = dup_str(c, p);
    } else if (first == M_PATH_PREFIX) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH_PREFIX], "`path_prefix`");
        if (p && check_path(c, v[M_PATH_PREFIX], "path_prefix", p) &&
            check_path_normal(c, v[M_PATH_PREFIX], "path_prefix", p))
            m->path_prefix = dup_str(c, p);
    } else if (first == M_PATH_TEMPLATE) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH_TEMPLATE], "`path_template`");
        if (p && check_template(c, v[M_PATH_TEMPLATE], p, ps) &&
            check_path_normal(c, v[M_PATH_TEMPLATE], "path_template", p))
            m->path_template = dup_str(c, p);
    } else if (first == M_PATH_REGEX) {
        const char *p = pt_cfg_want_str(&c->w, v[M_PATH_REGEX], "`path_regex`");
        pcre2_code *re = p ? compile_regex(c, v[M_PATH_REGEX], p, "`path_regex`") : NULL;
        if (re && regex_params(c, v[M_PATH_REGEX], re, ps)) {
            m->path_regex = dup_str(c, p);
            m->regex = re;
        }
    }

    if (v[M_METHODS])
        walk_methods(c, v[M_METHODS], &m->methods);
    if (v[M_HEADERS])
        walk_kv(c, v[M_HEADERS], true, &m->headers, &m->nheaders);
    if (v[M_QUERY])
        walk_kv(c, v[M_QUERY], false, &m->query, &m->nquery);
}

/* `rewrite` may use only the parameters the route's path defines. */
static void check_rewrite(struct cfg *c, const struct pt_ynode *n, const char *rw,
                          const struct params *ps)
{
    if (rw[0] != '/') {
        err_at(c, n, "rewrite `%s` must start with `/`", rw);
        return;
    }
    for (const char *p = rw; *p; p++) {
        unsigned char ch = (unsigned char)*p;
        if (ch <= 0x20 || ch >= 0x7f) {
            err_at(c, n, "rewrite `%s` must not contain spaces, control or non-ASCII characters",
                   rw);
            return;
        }
        if (ch == '?' || ch == '#') {
            err_at(c, n,
                   "rewrite `%s` must not contain `%c`: it replaces the path only, and the "
                   "request's query is kept as sent",
                   rw, ch);
            return;
        }
        if (ch == '}') {
            err_at(c, n, "rewrite `%s` has a `}` without `{`", rw);
            return;
        }
        if (ch != '{')
            continue;
        const char *end = strchr(p + 1, '}');
        if (!end) {
            err_at(c, n, "rewrite `%s` has a `{` without `}`", rw);
            return;
        }
        size_t len = (size_t)(end - p - 1);
        bool number = len > 0 && strspn(p + 1, "0123456789") >= len;
        if (!number && !is_param_name(p + 1, len)) {
            err_at(c, n, "rewrite `%s`: `%.*s` is not a parameter name", rw, (int)(len + 2), p);
            return;
        }
        bool found = false;
        for (uint32_t i = 0; i < ps->n && !found; i++)
            found = strlen(ps->names[i]) == len && memcmp(ps->names[i], p + 1, len) == 0;
        if (!found) {
            char name[128], hint[160];
            snprintf(name, sizeof(name), "%.*s", (int)len, p + 1);
            if (!ps->source) {
                err_at(c, n,
                       "rewrite uses `{%s}`, but the route's path defines no parameters (use a "
                       "path_template such as `/users/{%s}`)",
                       name, name);
            } else {
                /* Group numbers are not names anyone misspells: suggest
                 * only among real names. */
                const char *s = number ? NULL : pt_cfg_suggest(name, ps->names, ps->n);
                if (s)
                    snprintf(hint, sizeof(hint), " (did you mean `{%s}`?)", s);
                else
                    hint[0] = 0;
                err_at(c, n, "rewrite uses `{%s}`, which the %s does not define%s", name,
                       ps->source, hint);
            }
        }
        p = end;
    }
    /* Its literal text must survive path normalisation, or every request
     * the route matches would be refused: parameters stand in as "p". */
    char *raw, *lit;
    long nl = normal_literal(c, rw, true, &raw, &lit);
    free(raw);
    if (nl == -2) {
        free(lit);
        return oom(c);
    }
    if (nl < 0)
        err_at(c, n,
               "rewrite `%s` is not a valid path: a `..` climbs above `/` or a `%%` is not "
               "followed by two hex digits",
               rw);
    free(lit);
}

/* strip_prefix must remove whole leading segments of every path the
 * route matches, so it must equal literal leading segments of the
 * route's path. The proxy strips it byte-wise, so this check is what keeps
 * it on segment boundaries: a `{param}` segment would let "/v1x" lose
 * "/v1". */
static void check_strip_prefix(struct cfg *c, const struct pt_ynode *n, const char *sp,
                               const struct pt_route_match *m)
{
    if (!check_path(c, n, "strip_prefix", sp))
        return;
    if (strcmp(sp, "/") == 0 || sp[strlen(sp) - 1] == '/') {
        err_at(c, n, "strip_prefix `%s` must not end with `/` (write `/v1`, not `/v1/`)", sp);
        return;
    }
    const char *path = m->path ? m->path : m->path_prefix ? m->path_prefix : m->path_template;
    const char *kind = m->path ? "path" : m->path_prefix ? "path_prefix" : "path_template";
    if (!path) {
        /* With a regex or no path at all, nothing says the prefix is
         * there, and stripping bytes off a path that merely starts with
         * them ("/v10" for "/v1") would be wrong: refuse it. */
        err_at(c, n,
               "strip_prefix needs the route to match a `path`, `path_prefix` or "
               "`path_template` it is a leading part of (with path_regex, use `rewrite`)");
        return;
    }
    const char *a = sp + 1, *b = path + 1;
    for (;;) {
        const char *ae = strchr(a, '/'), *be = strchr(b, '/');
        size_t al = ae ? (size_t)(ae - a) : strlen(a), bl = be ? (size_t)(be - b) : strlen(b);
        if (m->path_template && bl >= 2 && b[0] == '{') {
            err_at(c, n,
                   "strip_prefix `%s` reaches the parameter segment `%.*s` of path_template "
                   "`%s`: strip only literal segments, or use `rewrite`",
                   sp, (int)bl, b, path);
            return;
        }
        bool b_done = !*b && !be;
        if (b_done || al != bl || memcmp(a, b, al) != 0) {
            err_at(c, n,
                   "strip_prefix `%s` is not a leading part of %s `%s`, so it would not "
                   "apply to every request of this route",
                   sp, kind, path);
            return;
        }
        if (!ae)
            return;
        if (!be) {
            err_at(c, n, "strip_prefix `%s` is longer than %s `%s`", sp, kind, path);
            return;
        }
        a = ae + 1;
        b = be + 1;
    }
}

/* The route's effective filters: the defaults, replaced per filter by the
 * route's own entries, minus those it switches `off`. */
static bool build_chain(struct cfg *c, struct pt_route *r, const struct filter_set *own)
{
    uint32_t cap = c->defaults.n + own->n;
    if (cap == 0)
        return true;
    struct pt_filter_inst *inst = pt_arena_zalloc(c->a, sizeof(*inst) * cap);
    if (!inst) {
        oom(c);
        return false;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->defaults.n; i++) {
        const struct pt_filter_def *def = c->defaults.v[i].def;
        bool overridden = false;
        for (uint32_t j = 0; j < own->n && !overridden; j++)
            overridden = own->v[j].def == def;
        if (!overridden)
            inst[n++] = (struct pt_filter_inst){def, c->defaults.v[i].conf, 0};
    }
    for (uint32_t j = 0; j < own->n; j++)
        if (!own->v[j].off)
            inst[n++] = (struct pt_filter_inst){own->v[j].def, own->v[j].conf, 0};
    for (uint32_t i = 0; i < n; i++)
        inst[i].state_index = i;
    if (pt_chain_build(&r->chain, inst, n, c->a) < 0) {
        oom(c);
        return false;
    }
    return true;
}

static bool chain_has(const struct pt_chain *ch, const char *name)
{
    for (uint32_t i = 0; i < ch->n_all; i++)
        if (strcmp(ch->all[i].def->name, name) == 0)
            return true;
    return false;
}

static void walk_route(struct cfg *c, const struct pt_ynode *n, struct pt_route *r,
                       struct strtab *names)
{
    if (!pt_cfg_want_map(&c->w, n, "each route"))
        return;
    r->pos = (struct pt_src_pos){n->line, n->col};
    const struct pt_ynode *v[R_N] = {0}, *k[R_N] = {0};
    uint32_t refused = pt_cfg_bind_keys(&c->w, n, route_keys, route_planned, "in route", v, k);

    if (!v[R_NAME]) {
        if (!refused)
            err_at(c, n, "route has no `name`");
    } else {
        r->name = want_name(c, v[R_NAME], "route name", PT_NAME_MAX);
        if (r->name) {
            const struct pt_ynode *first = strtab_put(c, names, r->name, v[R_NAME]);
            if (first)
                err_at(c, v[R_NAME], "duplicate route name `%s` (first defined at %s:%d:%d)",
                       r->name, c->file, first->line, first->col);
        }
    }

    struct params ps = {.n = 0};
    if (v[R_MATCH])
        walk_match(c, v[R_MATCH], r, &ps);

    int64_t prio;
    if (v[R_PRIORITY] &&
        pt_cfg_want_int(&c->w, v[R_PRIORITY], "`priority`", -1000000, 1000000, &prio))
        r->priority = (int)prio;

    if (v[R_UPSTREAM]) {
        const char *u = pt_cfg_want_str(&c->w, v[R_UPSTREAM], "`upstream`");
        if (u) {
            r->upstream = (struct pt_upstream *)strtab_get(&c->upstreams, u);
            if (!r->upstream) {
                const struct pt_generation *g = c->g;
                const char **cands = malloc((g->nupstreams + 1) * sizeof(*cands));
                if (!cands)
                    return oom(c);
                for (uint32_t i = 0; i < g->nupstreams; i++)
                    cands[i] = g->upstreams[i].name;
                char hint[160];
                if (g->nupstreams == 0)
                    err_at(c, v[R_UPSTREAM],
                           "unknown upstream `%s` (no upstreams are defined: add it under "
                           "`upstreams`)",
                           u);
                else
                    err_at(c, v[R_UPSTREAM], "unknown upstream `%s`%s", u,
                           pt_cfg_did_you_mean(u, cands, g->nupstreams, hint, sizeof(hint)));
                free(cands);
            }
        }
    }

    if (v[R_STRIP_PREFIX] && v[R_REWRITE]) {
        const struct pt_ynode *later = k[R_REWRITE]->line > k[R_STRIP_PREFIX]->line ||
                                               (k[R_REWRITE]->line == k[R_STRIP_PREFIX]->line &&
                                                k[R_REWRITE]->col > k[R_STRIP_PREFIX]->col)
                                           ? k[R_REWRITE]
                                           : k[R_STRIP_PREFIX];
        err_at(c, later,
               "`strip_prefix` and `rewrite` cannot be combined (rewrite replaces the whole "
               "path; write the result you want in `rewrite`)");
    } else if (v[R_STRIP_PREFIX]) {
        const char *sp = pt_cfg_want_str(&c->w, v[R_STRIP_PREFIX], "`strip_prefix`");
        if (sp) {
            check_strip_prefix(c, v[R_STRIP_PREFIX], sp, &r->match);
            r->strip_prefix = dup_str(c, sp);
        }
    } else if (v[R_REWRITE]) {
        const char *rw = pt_cfg_want_str(&c->w, v[R_REWRITE], "`rewrite`");
        if (rw) {
            check_rewrite(c, v[R_REWRITE], rw, &ps);
            r->rewrite = dup_str(c, rw);
        }
    }

    if (v[R_TIMEOUT])
        pt_cfg_want_duration(&c->w, v[R_TIMEOUT], "`timeout`", true, &r->timeout_ms);
    if (v[R_MAX_BODY])
        pt_cfg_want_size(&c->w, v[R_MAX_BODY], "`max_body_bytes`", true, &r->max_body_bytes);

    struct filter_set own = {0};
    if (v[R_FILTERS])
        walk_filter_block(c, v[R_FILTERS], true, &own);
    build_chain(c, r, &own);
    free(own.v);

    if (!v[R_UPSTREAM] && !refused && !chain_has(&r->chain, "aggregate")) {
        if (r->name)
            err_at(c, n, "route `%s` has no `upstream`", r->name);
        else
            err_at(c, n, "route has no `upstream`");
    }
}

static void walk_routes(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_seq(&c->w, n, "`routes`") || n->n == 0)
        return;
    struct pt_generation *g = c->g;
    g->routes = pt_arena_zalloc(c->a, sizeof(*g->routes) * n->n);
    if (!g->routes)
        return oom(c);
    struct strtab names = {0};
    for (uint32_t i = 0; i < n->n; i++) {
        struct pt_route *r = &g->routes[i];
        r->index = i;
        walk_route(c, n->items[i], r, &names);
    }
    g->nroutes = n->n;
    strtab_free(&names);
}
