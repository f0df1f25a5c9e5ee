/*
 * exchange_metrics.c — what one request adds to the metrics, at its log
 * phase (gateway/metrics.h): its route's status table and histograms, its
 * upstream's time and retries, each filter's time and outcome, and the
 * filters' notes.
 *
 * Cost here: one clock read (the request's end; the chain runners read
 * the clock around each hook), a handful of relaxed
 * load/store pairs into this worker's block of the request's generation,
 * and per filter a histogram bucket. Nothing is shared with another
 * worker, nothing allocated, no lock.
 */
#include "gateway/exchange_int.h"

#include "gateway/metrics.h"

uint8_t pt_exchange_filter_outcome(int status)
{
    if (status >= 400 && status < 500)
        return PT_FOUT_REJECT;
    if (status >= 500)
        return PT_FOUT_ERROR;
    return PT_FOUT_RESPOND;
}

/* Index + 1 of ex->up among the generation's upstreams; 0: none, or the
 * request never went upstream (a filter or the gateway answered it). */
static uint32_t upstream_plus1(const struct pt_exchange *ex)
{
    const struct pt_generation *g = ex->gen;
    if (!ex->up || !ex->dispatched || ex->up < g->upstreams ||
        ex->up >= g->upstreams + g->nupstreams)
        return 0;
    return (uint32_t)(ex->up - g->upstreams) + 1;
}

/* Filter times and the request phase's outcomes. */
static void record_filters(const struct pt_exchange *ex, struct pt_worker_mx *wm, uint32_t base)
{
    const struct pt_chain *ch = &ex->route->chain;
    struct pt_filter_mx *fm = wm->filters + base;
    const uint64_t *ns = ex->fctx.hook_ns;
    if (ns) /* filters that ran (a hook that ran charged at least 1 ns) */
        for (uint32_t i = 0; i < ch->n_all; i++)
            if (ns[i])
                pt_hist_observe(&fm[i].time, ns[i]);
    /* Request filters before the one that stopped the chain (or all of
     * them when it ran through) passed; one still suspended at the end
     * (client gone) has no outcome. */
    uint32_t passed = ex->cursor;
    if (ex->fstop_pos) {
        passed = ex->fstop_pos - 1;
        if (passed < ch->n_request)
            pt_ctr_add(&fm[ch->request[passed]->state_index].outcome[ex->fstop_outcome], 1);
    } else if (ex->fcancelled && passed > 0) {
        passed--;
    }
    for (uint32_t i = 0; i < passed && i < ch->n_request; i++)
        pt_ctr_add(&fm[ch->request[i]->state_index].outcome[PT_FOUT_PASS], 1);
}

void pt_exchange_metrics(struct pt_exchange *ex)
{
    struct pt_generation *g = ex->gen;
    struct pt_gen_metrics *m = g->metrics;
    if (!m || !ex->route || (uint32_t)ex->w->id >= m->nworkers)
        return;
    uint32_t ri = (uint32_t)(ex->route - g->routes);
    if (ri >= m->nroutes)
        return;
    struct pt_worker_mx *wm = &m->w[ex->w->id];
    struct pt_route_mx *rm = &wm->routes[ri];
    uint64_t now = pt_now_ns();
    uint64_t total = now > ex->t_start ? now - ex->t_start : 0;
    uint64_t up = 0;
    uint32_t u1 = upstream_plus1(ex);
    if (ex->t_up_start) {
        uint64_t end = ex->t_up_head ? ex->t_up_head : pt_loop_now_ns(&ex->w->loop);
        up = end > ex->t_up_start ? end - ex->t_up_start : 0;
        if (u1) {
            struct pt_upstream_mx *um = &wm->upstreams[u1 - 1];
            pt_hist_observe(&um->time, up);
            if (ex->call && ex->call->attempts > 1)
                pt_ctr_add(&um->retries, ex->call->attempts - 1);
            if (ex->call && ex->call->budget_refused)
                pt_ctr_add(&um->budget_exhausted, 1);
        }
    }
    pt_mx_count_code(rm, u1, ex->status);
    pt_hist_observe(&rm->request, total);
    pt_hist_observe(&rm->overhead, total > up ? total - up : 0);
    if (ex->filters_begun) {
        if (ex->route->chain.n_all)
            record_filters(ex, wm, m->filter_base[ri]);
        for (uint32_t i = 0; i < ex->fctx.nnotes; i++)
            pt_mx_count_note(rm, ex->fctx.notes[i].key, ex->fctx.notes[i].value);
    }
}
