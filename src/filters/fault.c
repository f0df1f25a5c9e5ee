/*
 * fault.c — fault injection (Envoy's HTTP fault filter): delay a share of
 * a route's requests, answer a share with an error, or let a request ask
 * for its own fault by header.
 *
 *   fault:
 *     delay: { duration: 200ms, percent: 10 }   # percent: default 100
 *     abort: { status: 503, percent: 1 }        # 400-599; percent: default 100
 *     header_trigger: false                     # X-Portico-Fault-Delay / -Abort
 *     max_delay: 5s                             # cap on a header-asked delay
 *
 * Delay first, then abort (Envoy's order), each rolled independently with
 * the worker's PRNG when the request reaches the filter. A delay suspends
 * the request on a gateway timer (nothing blocks) and resumes it with
 * CONTINUE, or with RESPOND when the abort roll also hit. An abort answers
 * the standard JSON error with that status; the upstream is not contacted.
 *
 * With header_trigger, `X-Portico-Fault-Delay: 200ms` (a duration, or
 * plain milliseconds) and `X-Portico-Fault-Abort: 503` apply to that
 * request always, replacing the configured delay / abort for it; a delay
 * asked that way is capped at max_delay. A value that does not parse (or
 * an abort status outside 400-599) is ignored, as if the field were
 * absent: a chaos header must never turn into a 400 of its own. Every
 * field named X-Portico-Fault-* is removed from the forwarded request,
 * trigger or not, so the fault protocol never reaches a service.
 *
 * `percent` is read as text (parsed here) rather than PT_F_PERCENT: the
 * loader zeroes a config before filling it, so a PT_F_PERCENT field left
 * out is indistinguishable from `percent: 0`, and "left out" must mean 100.
 *
 * Ownership: the compiled config lives in the generation arena. The
 * per-request state is one status code, so there is nothing for an
 * on_cancel hook to release (the gateway cancels the timer itself).
 */
#include "filters/registry.h"
#include "filters/template.h"
#include "core/units.h"

#include <errno.h>
#include <stdlib.h>

/* Config limits: a fault delay is for chaos tests, not for parking requests. */
#define FAULT_MAX_DELAY_DEFAULT_MS 5000
#define FAULT_DELAY_LIMIT_MS (60 * 60 * 1000)
/* Slack between the delay and the suspend deadline the gateway enforces,
 * so the deadline never cuts a configured delay short. */
#define FAULT_DEADLINE_MARGIN_MS 1000

struct fault_delay_conf {
    uint64_t duration_ms;
    const char *percent; /* NULL: 100 */
};

struct fault_abort_conf {
    int64_t status;      /* 0: no abort */
    const char *percent; /* NULL: 100 */
};

struct fault_conf {
    struct fault_delay_conf delay;
    struct fault_abort_conf abort;
    bool header_trigger;
    uint64_t max_delay_ms; /* 0: FAULT_MAX_DELAY_DEFAULT_MS */
    /* Filled by fault_compile (not YAML keys). */
    double delay_percent, abort_percent;
};

/* Per request: what the timer callback still has to do. */
struct fault_state {
    int abort_status; /* 0: resume CONTINUE after the delay */
};

static const struct pt_field delay_fields[] = {
    {"duration", PT_F_DURATION, offsetof(struct fault_delay_conf, duration_ms), NULL},
    {"percent", PT_F_STRING, offsetof(struct fault_delay_conf, percent), NULL},
    {NULL, 0, 0, NULL},
};

static const struct pt_field abort_fields[] = {
    {"status", PT_F_INT, offsetof(struct fault_abort_conf, status), NULL},
    {"percent", PT_F_STRING, offsetof(struct fault_abort_conf, percent), NULL},
    {NULL, 0, 0, NULL},
};

static const struct pt_field fault_fields[] = {
    {"delay", PT_F_OBJECT, offsetof(struct fault_conf, delay), delay_fields},
    {"abort", PT_F_OBJECT, offsetof(struct fault_conf, abort), abort_fields},
    {"header_trigger", PT_F_BOOL, offsetof(struct fault_conf, header_trigger), NULL},
    {"max_delay", PT_F_DURATION, offsetof(struct fault_conf, max_delay_ms), NULL},
    {NULL, 0, 0, NULL},
};

static const pt_slice header_prefix = PT_SLICE("X-Portico-Fault-");
static const pt_slice header_delay = PT_SLICE("X-Portico-Fault-Delay");
static const pt_slice header_abort = PT_SLICE("X-Portico-Fault-Abort");

static void fault_timer_done(struct pt_filter_ctx *ctx, void *state);

/* Rolls a `pct` in [0, 100] chance with the worker's PRNG. */
static bool roll(struct pt_filter_ctx *ctx, double pct)
{
    if (pct <= 0)
        return false;
    if (pct >= 100)
        return true;
    /* The top 53 bits as a double in [0, 1): uniform, no modulo bias. */
    double u = (double)(ctx->svc->random(ctx) >> 11) * 0x1p-53;
    return u * 100.0 < pct;
}

/* "12.5", "10%": a percentage in [0, 100]; -1 when it is not one. */
static double parse_percent(const char *s)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(s, &end);
    if (end != s && *end == '%')
        end++;
    if (errno || end == s || *end || !(d >= 0 && d <= 100))
        return -1;
    return d;
}

/* The header's delay in ms: a duration ("200ms", "1s") or plain digits
 * (milliseconds). false when it is neither. */
