/*
 * config_split.c — a route's canary keys: `split` (weighted sides, each an
 * existing upstream, no upstream twice, at least one weight above 0),
 * `sticky` (`header:NAME` or `cookie:NAME`) and `override_header`. Part of
 * the loader (config.c, config_int.h); config_routes.c calls it once per
 * route. The split lands in the generation's arena with its sides sorted
 * by upstream name (proxy/split.h says why).
 */
#include "control/config_int.h"

#include <stdlib.h>

/* The most sides a split may have (the weights' sum must stay below 2^32;
 * far more than any rollout needs). */
#define SPLIT_MAX_SIDES 256

enum { S_UPSTREAM, S_WEIGHT, S_N };
static const char *const side_keys[] = {"upstream", "weight", NULL};

/* One `{upstream, weight}` entry into *side; false when it is unusable. */
static bool walk_side(struct cfg *c, const struct pt_ynode *n, struct pt_split_side *side,
                      const struct pt_ynode **name_at)
{
    if (!pt_cfg_want_map(&c->w, n, "each `split` entry"))
        return false;
    const struct pt_ynode *v[S_N] = {0};
    pt_cfg_bind_keys(&c->w, n, side_keys, NULL, "in split entry", v, NULL);
    bool ok = true;
    if (!v[S_UPSTREAM]) {
        err_at(c, n, "`split` entry has no `upstream`");
        ok = false;
    } else {
        const char *u = pt_cfg_want_str(&c->w, v[S_UPSTREAM], "`upstream`");
        side->up = u ? pt_cfg_find_upstream(c, v[S_UPSTREAM], u) : NULL;
        *name_at = v[S_UPSTREAM];
        ok = side->up != NULL;
    }
    uint64_t w = 0;
    if (!v[S_WEIGHT]) {
        err_at(c, n, "`split` entry has no `weight` (0 to %d)", PT_SPLIT_WEIGHT_MAX);
        ok = false;
    } else if (!pt_cfg_want_uint(&c->w, v[S_WEIGHT], "`weight`", 0, PT_SPLIT_WEIGHT_MAX, &w)) {
        ok = false;
    }
    side->weight = (uint32_t)w;
    return ok;
}

static int by_name(const void *a, const void *b)
{
    const struct pt_split_side *x = a, *y = b;
    return strcmp(x->up->name, y->up->name);
}

/* `split:` into a new pt_route_split, or NULL after reporting why not. */
static struct pt_route_split *walk_sides(struct cfg *c, const struct pt_ynode *n)
{
    if (!pt_cfg_want_seq(&c->w, n, "`split`"))
        return NULL;
    if (n->n == 0) {
        err_at(c, n, "`split` is empty: list the sides as `{upstream: NAME, weight: N}`");
        return NULL;
    }
    if (n->n > SPLIT_MAX_SIDES) {
        err_at(c, n, "`split` has %u sides; at most %d are allowed", n->n, SPLIT_MAX_SIDES);
        return NULL;
    }
    struct pt_route_split *s = pt_arena_zalloc(c->a, sizeof(*s));
    struct pt_split_side *sides = pt_arena_zalloc(c->a, sizeof(*sides) * n->n);
    const struct pt_ynode **at = calloc(n->n, sizeof(*at));
    if (!s || !sides || !at) {
        free(at);
        oom(c);
        return NULL;
    }
    bool ok = true;
    for (uint32_t i = 0; i < n->n; i++) {
        if (!walk_side(c, n->items[i], &sides[i], &at[i])) {
            ok = false;
            continue;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (sides[j].up == sides[i].up) {
                err_at(c, at[i], "upstream `%s` appears twice in `split` (first at %s:%d:%d)",
                       sides[i].up->name, c->file, at[j]->line, at[j]->col);
                ok = false;
                break;
            }
        }
        s->total += sides[i].weight;
    }
    free(at);
    if (!ok)
        return NULL;
    if (s->total == 0) {
        err_at(c, n, "every weight in `split` is 0: at least one side must take traffic");
        return NULL;
    }
    qsort(sides, n->n, sizeof(*sides), by_name);
    s->sides = sides;
    s->nsides = n->n;
    return s;
}

/* `sticky: header:NAME | cookie:NAME`. */
static void walk_sticky(struct cfg *c, const struct pt_ynode *n, struct pt_route_split *s)
{
    const char *v = pt_cfg_want_str(&c->w, n, "`sticky`");
    if (!v)
        return;
    const char *name = NULL;
    if (strncmp(v, "header:", 7) == 0) {
        s->sticky = PT_STICKY_HEADER;
        name = v + 7;
    } else if (strncmp(v, "cookie:", 7) == 0) {
        s->sticky = PT_STICKY_COOKIE;
        name = v + 7;
    } else {
        err_at(c, n, "`sticky` must be `header:NAME` or `cookie:NAME`, not `%s`", v);
        return;
    }
    if (!pt_cfg_is_token(name)) {
        err_at(c, n, "`sticky`: `%s` is not a valid %s name", name,
               s->sticky == PT_STICKY_HEADER ? "header" : "cookie");
        s->sticky = PT_STICKY_NONE;
        return;
    }
    const char *copy = dup_str(c, name);
    s->sticky_name = copy ? (pt_slice){copy, strlen(copy)} : (pt_slice){0};
}

/* `override_header: NAME`. */
static void walk_override(struct cfg *c, const struct pt_ynode *n, struct pt_route_split *s)
{
    const char *h = pt_cfg_want_str(&c->w, n, "`override_header`");
    if (!h)
        return;
    if (!pt_cfg_is_token(h)) {
        err_at(c, n, "`override_header`: `%s` is not a valid header name", h);
        return;
    }
    const char *copy = dup_str(c, h);
    if (copy)
        s->override_header = (pt_slice){copy, strlen(copy)};
}

void pt_cfg_walk_split(struct cfg *c, const struct pt_ynode *split, const struct pt_ynode *sticky,
                       const struct pt_ynode *override, struct pt_route *r)
{
    if (!split) {
        if (sticky)
            err_at(c, sticky, "`sticky` applies to a `split`, and this route has none");
        if (override)
            err_at(c, override, "`override_header` applies to a `split`, and this route has none");
        return;
    }
    /* A broken split still gets its other two keys checked, so one round
     * of messages says everything. */
    struct pt_route_split scratch = {0};
    struct pt_route_split *s = walk_sides(c, split);
    struct pt_route_split *into = s ? s : &scratch;
    if (sticky)
        walk_sticky(c, sticky, into);
    if (override)
        walk_override(c, override, into);
    r->split = s;
}
