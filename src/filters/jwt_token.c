/*
 * jwt_token.c — where a bearer token is found, and how it is taken out
 * of the request before it goes upstream (hide_credentials).
 *
 * Order: `Authorization: Bearer <token>` (RFC 6750 §2.1; another scheme
 * is left alone, for another auth filter), then the `cookie`, then the
 * `query` parameter when configured. A token is base64url parts joined
 * by dots, so anything else in it is refused before decoding. A carrier
 * given twice (two Bearer fields, the cookie or the parameter twice) is
 * refused: the gateway would verify one while the upstream may read the
 * other.
 */
#include "filters/jwt_int.h"
#include "http/cookie.h"

#include <errno.h>
#include <string.h>

static const pt_slice authorization = PT_SLICE("Authorization");

static bool token_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

static int check_token(pt_slice t, pt_slice *out)
{
    /* Trailing padding-free base64url only; length first, so a huge value
     * costs nothing more. */
    if (t.len > JWT_MAX_TOKEN)
        return -1;
    for (size_t i = 0; i < t.len; i++)
        if (!token_char((unsigned char)t.p[i]))
            return -1;
    *out = t;
    return 0;
}

/* `Bearer <token>`: 1 with the token, 0 for another scheme, -1 for a
 * Bearer field without a well-formed token. The scheme ends at any SP or
 * HTAB (RFC 7235 §2.1). */
static int bearer(pt_slice v, pt_slice *out)
{
    while (v.len && (v.p[0] == ' ' || v.p[0] == '\t'))
        v.p++, v.len--;
    if (v.len < 6 || !pt_slice_ieq((pt_slice){v.p, 6}, PT_SLICE("Bearer")))
        return 0;
    if (v.len > 6 && v.p[6] != ' ' && v.p[6] != '\t')
        return 0; /* "Bearerish" */
    pt_slice t = {v.p + 6, v.len - 6};
    while (t.len && (t.p[0] == ' ' || t.p[0] == '\t'))
        t.p++, t.len--;
    while (t.len && (t.p[t.len - 1] == ' ' || t.p[t.len - 1] == '\t'))
        t.len--;
    if (t.len == 0)
        return -1;
    return check_token(t, out) == 0 ? 1 : -1;
}

/* The query parameter `name`'s first value (raw: a JWT needs no
 * escaping); how many times it occurs. */
static int query_param(pt_slice q, pt_slice name, pt_slice *value)
{
    int count = 0;
    size_t i = 0;
    while (i < q.len) {
        const char *amp = memchr(q.p + i, '&', q.len - i);
        size_t end = amp ? (size_t)(amp - q.p) : q.len;
        pt_slice pair = {q.p + i, end - i};
        const char *eq = memchr(pair.p, '=', pair.len);
        size_t klen = eq ? (size_t)(eq - pair.p) : pair.len;
        if (klen == name.len && memcmp(pair.p, name.p, klen) == 0 && !count++)
            *value = eq ? (pt_slice){eq + 1, pair.len - klen - 1} : (pt_slice){pair.p, 0};
        i = end + 1;
    }
    return count;
}

/* How many pairs named `name` the request's Cookie fields hold. */
static int cookie_count(const struct pt_headers *h, pt_slice name)
{
    int count = 0;
    for (uint32_t i = 0; h && i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || !pt_slice_ieq(f->name, PT_SLICE("Cookie")))
            continue;
        pt_slice v = f->value;
        size_t at = 0;
        while (at < v.len) {
            const char *semi = memchr(v.p + at, ';', v.len - at);
            size_t end = semi ? (size_t)(semi - v.p) : v.len;
            pt_slice pair = {v.p + at, end - at};
            while (pair.len && (pair.p[0] == ' ' || pair.p[0] == '\t'))
                pair.p++, pair.len--;
            const char *eq = memchr(pair.p, '=', pair.len);
            if (eq && (size_t)(eq - pair.p) == name.len && memcmp(pair.p, name.p, name.len) == 0)
                count++;
            at = end + 1;
        }
    }
    return count;
}

