/*
 * request_transform.c — header edits on the request forwarded upstream.
 *
 *   request_transform:
 *     remove_headers: [X-Internal-Debug]
 *     rename_headers: { X-Old: X-New }
 *     set_headers:    { X-User: "${path.id}" }
 *     add_headers:    { X-Gateway: portico }
 *
 * Edits apply in the order remove, rename, set, add (why: template.c).
 * Values are templates (template.h). Host, Content-Length,
 * Transfer-Encoding and Connection are refused at load: framing is the
 * gateway's business. Body edits (rename_body_fields) are not supported
 * yet, so the generic loader rejects that key as unknown.
 *
 * Ownership: the compiled config lives in the generation arena; edited
 * values are allocated from the request arena.
 */
#include "filters/registry.h"
#include "filters/template.h"

static int request_transform_on_request(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    return pt_header_edit_apply(conf, ctx, ctx->req_headers);
}

const struct pt_filter_def pt_filter_request_transform = {
    .name = "request_transform",
    .priority = 800,
    .fields = pt_header_edit_fields,
    .config_size = sizeof(struct pt_header_edit_conf),
    .compile = pt_header_edit_compile,
    .on_request = request_transform_on_request,
};
