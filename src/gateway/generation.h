/*
 * generation.h — one immutable configuration generation (DESIGN.md §3).
 *
 * The control thread parses YAML into a generation: every string, route,
 * upstream, compiled regex and filter config lives in `arena` (regexes are
 * PCRE2 objects freed by pt_generation_free). Workers only read it. A
 * request pins the generation it started on until its log phase; the
 * control thread frees an old generation once every worker has moved past
 * it (quiescent-state reclamation, see gateway/worker.c).
 *
 * Pins are counted in the generation itself, one counter per worker
 * (`pins`, set up by the runtime before publication): no cap on how many
 * generations a worker may have requests on, no search and no shared
 * write per request.
 */
#ifndef PT_GATEWAY_GENERATION_H
#define PT_GATEWAY_GENERATION_H

#include "core/arena.h"
#include "core/cidr.h"
#include "core/log.h"
#include "core/loop.h"
#include "filters/consumers.h"
#include "filters/filter.h"
#include "filters/cache_store.h"
#include "filters/rl_table.h"
#include "proxy/redis.h"
#include "proxy/split.h"
#include "proxy/upstream_types.h"
#include "gateway/tls_listener.h"

#include <netinet/in.h>
#include <stdatomic.h>
#include <sys/socket.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

struct pt_router;
struct pt_gen_metrics;

struct pt_listener_cfg {
    const char *name;
    const char *address; /* as written: "0.0.0.0:8080" */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    bool proxy_protocol;        /* a PROXY v1/v2 header comes before any other byte */
    bool http2;                 /* default false: h2c prior knowledge; ALPN h2 on TLS */
    struct pt_cidr *proxy_from; /* socket peers allowed to send it; none listed: any */
    uint32_t nproxy_from;
    struct pt_tls_listener *tls; /* `tls`: terminate TLS (NULL: plain HTTP) */
};

struct pt_limits {
    uint64_t max_header_bytes;  /* default 16 KiB → 431 */
    uint64_t max_headers;       /* default 100 → 431 */
    uint64_t max_body_bytes;    /* default 8 MiB → 413 */
    uint64_t max_uri_bytes;     /* default 8 KiB → 414 */
    uint64_t header_timeout_ms; /* default 10 s → 408 + close */
    uint64_t idle_timeout_ms;   /* default 60 s */
    uint64_t max_connections;   /* default 20000 (per process) */
    uint64_t drain_timeout_ms;  /* default 30 s: shutdown grace for in-flight requests */
    /* A request body must arrive at min_body_rate bytes/s (default 1 KiB,
     * 0: off), judged over each body_rate_window (default 10 s; the first
     * is the grace) in which the gateway waited on the client → 408. */
    uint64_t min_body_rate;
    uint64_t body_rate_window_ms;
    uint8_t underscores;     /* request header names with `_`: enum pt_underscores */
    bool normalize_path;     /* default true: see http/path.h */
    bool merge_slashes;      /* default true (with normalize_path) */
    uint8_t escaped_slashes; /* `%2F`/`%5C`: enum pt_escaped_slashes, default reject */
    uint8_t semicolons;      /* `;`: enum pt_semicolons, default reject */
};

/* What happens to a request header whose name holds an underscore. CGI and
 * WSGI servers read `X_User` and `X-User` as the same variable, so such a
 * field would slip past every header rule written with dashes. */
enum pt_underscores { PT_US_DROP = 0, PT_US_REJECT, PT_US_ALLOW, PT_US_MODES };
extern const char *const pt_underscores_names[PT_US_MODES];

enum pt_access_log_mode { PT_ALOG_OFF, PT_ALOG_STDOUT, PT_ALOG_FILE };

struct pt_access_log_cfg {
    enum pt_access_log_mode mode;
    const char *path; /* for PT_ALOG_FILE */
};

/* `log_level`, `log_format`, `error_log`: the error log (core/log.h),
 * applied by the runtime at start-up and on every reload. */
