/*
 * exchange_detached.c — filter work that is not the request's one pending
 * piece (filter.h):
 *
 *   - detached calls (svc->call_detached): an outbound call owned by the
 *     worker, not the exchange, so it outlives the request that started it
 *     (the cache's background refresh). It has its own arena (from the
 *     worker's block pool), a copy of the request fields it sends, and a
 *     pin on the request's generation (the upstream and the filter's
 *     config stay valid until its callback returns). Bounded per worker
 *     (PT_FILTER_DETACHED_MAX) and by its timeout; the worker cancels the
 *     ones left when it stops (the callback then gets
 *     PT_CALL_ERR_CANCELLED).
 *   - parking (svc->park / svc->unpark): a suspended request waits on its
 *     worker's parked list until another thread sets the worker's unpark
 *     flag and writes its eventfd (pt_worker_unpark), or until its
 *     timeout (the exchange's filter timer). The worker then runs every
 *     parked request's callback once; each checks whether its own wait is
 *     over and parks again if not. No allocation, no pointer crosses
 *     threads: the waker only touches the worker's flag and eventfd.
 *
 * Threads: everything here runs on the exchange's worker, except
 * pt_worker_unpark (worker.c), which any thread may call.
 */
#include "gateway/exchange_int.h"

#include "core/log.h"

#include <stdlib.h>

struct pt_detached {
    struct pt_detached *next, **pprev; /* the worker's list */
    struct pt_worker *w;
    struct pt_generation *gen; /* pinned until the callback returns */
    struct pt_arena arena;
    struct pt_fetch fetch;
    pt_filter_detached_cb cb;
    void *arg;
};

/* ---- detached calls ---- */

static void detached_free(struct pt_detached *d)
{
    if (d->pprev) {
        *d->pprev = d->next;
        if (d->next)
            d->next->pprev = d->pprev;
        d->w->ndetached--;
    }
    pt_worker_unpin(d->w, d->gen);
    pt_arena_release(&d->arena);
    free(d);
}

static void detached_done(struct pt_fetch *f, void *user)
{
    struct pt_detached *d = user;
    struct pt_filter_call_res res = pt_exchange_fetch_result(&d->arena, f);
    d->cb(d->arg, &res, pt_loop_now(&d->w->loop));
    detached_free(d);
}

/* A deep copy of the live fields of h into a. */
static struct pt_headers *headers_copy(const struct pt_headers *h, struct pt_arena *a)
{
    struct pt_headers *c = pt_arena_zalloc(a, sizeof(*c));
    uint32_t n = h ? h->n : 0;
    if (!c || !(c->f = pt_arena_alloc(a, sizeof(*c->f) * (n ? n : 1))))
        return NULL;
    c->cap = n ? n : 1;
    for (uint32_t i = 0; i < n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead)
            continue;
        struct pt_hfield *o = &c->f[c->n++];
        *o = *f;
        o->name = (pt_slice){pt_arena_strndup(a, f->name.p, f->name.len), f->name.len};
        o->value = (pt_slice){pt_arena_strndup(a, f->value.p, f->value.len), f->value.len};
        if (!o->name.p || !o->value.p)
            return NULL;
    }
    return c;
}

