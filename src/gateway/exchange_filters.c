/*
 * exchange_filters.c — the exchange's side of the filter contract
 * (filter.h): running the request, response-head and response-body
 * phases, the services a filter gets (timer, outbound call, clock,
 * randomness), resume after a suspension, the suspension's deadline, and
 * cancellation.
 *
 * A suspended exchange has exactly one piece of pending work (the timer,
 * the call or the shared-store script its filter started) plus the
 * deadline timer. Cancelling stops
 * both, then calls the filter's on_cancel, so no completion ever runs into
 * a request that is gone. Completions run on the worker's loop and end in
 * the codec's wake (tail call), as every other event does.
 *
 * Ownership: the pending call (struct pt_fetch) lives in the request
 * arena; timers are embedded in the exchange.
 */
#include "gateway/exchange_int.h"

#include "core/log.h"

static void filters_resume(struct pt_filter_ctx *ctx, enum pt_filter_result r);

/* ---- services ---- */

static struct pt_exchange *owner(struct pt_filter_ctx *ctx)
{
    return ctx->owner;
}

static void *susp_state(struct pt_exchange *ex)
{
    return ex->states && ex->susp ? ex->states[ex->susp->state_index] : NULL;
}

/* Whether a timer, call, script or fan call of a filter is out. */
static bool work_pending(const struct pt_exchange *ex)
{
    return ex->ftimer_cb || ex->ffetch || ex->feval || ex->nfan;
}

static void ftimer_fired(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_exchange *ex = pt_container_of(t, struct pt_exchange, ftimer);
    pt_filter_timer_cb cb = ex->ftimer_cb;
    ex->ftimer_cb = NULL;
    pt_exchange_unpark_one(ex); /* a park's timeout */
    if (cb)
        cb(&ex->fctx, susp_state(ex)); /* ends in ctx->resume */
}

static int svc_timer(struct pt_filter_ctx *ctx, uint64_t delay_ms, pt_filter_timer_cb cb)
{
    struct pt_exchange *ex = owner(ctx);
    if (!cb || work_pending(ex))
        return -EBUSY;
    ex->ftimer_cb = cb;
    pt_timer_arm(&ex->w->loop, &ex->ftimer, delay_ms, ftimer_fired);
    return 0;
}

enum pt_call_error pt_exchange_call_error(enum pt_call_fail f)
{
    switch (f) {
    case PT_CALL_FAIL_NONE:
        return PT_CALL_OK;
    case PT_CALL_FAIL_CONNECT:
        return PT_CALL_ERR_CONNECT;
    case PT_CALL_FAIL_CONNECT_TO: /* a timeout, as the proxied request's 504 */
    case PT_CALL_FAIL_TIMEOUT:
    case PT_CALL_FAIL_BODY_STALL:
        return PT_CALL_ERR_TIMEOUT;
    case PT_CALL_FAIL_RESET:
    case PT_CALL_FAIL_WRITE:
        return PT_CALL_ERR_RESET;
    case PT_CALL_FAIL_PROTOCOL:
        return PT_CALL_ERR_PROTOCOL;
    case PT_CALL_FAIL_NO_TARGET:
        return PT_CALL_ERR_NO_TARGET;
    case PT_CALL_FAIL_RESOURCES:
        return PT_CALL_ERR_RESOURCES;
    }
    return PT_CALL_ERR_PROTOCOL;
}

static void ffetch_done(struct pt_fetch *f, void *user)
{
    struct pt_exchange *ex = user;
    pt_filter_call_cb cb = ex->ffetch_cb;
    ex->ffetch = NULL;
    ex->ffetch_cb = NULL;
    struct pt_filter_call_res res = pt_exchange_fetch_result(ex->arena, f);
    cb(&ex->fctx, susp_state(ex), &res); /* ends in ctx->resume */
}

static const struct pt_upstream *find_upstream(const struct pt_generation *g, const char *name)
{
    for (uint32_t i = 0; name && i < g->nupstreams; i++)
        if (strcmp(g->upstreams[i].name, name) == 0)
            return &g->upstreams[i];
    return NULL;
}