struct pt_log_cfg {
    enum pt_log_level level;   /* default info */
    enum pt_log_format format; /* default text */
    const char *error_log;     /* a file (relative to the config's directory); NULL: stderr */
};

/* `tracing` (gateway/trace.h). Off (enabled false) when the config has
 * no `tracing` section: traceparent then passes through untouched. */
struct pt_tracing_cfg {
    bool enabled;
    bool server_timing;        /* default false: Server-Timing on responses */
    double sample;             /* new traces' ratio in [0, 1], default 0.1 */
    const char *service_name;  /* default "portico": resource service.name */
    const char *otlp_endpoint; /* NULL: ids propagate and log, nothing is exported */
    /* How the exporter reaches it: a host-name URL through the generation's
     * URL upstream named `export_authority`; an IP literal through the
     * one-target `export_up` made here. */
    const char *export_authority;
    struct pt_upstream *export_up;
    pt_slice export_path;    /* origin-form path, with the query */
    uint32_t batch;          /* default 512 spans: export as soon as this many wait */
    uint64_t flush_every_ms; /* default 1 s: export what waits at least this often */
    uint32_t max_queue;      /* default 8192 spans per worker; more are dropped */
};

/* A header or query predicate: exact value, or regex when written "~re". */
struct pt_kv_match {
    const char *name;
    int token;         /* header token (headers only) */
    const char *value; /* exact value (NULL when regex) */
    pcre2_code *re;    /* compiled with JIT when value was "~..." */
};

struct pt_route_match {
    const char **hosts; /* exact "api.example.com" or wildcard "*.example.com"; lowercase */
    uint32_t nhosts;
    /* At most one of the four path forms is set; none = any path. */
    const char *path;          /* exact */
    const char *path_prefix;   /* segment boundary: /v1 matches /v1 and /v1/x, not /v1x */
    const char *path_template; /* "/v1/users/{id}": {name} matches one segment */
    const char *path_regex;    /* PCRE2, JIT; named groups become params */
    pcre2_code *regex;
    uint32_t methods; /* bitmask of 1u << enum pt_method; 0 = any */
    struct pt_kv_match *headers;
    uint32_t nheaders;
    struct pt_kv_match *query;
    uint32_t nquery;
    bool case_insensitive; /* `case_sensitive: false`: the path ignores ASCII case */
};

struct pt_route {
    const char *name;
    uint32_t index; /* file order */
    int priority;   /* default 0; higher first among equally specific routes */
    struct pt_route_match match;
    struct pt_upstream *upstream;       /* NULL with `split` (or an aggregate route) */
    const struct pt_route_split *split; /* canary split; NULL: `upstream` */
    const char *strip_prefix;           /* removed from the front of the path (segment boundary) */
    const char *rewrite;                /* replaces the path; "{param}" expands route params */
    uint64_t timeout_ms;                /* 0 = upstream read_timeout */
    uint64_t max_body_bytes;            /* 0 = limits.max_body_bytes */
    /* Upgrade: websocket is forwarded (and a 101 turns the exchange into a
     * tunnel); false: such a request is refused with 403. */
    bool websocket;
    struct pt_chain chain; /* compiled filters */
    struct pt_src_pos pos;
};

/* One worker's requests in flight on a generation. Written by that worker
 * only (a load and a store: a plain add, no locked instruction), read by
 * the control thread. A cache line each, so no two workers write the same
 * line per request. */
struct pt_gen_pins {
    _Alignas(64) _Atomic uint32_t count;
};

