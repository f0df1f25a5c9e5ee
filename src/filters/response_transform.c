/*
 * response_transform.c — edits on the response sent to the client:
 * header fields, and JSON body fields.
 *
 *   response_transform:
 *     remove_headers: [Server, X-Powered-By]
 *     set_headers:    { X-Request-ID: "${request_id}" }
 *     rename_body_fields: { user_name: username }
 *     remove_body_fields: [internal.debug]
 *     add_body_fields:    { meta.served_by: portico }
 *     max_transform_bytes: 1MiB
 *
 * Header edits: same keys, rules and order as request_transform (remove,
 * rename, set, add; see template.c), applied to ctx->resp_headers once the
 * upstream's response head is in. Fields it removes, renames or sets are
 * also dropped from interim 1xx heads (which it otherwise leaves alone).
 * Host, Content-Length, Transfer-Encoding and Connection are refused at
 * load.
 *
 * Body edits (json_edit.h), when the route has any: the head hook judges
 * the upstream's head (body_transform.h: JSON, not encoded, a declared
 * length within max_transform_bytes; not for HEAD, 1xx, 204 or 304) and
 * either skips the body (PT_BODY_SKIP: it streams as on a route without
 * body rules) or takes it whole (PT_BODY_WHOLE): the chunks are kept (the
 * exchange's copies in the request arena) until end of stream, then parsed,
 * edited and emitted as one chunk. The exchange gives a response that had
 * a Content-Length the new length, and a chunked one stays chunked. A body
 * that turns out longer than max_transform_bytes (chunked, no declared
 * length) is given up: what was kept goes out at once, unchanged, and the
 * rest streams. Invalid JSON goes out unchanged. Both are noted
 * (`response_transform`: `too_large` / `invalid_json`), which the access
 * log shows and portico_filter_notes_total counts.
 *
 * Ownership: the compiled config lives in the generation arena; edited
 * values, kept chunks and the edited body are in the request arena.
 */
#include "filters/body_transform.h"
#include "filters/registry.h"

struct response_state {
    struct pt_body_part *first, *last; /* kept chunks, in order */
    size_t len;                        /* their bytes */
    bool passthrough;                  /* given up: chunks go on unchanged */
};

static int response_transform_on_response_head(struct pt_filter_ctx *ctx, const void *conf_,
                                               void *state)
{
    const struct pt_transform_conf *conf = conf_;
    if (conf->body.nops) {
        /* Judged on the upstream's own head, before any header edit. */
        enum pt_body_verdict v = PT_BODY_NOT_JSON;
        bool bodiless = ctx->method_id == PT_METHOD_HEAD || ctx->status < 200 ||
                        ctx->status == 204 || ctx->status == 304;
        if (!bodiless)
            v = pt_transform_judge(conf, ctx->resp_headers);
        if (v == PT_BODY_TOO_LARGE)
            pt_filter_note(ctx, "response_transform", "too_large");
        ctx->body_use = v == PT_BODY_OK ? PT_BODY_WHOLE : PT_BODY_SKIP;
    }
    return pt_header_edit_apply(&conf->headers, ctx, ctx->resp_headers);
}

/* The kept chunks as one slice (the only one when there is one). */
static pt_slice joined(struct pt_filter_ctx *ctx, const struct response_state *st)
{
    if (!st->first)
        return (pt_slice){"", 0};
    if (!st->first->next)
        return st->first->s;
    char *buf = pt_arena_alloc(ctx->arena, st->len ? st->len : 1);
    if (!buf)
        return (pt_slice){NULL, 0};
    size_t off = 0;
    for (const struct pt_body_part *p = st->first; p; p = p->next) {
        memcpy(buf + off, p->s.p, p->s.len);
        off += p->s.len;
    }
    return (pt_slice){buf, off};
}

static int keep(struct pt_filter_ctx *ctx, struct response_state *st, pt_slice chunk)
{
    if (chunk.len == 0)
        return 0;
    struct pt_body_part *p = pt_arena_alloc(ctx->arena, sizeof(*p));
    if (!p)
        return -1;
    *p = (struct pt_body_part){chunk, NULL};
    if (st->last)
        st->last->next = p;
    else
        st->first = p;
    st->last = p;
    st->len += chunk.len;
    return 0;
}

static int response_transform_on_response_body(struct pt_filter_ctx *ctx, const void *conf_,
                                               void *state, pt_slice *chunk, bool eos)
{
    const struct pt_transform_conf *conf = conf_;
    struct response_state *st = state;
    if (st->passthrough)
        return PT_FILTER_CONTINUE;
    if (keep(ctx, st, *chunk) < 0)
        return PT_FILTER_ERROR;
    if (st->len > conf->max_transform_bytes) {
        /* Longer than the limit: never buffered further, never cut. */
        st->passthrough = true;
        pt_filter_note(ctx, "response_transform", "too_large");
        *chunk = joined(ctx, st);
        return chunk->p ? PT_FILTER_CONTINUE : PT_FILTER_ERROR;
    }
    if (!eos) {
        *chunk = (pt_slice){"", 0};
        return PT_FILTER_CONTINUE;
    }
    if (st->len == 0) {
        *chunk = (pt_slice){"", 0};
        return PT_FILTER_CONTINUE; /* no body: nothing to edit, nothing invalid */
    }
    pt_slice out;
    switch (pt_json_edit_body(&conf->body, ctx, st->first, st->len, &out)) {
    case PT_JSON_EDITED:
        *chunk = out;
        return PT_FILTER_CONTINUE;
    case PT_JSON_INVALID:
        pt_filter_note(ctx, "response_transform", "invalid_json");
        break;
    case PT_JSON_UNCHANGED:
    case PT_JSON_NOMEM: /* unchanged rather than an error */
        break;
    }
    *chunk = joined(ctx, st);
    return chunk->p ? PT_FILTER_CONTINUE : PT_FILTER_ERROR;
}

/* A 103 Early Hints keeps its own fields (nothing is set or added), but
 * never one whose upstream value the route removes or replaces in the
 * final response (Server, Set-Cookie, ...). */
static bool response_transform_hides_interim_field(const void *conf, pt_slice name)
{
    return pt_header_edit_removes(&((const struct pt_transform_conf *)conf)->headers, name);
}

const struct pt_filter_def pt_filter_response_transform = {
    .name = "response_transform",
    .priority = 800,
    .fields = pt_transform_fields,
    .config_size = sizeof(struct pt_transform_conf),
    .compile = pt_transform_compile,
    .state_size = sizeof(struct response_state),
    .on_response_head = response_transform_on_response_head,
    .hides_interim_field = response_transform_hides_interim_field,
    .on_response_body = response_transform_on_response_body,
    .uses_body = pt_transform_uses_body,
};