/* The generation's upstream for a URL authority with a host name
 * ("authz.internal:9000"), or for any https one, NULL for any other. */
static const struct pt_upstream *find_url_upstream(const struct pt_generation *g, bool https,
                                                   pt_slice auth)
{
    for (uint32_t i = 0; i < g->nurl_upstreams; i++)
        if (pt_fetch_url_name_eq(g->url_upstreams[i].name, https, auth))
            return &g->url_upstreams[i];
    return NULL;
}

int pt_exchange_call_req(struct pt_exchange *ex, const struct pt_filter_call_req *r,
                         struct pt_arena *a, struct pt_call_req *out)
{
    pt_slice path = r->path;
    const struct pt_target *fixed = NULL;
    const struct pt_upstream *up = r->upstream ? find_upstream(ex->gen, r->upstream) : NULL;
    if (!r->upstream && !r->url)
        up = ex->up; /* the request's own (a split side's too): detached calls */
    bool url_up = false;
    if (!r->upstream && r->url) {
        char host[256];
        uint16_t port;
        pt_slice auth, q;
        if (pt_fetch_split_url(r->url, host, sizeof(host), &port, &auth, &path, &q) < 0)
            return -EINVAL;
        if (q.len) /* back to one origin-form target: split again below */
            path.len += q.len + 1;
        bool https = pt_fetch_url_https(r->url);
        up = find_url_upstream(ex->gen, https, auth);
        url_up = up != NULL;
        if (!up && !https) {
            /* An IP literal: a one-target upstream of its own, in the
             * arena; its pooled connections are shared by address as any
             * others. */
            struct pt_upstream *u = pt_arena_zalloc(a, sizeof(*u));
            struct pt_target *t = pt_arena_zalloc(a, sizeof(*t));
            if (!u || !t)
                return -ENOMEM;
            if (pt_fetch_parse_url(r->url, a, t, &path, &q) < 0)
                return -EINVAL;
            if (q.len)
                path.len += q.len + 1;
            u->name = "url";
            u->targets = t;
            u->ntargets = 1;
            u->connect_timeout_ms = 1000;
            u->read_timeout_ms = r->timeout_ms ? r->timeout_ms : 30000;
            u->keepalive = 16;
            u->retry.attempts = 1;
            for (int st = 502; st <= 504; st++)
                pt_status_add(&u->failure_statuses, st);
            up = u;
            fixed = t;
        }
    }
    if (!up)
        return -ENOENT;
    uint64_t to = r->timeout_ms ? r->timeout_ms : up->read_timeout_ms;
    *out = (struct pt_call_req){
        .up = up,
        .rr = url_up ? NULL : pt_worker_rr(ex->w, ex->gen, up), /* URL upstreams: random */
        .rand = pt_worker_random(ex->w),
        .method = r->method.len ? r->method : PT_SLICE("GET"),
        .method_id = r->method.len ? pt_method_lookup(r->method.p, r->method.len) : PT_METHOD_GET,
        .target = fixed,
        .path = path,
        .headers = r->headers,
        .add_host =
            !r->headers || !pt_headers_find_token((struct pt_headers *)r->headers, PT_TOK_HOST),
        .read_timeout_ms = to,
        .pool_idle_ms = ex->gen->limits.idle_timeout_ms,
        .arena = a,
        .max_headers = (uint32_t)ex->gen->limits.max_headers,
    };
    /* The path may carry a query: split it for the request line. */
    const char *q = path.p ? memchr(path.p, '?', path.len) : NULL;
    if (q) {
        out->path.len = (size_t)(q - path.p);
        out->query = (pt_slice){q + 1, path.len - out->path.len - 1};
    }
    return 0;
}