int pt_jwt_find_token(struct pt_filter_ctx *ctx, const struct jwt_conf *conf, pt_slice *token)
{
    *token = (pt_slice){NULL, 0};
    const struct pt_headers *h = ctx->req_headers;
    int found = 0;
    for (uint32_t i = 0; h && i < h->n; i++) {
        const struct pt_hfield *f = &h->f[i];
        if (f->dead || !pt_slice_ieq(f->name, authorization))
            continue;
        pt_slice t;
        int r = bearer(f->value, &t);
        if (r < 0)
            return -1;
        if (r > 0 && found)
            return -2; /* two Bearer credentials: which one is meant? */
        if (r > 0) {
            *token = t;
            found = 1;
        }
    }
    if (found)
        return 0;
    pt_slice v;
    if (conf->cookie_s.len && h && pt_cookie_find(h, conf->cookie_s, &v)) {
        if (cookie_count(h, conf->cookie_s) > 1)
            return -2;
        if (v.len)
            return check_token(v, token);
    }
    int n;
    if (conf->query_s.len && (n = query_param(ctx->query, conf->query_s, &v))) {
        if (n > 1)
            return -2;
        if (v.len)
            return check_token(v, token);
    }
    return 0;
}

/* A Cookie field value without the pairs named `name`; {NULL,0} when out
 * of memory. */
static pt_slice cookie_without(struct pt_arena *a, pt_slice v, pt_slice name)
{
    char *out = pt_arena_alloc(a, v.len + 1);
    if (!out)
        return (pt_slice){NULL, 0};
    size_t n = 0, i = 0;
    while (i < v.len) {
        const char *semi = memchr(v.p + i, ';', v.len - i);
        size_t end = semi ? (size_t)(semi - v.p) : v.len;
        pt_slice pair = {v.p + i, end - i};
        while (pair.len && pair.p[0] == ' ')
            pair.p++, pair.len--;
        const char *eq = memchr(pair.p, '=', pair.len);
        size_t klen = eq ? (size_t)(eq - pair.p) : pair.len;
        bool drop = eq && klen == name.len && memcmp(pair.p, name.p, klen) == 0;
        if (!drop && pair.len) {
            if (n) {
                memcpy(out + n, "; ", 2);
                n += 2;
            }
            memcpy(out + n, pair.p, pair.len);
            n += pair.len;
        }
        i = end + 1;
    }
    return (pt_slice){out, n};
}

static int hide_cookie(struct pt_filter_ctx *ctx, pt_slice name)
{
    struct pt_headers *h = ctx->req_headers;
    for (uint32_t i = 0; i < h->n; i++) {
        struct pt_hfield *f = &h->f[i];
        if (f->dead || !pt_slice_ieq(f->name, PT_SLICE("Cookie")))
            continue;
        pt_slice v;
        if (!pt_cookie_find_in(f->value, name, &v))
            continue;
        pt_slice rest = cookie_without(ctx->arena, f->value, name);
        if (!rest.p)
            return -ENOMEM;
        if (rest.len)
            f->value = rest;
        else
            f->dead = true;
    }
    return 0;
}

static int hide_query(struct pt_filter_ctx *ctx, pt_slice name)
{
    pt_slice q = ctx->query, v;
    if (query_param(q, name, &v) == 0)
        return 0;
    char *out = pt_arena_alloc(ctx->arena, q.len + 1);
    if (!out)
        return -ENOMEM;
    size_t n = 0, i = 0;
    while (i < q.len) {
        const char *amp = memchr(q.p + i, '&', q.len - i);
        size_t end = amp ? (size_t)(amp - q.p) : q.len;
        pt_slice pair = {q.p + i, end - i};
        const char *eq = memchr(pair.p, '=', pair.len);
        size_t klen = eq ? (size_t)(eq - pair.p) : pair.len;
        if (pair.len && !(klen == name.len && memcmp(pair.p, name.p, klen) == 0)) {
            if (n)
                out[n++] = '&';
            memcpy(out + n, pair.p, pair.len);
            n += pair.len;
        }
        i = end + 1;
    }
    ctx->query = (pt_slice){n ? out : NULL, n};
    return 0;
}

int pt_jwt_hide_token(struct pt_filter_ctx *ctx, const struct jwt_conf *conf)
{
    struct pt_headers *h = ctx->req_headers;
    for (uint32_t i = 0; h && i < h->n; i++) {
        struct pt_hfield *f = &h->f[i];
        pt_slice t;
        if (!f->dead && pt_slice_ieq(f->name, authorization) && bearer(f->value, &t) != 0)
            f->dead = true;
    }
    if (conf->cookie_s.len && h && hide_cookie(ctx, conf->cookie_s) < 0)
        return -ENOMEM;
    if (conf->query_s.len && hide_query(ctx, conf->query_s) < 0)
        return -ENOMEM;
    return 0;
}
