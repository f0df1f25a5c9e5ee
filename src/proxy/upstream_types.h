/*
 * upstream_types.h — what an upstream is, as configured: a named set of
 * targets with a balancing policy and timeouts. Lives in the proxy floor so
 * the outbound layer can use it without knowing about routes or config
 * files; the generation (gateway floor) holds arrays of these.
 */
#ifndef PT_PROXY_UPSTREAM_TYPES_H
#define PT_PROXY_UPSTREAM_TYPES_H

#include "core/common.h"

#include <netinet/in.h>
#include <sys/socket.h>

struct pt_target_state;
struct pt_upstream_state;
struct pt_hash_ring;
struct ssl_ctx_st; /* OpenSSL's SSL_CTX */

/* Where a config value came from, for error messages and /debug output. */
struct pt_src_pos {
    int line, col; /* 1-based */
};

struct pt_target {
    const char *address; /* "127.0.0.1:9001" as written, or the resolved "10.0.0.5:9001" */
    /* A target written as a host name ("users.internal:9001"), one of the
     * addresses it resolved to: the name is what a call's Host and a
     * probe's Host carry. NULL for an IP literal. */
    const char *name;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int weight; /* default 1 */
    uint32_t index;
    /* Health and active requests, shared by every worker and kept across
     * reloads (proxy/state.h). Set by the runtime before the generation is
     * published; NULL in a generation that never runs (validate, tests). */
    struct pt_target_state *state;
};

enum pt_balance {
    PT_BALANCE_ROUND_ROBIN = 0, /* smooth weighted, per worker */
    PT_BALANCE_LEAST_CONN,      /* fewest requests in flight (all workers) per weight */
    PT_BALANCE_P2C_EWMA,        /* power of two choices on peak-EWMA latency × (active + 1) */
    PT_BALANCE_CONSISTENT_HASH, /* a ring over hash_on's key */
};

/* upstreams.*.hash_on: where consistent_hash takes its key. */
enum pt_hash_on {
    PT_HASH_NONE = 0,
    PT_HASH_HEADER,   /* header:NAME */
    PT_HASH_COOKIE,   /* cookie:NAME */
    PT_HASH_IP,       /* the real client address */
    PT_HASH_CONSUMER, /* the identity's consumer */
};

/* upstreams.*.health_check.passive: outlier ejection from real traffic. */
struct pt_health_passive {
    bool enabled;
    uint32_t consecutive_failures; /* default 5 */
    uint64_t eject_for_ms;         /* default 30 s, doubling per repeat, up to 10× */
    uint32_t max_ejected_percent;  /* default 50 */
};

/* upstreams.*.circuit_breaker (Hystrix's defaults). */
struct pt_breaker_conf {
    bool enabled;
    double error_rate;           /* default 0.5 */
    uint32_t min_requests;       /* default 20 */
    uint64_t window_ms;          /* default 10 s */
    uint64_t open_for_ms;        /* default 5 s */
    uint32_t half_open_requests; /* default 1 */
    uint32_t max_concurrent;     /* 0: unlimited (the default) */
};

/* What a retry may be for (upstreams.*.retries.on); statuses are kept in
 * a bitmap beside it. */
enum {
    PT_RETRY_ON_CONNECT = 1u << 0, /* connect_failure: refused, unreachable, connect timeout */
    PT_RETRY_ON_RESET = 1u << 1,   /* reset: closed or reset before a complete answer */
    PT_RETRY_ON_TIMEOUT = 1u << 2, /* timeout: read or per-try timeout */
};

/* A set of HTTP statuses 100..599. */
struct pt_status_set {
    uint64_t bits[10];
};

static inline bool pt_status_in(const struct pt_status_set *s, int status)
{
    return status >= 0 && status < 640 && (s->bits[status >> 6] >> (status & 63)) & 1;
}

static inline void pt_status_add(struct pt_status_set *s, int status)
{
    if (status >= 0 && status < 640)
        s->bits[status >> 6] |= 1ull << (status & 63);
}

/* upstreams.*.retries. */
struct pt_retry_conf {
    uint32_t attempts; /* every try, the first included; default 1 (no retry) */
    uint32_t on;       /* PT_RETRY_ON_* */
    struct pt_status_set statuses;
    uint64_t per_try_timeout_ms; /* 0: none */
    double budget;            /* retries ≤ budget × requests over 10 s (+ 10/s); default 0.2 */
    uint64_t max_replay_body; /* request body bytes held for a replay; default 64 KiB */
};

/* upstreams.*.health_check.active: probes run on the control thread. */
struct pt_health_active {
    bool enabled;
    const char *path;     /* default "/" */
    const char *host;     /* Host of the probe; NULL: the target's address */
    uint64_t interval_ms; /* default 5 s, jittered ±10% */
    uint64_t timeout_ms;  /* default 1 s */
    uint32_t healthy;     /* passes in a row that make a target healthy; default 2 */
    uint32_t unhealthy;   /* failures in a row that make it unhealthy; default 3 */
};

/* A target written as a host name (`users.internal:9001`): the control
 * thread resolves it (control/resolver.h) and the loader turns each
 * address of the last good answer into a target with this weight. */
struct pt_dns_target {
    const char *written; /* "users.internal:9001" */
    const char *host;    /* "users.internal" */
    uint16_t port;
    int weight;
    uint32_t naddrs; /* addresses it expanded to in this generation */
};

/* upstreams.*.tls (and an https:// URL's): TLS to the targets. The
 * SSL_CTX is built by the config loader and freed with the generation
 * (g->tls_ctxs). */
struct pt_upstream_tls {
    struct ssl_ctx_st *ctx;
    bool verify;     /* default true: chain against `ca` (else the system store) and name */
    const char *sni; /* `sni`; NULL: the target's host name (none for an IP literal) */
    /* Pools are keyed by address and this: a connection made under one TLS
     * setting is never reused under another (0 never: plain has no tls). */
    uint64_t pool_key;
};

struct pt_upstream {
    const char *name;
    /* NULL: plain HTTP/1.1 to the targets (the common case: one test). */
    const struct pt_upstream_tls *tls;
    uint32_t index;
    struct pt_target *targets;
    uint32_t ntargets;
    enum pt_balance balance;
    uint64_t connect_timeout_ms; /* default 1 s → 504 */
    uint64_t read_timeout_ms;    /* default 30 s → 504 */
    uint32_t keepalive;          /* idle pooled connections per worker per target; default 64 */
    struct pt_health_active hc;
    struct pt_health_passive passive;
    struct pt_breaker_conf breaker;
    struct pt_retry_conf retry;
    struct pt_status_set failure_statuses; /* default 502, 503, 504 */
    /* Host-name targets (their addresses are in `targets`) and how often
     * they are resolved again (`resolve_every`, default 30 s). */
    struct pt_dns_target *dns;
    uint32_t ndns;
    uint64_t resolve_every_ms;
    enum pt_hash_on hash_on;
    const char *hash_name; /* header or cookie name for hash_on */
    /* consistent_hash: the targets' ring (proxy/hash_ring.h), built at
     * load in the generation's arena; NULL for the other policies. */
    const struct pt_hash_ring *ring;
    /* Breaker, retry budget and concurrency, shared by every worker and
     * kept across reloads (proxy/state.h); NULL as for targets. */
    struct pt_upstream_state *state;
    struct pt_src_pos pos;
};

#endif