static int svc_call(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *r,
                    pt_filter_call_cb cb)
{
    struct pt_exchange *ex = owner(ctx);
    if (!cb || work_pending(ex))
        return -EBUSY;
    struct pt_fetch *f = pt_arena_zalloc(ex->arena, sizeof(*f));
    if (!f)
        return -ENOMEM;
    struct pt_call_req req;
    int e = pt_exchange_call_req(ex, r, ex->arena, &req);
    if (e < 0)
        return e;
    req.trace = pt_exchange_trace_filter_call(ex, ex->fctx.running);
    ex->ffetch = f;
    ex->ffetch_cb = cb;
    e = pt_fetch_start(f, &ex->w->ob, &req, r->body, r->max_body, ffetch_done, ex);
    if (e != 0) {
        ex->ffetch = NULL;
        ex->ffetch_cb = NULL;
        return -EIO;
    }
    return 0;
}

struct pt_filter_call_res pt_exchange_fetch_result(struct pt_arena *a, const struct pt_fetch *f)
{
    struct pt_filter_call_res res = {.error = pt_exchange_call_error(f->fail),
                                     .error_text = f->fail_text,
                                     .status = f->status,
                                     .body = {f->rbody, f->rlen},
                                     .truncated = f->truncated};
    if (res.error == PT_CALL_OK && f->head) {
        struct pt_hfield *store = pt_arena_alloc(a, sizeof(*store) * (f->head->nfields + 1));
        if (store)
            pt_headers_from_h1(&res.headers, store, (uint32_t)f->head->nfields + 1, f->head->fields,
                               f->head->nfields);
        else
            res = (struct pt_filter_call_res){.error = PT_CALL_ERR_RESOURCES,
                                              .error_text = "out of memory"};
    }
    return res;
}

/* ---- fan-out calls ---- */

/* How long the suspension outlasts the latest fan call's own deadline:
 * the call's timer fires first, so its part's timeout is what answers. */
#define FAN_DEADLINE_MARGIN_MS 1000

static void deadline_passed(struct pt_loop *loop, struct pt_timer *t);

/* A fan call goes out / is over: the time some were out is upstream time
 * (exchange_metrics.c keeps it out of the overhead). */
static void fan_out_add(struct pt_exchange *ex)
{
    if (ex->nfan++ == 0)
        ex->fan_since_ns = pt_loop_now_ns(&ex->w->loop);
}

/* A fan call is over (answered, failed, or cancelled: result -1): its
 * outcome for the breaker (proxy/admission.h), its max_concurrent slot
 * back, its time and retries on its upstream's metrics. */
static void fan_settle(struct pt_exchange *ex, struct pt_fan_call *fc, int result)
{
    uint64_t now = pt_loop_now(&ex->w->loop);
    fc->out = false;
    if (--ex->nfan == 0)
        ex->fan_ns += pt_loop_now_ns(&ex->w->loop) - ex->fan_since_ns;
    pt_admission_outcome(fc->up, &fc->adm, now, result);
    pt_admission_end(fc->up, &fc->adm, now);
    pt_exchange_call_metrics(ex, fc->up, fc->t_start_ns, &fc->fetch.call);
}

static void fan_done(struct pt_fetch *f, void *user)
{
    struct pt_fan_call *fc = user;
    struct pt_exchange *ex = fc->ex;
    fan_settle(ex, fc, pt_admission_result(fc->up, f->fail, f->status));
    struct pt_filter_call_res res = pt_exchange_fetch_result(ex->arena, f);
    fc->cb(&ex->fctx, susp_state(ex), fc->tag, &res); /* may resume, or start more */
}

/* The suspension lasts until the latest fan call's own deadline has
 * passed (plus the margin): a dependent call started by a completion
 * pushes it out, so a chain's timeouts add up. */
static void fan_deadline(struct pt_exchange *ex, uint64_t timeout_ms)
{
    if (!timeout_ms)
        return; /* unbounded: the suspension's own deadline stands */
    uint64_t now = pt_loop_now(&ex->w->loop);
    uint64_t until = now + timeout_ms + FAN_DEADLINE_MARGIN_MS;
    if (until <= ex->fan_until_ms)
        return;
    ex->fan_until_ms = until;
    if (ex->suspended && until > ex->deadline.expires_ms)
        pt_timer_arm(&ex->w->loop, &ex->deadline, until - now, deadline_passed);
}

