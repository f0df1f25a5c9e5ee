/*
 * exchange_metrics.c — what one request adds to the metrics, at its log
 * phase (gateway/metrics.h): its route's status table and histograms, its
 * upstream's time and retries, each filter's time and outcome, and the
 * filters' notes. A filter's fan call records its upstream's time and
 * retries when it is over (pt_exchange_call_metrics).
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

/* Index + 1 of `up` among the generation's upstreams; 0: none (a URL
 * upstream of a filter's call). */
static uint32_t index_plus1(const struct pt_generation *g, const struct pt_upstream *up)
{
    if (!up || up < g->upstreams || up >= g->upstreams + g->nupstreams)
        return 0;
    return (uint32_t)(up - g->upstreams) + 1;
}

/* Index + 1 of ex->up; 0: none, or the request never went upstream (a
 * filter or the gateway answered it). */
static uint32_t upstream_plus1(const struct pt_exchange *ex)
{
    return ex->dispatched ? index_plus1(ex->gen, ex->up) : 0;
}

/* One call's upstream time and retries into this worker's block. */
static void record_upstream(struct pt_worker_mx *wm, uint32_t u1, uint64_t ns,
                            const struct pt_call *c)
{
    struct pt_upstream_mx *um = &wm->upstreams[u1 - 1];
    pt_hist_observe(&um->time, ns);
    if (c && c->attempts > 1)
        pt_ctr_add(&um->retries, c->attempts - 1);
    if (c && c->budget_refused)
        pt_ctr_add(&um->budget_exhausted, 1);
}

void pt_exchange_call_metrics(struct pt_exchange *ex, const struct pt_upstream *up,
                              uint64_t t_start_ns, const struct pt_call *c)
{
    struct pt_gen_metrics *m = ex->gen->metrics;
    uint32_t u1 = index_plus1(ex->gen, up);
    if (!m || !u1 || (uint32_t)ex->w->id >= m->nworkers)
        return;
    uint64_t end = c->t_head_ns ? c->t_head_ns : pt_loop_now_ns(&ex->w->loop);
    record_upstream(&m->w[ex->w->id], u1, end > t_start_ns ? end - t_start_ns : 0, c);
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
        if (u1)
            record_upstream(wm, u1, up, ex->call);
    }
    /* A fan-out's calls (aggregate) are upstream time too: while any was
     * out the request waited on upstreams, not on the gateway. */
    up += ex->fan_ns;
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
