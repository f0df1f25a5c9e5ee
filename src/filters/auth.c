/*
 * auth.c — see auth.h.
 */
#include "filters/auth.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int pt_auth_refuse(struct pt_filter_ctx *ctx, int status, const char *scheme, const char *code)
{
    if (scheme && ctx->resp_headers) {
        char v[160];
        int n = snprintf(v, sizeof(v), "%s realm=\"portico\"%s%s%s", scheme,
                         code ? ", error=\"" : "", code ? code : "", code ? "\"" : "");
        char *copy = pt_arena_alloc(ctx->arena, (size_t)n);
        if (n <= 0 || (size_t)n >= sizeof(v) || !copy)
            return PT_FILTER_ERROR;
        memcpy(copy, v, (size_t)n);
        if (pt_headers_add(ctx->resp_headers, ctx->arena, PT_SLICE("WWW-Authenticate"),
                           (pt_slice){copy, (size_t)n}) < 0)
            return PT_FILTER_ERROR;
    }
    ctx->respond_status = status;
    ctx->respond_error = code ? code : status == 401 ? "authentication required" : "forbidden";
    return PT_FILTER_RESPOND;
}

int pt_auth_set_identity(struct pt_filter_ctx *ctx, pt_slice consumer, const pt_slice *groups,
                         uint32_t ngroups, const char *source)
{
    /* The first auth filter to identify the caller sets the identity
     * (auth.h): a later one, with a credential that verified too, leaves
     * it and what the upstream was told as they are. */
    if (ctx->identity && ctx->identity->consumer.len)
        return 0;
    if (ctx->identity) {
        ctx->identity->consumer = consumer;
        ctx->identity->groups = groups;
        ctx->identity->ngroups = ngroups;
        ctx->identity->source = source;
    }
    if (!ctx->req_headers)
        return 0;
    if (pt_headers_set(ctx->req_headers, ctx->arena, PT_SLICE("X-Consumer-Name"), consumer) < 0)
        return -ENOMEM;
    pt_headers_remove(ctx->req_headers, PT_SLICE("X-Consumer-Groups"));
    if (ngroups == 0)
        return 0;
    size_t len = 0;
    for (uint32_t i = 0; i < ngroups; i++)
        len += groups[i].len + 1;
    char *v = pt_arena_alloc(ctx->arena, len);
    if (!v)
        return -ENOMEM;
    size_t n = 0;
    for (uint32_t i = 0; i < ngroups; i++) {
        if (i)
            v[n++] = ',';
        memcpy(v + n, groups[i].p, groups[i].len);
        n += groups[i].len;
    }
    return pt_headers_add(ctx->req_headers, ctx->arena, PT_SLICE("X-Consumer-Groups"),
                          (pt_slice){v, n}) < 0
               ? -ENOMEM
               : 0;
}

int pt_auth_pass_anonymous(struct pt_filter_ctx *ctx, const char *scheme)
{
    struct pt_identity *id = ctx->identity;
    if (!scheme || !id)
        return PT_FILTER_CONTINUE;
    for (uint32_t i = 0; i < id->nchallenges; i++)
        if (strcmp(id->challenges[i], scheme) == 0)
            return PT_FILTER_CONTINUE;
    if (id->nchallenges < PT_ARRAY_LEN(id->challenges))
        id->challenges[id->nchallenges++] = scheme;
    return PT_FILTER_CONTINUE;
}

int pt_auth_refuse_anonymous(struct pt_filter_ctx *ctx)
{
    const struct pt_identity *id = ctx->identity;
    if (!id || id->nchallenges == 0)
        return pt_auth_refuse(ctx, 401, "Bearer", NULL);
    int r = PT_FILTER_RESPOND;
    for (uint32_t i = 0; i < id->nchallenges && r == PT_FILTER_RESPOND; i++)
        r = pt_auth_refuse(ctx, 401, id->challenges[i], NULL);
    return r;
}