static int svc_fan_call(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *r, uint32_t tag,
                        pt_filter_fan_cb cb)
{
    struct pt_exchange *ex = owner(ctx);
    if (!cb || ex->ftimer_cb || ex->ffetch || ex->feval)
        return -EBUSY;
    struct pt_fan_call *fc = pt_arena_zalloc(ex->arena, sizeof(*fc));
    if (!fc)
        return -ENOMEM;
    /* The route's `timeout` is a call's default (an aggregating route has
     * no upstream of its own to apply it to). */
    struct pt_filter_call_req rq = *r;
    if (!rq.timeout_ms)
        rq.timeout_ms = ex->route->timeout_ms;
    struct pt_call_req req;
    int e = pt_exchange_call_req(ex, &rq, ex->arena, &req);
    if (e < 0)
        return e;
    /* The upstream's gate, as for a proxied request: refused here, the
     * upstream is never contacted. */
    uint32_t retry_after;
    enum pt_admit adm = pt_admit(req.up, &fc->adm, pt_loop_now(&ex->w->loop), &retry_after);
    if (adm != PT_ADMIT_OK)
        return adm == PT_ADMIT_BREAKER ? -EAGAIN : -EUSERS;
    fc->ex = ex;
    fc->cb = cb;
    fc->tag = tag;
    fc->up = req.up;
    req.trace = pt_exchange_trace_fan_call(ex, fc);
    fc->out = true;
    fc->next = ex->fan;
    ex->fan = fc;
    fan_out_add(ex);
    fc->t_start_ns = pt_loop_now_ns(&ex->w->loop);
    if (pt_fetch_start(&fc->fetch, &ex->w->ob, &req, r->body, r->max_body, fan_done, fc) != 0) {
        ex->fan = fc->next;
        fan_settle(ex, fc, pt_admission_result(fc->up, fc->fetch.fail, 0));
        return fc->fetch.fail == PT_CALL_FAIL_NO_TARGET ? -EHOSTUNREACH : -EIO;
    }
    fan_deadline(ex, req.read_timeout_ms);
    return 0;
}

static uint64_t svc_now_ms(struct pt_filter_ctx *ctx)
{
    return pt_loop_now(&owner(ctx)->w->loop);
}

static uint64_t svc_random(struct pt_filter_ctx *ctx)
{
    return pt_worker_random(owner(ctx)->w);
}

static void feval_done(void *ud, const struct pt_redis_result *res)
{
    struct pt_exchange *ex = ud;
    pt_filter_eval_cb cb = ex->feval_cb;
    ex->feval = NULL;
    ex->feval_redis = NULL;
    ex->feval_cb = NULL;
    cb(&ex->fctx, susp_state(ex), res); /* ends in ctx->resume */
}

/* A script on the shared store, on this worker's connection to the
 * request generation's `cluster.redis`. Every key gets the configured
 * prefix: written into the room the caller left in front of the key, else
 * (a long prefix) a copy in the request arena. -ENOTCONN when there is no store or its
 * connection is down: the caller applies its failure mode at once. */
