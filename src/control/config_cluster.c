/*
 * config_cluster.c — the top-level `cluster:` section: the shared store
 * for `scope: cluster` rate limits.
 *
 *   cluster:
 *     redis: redis://[:password@]host:port/db   # default port 6379, db 0
 *     redis_prefix: "portico:rl:"               # every key the gateway writes starts with it
 *     postgres: ...                             # planned
 *
 * The URL's host name is resolved here, on the control thread, when the
 * config loads (a reload resolves it again); workers only connect.
 */
#include "control/config_int.h"

static const char *const cluster_keys[] = {"redis", "redis_prefix", NULL};
static const char *const cluster_planned[] = {"postgres", NULL};
enum { CL_REDIS, CL_PREFIX, CL_N };

#define PREFIX_MAX 100

static void *arena_alloc(void *ud, size_t size)
{
    return pt_arena_alloc(ud, size);
}

static void walk_prefix(struct cfg *c, const struct pt_ynode *n)
{
    const char *p = pt_cfg_want_str(&c->w, n, "`cluster.redis_prefix`");
    if (!p)
        return;
    size_t len = strlen(p);
    bool ok = len <= PREFIX_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = (unsigned char)p[i] > 0x20 && (unsigned char)p[i] < 0x7f;
    if (!ok) {
        err_at(c, n,
               "`cluster.redis_prefix` must be up to %d printable characters without spaces, "
               "e.g. \"portico:rl:\"",
               PREFIX_MAX);
        return;
    }
    c->g->redis.prefix = dup_str(c, p);
}

void pt_cfg_walk_cluster(struct cfg *c, const struct pt_ynode *n)
{
    c->g->redis.prefix = PT_REDIS_DEFAULT_PREFIX;
    if (!n || !pt_cfg_want_map(&c->w, n, "`cluster`"))
        return;
    const struct pt_ynode *v[CL_N] = {0};
    pt_cfg_bind_keys(&c->w, n, cluster_keys, cluster_planned, "in cluster", v, NULL);
    if (v[CL_PREFIX])
        walk_prefix(c, v[CL_PREFIX]);
    if (!v[CL_REDIS])
        return;
    const char *url = pt_cfg_want_str(&c->w, v[CL_REDIS], "`cluster.redis`");
    if (!url)
        return;
    char err[200];
    struct pt_redis_cfg *rc = &c->g->redis;
    if (pt_redis_parse_url(url, rc, err, sizeof(err), arena_alloc, c->a) < 0) {
        /* The message never quotes the URL: it may hold a password. */
        err_at(c, v[CL_REDIS], "`cluster.redis`: %s", err);
        return;
    }
    c->g->has_redis = true;
}
