/*
 * request_transform.c — edits on the request forwarded upstream: header
 * fields, and JSON body fields.
 *
 *   request_transform:
 *     remove_headers: [X-Internal-Debug]
 *     rename_headers: { X-Old: X-New }
 *     set_headers:    { X-User: "${path.id}" }
 *     add_headers:    { X-Gateway: portico }
 *     rename_body_fields: { user_name: username }
 *     remove_body_fields: [debug, user.password]
 *     add_body_fields:    { meta.request_id: "${request_id}", meta.version: 2 }
 *     max_transform_bytes: 1MiB
 *
 * Header edits apply in the order remove, rename, set, add (why:
 * template.c). Values are templates (template.h). Host, Content-Length,
 * Transfer-Encoding and Connection are refused at load: framing is the
 * gateway's business.
 *
 * Body edits (json_edit.h), when the route has any: on_request judges the
 * client's head (body_transform.h) and, for a JSON body, asks the exchange
 * for the whole body (PT_BODY_WHOLE, up to max_transform_bytes). The
 * exchange gathers it before dispatch and calls on_request_body, whose
 * result goes upstream with a Content-Length of its own (a chunked
 * request is sent with a length; retries resend the same bytes). A body
 * longer than the limit, not JSON or encoded is sent on unchanged and
 * unbuffered; invalid JSON is sent unchanged. `too_large` and
 * `invalid_json` are noted (`request_transform`), for the access log and
 * portico_filter_notes_total.
 *
 * Ownership: the compiled config lives in the generation arena; edited
 * values and the edited body are allocated from the request arena.
 */
#include "filters/body_transform.h"
#include "filters/registry.h"

static int request_transform_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state)
{
    const struct pt_transform_conf *conf = conf_;
    if (conf->body.nops) {
        /* Judged on the client's own head, before any header edit. */
        enum pt_body_verdict v = pt_transform_judge(conf, ctx->req_headers);
        if (v == PT_BODY_TOO_LARGE)
            pt_filter_note(ctx, "request_transform", "too_large");
        if (v == PT_BODY_OK) {
            ctx->body_use = PT_BODY_WHOLE;
            if (ctx->request_body_max < conf->max_transform_bytes)
                ctx->request_body_max = conf->max_transform_bytes;
        }
    }
    return pt_header_edit_apply(&conf->headers, ctx, ctx->req_headers);
}

static int request_transform_on_request_body(struct pt_filter_ctx *ctx, const void *conf_,
                                             void *state, pt_slice *body)
{
    const struct pt_transform_conf *conf = conf_;
    if (body->len == 0)
        return PT_FILTER_CONTINUE;
    if (body->len > conf->max_transform_bytes) {
        /* Another filter wanted more: this one's limit still holds. */
        pt_filter_note(ctx, "request_transform", "too_large");
        return PT_FILTER_CONTINUE;
    }
    struct pt_body_part part = {*body, NULL};
    pt_slice out;
    switch (pt_json_edit_body(&conf->body, ctx, &part, body->len, &out)) {
    case PT_JSON_EDITED:
        *body = out;
        break;
    case PT_JSON_INVALID:
        pt_filter_note(ctx, "request_transform", "invalid_json");
        break;
    case PT_JSON_UNCHANGED:
    case PT_JSON_NOMEM: /* unchanged rather than an error */
        break;
    }
    return PT_FILTER_CONTINUE;
}

const struct pt_filter_def pt_filter_request_transform = {
    .name = "request_transform",
    .priority = 800,
    .fields = pt_transform_fields,
    .config_size = sizeof(struct pt_transform_conf),
    .compile = pt_transform_compile,
    .on_request = request_transform_on_request,
    .on_request_body = request_transform_on_request_body,
    .uses_body = pt_transform_uses_body,
};
