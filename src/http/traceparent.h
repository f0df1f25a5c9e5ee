/*
 * traceparent.h — W3C Trace Context (https://www.w3.org/TR/trace-context/):
 * the `traceparent` field, parsed strictly and written back.
 *
 *   traceparent: 00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>
 *
 * Lowercase hex only; trace-id and parent-id never all zeros; version `ff`
 * is invalid. Version 00 is exactly 55 bytes. A higher version is read
 * with version 00's rules as long as its first 55 bytes fit them and what
 * follows (if anything) starts with `-` (the spec's rule for versions we
 * do not know yet). Only the sampled bit of the flags means anything.
 *
 * Pure: no allocation, no state.
 */
#ifndef PT_HTTP_TRACEPARENT_H
#define PT_HTTP_TRACEPARENT_H

#include "core/common.h"

#define PT_TRACEPARENT_LEN 55
/* tracestate is passed on only up to this length (the spec asks vendors to
 * carry at least 512 characters); a longer one is dropped. */
#define PT_TRACESTATE_MAX 512
#define PT_TRACE_FLAG_SAMPLED 0x01

struct pt_traceparent {
    uint8_t trace_id[16];
    uint8_t parent_id[8];
    uint8_t flags;
};

/* 0 when v is a valid traceparent (then *out is filled), -EINVAL if not. */
int pt_traceparent_parse(pt_slice v, struct pt_traceparent *out);

/* Writes "00-<trace>-<span>-<flags>" (55 bytes, no NUL) into out. */
void pt_traceparent_format(char out[PT_TRACEPARENT_LEN], const uint8_t trace_id[16],
                           const uint8_t span_id[8], uint8_t flags);

/* Lowercase hex of n bytes into out (2n chars, no NUL). */
void pt_hex_encode(char *out, const uint8_t *in, size_t n);

#endif