struct pt_generation {
    uint64_t id;
    struct pt_arena arena;
    const char *source_path;
    int workers;                   /* resolved: "auto" → number of CPUs */
    enum pt_io_backend io_backend; /* fixed at start, like workers */
    struct pt_listener_cfg *listeners;
    uint32_t nlisteners;
    struct pt_listener_cfg admin; /* admin listener (address); name "admin" */
    bool has_admin;
    const char *admin_token; /* bearer token for the admin API; NULL = none (loopback only) */
    struct pt_limits limits;
    struct pt_access_log_cfg access_log;
    struct pt_log_cfg log;
    struct pt_tracing_cfg tracing;
    /* `trusted_proxies`: peers whose X-Forwarded-For is believed (empty:
     * none; every peer is the client). */
    struct pt_cidr_set trusted_proxies;
    bool forward_real_ip; /* set X-Real-IP: <client> upstream */
    struct pt_upstream *upstreams;
    uint32_t nupstreams;
    /* Outbound URLs with a host name (`ext_auth.url`): one upstream per
     * authority, named by it ("authz.internal:9000"), with the host's
     * addresses as targets; svc_call finds them by authority. */
    struct pt_upstream *url_upstreams;
    uint32_t nurl_upstreams;
    /* `resolver`: the DNS servers as c-ares reads them
     * ("127.0.0.1:5353,[::1]:53"); NULL: /etc/resolv.conf. */
    const char *resolver;
    /* The config text this generation was built from, so that a DNS
     * change rebuilds the same config, not a file edited since. */
    const char *source_text;
    size_t source_len;
    struct pt_route *routes;
    uint32_t nroutes;
    struct pt_router *router;
    /* `cluster.redis` (proxy/redis.h): the shared store for rate limits
     * with `scope: cluster`; has_redis false when the config has none. */
    struct pt_redis_cfg redis;
    bool has_redis;
    /* `rate_limit_store.max_keys` (default PT_RL_DEFAULT_MAX_KEYS), and
     * the process's local rate-limit table (filters/rl_table.h): a
     * reference the runtime gives the generation before publishing it
     * (the same table as the previous generation's unless max_keys
     * changed), dropped by pt_generation_free. */
    uint64_t rl_max_keys;
    struct pt_rl_table *rl_table;
    /* `cache_store: { max_bytes, shards }` and the process's response
     * cache (filters/cache_store.h): like rl_table, a reference the runtime
     * gives the generation before publishing it (the previous generation's
     * store unless max_bytes or shards changed), dropped by
     * pt_generation_free. */
    uint64_t cache_max_bytes;
    uint32_t cache_shards;
    struct pt_cache_store *cache_store;
    /* `consumers:` with their API-key digest table (filters/consumers.h);
     * empty when the config has none. */
    struct pt_consumers consumers;
    /* `consumers_file` (default consumers.yaml beside the config), as a
     * path (relative ones joined to the config's directory); its text as
     * loaded (NULL: there was no file); consumers.v[consumers_from_file..n)
     * came from it, the ones before from the config's `consumers:`. The
     * admin API rewrites that file, never the config. */
    const char *consumers_path;
    const char *consumers_text;
    size_t consumers_len;
    uint32_t consumers_from_file;
    /* regexes to free with the generation */
    pcre2_code **regexes;
    uint32_t nregexes, capregexes;
    /* Client TLS contexts of upstreams' `tls` and https:// URLs (OpenSSL
     * SSL_CTX, reference-counted: a connection still using one keeps it),
     * freed with the generation. malloc'd array. */
    struct ssl_ctx_st **tls_ctxs;
    uint32_t ntls_ctxs, captls_ctxs;
    /* Runtime-owned (not the loader's): per-worker pin counts, indexed by
     * worker id (NULL until pt_generation_init_pins), and the control
     * thread's retired-list link. */
    struct pt_gen_pins *pins;
    uint32_t npins;
    /* `metrics.enabled` (default true) and, when on, the per-worker metric
     * blocks (gateway/metrics.h), runtime-owned like pins (NULL until
     * published; freed by pt_generation_free). */
    bool metrics_enabled;
    struct pt_gen_metrics *metrics;
    struct pt_generation *retired_next;
};

/* Gives g one pin counter per worker; before g is published. 0 or -ENOMEM. */
int pt_generation_init_pins(struct pt_generation *g, uint32_t nworkers);
void pt_generation_free(struct pt_generation *g);

#endif
