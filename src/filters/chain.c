/*
 * chain.c — builds a route's filter chain and runs its phases
 * (DESIGN.md §5), plus the registry lookup.
 *
 * A chain is compiled once per route at config load: the enabled
 * instances are copied into the generation arena in run order (priority
 * descending, then name ascending), each gets its state slot, and every
 * phase gets a flat array of pointers to the instances that have a hook
 * for it. Running a phase is then a short loop over one array; a phase no
 * filter hooks is an empty array and costs a single comparison.
 *
 * Ownership: the chain's arrays live in the arena given to
 * pt_chain_build (the generation's) and do not borrow the caller's `inst`
 * array. Per-request state arrays come from the request arena.
 */
#include "filters/filter.h"

#include <errno.h>

const struct pt_filter_def *pt_filter_find(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < pt_filter_registry_len; i++)
        if (strcmp(pt_filter_registry[i]->name, name) == 0)
            return pt_filter_registry[i];
    return NULL;
}

/* Run order: higher priority first, ties by name so the order never
 * depends on how the config listed the filters. */
static bool runs_before(const struct pt_filter_inst *x, const struct pt_filter_inst *y)
{
    if (x->def->priority != y->def->priority)
        return x->def->priority > y->def->priority;
    return strcmp(x->def->name, y->def->name) < 0;
}

/* Points out[] at every instance of `all` for which `has_hook` holds.
 * Returns the count, or -1 when the array cannot be allocated. */
static int64_t split_phase(const struct pt_filter_inst *all, uint32_t n, struct pt_arena *a,
                           bool (*has_hook)(const struct pt_filter_inst *),
                           const struct pt_filter_inst ***out)
{
    uint32_t count = 0;
    for (uint32_t i = 0; i < n; i++)
        count += has_hook(&all[i]);
    *out = NULL;
    if (count == 0)
        return 0;
    const struct pt_filter_inst **arr = pt_arena_alloc(a, sizeof(*arr) * count);
    if (!arr)
        return -1;
    uint32_t k = 0;
    for (uint32_t i = 0; i < n; i++)
        if (has_hook(&all[i]))
            arr[k++] = &all[i];
    *out = arr;
    return count;
}

static bool has_request(const struct pt_filter_inst *f)
{
    return f->def->on_request != NULL;
}

static bool has_response_head(const struct pt_filter_inst *f)
{
    return f->def->on_response_head != NULL;
}

/* A body hook counts only when the instance's config uses it: a
 * transform with header rules only stays out of the body phases. */
static bool uses_body(const struct pt_filter_inst *f)
{
    return !f->def->uses_body || f->def->uses_body(f->conf);
}

static bool has_response_body(const struct pt_filter_inst *f)
{
    return f->def->on_response_body != NULL && uses_body(f);
}

static bool has_request_body(const struct pt_filter_inst *f)
{
    return f->def->on_request_body != NULL && uses_body(f);
}

static bool has_log(const struct pt_filter_inst *f)
{
    return f->def->on_log != NULL;
}

int pt_chain_build(struct pt_chain *c, struct pt_filter_inst *inst, uint32_t n, struct pt_arena *a)
{
    memset(c, 0, sizeof(*c));
    if (n == 0)
        return 0;

    struct pt_filter_inst *all = pt_arena_alloc(a, sizeof(*all) * n);
    if (!all)
        return -ENOMEM;
    /* Insertion sort: chains are a handful of filters, and it is stable. */
    for (uint32_t i = 0; i < n; i++) {
        struct pt_filter_inst cur = inst[i];
        uint32_t j = i;
        while (j > 0 && runs_before(&cur, &all[j - 1])) {
            all[j] = all[j - 1];
            j--;
        }
        all[j] = cur;
    }
    /* One state slot per instance, in run order: pt_chain_states sizes
     * its array by n_all, so the slots must be exactly 0..n-1. */
    for (uint32_t i = 0; i < n; i++)
        all[i].state_index = i;

    int64_t r = split_phase(all, n, a, has_request, &c->request);
    int64_t h = split_phase(all, n, a, has_response_head, &c->response_head);
    int64_t b = split_phase(all, n, a, has_response_body, &c->response_body);
    int64_t l = split_phase(all, n, a, has_log, &c->log);
    int64_t q = split_phase(all, n, a, has_request_body, &c->request_body);
    if (r < 0 || h < 0 || b < 0 || l < 0 || q < 0) {
        memset(c, 0, sizeof(*c));
        return -ENOMEM;
    }
    c->all = all;
    c->n_all = n;
    for (uint32_t i = 0; i < n; i++)
        c->strips_consumer |= all[i].def->auth;
    c->n_request = (uint32_t)r;
    c->n_response_head = (uint32_t)h;
    c->n_response_body = (uint32_t)b;
    c->n_log = (uint32_t)l;
    c->n_request_body = (uint32_t)q;
    return 0;
}