static int svc_eval(struct pt_filter_ctx *ctx, const struct pt_redis_eval_req *req,
                    pt_filter_eval_cb cb)
{
    struct pt_exchange *ex = owner(ctx);
    if (!cb || work_pending(ex))
        return -EBUSY;
    struct pt_redis *r = pt_worker_redis(ex->w, ex->gen);
    if (!r)
        return ex->gen->has_redis ? -ENOMEM : -ENOTCONN;
    const char *prefix = ex->gen->redis.prefix ? ex->gen->redis.prefix : PT_REDIS_DEFAULT_PREFIX;
    size_t plen = strlen(prefix);
    pt_slice *keys = pt_arena_alloc(ex->arena, sizeof(*keys) * (req->nkeys ? req->nkeys : 1));
    if (!keys)
        return -ENOMEM;
    for (uint32_t i = 0; i < req->nkeys; i++) {
        if (plen <= req->key_headroom) {
            /* the caller's arena bytes, writable (redis.h key_headroom) */
            char *k = (char *)(uintptr_t)req->keys[i].p - plen;
            memcpy(k, prefix, plen);
            keys[i] = (pt_slice){k, plen + req->keys[i].len};
            continue;
        }
        char *k = pt_arena_alloc(ex->arena, plen + req->keys[i].len + 1);
        if (!k)
            return -ENOMEM;
        memcpy(k, prefix, plen);
        if (req->keys[i].len)
            memcpy(k + plen, req->keys[i].p, req->keys[i].len);
        keys[i] = (pt_slice){k, plen + req->keys[i].len};
    }
    struct pt_redis_eval_req pr = *req;
    pr.keys = keys;
    ex->feval_cb = cb;
    ex->feval_redis = r;
    ex->feval = pt_redis_eval(r, &pr, ex->arena, feval_done, ex);
    if (!ex->feval) {
        int e = errno;
        ex->feval_cb = NULL;
        ex->feval_redis = NULL;
        return e == ENOTCONN ? -ENOTCONN : -(e ? e : EIO);
    }
    return 0;
}

static const struct pt_filter_services services = {
    .timer = svc_timer,
    .call = svc_call,
    .now_ms = svc_now_ms,
    .random = svc_random,
    .eval = svc_eval,
    .fan_call = svc_fan_call,
    .call_detached = pt_exchange_svc_call_detached,
    .park = pt_exchange_svc_park,
    .worker_bit = pt_exchange_svc_worker_bit,
    .unpark = pt_worker_unpark,
};

/* ---- suspension ---- */

/* Cancels every fan call still out: no outcome of the upstream's. */
static void stop_fan(struct pt_exchange *ex)
{
    for (struct pt_fan_call *fc = ex->fan; fc; fc = fc->next)
        if (fc->out) {
            pt_fetch_cancel(&fc->fetch);
            fan_settle(ex, fc, -1);
        }
    ex->fan = NULL;
    ex->fan_until_ms = 0;
}

/* Stops the pending work; with `notify`, the suspended filter's on_cancel
 * runs (it will never be resumed). */
static void stop_pending(struct pt_exchange *ex, bool notify)
{
    pt_timer_cancel(&ex->w->loop, &ex->ftimer);
    pt_timer_cancel(&ex->w->loop, &ex->deadline);
    ex->ftimer_cb = NULL;
    pt_exchange_unpark_one(ex);
    if (ex->ffetch) {
        pt_fetch_cancel(ex->ffetch);
        ex->ffetch = NULL;
        ex->ffetch_cb = NULL;
    }
    stop_fan(ex);
    if (ex->feval) {
        pt_redis_cancel(ex->feval_redis, ex->feval);
        ex->feval = NULL;
        ex->feval_redis = NULL;
        ex->feval_cb = NULL;
    }
    const struct pt_filter_inst *inst = ex->susp;
    if (notify && inst && inst->def->on_cancel)
        inst->def->on_cancel(&ex->fctx, inst->conf, susp_state(ex));
}

/* A suspended filter's wait counts as its time (an auth call's round
 * trip is that filter's cost on the route). Loop time: no clock read. */
static void charge_suspension(struct pt_exchange *ex)
{
    if (ex->fctx.hook_ns && ex->susp && ex->t_susp)
        ex->fctx.hook_ns[ex->susp->state_index] += pt_loop_now_ns(&ex->w->loop) - ex->t_susp;
    ex->t_susp = 0;
}

static void deadline_passed(struct pt_loop *loop, struct pt_timer *t)
{
    struct pt_exchange *ex = pt_container_of(t, struct pt_exchange, deadline);
    if (!ex->suspended)
        return;
    stop_pending(ex, true);
    ex->suspended = false;
    charge_suspension(ex);
    ex->fstop_pos = ex->cursor;
    ex->fstop_outcome = PT_FOUT_ERROR;
    pt_warn("request %.*s: filter `%s` did not finish in time", (int)ex->reqid.len, ex->reqid.p,
            ex->susp ? ex->susp->def->name : "?");
    pt_exchange_respond(ex, 504, "filter timeout", false);
    ex->codec->wake(ex->conn); /* last act */
}

