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

/* Where a config value came from, for error messages and /debug output. */
struct pt_src_pos {
    int line, col; /* 1-based */
};

struct pt_target {
    const char *address; /* "127.0.0.1:9001" as written */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int weight; /* default 1 */
    uint32_t index;
    /* Health and active requests, shared by every worker and kept across
     * reloads (proxy/state.h). Set by the runtime before the generation is
     * published; NULL in a generation that never runs (validate, tests). */
    struct pt_target_state *state;
};

enum pt_balance { PT_BALANCE_ROUND_ROBIN = 0 };

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

struct pt_upstream {
    const char *name;
    uint32_t index;
    struct pt_target *targets;
    uint32_t ntargets;
    enum pt_balance balance;
    uint64_t connect_timeout_ms; /* default 1 s → 504 */
    uint64_t read_timeout_ms;    /* default 30 s → 504 */
    uint32_t keepalive;          /* idle pooled connections per worker per target; default 64 */
    struct pt_health_active hc;
    struct pt_src_pos pos;
};

#endif
