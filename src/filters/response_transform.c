/*
 * response_transform.c — header edits on the response sent to the client.
 *
 *   response_transform:
 *     remove_headers: [Server, X-Powered-By]
 *     set_headers:    { X-Request-ID: "${request_id}" }
 *
 * Same keys, rules and order as request_transform (remove, rename, set,
 * add; see template.c), applied to ctx->resp_headers once the upstream's
 * response head is in. Fields it removes, renames or sets are also dropped
 * from interim 1xx heads (which it otherwise leaves alone). Host,
 * Content-Length, Transfer-Encoding and Connection are refused at load.
 *
 * Ownership: the compiled config lives in the generation arena; edited
 * values are allocated from the request arena.
 */
#include "filters/registry.h"
#include "filters/template.h"

static int response_transform_on_response_head(struct pt_filter_ctx *ctx, const void *conf,
                                               void *state)
{
    return pt_header_edit_apply(conf, ctx, ctx->resp_headers);
}

/* A 103 Early Hints keeps its own fields (nothing is set or added), but
 * never one whose upstream value the route removes or replaces in the
 * final response (Server, Set-Cookie, ...). */
static bool response_transform_hides_interim_field(const void *conf, pt_slice name)
{
    return pt_header_edit_removes(conf, name);
}

const struct pt_filter_def pt_filter_response_transform = {
    .name = "response_transform",
    .priority = 800,
    .fields = pt_header_edit_fields,
    .config_size = sizeof(struct pt_header_edit_conf),
    .compile = pt_header_edit_compile,
    .on_response_head = response_transform_on_response_head,
    .hides_interim_field = response_transform_hides_interim_field,
};