/* Returns NULL for an empty chain (the runners accept NULL states) and
 * when out of memory; a caller tells them apart by c->n_all. */
void **pt_chain_states(const struct pt_chain *c, struct pt_arena *a)
{
    if (c->n_all == 0)
        return NULL;
    /* One zeroed block: the pointer array, then each state at a 16-byte
     * boundary (what the arena guarantees for separate allocations). */
    size_t ptrs = (sizeof(void *) * c->n_all + 15) & ~(size_t)15;
    size_t total = ptrs;
    for (uint32_t i = 0; i < c->n_all; i++)
        total += (c->all[i].def->state_size + 15) & ~(size_t)15;
    char *block = pt_arena_zalloc(a, total);
    if (!block)
        return NULL;
    void **states = (void **)block;
    size_t off = ptrs;
    for (uint32_t i = 0; i < c->n_all; i++) {
        size_t sz = c->all[i].def->state_size;
        if (sz == 0)
            continue; /* stays NULL */
        states[c->all[i].state_index] = block + off;
        off += (sz + 15) & ~(size_t)15;
    }
    return states;
}

static void *state_of(void **states, const struct pt_filter_inst *inst)
{
    return states ? states[inst->state_index] : NULL;
}

/* Hook timing (ctx->hook_ns, metrics on; the runners accept a NULL ctx): one clock read before a
 * phase and one after each hook, each hook charged the time since the previous read. Nothing at all
 * when hook_ns is NULL. */
static inline uint64_t hook_clock(const struct pt_filter_ctx *ctx)
{
    return ctx && ctx->hook_ns ? pt_now_ns() : 0;
}

static inline uint64_t hook_charge(struct pt_filter_ctx *ctx, const struct pt_filter_inst *inst,
                                   uint64_t t0)
{
    if (!ctx || !ctx->hook_ns)
        return 0;
    uint64_t t = pt_now_ns();
    /* A hook that ran is charged at least 1 ns: 0 means "did not run" to
     * the metrics (a filter after one that answered is not observed). */
    ctx->hook_ns[inst->state_index] += t > t0 ? t - t0 : 1;
    return t;
}

/* A hook's result as the runner reports it: anything outside the enum is
 * a filter bug and is treated as an internal error, not as CONTINUE. */
static int checked(int r)
{
    return (r >= PT_FILTER_CONTINUE && r <= PT_FILTER_ERROR) ? r : PT_FILTER_ERROR;
}

int pt_chain_run_request(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                         uint32_t *cursor)
{
    uint32_t i = *cursor;
    uint64_t t = hook_clock(ctx);
    for (; i < c->n_request; i++) {
        const struct pt_filter_inst *inst = c->request[i];
        ctx->running = inst->def->name;
        ctx->body_use = PT_BODY_CHANGE;
        int r = checked(inst->def->on_request(ctx, inst->conf, state_of(states, inst)));
        t = hook_charge(ctx, inst, t);
        /* A filter that asked for the whole request body: only one with
         * a request-body hook its config uses can get it. */
        if (pt_unlikely(ctx->body_use == PT_BODY_WHOLE) && inst->state_index < 64 &&
            has_request_body(inst))
            ctx->request_body_want |= 1ull << inst->state_index;
        if (r == PT_FILTER_CONTINUE)
            continue;
        /* RESPOND/ERROR leave the cursor on the filter that stopped the
         * chain (for logs and /debug); SUSPEND moves past it, because that
         * filter's work is done once its async call completes and the
         * gateway's resume must continue with the next one. */
        *cursor = r == PT_FILTER_SUSPEND ? i + 1 : i;
        return r;
    }
    *cursor = i;
    return PT_FILTER_CONTINUE;
}

/* The response body's combined use (filter.h, enum pt_body_use) from
 * what each body filter said in its head hook (`whole`, `observe`: bits
 * by state index; skips in ctx->response_body_skip); a body filter
 * without a head hook changes chunks (the default). */
