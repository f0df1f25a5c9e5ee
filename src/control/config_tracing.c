/*
 * config_tracing.c — the top-level `tracing:` section (gateway/trace.h).
 *
 *   tracing:
 *     otlp_endpoint: http://127.0.0.1:4318/v1/traces   # none: propagate and log only
 *     tls_ca: certs/otel-ca.pem   # an https endpoint's CA (default: the system store)
 *     sample: 0.1            # new traces: a ratio in [0, 1] or a percentage
 *     service_name: portico
 *     server_timing: false
 *     batch: 512             # export as soon as this many spans wait
 *     flush_every: 1s        # and at least this often
 *     max_queue: 8192        # spans waiting per worker; more are dropped
 *
 * The endpoint is reached through the outbound client like ext_auth's
 * `url:`: a host name is registered as a URL upstream (resolved with the
 * targets), an IP literal gets a one-target upstream here.
 */
#include "control/config_int.h"

#include "gateway/trace.h"
#include "proxy/fetch.h"

#include <stdlib.h>

static const char *const tracing_keys[] = {"otlp_endpoint", "sample", "service_name",
                                           "server_timing", "batch",  "flush_every",
                                           "max_queue",     "tls_ca", NULL};
enum { TR_ENDPOINT, TR_SAMPLE, TR_SERVICE, TR_TIMING, TR_BATCH, TR_FLUSH, TR_QUEUE, TR_CA, TR_N };

/* The exporter's way to the endpoint (see generation.h). */
static void walk_endpoint(struct cfg *c, const struct pt_ynode *n, const struct pt_ynode *ca,
                          struct pt_tracing_cfg *t)
{
    const char *url = pt_cfg_want_str(&c->w, n, "`tracing.otlp_endpoint`");
    if (ca && !pt_cfg_want_str(&c->w, ca, "`tracing.tls_ca`"))
        return;
    if (!url || !pt_cfg_register_url(c, n, url, ca))
        return;
    t->otlp_endpoint = dup_str(c, url);
    char host[256];
    uint16_t port;
    pt_slice auth, path, query;
    if (!t->otlp_endpoint ||
        pt_fetch_split_url(t->otlp_endpoint, host, sizeof(host), &port, &auth, &path, &query) < 0)
        return;
    t->export_path = (pt_slice){path.p, path.len + (query.len ? query.len + 1 : 0)};
    struct pt_upstream *u = pt_arena_zalloc(c->a, sizeof(*u));
    struct pt_target *tg = pt_arena_zalloc(c->a, sizeof(*tg));
    if (!u || !tg)
        return oom(c);
    pt_slice p2, q2;
    bool https = pt_fetch_url_https(t->otlp_endpoint);
    if (https || pt_fetch_parse_url(t->otlp_endpoint, c->a, tg, &p2, &q2) < 0) {
        /* A host name, or https: the URL upstream registered above (its
         * name, "https://" and the authority for https). */
        t->export_authority = https ? pt_arena_sprintf(c->a, "https://%.*s", (int)auth.len, auth.p)
                                    : pt_arena_strndup(c->a, auth.p, auth.len);
        if (!t->export_authority)
            oom(c);
        return;
    }
    u->name = "otlp";
    u->targets = tg;
    u->ntargets = 1;
    u->connect_timeout_ms = 1000;
    u->read_timeout_ms = 10000;
    u->keepalive = 4;
    u->retry.attempts = 1; /* an export is never retried: the next batch follows */
    t->export_up = u;
}

void pt_cfg_walk_tracing(struct cfg *c, const struct pt_ynode *n)
{
    struct pt_tracing_cfg *t = &c->g->tracing;
    if (!pt_cfg_want_map(&c->w, n, "`tracing`"))
        return;
    t->enabled = true;
    t->sample = 0.1;
    t->service_name = "portico";
    t->batch = 512;
    t->flush_every_ms = 1000;
    t->max_queue = 8192;
    const struct pt_ynode *v[TR_N] = {0};
    pt_cfg_bind_keys(&c->w, n, tracing_keys, NULL, "in tracing", v, NULL);
    uint64_t x;
    if (v[TR_ENDPOINT] && !v[TR_ENDPOINT]->is_null)
        walk_endpoint(c, v[TR_ENDPOINT], v[TR_CA], t);
    if (v[TR_SAMPLE])
        pt_cfg_want_ratio(&c->w, v[TR_SAMPLE], "`tracing.sample`", true, &t->sample);
    if (v[TR_SERVICE]) {
        const char *s = pt_cfg_want_str(&c->w, v[TR_SERVICE], "`tracing.service_name`");
        if (s && strlen(s) > 128)
            err_at(c, v[TR_SERVICE], "`tracing.service_name` is longer than 128 characters");
        else if (s)
            t->service_name = dup_str(c, s);
    }
    if (v[TR_TIMING])
        pt_cfg_want_bool(&c->w, v[TR_TIMING], "`tracing.server_timing`", &t->server_timing);
    if (v[TR_QUEUE] &&
        pt_cfg_want_uint(&c->w, v[TR_QUEUE], "`tracing.max_queue`", 16, 1u << 20, &x))
        t->max_queue = (uint32_t)x;
    /* An unset batch follows a small queue down, or early export could never
     * trigger; a set one must fit in the queue, whichever key was written. The
     * cap keeps the per-worker export buffer bounded (trace_export.c). */
    if (!v[TR_BATCH]) {
        if (t->batch > t->max_queue)
            t->batch = t->max_queue;
    } else if (pt_cfg_want_uint(&c->w, v[TR_BATCH], "`tracing.batch`", 1, PT_TRACE_BATCH_MAX, &x)) {
        t->batch = (uint32_t)x;
        if (t->batch > t->max_queue)
            err_at(c, v[TR_BATCH], "`tracing.batch` (%u) is above `tracing.max_queue` (%u)",
                   t->batch, t->max_queue);
    }
    if (v[TR_FLUSH])
        pt_cfg_want_duration(&c->w, v[TR_FLUSH], "`tracing.flush_every`", true, &t->flush_every_ms);
}
