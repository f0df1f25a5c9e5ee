/*
 * client_int.h — what client.c and client_retry.c share: the outbound
 * client's internals, not an API for callers (they use client.h).
 */
#ifndef PT_PROXY_CLIENT_INT_H
#define PT_PROXY_CLIENT_INT_H

#include "proxy/client.h"

/* client.c */
/* Reports the current attempt's outcome to its target (once per attempt). */
void pt_client_report_attempt(struct pt_call *c, bool ok);
/* Ends the call with `why`, no retry. Returns -1 for the pumps. */
int pt_client_fail_now(struct pt_call *c, enum pt_call_fail why, const char *text);
/* Takes a connection to c->target (pooled unless `fresh`); -1 on failure. */
int pt_client_take_connection(struct pt_call *c, bool fresh);
/* Builds the request head for c->target in the call's arena. */
bool pt_client_build_head(struct pt_call *c);
/* Picks a target for the next attempt, avoiding c->tried; NULL: none. */
const struct pt_target *pt_client_pick(struct pt_call *c);
bool pt_client_idempotent(int method_id);
/* Tracing (req.trace): the attempt's span begins / ends (once). */
void pt_client_trace_begin(struct pt_call *c);
void pt_client_trace_end(struct pt_call *c, int status, enum pt_call_fail fail);

/* client_retry.c */
/* At pt_call_start: turns retries on for a call that may use them. */
void pt_client_retry_init(struct pt_call *c);
/* The attempt failed with `why` (or, with why NONE, its final head has
 * `status`): true when another attempt was started (its own outcome is in
 * c->phase), false when the caller must fail (or deliver) this one. */
bool pt_client_retry(struct pt_call *c, enum pt_call_fail why, int status);
/* Held body bytes still to re-send in this attempt. */
pt_slice pt_client_held_peek(struct pt_call *c, bool *eos);
/* The caller's body bytes about to be consumed: keeps a copy of `n`. */
void pt_client_hold(struct pt_call *c, size_t n);

#endif