static uint8_t combine_body_use(const struct pt_chain *c, const struct pt_filter_ctx *ctx,
                                uint64_t whole, uint64_t observe)
{
    uint8_t use = PT_BODY_SKIP;
    for (uint32_t i = 0; i < c->n_response_body; i++) {
        uint32_t k = c->response_body[i]->state_index;
        uint64_t bit = k < 64 ? 1ull << k : 0;
        if (bit & ctx->response_body_skip)
            continue;
        if (!(bit & (whole | observe)))
            return PT_BODY_CHANGE;
        if (bit & whole)
            use = PT_BODY_WHOLE;
        else if (use == PT_BODY_SKIP)
            use = PT_BODY_OBSERVE;
    }
    return use;
}

int pt_chain_run_response_head(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states)
{
    struct pt_filter_ctx none;
    if (!ctx) { /* (unit tests run phases without a request) */
        memset(&none, 0, sizeof(none));
        ctx = &none;
    }
    uint64_t t = hook_clock(ctx);
    uint64_t whole = 0, observe = 0;
    ctx->response_body_skip = 0;
    for (uint32_t i = 0; i < c->n_response_head; i++) {
        const struct pt_filter_inst *inst = c->response_head[i];
        ctx->body_use = PT_BODY_CHANGE;
        int r = checked(inst->def->on_response_head(ctx, inst->conf, state_of(states, inst)));
        t = hook_charge(ctx, inst, t);
        uint64_t bit = inst->state_index < 64 ? 1ull << inst->state_index : 0;
        if (ctx->body_use == PT_BODY_SKIP)
            ctx->response_body_skip |= bit;
        else if (ctx->body_use == PT_BODY_WHOLE)
            whole |= bit;
        else if (ctx->body_use == PT_BODY_OBSERVE)
            observe |= bit;
        /* There is no cursor to resume this phase from, so a filter that
         * suspends here is a bug; fail the request rather than hang it. */
        if (r == PT_FILTER_SUSPEND)
            return PT_FILTER_ERROR;
        if (r != PT_FILTER_CONTINUE)
            return r;
    }
    ctx->response_body_use = combine_body_use(c, ctx, whole, observe);
    return PT_FILTER_CONTINUE;
}

int pt_chain_run_response_body(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                               pt_slice *chunk, bool eos)
{
    uint64_t t = hook_clock(ctx);
    for (uint32_t i = 0; i < c->n_response_body; i++) {
        const struct pt_filter_inst *inst = c->response_body[i];
        if (ctx && inst->state_index < 64 && (ctx->response_body_skip >> inst->state_index & 1))
            continue;
        int r = checked(
            inst->def->on_response_body(ctx, inst->conf, state_of(states, inst), chunk, eos));
        t = hook_charge(ctx, inst, t);
        if (r == PT_FILTER_SUSPEND)
            return PT_FILTER_ERROR;
        if (r != PT_FILTER_CONTINUE)
            return r;
    }
    return PT_FILTER_CONTINUE;
}

int pt_chain_run_request_body(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states,
                              pt_slice *body)
{
    uint64_t t = hook_clock(ctx);
    for (uint32_t i = 0; i < c->n_request_body; i++) {
        const struct pt_filter_inst *inst = c->request_body[i];
        if (inst->state_index >= 64 || !(ctx->request_body_want >> inst->state_index & 1))
            continue;
        int r = checked(inst->def->on_request_body(ctx, inst->conf, state_of(states, inst), body));
        t = hook_charge(ctx, inst, t);
        if (r == PT_FILTER_SUSPEND)
            return PT_FILTER_ERROR;
        if (r != PT_FILTER_CONTINUE)
            return r;
    }
    return PT_FILTER_CONTINUE;
}

void pt_chain_request_body_too_large(const struct pt_chain *c, struct pt_filter_ctx *ctx)
{
    for (uint32_t i = 0; i < c->n_request_body; i++) {
        const struct pt_filter_inst *inst = c->request_body[i];
        if (inst->state_index < 64 && (ctx->request_body_want >> inst->state_index & 1))
            pt_filter_note(ctx, inst->def->name, "too_large");
    }
}

void pt_chain_run_log(const struct pt_chain *c, struct pt_filter_ctx *ctx, void **states)
{
    uint64_t t = hook_clock(ctx);
    for (uint32_t i = 0; i < c->n_log; i++) {
        const struct pt_filter_inst *inst = c->log[i];
        inst->def->on_log(ctx, inst->conf, state_of(states, inst));
        t = hook_charge(ctx, inst, t);
    }
}

bool pt_chain_hides_interim_field(const struct pt_chain *c, pt_slice name)
{
    for (uint32_t i = 0; i < c->n_response_head; i++) {
        const struct pt_filter_inst *f = c->response_head[i];
        if (f->def->hides_interim_field && f->def->hides_interim_field(f->conf, name))
            return true;
    }
    return false;
}
