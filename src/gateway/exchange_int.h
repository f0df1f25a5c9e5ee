/*
 * exchange_int.h — what exchange.c, exchange_request.c and
 * exchange_filters.c share; not for codecs.
 */
#ifndef PT_GATEWAY_EXCHANGE_INT_H
#define PT_GATEWAY_EXCHANGE_INT_H

#include "gateway/exchange.h"
#include "gateway/metrics.h"

/* One call of a filter's fan-out (svc->fan_call, exchange_filters.c), in
 * the request arena: its fetch, who to tell, and (tracing on) its span. */
struct pt_fan_call {
    struct pt_fetch fetch;
    struct pt_exchange *ex;
    pt_filter_fan_cb cb;
    uint32_t tag;
    bool out; /* started and neither done nor cancelled */
    /* its upstream's admission (breaker, max_concurrent) and metrics */
    const struct pt_upstream *up;
    struct pt_admission adm;
    uint64_t t_start_ns;
    struct pt_fan_call *next;
    struct pt_call_trace trace;
    uint8_t span[8];
    uint64_t span_start;
    const char *name; /* the filter's: the span's name */
};

/* exchange.c */
void pt_exchange_dispatch(struct pt_exchange *ex);
void pt_exchange_respond_body(struct pt_exchange *ex, int status, const char *error, pt_slice body,
                              pt_slice ctype, bool close);
void pt_exchange_log(struct pt_exchange *ex);

/* exchange_request.c: strip_prefix / rewrite (1, 0 out of memory, -1 a
 * path that cannot be normalised) and the X-Forwarded-* / Host fields. */
int pt_exchange_rewrite_path(struct pt_exchange *ex);
/* Sets ex->client and ex->client_ip from the peer and, from a trusted
 * peer, X-Forwarded-For. First thing once the head is complete. */
void pt_exchange_find_client(struct pt_exchange *ex);
bool pt_exchange_forwarding_headers(struct pt_exchange *ex);

/* exchange_split.c: picks the side of ex->route's split into ex->up
 * (override header, sticky key, or weighted random); false when out of
 * memory. Only for routes with a split. */
bool pt_exchange_pick_side(struct pt_exchange *ex);

/* exchange_trace.c (gateway/trace.h): the request's trace context, from
 * its traceparent (before routing; the client's copy is removed); the
 * hooks for the upstream call and a filter's call (NULL: untraced); the
 * request's span (at the end); Server-Timing on the response about to
 * go (tracing.server_timing); the access log's ids (len, 0: none). */
void pt_exchange_trace_start(struct pt_exchange *ex);
struct pt_call_trace *pt_exchange_trace_upstream(struct pt_exchange *ex);
struct pt_call_trace *pt_exchange_trace_filter_call(struct pt_exchange *ex, const char *filter);
struct pt_call_trace *pt_exchange_trace_fan_call(struct pt_exchange *ex, struct pt_fan_call *fc);
void pt_exchange_trace_end(struct pt_exchange *ex);
void pt_exchange_server_timing(struct pt_exchange *ex);
size_t pt_exchange_trace_log(const struct pt_exchange *ex, char out[80]);
/* exchange_metrics.c: records the request into its generation's metric
 * block for this worker (nothing with metrics off). At the log phase. */
void pt_exchange_metrics(struct pt_exchange *ex);
/* A filter's call to `up` (started at t_start_ns, loop clock) is over:
 * its time to the head (or to now) and its retries go to the upstream's
 * metrics, as the proxied request's do at the end. */
void pt_exchange_call_metrics(struct pt_exchange *ex, const struct pt_upstream *up,
                              uint64_t t_start_ns, const struct pt_call *c);
/* The outcome a responding filter's status means (metrics.h). */
uint8_t pt_exchange_filter_outcome(int status);

/* exchange_body.c: the whole request body for filters that asked for it
 * (ctx->request_body_want): gathered before dispatch, then the call's
 * body source. */
void pt_exchange_gather_start(struct pt_exchange *ex);
int pt_exchange_gather_pump(struct pt_exchange *ex);
void pt_exchange_gather_stop(struct pt_exchange *ex);
pt_slice pt_exchange_gathered_peek(struct pt_exchange *ex, bool *eos);
void pt_exchange_gathered_consumed(struct pt_exchange *ex, size_t n);

/* exchange_filters.c */
void pt_exchange_filters_begin(struct pt_exchange *ex);
/* Runs the response head filters; false when they replaced the response. */
/* The upstream call failed (status: the error the gateway would answer):
 * true when a filter's on_upstream_failure answered instead. */
bool pt_exchange_filters_upstream_failed(struct pt_exchange *ex, int status);
bool pt_exchange_filters_response_head(struct pt_exchange *ex);
pt_slice pt_exchange_filters_body_peek(struct pt_exchange *ex, bool *eos);
void pt_exchange_filters_body_consume(struct pt_exchange *ex, size_t n);
/* Pulls a whole-body filter's input on every pump; releases a held head
 * (exchange_filters.c). 1 on progress. */
int pt_exchange_filters_whole_pump(struct pt_exchange *ex);
/* Cancels a pending suspension (timer, call, deadline) with on_cancel. */
void pt_exchange_filters_cancel(struct pt_exchange *ex);

/* exchange_filters.c: a filter's call request (filter.h) as the outbound
 * client's, upstream picked and path split; IP-literal URL upstreams are
 * made in `a`; neither upstream nor url: the request's own upstream. 0, -EINVAL (a bad URL) or
 * -ENOENT (no such upstream). */
int pt_exchange_call_req(struct pt_exchange *ex, const struct pt_filter_call_req *r,
                         struct pt_arena *a, struct pt_call_req *out);
enum pt_call_error pt_exchange_call_error(enum pt_call_fail f);
/* A finished fetch as a filter sees it; its head's fields are copied into
 * `a` (the request's arena, or a detached call's own). */
struct pt_filter_call_res pt_exchange_fetch_result(struct pt_arena *a, const struct pt_fetch *f);

/* exchange_detached.c: the services that let filter work outlive or wait
 * beyond the request's own pending work (filter.h call_detached, park,
 * worker_bit; unpark is pt_worker_unpark). pt_exchange_unpark_one takes a
 * parked exchange off its worker's lists (no-op when not parked). */
int pt_exchange_svc_call_detached(struct pt_filter_ctx *ctx, const struct pt_filter_call_req *r,
                                  pt_filter_detached_cb cb, void *arg);
int pt_exchange_svc_park(struct pt_filter_ctx *ctx, uint64_t timeout_ms, pt_filter_timer_cb cb);
uint64_t pt_exchange_svc_worker_bit(struct pt_filter_ctx *ctx);
void pt_exchange_unpark_one(struct pt_exchange *ex);

#endif
