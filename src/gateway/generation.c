/*
 * generation.c — freeing a generation (see generation.h).
 *
 * Everything a generation owns is in its arena except the PCRE2 codes,
 * which PCRE2 allocates itself; the loader records each one in
 * g->regexes so that this is the only place that needs to know. The
 * router builds only in g->arena, so it needs nothing here. The pin
 * counters are the runtime's, one aligned block; the rate-limit table is
 * shared, and the generation drops its reference.
 */
#include "gateway/generation.h"

#include "gateway/metrics.h"

#include <errno.h>
#include <openssl/ssl.h>
#include <stdlib.h>

const char *const pt_underscores_names[PT_US_MODES] = {"drop", "reject", "allow"};

int pt_generation_init_pins(struct pt_generation *g, uint32_t nworkers)
{
    size_t n = nworkers ? nworkers : 1;
    struct pt_gen_pins *p = aligned_alloc(_Alignof(struct pt_gen_pins), n * sizeof(*p));
    if (!p)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++)
        atomic_init(&p[i].count, 0);
    free(g->pins);
    g->pins = p;
    g->npins = (uint32_t)n;
    return 0;
}

void pt_generation_free(struct pt_generation *g)
{
    if (!g)
        return;
    free(g->pins);
    for (uint32_t i = 0; i < g->nlisteners; i++)
        pt_tls_listener_free(g->listeners[i].tls);
    pt_gen_metrics_free(g->metrics);
    pt_rl_table_unref(g->rl_table);
    pt_cache_store_unref(g->cache_store);
    for (uint32_t i = 0; i < g->nregexes; i++)
        pcre2_code_free(g->regexes[i]);
    for (uint32_t i = 0; i < g->ntls_ctxs; i++)
        SSL_CTX_free(g->tls_ctxs[i]);
    free(g->tls_ctxs);
    pt_arena_destroy(&g->arena);
    free(g);
}