void pt_exchange_filters_cancel(struct pt_exchange *ex)
{
    if (!ex->suspended)
        return;
    ex->suspended = false;
    ex->fcancelled = true;
    charge_suspension(ex);
    stop_pending(ex, true);
}

/* ---- the request phase ---- */

/* The headers a responding filter added go with its status and body. */
static void filter_respond(struct pt_exchange *ex)
{
    struct pt_filter_ctx *ctx = &ex->fctx;
    int st = ctx->respond_status ? ctx->respond_status : 403;
    pt_exchange_respond_body(ex, st, ctx->respond_error, ctx->respond_body,
                             ctx->respond_content_type, false);
    /* A relayed answer (a cached 404) is no error of the gateway's. */
    if (ctx->respond_raw && ex->resp == PT_RESP_GATEWAY) {
        ex->gw_raw = true;
        ex->error = NULL;
    }
}

/* The request-phase filter at the cursor answered: noted for metrics. */
static void request_answered(struct pt_exchange *ex)
{
    int st = ex->fctx.respond_status ? ex->fctx.respond_status : 403;
    ex->fstop_pos = ex->cursor + 1;
    ex->fstop_outcome = pt_exchange_filter_outcome(st);
    filter_respond(ex);
}

/* Runs the request phase from the cursor: dispatches when it completes. */
static void run_request(struct pt_exchange *ex)
{
    const struct pt_chain *ch = &ex->route->chain;
    int r = PT_FILTER_CONTINUE;
    if (ch->n_request) {
        ex->fctx.suspend_deadline_ms = 0;
        r = pt_chain_run_request(ch, &ex->fctx, ex->states, &ex->cursor);
        /* A filter that answers at once may have fan calls out still (an
         * aggregate whose required part failed to start): they go. */
        if (pt_unlikely(r != PT_FILTER_SUSPEND && ex->nfan))
            stop_fan(ex);
    }
    switch (r) {
    case PT_FILTER_CONTINUE:
        if (pt_unlikely(ex->fctx.request_body_want))
            pt_exchange_gather_start(ex); /* dispatches once the body is in */
        else
            pt_exchange_dispatch(ex);
        return;
    case PT_FILTER_SUSPEND: {
        ex->suspended = true;
        ex->susp = ch->request[ex->cursor - 1];
        if (!work_pending(ex)) {
            /* Suspended with nothing pending: nothing could ever resume it. */
            ex->suspended = false;
            pt_exchange_respond(ex, 500, "filter suspended without pending work", false);
            return;
        }
        uint64_t d = ex->fctx.suspend_deadline_ms ? ex->fctx.suspend_deadline_ms
                                                  : PT_FILTER_SUSPEND_DEFAULT_MS;
        uint64_t now = pt_loop_now(&ex->w->loop);
        if (ex->nfan && ex->fan_until_ms > now + d)
            d = ex->fan_until_ms - now; /* the fan calls' own deadlines come first */
        ex->t_susp = pt_loop_now_ns(&ex->w->loop);
        pt_timer_arm(&ex->w->loop, &ex->deadline, d, deadline_passed);
        return;
    }
    case PT_FILTER_RESPOND:
        request_answered(ex);
        return;
    default:
        ex->fstop_pos = ex->cursor + 1;
        ex->fstop_outcome = PT_FOUT_ERROR;
        pt_exchange_respond(ex, 500, "filter error", false);
        return;
    }
}

