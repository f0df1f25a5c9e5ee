/*
 * admin_cache.c — DELETE /cache[?route=NAME][&prefix=/path]: purges the
 * shared response cache (filters/cache_store.h) — everything, or the
 * entries a route stored, or those whose path as the client sent it
 * (before strip_prefix / rewrite) starts with the prefix (both: both must hold). Answers {"purged":
 * N}. GET /cache shows the store's size and counters.
 *
 * Runs on the control thread; the store's shard locks are taken one at a
 * time, each for one walk of its LRU list.
 */
#include "control/admin_int.h"

#include "filters/cache_store.h"
#include "gateway/generation.h"

#include <stdlib.h>
#include <string.h>

/* The query's `route` and `prefix` (malloc'd, decoded). -1: a bad
 * parameter (answered). */
static int parse_query(pt_slice q, char **route, char **prefix, struct admin_resp *out)
{
    const char *p = q.p, *end = q.p + q.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        const char *eq = memchr(p, '=', (size_t)(amp - p));
        size_t kl = eq ? (size_t)(eq - p) : (size_t)(amp - p);
        char **slot = NULL;
        if (kl == 5 && memcmp(p, "route", 5) == 0)
            slot = route;
        else if (kl == 6 && memcmp(p, "prefix", 6) == 0)
            slot = prefix;
        if (!slot || !eq) {
            admin_error(out, 400, "DELETE /cache takes `route=NAME` and `prefix=/path`");
            return -1;
        }
        size_t vl = 0;
        free(*slot);
        *slot = NULL;
        if (admin_pct_decode(eq + 1, (size_t)(amp - eq - 1), true, slot, &vl) < 0 || vl == 0) {
            admin_error(out, 400, "a bad `route` or `prefix` value");
            return -1;
        }
        p = amp + 1;
    }
    return 0;
}

void admin_cache(const struct admin_req *rq, struct admin_resp *out)
{
    struct pt_cache_store *s = rq->g->cache_store;
    if (!s) {
        admin_error(out, 503, "no response cache yet");
        return;
    }
    if (rq->method == PT_METHOD_GET) {
        struct pt_cache_stats st;
        pt_cache_store_stats(s, &st);
        sb_printf(&out->body,
                  "{\"entries\":%llu,\"bytes\":%llu,\"max_bytes\":%llu,\"shards\":%llu,"
                  "\"inserts\":%llu,\"evictions\":%llu,\"purged\":%llu,\"refreshes\":%llu,"
                  "\"refresh_failures\":%llu}\n",
                  (unsigned long long)st.entries, (unsigned long long)st.bytes,
                  (unsigned long long)st.max_bytes, (unsigned long long)st.shards,
                  (unsigned long long)st.inserts, (unsigned long long)st.evictions,
                  (unsigned long long)st.purged, (unsigned long long)st.refreshes,
                  (unsigned long long)st.refresh_failures);
        return;
    }
    if (rq->method != PT_METHOD_DELETE) {
        admin_error(out, 405, "method not allowed (GET or DELETE /cache)");
        return;
    }
    char *route = NULL, *prefix = NULL;
    if (parse_query(rq->query, &route, &prefix, out) == 0) {
        if (prefix && prefix[0] != '/') {
            admin_error(out, 400, "`prefix` must start with /");
        } else {
            uint64_t n = pt_cache_purge(s, route, prefix);
            sb_printf(&out->body, "{\"purged\":%llu}\n", (unsigned long long)n);
        }
    }
    free(route);
    free(prefix);
}