int pt_exchange_svc_call_detached(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *r,
                                  pt_filter_detached_cb cb, void *arg)
{
    struct pt_exchange *ex = ctx->owner;
    struct pt_worker *w = ex->w;
    if (!cb)
        return -EINVAL;
    if (w->ndetached >= PT_FILTER_DETACHED_MAX || atomic_load(&w->draining))
        return -EBUSY;
    struct pt_detached *d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    d->w = w;
    d->gen = ex->gen;
    pt_worker_pin(w, d->gen);
    pt_arena_init_pooled(&d->arena, PT_REQ_ARENA_BLOCK, &w->arena_pool);
    struct pt_filter_call_req cr = *r;
    int rc = 0;
    struct pt_call_req req;
    char *path = rc ? NULL : pt_arena_strndup(&d->arena, r->path.p ? r->path.p : "", r->path.len);
    cr.path = (pt_slice){path, r->path.len};
    cr.headers = path ? headers_copy(r->headers, &d->arena) : NULL;
    if (!rc && (!path || !cr.headers))
        rc = -ENOMEM;
    if (!rc)
        rc = pt_exchange_call_req(ex, &cr, &d->arena, &req);
    if (!rc) {
        d->cb = cb;
        d->arg = arg;
        if (pt_fetch_start(&d->fetch, &w->ob, &req, r->body, r->max_body, detached_done, d) != 0)
            rc = -EIO;
    }
    if (rc) {
        detached_free(d);
        return rc;
    }
    d->next = w->detached;
    if (d->next)
        d->next->pprev = &d->next;
    d->pprev = &w->detached;
    w->detached = d;
    w->ndetached++;
    return 0;
}

void pt_worker_detached_cancel_all(struct pt_worker *w)
{
    while (w->detached) {
        struct pt_detached *d = w->detached;
        pt_fetch_cancel(&d->fetch);
        struct pt_filter_call_res res = {.error = PT_CALL_ERR_CANCELLED,
                                         .error_text = "cancelled: the worker stops"};
        d->cb(d->arg, &res, pt_loop_now(&w->loop));
        detached_free(d);
    }
}

/* ---- parking ---- */

void pt_exchange_unpark_one(struct pt_exchange *ex)
{
    if (!ex->park_pprev)
        return;
    *ex->park_pprev = ex->park_next;
    if (ex->park_next)
        ex->park_next->park_pprev = ex->park_pprev;
    ex->park_next = NULL;
    ex->park_pprev = NULL;
}

static void park_link(struct pt_exchange **head, struct pt_exchange *ex)
{
    ex->park_next = *head;
    if (*head)
        (*head)->park_pprev = &ex->park_next;
    ex->park_pprev = head;
    *head = ex;
}

/* The park is over (woken or timed out): the filter's callback decides. */
static void park_fire(struct pt_exchange *ex)
{
    pt_filter_timer_cb cb = ex->ftimer_cb;
    ex->ftimer_cb = NULL;
    pt_exchange_unpark_one(ex);
    pt_timer_cancel(&ex->w->loop, &ex->ftimer);
    void *state = ex->states && ex->susp ? ex->states[ex->susp->state_index] : NULL;
    if (cb)
        cb(&ex->fctx, state); /* ends in ctx->resume, or parks again */
}

static void park_timeout(struct pt_loop *loop, struct pt_timer *t)
{
    (void)loop;
    park_fire(pt_container_of(t, struct pt_exchange, ftimer));
}

int pt_exchange_svc_park(struct pt_filter_ctx *ctx, uint64_t timeout_ms, pt_filter_timer_cb cb)
{
    struct pt_exchange *ex = ctx->owner;
    if (!cb || ex->ftimer_cb || ex->ffetch || ex->feval)
        return -EBUSY;
    ex->ftimer_cb = cb;
    park_link(&ex->w->parked, ex);
    pt_timer_arm(&ex->w->loop, &ex->ftimer, timeout_ms, park_timeout);
    return 0;
}

uint64_t pt_exchange_svc_worker_bit(struct pt_filter_ctx *ctx)
{
    struct pt_exchange *ex = ctx->owner;
    return 1ull << ((unsigned)ex->w->id % 64u);
}

void pt_worker_run_parked(struct pt_worker *w)
{
    /* Every request parked now gets one look; one that parks again goes
     * onto w->parked, not the list being run. */
    struct pt_exchange *run = w->parked;
    w->parked = NULL;
    if (!run)
        return;
    w->parked_run = run;
    run->park_pprev = &w->parked_run;
    while (w->parked_run)
        park_fire(w->parked_run); /* unlinks it first */
}