static void filters_resume(struct pt_filter_ctx *ctx, enum pt_filter_result r)
{
    struct pt_exchange *ex = owner(ctx);
    if (!ex->suspended)
        return; /* a second resume, or one after a cancel: a filter bug */
    ex->suspended = false;
    stop_pending(ex, false);
    charge_suspension(ex);
    if (r == PT_FILTER_CONTINUE) {
        run_request(ex);
    } else if (r == PT_FILTER_RESPOND) {
        ex->cursor--; /* as if the suspended filter answered now */
        request_answered(ex);
    } else {
        ex->fstop_pos = ex->cursor; /* the suspended filter's position + 1 */
        ex->fstop_outcome = PT_FOUT_ERROR;
        pt_exchange_respond(ex, 500, "filter error", false);
    }
    ex->codec->wake(ex->conn); /* last act */
}

void pt_exchange_filters_begin(struct pt_exchange *ex)
{
    struct pt_filter_ctx *f = &ex->fctx;
    f->arena = ex->arena;
    f->req_headers = &ex->reqh;
    f->resp_headers = &ex->resph;
    f->req_fields_sent = ex->reqh.n;
    f->method_id = ex->req.method_id;
    f->method = ex->req.method;
    f->path = ex->path;
    f->client_path = ex->req.path;
    f->query = ex->req.query;
    f->uri = ex->req.target;
    f->scheme = ex->req.scheme;
    f->authority = ex->req.host;
    f->request_id = ex->reqid;
    f->remote_addr = ex->client;
    f->remote_ip = ex->client_ip.family ? &ex->client_ip : NULL;
    f->param_names = ex->rr.param_names;
    f->param_values = ex->rr.param_values;
    f->nparams = ex->rr.nparams;
    f->params_numbered = ex->route->match.regex != NULL; /* groups, in order */
    f->identity = &ex->identity;
    f->consumers = &ex->gen->consumers;
    f->route_name = ex->route->name;
    f->chain = &ex->route->chain;
    f->rl_table = ex->gen->rl_table;
    f->cache_store = ex->gen->cache_store;
    f->tls = ex->tls;
    f->svc = &services;
    f->resume = filters_resume;
    f->owner = ex;
    ex->filters_begun = true;
    /* Only the gateway says who the caller is: on a route with an auth
     * filter no client-sent X-Consumer-* field survives, whichever filter
     * (if any) ends up identifying the caller. */
    if (ex->route->chain.strips_consumer)
        pt_headers_remove_prefix(&ex->reqh, PT_SLICE("X-Consumer-"));
    if (ex->route->chain.n_all) {
        ex->states = pt_chain_states(&ex->route->chain, ex->arena);
        if (!ex->states) {
            pt_exchange_respond(ex, 500, "out of memory", true);
            return;
        }
        if (ex->gen->metrics) /* NULL when out of memory: the request just goes untimed */
            f->hook_ns = pt_arena_zalloc(ex->arena, sizeof(uint64_t) * ex->route->chain.n_all);
    }
    run_request(ex);
}

/* ---- response phases ---- */

bool pt_exchange_filters_response_head(struct pt_exchange *ex)
{
    const struct pt_chain *ch = &ex->route->chain;
    /* Body filters without a head hook change chunks (filter.h). */
    ex->fctx.response_body_use = PT_BODY_CHANGE;
    ex->fctx.response_body_skip = 0;
    if (!ch->n_response_head)
        return true;
    ex->fctx.status = ex->status;
    ex->fctx.respond_status = 0;
    ex->fctx.respond_error = NULL;
    uint32_t upstream_fields = ex->resph.n;
    int r = pt_chain_run_response_head(ch, &ex->fctx, ex->states);
    if (r == PT_FILTER_CONTINUE)
        return true;
    /* The upstream's answer is replaced: its fields go with it; those the
     * responding filter added stay (a WWW-Authenticate, a Location). */
    for (uint32_t i = 0; i < upstream_fields && i < ex->resph.n; i++)
        ex->resph.f[i].dead = true;
    ex->resp = PT_RESP_NONE;
    if (r == PT_FILTER_RESPOND)
        filter_respond(ex);
    else
        pt_exchange_respond(ex, 500, "filter error", false);
    return false;
}

