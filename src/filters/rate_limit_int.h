/*
 * rate_limit_int.h — what the rate_limit filter's two files share:
 * rate_limit.c (config, keys, the local decision, the answers) and
 * rate_limit_cluster.c (the decision on the shared store, its script and
 * its failure modes).
 *
 *   rate_limit:
 *     limits:
 *       - { name: burst, key: consumer, rate: 100/s, burst: 20 }
 *       - { key: [consumer, route], rate: 10000/d, algorithm: sliding_window }
 *     scope: local              # local | cluster
 *     on_store_failure: local   # cluster only: allow | deny | local
 *     store_timeout: 50ms       # cluster only: the longest a request waits
 *     headers: true             # RateLimit-* on every response of the route
 *
 * A limit's identity (the state it keeps across reloads) is the route
 * (ctx->route_name), `id` (its name, else "#<position>") and its key spec;
 * a reload that keeps all three keeps the state (also across a change of
 * rate or burst). The state's shape is the algorithm's (and a sliding
 * window's period), so those are part of the key too: locally in the
 * cell's kind, on the shared store in the key's text.
 */
#ifndef PT_FILTERS_RATE_LIMIT_INT_H
#define PT_FILTERS_RATE_LIMIT_INT_H

#include "filters/filter.h"
#include "filters/rl_table.h"

#define PT_RL_MAX_LIMITS 16

enum rl_key_kind { RLK_CONSUMER, RLK_IP, RLK_ROUTE, RLK_HEADER, RLK_JWT };

struct rl_keypart {
    enum rl_key_kind kind;
    pt_slice name; /* header name / claim name */
    int token;     /* header token (http/headers.h), or -1 */
};

struct rl_limit {
    /* as parsed */
    const char *name;
    struct pt_strlist key; /* default: [ip] */
    const char *rate;
    int64_t burst;
    const char *algorithm; /* gcra (default) | sliding_window */
    /* compiled */
    struct pt_rl_params params;
    struct rl_keypart *parts;
    uint32_t nparts;
    pt_slice id; /* "<name>" or "#<position>", then ":" and the key spec ("consumer+route") */
    /* An earlier limit with the same key parts (its value is reused), or
     * -1. */
    int same_key_as;
};

enum rl_on_failure { RL_FAIL_LOCAL = 0, RL_FAIL_ALLOW, RL_FAIL_DENY };

struct rl_conf {
    /* as parsed */
    struct pt_objlist limits; /* struct rl_limit */
    const char *scope;
    const char *on_store_failure;
    const char *store_timeout; /* a duration, 1ms to 10s; default 50ms */
    const char *headers;       /* true (default) | false */
    /* compiled */
    struct rl_limit *lim;
    uint32_t nlim;
    bool cluster;
    bool needs_wall; /* a sliding-window limit: the take reads the UTC clock */
    uint64_t store_timeout_ms;
    enum rl_on_failure on_failure;
    bool send_headers;
    pt_slice policy; /* RateLimit-Policy: "100;w=1;burst=20, 10000;w=86400" */
};

struct rl_state {
    const struct rl_conf *conf; /* cluster: for the store's answer (rate_limit_cluster.c) */
    /* conf->nlim entries each, in the request arena (rl_on_request): the
     * state the chain zeroes per request stays a few words. */
    pt_slice *values; /* each limit's key value, unambiguous text */
    struct pt_rl_result *res;
    bool decided; /* res holds the decision: headers go on the response */
    /* for the access log: "admitted", "refused", "fail_open",
     * "store_failure_allow", ...; NULL: pt_rl_finish says admitted or
     * refused */
    const char *outcome;
    /* RateLimit-Limit, -Remaining, -Reset as sent (pt_rl_finish), put
     * again on the upstream's response head */
    pt_slice hdr[3];
};

/* rate_limit.c: the key text of one limit from its parts' values: each
 * percent-escaped (':' '%' and bytes outside 0x21..0x7e) and joined by
 * ':' (a single part with nothing to escape is used as it is). 0, or
 * -ENOMEM. */
int pt_rl_key_text(struct pt_arena *a, const pt_slice *vals, uint32_t n, pt_slice *out);
/* rate_limit.c: the local decision over the process table; fills st->res
 * and answers through pt_rl_finish. */
int pt_rl_local_take(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st);
/* rate_limit.c: the answer once st->res holds the decision: CONTINUE when
 * admitted, else RESPOND with the 429 (JSON error, Retry-After, RateLimit-*). */
int pt_rl_finish(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st,
                 bool admitted);

/* rate_limit_cluster.c: starts the decision on the shared store
 * (PT_FILTER_SUSPEND), or, when it cannot start, applies on_store_failure
 * at once and returns that answer. */
int pt_rl_cluster_take(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st);
/* rate_limit_cluster.c: the decision's Lua script (its SHA-1 computed on
 * first use), for tests. */
const struct pt_redis_script *pt_rl_cluster_script(void);
/* rate_limit_cluster.c: the store did not answer (down, timeout, error
 * reply): allow, deny (503 + Retry-After: 1) or decide locally, and log
 * the first failure of a streak. */
int pt_rl_store_failed(struct pt_filter_ctx *ctx, const struct rl_conf *conf, struct rl_state *st,
                       const char *why);

#endif
