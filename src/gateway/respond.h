/*
 * respond.h — responses the gateway makes itself: JSON error bodies with
 * the request id (DESIGN.md §4), status reason phrases, and JSON string
 * escaping shared with the access log.
 */
#ifndef PT_GATEWAY_RESPOND_H
#define PT_GATEWAY_RESPOND_H

#include "core/arena.h"

const char *pt_reason_phrase(int status);
/* Default error text for a status ("no route matched" for 404, ...). */
const char *pt_error_text(int status);
/* Appends s as JSON string contents (no quotes) to out; returns bytes
 * written (out must have room for 6 * len). */
size_t pt_json_escape(char *out, const char *s, size_t len);
/*
 * Builds a complete response into the arena: status line, Content-Type,
 * Content-Length, X-Request-ID, `extra` header lines (each ending CRLF, may
 * be NULL), Connection: close when `close`, then the body — `body` when
 * non-empty, else {"error":..., "status":..., "request_id":...}. With
 * `raw` (a relayed answer, e.g. the cache's) `body` and `content_type` are
 * the answer as they are: an empty body stays empty, and there is no
 * Content-Type when content_type is empty.
 */
/* The JSON error body alone ({"error":..., "status":..., "request_id":...}),
 * in the arena: what HTTP/2 sends after its own HEADERS. */
pt_slice pt_respond_error_body(struct pt_arena *a, int status, const char *error,
                               pt_slice request_id);
pt_slice pt_respond_build(struct pt_arena *a, int status, const char *error, pt_slice request_id,
                          const char *extra, pt_slice body, pt_slice content_type, bool close,
                          bool head_only, bool raw);

#endif