bool pt_exchange_filters_upstream_failed(struct pt_exchange *ex, int status)
{
    const struct pt_chain *ch = &ex->route->chain;
    if (!ex->filters_begun)
        return false;
    for (uint32_t i = 0; i < ch->n_all; i++) {
        const struct pt_filter_inst *in = &ch->all[i];
        if (!in->def->on_upstream_failure)
            continue;
        ex->fctx.status = status;
        ex->fctx.respond_status = 0;
        ex->fctx.respond_error = NULL;
        ex->fctx.respond_raw = false;
        if (in->def->on_upstream_failure(&ex->fctx, in->conf, ex->states[in->state_index]) ==
            PT_FILTER_RESPOND) {
            filter_respond(ex);
            return true;
        }
    }
    return false;
}

/* Pulls upstream chunks through the body filters until one comes out
 * (into bf_out) or the upstream has nothing more for now. A chunk the
 * filters swallow whole (a filter taking the whole body) pulls the next
 * one at once: an empty chunk before the end is never handed out. *moved
 * says whether any upstream bytes were taken. */
static pt_slice pull_body(struct pt_exchange *ex, bool *eos, bool *moved)
{
    *moved = false;
    if (ex->bf_have) {
        *eos = ex->bf_eos;
        return ex->bf_out;
    }
    *eos = false;
    while (ex->calling) {
        bool in_eos = false;
        pt_slice in = pt_call_body_peek(ex->call, &in_eos);
        if (in.len == 0 && !in_eos)
            break;
        /* The filters may keep pointers to the chunk: it goes into the arena
         * before the call's buffer is reused. */
        pt_slice chunk = {pt_arena_strndup(ex->arena, in.p ? in.p : "", in.len), in.len};
        pt_call_body_consume(ex->call, in.len);
        *moved = true;
        if (!chunk.p) {
            pt_exchange_respond(ex, 502, "out of memory", false);
            break;
        }
        int r =
            pt_chain_run_response_body(&ex->route->chain, &ex->fctx, ex->states, &chunk, in_eos);
        if (r != PT_FILTER_CONTINUE) {
            pt_exchange_respond(
                ex,
                r == PT_FILTER_RESPOND && ex->fctx.respond_status ? ex->fctx.respond_status : 500,
                "filter error", false);
            break;
        }
        if (chunk.len == 0 && !in_eos)
            continue;
        ex->bf_out = chunk;
        ex->bf_eos = in_eos;
        ex->bf_have = true;
        *eos = in_eos;
        return chunk;
    }
    return (pt_slice){"", 0};
}

pt_slice pt_exchange_filters_body_peek(struct pt_exchange *ex, bool *eos)
{
    bool moved;
    return pull_body(ex, eos, &moved);
}

/* A body filter takes the whole body (PT_BODY_WHOLE): the upstream's
 * chunks are pulled on every pump, not only when the client can take
 * more, because the filters may swallow them without output (the upstream
 * would stall on a full buffer). A held head (a response with a
 * Content-Length) goes to the codec once the filters produced their first
 * output: at end of stream its length is the output's; before it (a filter
 * gave up and passes the body on unchanged) the upstream's length stands.
 * 1 on progress. */
int pt_exchange_filters_whole_pump(struct pt_exchange *ex)
{
    if (ex->bf_have || ex->resp == PT_RESP_GATEWAY)
        return 0;
    bool eos, moved;
    pt_slice out = pull_body(ex, &eos, &moved);
    if (ex->resp == PT_RESP_GATEWAY) {
        ex->bf_hold = false;
        return 1;
    }
    if (ex->bf_hold && ex->bf_have) {
        ex->bf_hold = false;
        if (eos)
            ex->content_length = (int64_t)out.len;
        ex->resp = PT_RESP_UPSTREAM;
        ex->resp_seq++;
        return 1;
    }
    return moved;
}

void pt_exchange_filters_body_consume(struct pt_exchange *ex, size_t n)
{
    ex->bf_out.p += n;
    ex->bf_out.len -= n;
    if (ex->bf_out.len == 0 && !ex->bf_eos)
        ex->bf_have = false;
}
