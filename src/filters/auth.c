/*
 * auth.c — see auth.h.
 */
#include "filters/auth.h"

#include <stdio.h>

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
