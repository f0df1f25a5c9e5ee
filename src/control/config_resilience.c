/*
 * config_resilience.c — an upstream's failure handling keys (CONFIG.md):
 * `failure_statuses`, `health_check.passive` and `circuit_breaker`, read
 * into struct pt_upstream (proxy/upstream_types.h). config_upstreams.c
 * binds the keys and calls these; the defaults are set there, in
 * walk_upstream(), before any key is read.
 */
#include "control/config_int.h"

#include <stdlib.h>

/* failure_statuses: [502, 503, 504] — a list of final statuses (200-599);
 * an empty list makes only connect errors, resets and timeouts count. */
void pt_cfg_walk_failure_statuses(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    if (!pt_cfg_want_seq(&c->w, n, "`failure_statuses`"))
        return;
    struct pt_status_set set = {0};
    for (uint32_t i = 0; i < n->n; i++) {
        uint64_t st;
        if (pt_cfg_want_uint(&c->w, n->items[i], "a status in `failure_statuses`", 200, 599, &st))
            pt_status_add(&set, (int)st);
    }
    u->failure_statuses = set;
}

static const char *const passive_keys[] = {"consecutive_failures", "eject_for",
                                           "max_ejected_percent", NULL};

/* health_check.passive: { consecutive_failures, eject_for, max_ejected_percent } */
void pt_cfg_walk_passive(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    if (!pt_cfg_want_map(&c->w, n, "`passive`"))
        return;
    const struct pt_ynode *v[3] = {0};
    pt_cfg_bind_keys(&c->w, n, passive_keys, NULL, "in health_check.passive", v, NULL);
    struct pt_health_passive *p = &u->passive;
    p->enabled = true;
    uint64_t x;
    if (v[0] && pt_cfg_want_uint(&c->w, v[0], "`consecutive_failures`", 1, 100000, &x))
        p->consecutive_failures = (uint32_t)x;
    /* ×10 at most for repeat ejections: an hour becomes ten. */
    if (v[1] && pt_cfg_want_duration(&c->w, v[1], "`eject_for`", true, &x)) {
        if (x > 3600000)
            err_at(c, v[1], "`eject_for` must be at most 1h (repeat ejections last up to 10×)");
        else
            p->eject_for_ms = x;
    }
    if (v[2] && pt_cfg_want_uint(&c->w, v[2], "`max_ejected_percent`", 0, 100, &x))
        p->max_ejected_percent = (uint32_t)x;
}

static const char *const breaker_keys[] = {"error_rate", "min_requests",       "window",
                                           "open_for",   "half_open_requests", "max_concurrent",
                                           NULL};

/* circuit_breaker: { error_rate, min_requests, window, open_for,
 * half_open_requests, max_concurrent } */
void pt_cfg_walk_breaker(struct cfg *c, const struct pt_ynode *n, struct pt_upstream *u)
{
    if (!pt_cfg_want_map(&c->w, n, "`circuit_breaker`"))
        return;
    const struct pt_ynode *v[6] = {0};
    pt_cfg_bind_keys(&c->w, n, breaker_keys, NULL, "in circuit_breaker", v, NULL);
    struct pt_breaker_conf *b = &u->breaker;
    b->enabled = true;
    uint64_t x;
    if (v[0])
        pt_cfg_want_ratio(&c->w, v[0], "`error_rate`", false, &b->error_rate);
    if (v[1] && pt_cfg_want_uint(&c->w, v[1], "`min_requests`", 1, 1000000, &x))
        b->min_requests = (uint32_t)x;
    /* Ten buckets of window/10: 100ms is the finest that still means
     * something on a loaded loop; past a day nobody means a rate. */
    if (v[2] && pt_cfg_want_duration(&c->w, v[2], "`window`", true, &x)) {
        if (x < 100 || x > 86400000)
            err_at(c, v[2], "`window` must be from 100ms to 1d");
        else
            b->window_ms = x;
    }
    if (v[3] && pt_cfg_want_duration(&c->w, v[3], "`open_for`", true, &x)) {
        if (x > 86400000)
            err_at(c, v[3], "`open_for` must be at most 1d");
        else
            b->open_for_ms = x;
    }
    if (v[4] && pt_cfg_want_uint(&c->w, v[4], "`half_open_requests`", 1, 10000, &x))
        b->half_open_requests = (uint32_t)x;
    if (v[5]) {
        if (v[5]->kind == PT_YSCALAR && !v[5]->is_null && strcmp(v[5]->str, "unlimited") == 0)
            b->max_concurrent = 0;
        else if (pt_cfg_want_uint(&c->w, v[5], "`max_concurrent` (or `unlimited`)", 1, 10000000,
                                  &x))
            b->max_concurrent = (uint32_t)x;
    }
}