static bool parse_header_delay(pt_slice v, uint64_t *out)
{
    char buf[32];
    if (v.len == 0 || v.len >= sizeof(buf))
        return false;
    bool digits = true;
    for (size_t i = 0; i < v.len; i++)
        digits &= v.p[i] >= '0' && v.p[i] <= '9';
    memcpy(buf, v.p, v.len);
    buf[v.len] = '\0';
    if (digits) {
        /* At most 31 digits, but a u64 holds only 19 safely. */
        if (v.len > 18)
            return false;
        *out = strtoull(buf, NULL, 10);
        return true;
    }
    return pt_parse_duration_ms(buf, out) == 0;
}

/* The header's abort status: three digits, 400-599. 0 when invalid. */
static int parse_header_abort(pt_slice v)
{
    if (v.len != 3)
        return 0;
    int st = 0;
    for (size_t i = 0; i < 3; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return 0;
        st = st * 10 + (v.p[i] - '0');
    }
    return st >= 400 && st <= 599 ? st : 0;
}

/* Marks every X-Portico-Fault-* field of the forwarded request dead. */
static void remove_fault_headers(struct pt_headers *h)
{
    for (uint32_t i = 0; i < h->n; i++) {
        struct pt_hfield *f = &h->f[i];
        if (!f->dead && f->name.len >= header_prefix.len &&
            pt_slice_ieq((pt_slice){f->name.p, header_prefix.len}, header_prefix))
            f->dead = true;
    }
}

static int fault_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state_)
{
    const struct fault_conf *conf = conf_;
    struct fault_state *st = state_;

    uint64_t delay_ms = 0;
    if (conf->delay.duration_ms && roll(ctx, conf->delay_percent))
        delay_ms = conf->delay.duration_ms;
    int abort_status = 0;
    if (conf->abort.status && roll(ctx, conf->abort_percent))
        abort_status = (int)conf->abort.status;

    if (conf->header_trigger && ctx->req_headers) {
        const struct pt_hfield *f = pt_headers_find(ctx->req_headers, header_delay);
        uint64_t asked;
        if (f && parse_header_delay(f->value, &asked))
            delay_ms = PT_MIN(asked, conf->max_delay_ms);
        f = pt_headers_find(ctx->req_headers, header_abort);
        int status = f ? parse_header_abort(f->value) : 0;
        if (status)
            abort_status = status;
    }
    if (ctx->req_headers)
        remove_fault_headers(ctx->req_headers);

    if (delay_ms) {
        st->abort_status = abort_status;
        /* A timer that cannot be armed (the worker is out of resources)
         * skips the delay: injected chaos must not become a real outage. */
        if (ctx->svc->timer(ctx, delay_ms, fault_timer_done) == 0) {
            ctx->suspend_deadline_ms = delay_ms + FAULT_DEADLINE_MARGIN_MS;
            return PT_FILTER_SUSPEND;
        }
    }
    if (abort_status) {
        ctx->respond_status = abort_status;
        ctx->respond_body = (pt_slice){NULL, 0};
        return PT_FILTER_RESPOND;
    }
    return PT_FILTER_CONTINUE;
}

static void fault_timer_done(struct pt_filter_ctx *ctx, void *state_)
{
    const struct fault_state *st = state_;
    if (st->abort_status) {
        ctx->respond_status = st->abort_status;
        ctx->respond_body = (pt_slice){NULL, 0};
        ctx->resume(ctx, PT_FILTER_RESPOND);
        return;
    }
    ctx->resume(ctx, PT_FILTER_CONTINUE);
}

/* A nested `percent` (NULL: 100) into *out; false after reporting. */
static bool compile_percent(struct pt_filter_errs *errs, const char *field, const char *text,
                            double *out)
{
    *out = text ? parse_percent(text) : 100;
    if (*out >= 0)
        return true;
    pt_filter_errorf(errs, field, "percent", true,
                     "%s.percent: expected a percentage (0-100, or like \"10%%\"), got \"%s\"",
                     field, text);
    return false;
}

static int fault_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct fault_conf *conf = conf_;
    bool ok = true;

    ok &= compile_percent(errs, "delay", conf->delay.percent, &conf->delay_percent);
    if (conf->delay.duration_ms > FAULT_DELAY_LIMIT_MS) {
        pt_filter_errorf(errs, "delay", "duration", true, "delay.duration: at most 1h");
        ok = false;
    }
    if (conf->delay.percent && !conf->delay.duration_ms) {
        pt_filter_errorf(errs, "delay", NULL, false, "delay: `duration` is required (e.g. 200ms)");
        ok = false;
    }

    ok &= compile_percent(errs, "abort", conf->abort.percent, &conf->abort_percent);
    if (conf->abort.status && (conf->abort.status < 400 || conf->abort.status > 599)) {
        pt_filter_errorf(errs, "abort", "status", true,
                         "abort.status: %lld is not an error status (use 400-599)",
                         (long long)conf->abort.status);
        ok = false;
    }
    if (conf->abort.percent && !conf->abort.status) {
        pt_filter_errorf(errs, "abort", NULL, false, "abort: `status` is required (e.g. 503)");
        ok = false;
    }

    if (conf->max_delay_ms > FAULT_DELAY_LIMIT_MS) {
        pt_filter_errorf(errs, "max_delay", NULL, false, "max_delay: at most 1h");
        ok = false;
    }
    if (!conf->max_delay_ms)
        conf->max_delay_ms = FAULT_MAX_DELAY_DEFAULT_MS;
    return ok ? 0 : -1;
}

const struct pt_filter_def pt_filter_fault = {
    .name = "fault",
    .priority = 900,
    .fields = fault_fields,
    .config_size = sizeof(struct fault_conf),
    .compile = fault_compile,
    .state_size = sizeof(struct fault_state),
    .on_request = fault_on_request,
};
