/*
 * generation.c — freeing a generation (see generation.h).
 *
 * Everything a generation owns is in its arena except the PCRE2 codes,
 * which PCRE2 allocates itself; the loader records each one in
 * g->regexes so that this is the only place that needs to know. The
 * router builds only in g->arena, so it needs nothing here.
 */
#include "gateway/generation.h"

#include <stdlib.h>

const char *const pt_underscores_names[PT_US_MODES] = {"drop", "reject", "allow"};

void pt_generation_free(struct pt_generation *g)
{
    if (!g)
        return;
    for (uint32_t i = 0; i < g->nregexes; i++)
        pcre2_code_free(g->regexes[i]);
    pt_arena_destroy(&g->arena);
    free(g);
}
