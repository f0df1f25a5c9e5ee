/*
 * config_int.h — private to the config loader's schema walk (config.c,
 * config_upstreams.c, config_filters.c, config_routes.c): the state of one
 * pt_config_load call and the few helpers the sections share. Nothing
 * outside those files includes it; the API is config.h, and the YAML tree
 * and typed readers they all use are in config_yaml.h.
 *
 * Ownership as in config.c: values land in the generation's arena; the
 * name tables and filter sets here are malloc'd scratch, freed before
 * pt_config_load returns.
 */
#ifndef PT_CONTROL_CONFIG_INT_H
#define PT_CONTROL_CONFIG_INT_H

#include "control/config.h"
#include "control/config_yaml.h"

#include <stdarg.h>

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
    const struct pt_ynode *defaults_at;  /* its node (NULL: none) */
    struct strtab upstreams;             /* name → struct pt_upstream * */
    const struct pt_ynode **listener_at; /* address node of g->listeners[i] */
    const struct pt_resolver *dns;       /* answers for host names; NULL: none */
    struct pt_upstream *urls;            /* URL authorities with a host name (malloc'd) */
    const char **urls_ca;                /* each one's `tls_ca` as written (https; malloc'd) */
    uint32_t nurls, capurls;
    /* The consumers file: given text (src->consumers_given) or read from
     * disk, and its own messages, flushed with its path (malloc'd). */
    const struct pt_config_src *src;
    struct pt_cfg_errors cons_errs;
    char *cons_path;
};

/* ---- messages (config.c) ---- */

__attribute__((format(printf, 3, 4))) static inline void
err_at(struct cfg *c, const struct pt_ynode *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pt_cfg_verr(&c->w, n, fmt, ap);
    va_end(ap);
}

static inline void oom(struct cfg *c)
{
    pt_cfg_oom(&c->w);
}

static inline const char *dup_str(struct cfg *c, const char *s)
{
    const char *p = pt_arena_strdup(c->a, s);
    if (!p)
        oom(c);
    return p;
}

/* ---- name tables (config.c) ---- */

/* Returns the existing value for `key` (and leaves it), or inserts `val`
 * and returns NULL. Sets c->w.oom on allocation failure. */
const void *pt_cfg_strtab_put(struct cfg *c, struct strtab *t, const char *key, const void *val);
const void *pt_cfg_strtab_get(const struct strtab *t, const char *key);
void pt_cfg_strtab_free(struct strtab *t);

/* Names of listeners, upstreams and routes end up in metrics labels,
 * admin URLs and access-log lines: keep them to characters that need no
 * escaping anywhere, and short enough that a log line always fits. */
#define PT_NAME_MAX 128
#define PT_LISTENER_NAME_MAX 31 /* copied into each connection */

/* A name (listener, upstream, route) copied into the arena, or NULL after
 * reporting why it is not one. */
const char *pt_cfg_want_name(struct cfg *c, const struct pt_ynode *n, const char *what, size_t max);

/* Same family, address and port. */
bool pt_cfg_same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);

/* ---- the sections walk_root hands off ---- */

/* `upstreams:` (config_upstreams.c); each is registered in c->upstreams. */
void pt_cfg_walk_upstreams(struct cfg *c, const struct pt_ynode *n);
/* An upstream's failure handling (config_resilience.c): `failure_statuses`,
 * `health_check.passive`, `circuit_breaker`, over walk_upstream's
 * defaults. */
void pt_cfg_walk_failure_statuses(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u);
void pt_cfg_walk_passive(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u);
void pt_cfg_walk_breaker(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u);
/* An upstream's `retries:` mapping (config_retries.c). */
void pt_cfg_walk_retries(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u);
/* A `filters:` mapping (config_filters.c), top level (defaults) or, with
 * `in_route`, a route's own; `out->v` is malloc'd. */
void pt_cfg_walk_filter_block(struct cfg *c, const struct pt_ynode *n, bool in_route,
                              struct filter_set *out);
/* `resolver:` (config_upstreams.c): DNS servers into g->resolver. */
void pt_cfg_walk_resolver(struct cfg *c, const struct pt_ynode *n);
/* A URL an outbound call will use (a PT_F_URL field): checked, and when
 * its host is a name, registered so that it is resolved like a target
 * (config_upstreams.c). An https:// one is always registered, with its
 * TLS (verified; against the file at `ca_at`, the mapping's `tls_ca`, or
 * the system store). False after reporting at n. */
bool pt_cfg_register_url(struct cfg *c, const struct pt_ynode *n, const char *url,
                         const struct pt_ynode *ca_at);
/* `upstreams.*.tls` (config_upstream_tls.c): NULL when off or after reporting. */
const struct pt_upstream_tls *pt_cfg_walk_upstream_tls(struct cfg *c, const struct pt_ynode *n);
/* The TLS of an https:// URL at `at`: verification on, against the CA
 * file at `ca_at` (a `tls_ca` key) or else the system store. */
const struct pt_upstream_tls *pt_cfg_url_tls(struct cfg *c, const struct pt_ynode *at,
                                             const struct pt_ynode *ca_at);
/* Turns the registered URL authorities into g->url_upstreams. */
void pt_cfg_build_url_upstreams(struct cfg *c);
/* `consumers:` and `consumers_file` (config_consumers.c): g->consumers
 * and its key table, the config's consumers first, then the file's
 * (either node may be NULL). */
void pt_cfg_walk_consumers(struct cfg *c, const struct pt_ynode *list, const struct pt_ynode *file);
/* Reads a whole file (at most 16 MiB) into a malloc'd, NUL-terminated
 * buffer. 0, or -1 with a message in err (errno kept from open()). */
int pt_cfg_read_file(const char *path, char **text, size_t *len, char *err, size_t errlen);
/* `cluster:` (config_cluster.c): g->redis and has_redis; sets the
 * default prefix when n is NULL (no section). Before filters and routes:
 * rate_limit's `scope: cluster` needs to know whether there is a store. */
void pt_cfg_walk_cluster(struct cfg *c, const struct pt_ynode *n);
/* `tracing:` (config_tracing.c): g->tracing; the endpoint's URL is
 * registered like ext_auth's. */
void pt_cfg_walk_tracing(struct cfg *c, const struct pt_ynode *n);
/* A listener's `tls:` block (config_tls.c): checks it and builds
 * l->tls (its SSL_CTX) with l->name and l->http2 already set. False after
 * reporting. */
bool pt_cfg_walk_listener_tls(struct cfg *c, const struct pt_ynode *n, struct pt_listener_cfg *l);
/* `routes:` (config_routes.c), after upstreams and default filters. */
void pt_cfg_walk_routes(struct cfg *c, const struct pt_ynode *n);
/* An RFC 9110 token (header and cookie names) (config_routes.c). */
bool pt_cfg_is_token(const char *s);
/* The upstream called `name`, or NULL after an "unknown upstream" error at
 * `at` (with a did-you-mean) (config_routes.c). */
struct pt_upstream *pt_cfg_find_upstream(struct cfg *c, const struct pt_ynode *at,
                                         const char *name);
/* A route's `split`, `sticky` and `override_header` (config_split.c); any
 * of the nodes may be NULL (key absent). Sets r->split. */
void pt_cfg_walk_split(struct cfg *c, const struct pt_ynode *split, const struct pt_ynode *sticky,
                       const struct pt_ynode *override, struct pt_route *r);

#endif
