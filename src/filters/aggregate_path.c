/*
 * aggregate_path.c — the `aggregate` filter's path templates: `{param}`
 * as `rewrite` writes it, and `${consumer}`, `${jwt.<claim>}`,
 * `${query.<name>}`, `${call.<name>.<field>}` as the transforms' templates
 * do (see aggregate_int.h).
 *
 * Injection: every substituted value is decoded once (route parameters
 * arrive as the client escaped them, query values form-encoded) and then
 * percent-encoded whole but for RFC 3986's unreserved characters, so a
 * value of `../admin`, `a?b=c` or `x&y=z` stays inside its segment or
 * query value. Only the template's literal text shapes the path.
 */
#include "filters/aggregate_int.h"
#include "filters/jose.h"

#include <stdio.h>

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

/* The text between `${` and `}`: one of the known variables. */
static int classify(pt_slice v, struct agg_tpart *p, char *err, size_t errlen)
{
    static const struct {
        const char *prefix;
        enum agg_var kind;
    } pre[] = {{"jwt.", AGG_V_JWT}, {"query.", AGG_V_QUERY}, {"call.", AGG_V_CALL}};
    if (pt_slice_eq_cstr(v, "consumer")) {
        p->kind = AGG_V_CONSUMER;
        return 0;
    }
    for (size_t i = 0; i < PT_ARRAY_LEN(pre); i++) {
        size_t pl = strlen(pre[i].prefix);
        if (v.len <= pl || memcmp(v.p, pre[i].prefix, pl) != 0)
            continue;
        p->kind = pre[i].kind;
        p->text = (pt_slice){v.p + pl, v.len - pl};
        if (p->kind != AGG_V_CALL)
            return 0;
        const char *dot = memchr(p->text.p, '.', p->text.len);
        if (!dot || dot == p->text.p || dot + 1 == p->text.p + p->text.len) {
            snprintf(err, errlen, "${%.*s}: write ${call.<name>.<field>}", (int)v.len, v.p);
            return -1;
        }
        p->cname = (pt_slice){p->text.p, (size_t)(dot - p->text.p)};
        p->text = (pt_slice){dot + 1, (size_t)(p->text.p + p->text.len - dot - 1)};
        return 0;
    }
    snprintf(err, errlen,
             "unknown variable ${%.*s} (known: {param}, ${consumer}, ${jwt.<claim>}, "
             "${query.<name>}, ${call.<name>.<field>})",
             (int)v.len, v.p);
    return -1;
}

int agg_path_compile(struct agg_path *out, const char *src, struct pt_arena *a, char *err,
                     size_t errlen)
{
    size_t len = strlen(src);
    if (src[0] != '/') {
        snprintf(err, errlen, "a call's path starts with `/` (got `%s`)", src);
        return -1;
    }
    struct agg_tpart *parts = pt_arena_zalloc(a, sizeof(*parts) * (2 * len + 1));
    char *buf = pt_arena_alloc(a, len + 1);
    char *copy = pt_arena_strdup(a, src);
    if (!parts || !buf || !copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    uint32_t n = 0;
    size_t used = 0, lit = 0;
    for (size_t i = 0; i < len;) {
        char c = copy[i];
        if ((unsigned char)c <= 0x20 || c == 0x7f || c == '#') {
            snprintf(err, errlen, "a call's path has no spaces, control characters or `#`");
            return -1;
        }
        bool dollar = c == '$' && i + 1 < len && copy[i + 1] == '{';
        if (c == '$' && i + 1 < len && copy[i + 1] == '$') {
            buf[used++] = '$';
            i += 2;
            continue;
        }
        if (c != '{' && !dollar) {
            buf[used++] = c;
            i++;
            continue;
        }
        size_t open = i + (dollar ? 2 : 1);
        const char *close = memchr(copy + open, '}', len - open);
        if (!close) {
            snprintf(err, errlen, "unterminated `%s` at offset %zu (missing `}`)",
                     dollar ? "${" : "{", i);
            return -1;
        }
        pt_slice v = {copy + open, (size_t)(close - copy - open)};
        struct agg_tpart p = {0};
        if (dollar) {
            if (classify(v, &p, err, errlen) < 0)
                return -1;
        } else {
            for (size_t k = 0; k < v.len; k++)
                if (!ident_char(v.p[k]))
                    v.len = 0;
            if (v.len == 0) {
                snprintf(err, errlen, "bad parameter at offset %zu (write {name})", i);
                return -1;
            }
            p.kind = AGG_V_PARAM;
            p.text = v;
        }
        if (used > lit)
            parts[n++] = (struct agg_tpart){AGG_V_LITERAL, {buf + lit, used - lit}, 0, {0}};
        parts[n++] = p;
        lit = used;
        i = (size_t)(close - copy) + 1;
    }
    if (used > lit)
        parts[n++] = (struct agg_tpart){AGG_V_LITERAL, {buf + lit, used - lit}, 0, {0}};
    if (n > AGG_MAX_PATH_PARTS) {
        snprintf(err, errlen,
                 "a call's path has %u pieces (literal text and variables), more than %d", n,
                 AGG_MAX_PATH_PARTS);
        return -1;
    }
    out->parts = parts;
    out->nparts = n;
    return 0;
}

/* Decodes %XX (and with `plus`, `+` as a space) into o; returns the length. */
static size_t pct_decode(char *o, pt_slice v, bool plus)
{
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        int hi, lo;
        if (v.p[i] == '%' && i + 2 < v.len && (hi = pt_hexval(v.p[i + 1])) >= 0 &&
            (lo = pt_hexval(v.p[i + 2])) >= 0) {
            o[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            o[n++] = plus && v.p[i] == '+' ? ' ' : v.p[i];
        }
    }
    return n;
}

size_t agg_pct_encode(char *o, pt_slice v)
{
    static const char hex[] = "0123456789ABCDEF";
    bool dots = (v.len == 1 && v.p[0] == '.') || (v.len == 2 && v.p[0] == '.' && v.p[1] == '.');
    size_t n = 0;
    for (size_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        bool keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '-' || c == '_' || c == '~' || (c == '.' && !dots);
        if (keep) {
            o[n++] = (char)c;
        } else {
            o[n++] = '%';
            o[n++] = hex[c >> 4];
            o[n++] = hex[c & 15];
        }
    }
    return n;
}

/* The query parameter `name`'s first value, as sent. */
static pt_slice query_value(pt_slice q, pt_slice name)
{
    const char *p = q.p, *e = q.p + q.len;
    while (p && p < e) {
        const char *amp = memchr(p, '&', (size_t)(e - p));
        const char *end = amp ? amp : e;
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *ke = eq ? eq : end;
        if ((size_t)(ke - p) == name.len && memcmp(p, name.p, name.len) == 0)
            return eq ? (pt_slice){eq + 1, (size_t)(end - eq - 1)} : (pt_slice){"", 0};
        p = amp ? amp + 1 : NULL;
    }
    return (pt_slice){NULL, 0};
}

/* One variable's value, decoded, in the arena (or a slice it borrows). */
static pt_slice var_value(const struct agg_tpart *p, const struct pt_filter_ctx *ctx,
                          const struct agg_part *parts, bool *missing)
{
    pt_slice v = {"", 0};
    switch (p->kind) {
    case AGG_V_LITERAL:
        return p->text;
    case AGG_V_PARAM:
    case AGG_V_QUERY: {
        v = p->kind == AGG_V_PARAM ? pt_param_lookup(ctx->param_names, ctx->param_values,
                                                     ctx->nparams, ctx->params_numbered, p->text)
                                   : query_value(ctx->query, p->text);
        if (!v.p || !v.len)
            return (pt_slice){"", 0};
        char *d = pt_arena_alloc(ctx->arena, v.len);
        if (!d)
            return (pt_slice){NULL, 0};
        return (pt_slice){d, pct_decode(d, v, p->kind == AGG_V_QUERY)};
    }
    case AGG_V_CONSUMER:
        return ctx->identity && ctx->identity->consumer.len ? ctx->identity->consumer
                                                            : (pt_slice){"", 0};
    case AGG_V_JWT: {
        if (!ctx->identity || !ctx->identity->token_claims.len)
            return (pt_slice){"", 0};
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)p->text.len, p->text.p);
        return pt_jwt_claim_string(ctx->arena, ctx->identity->token_claims, name);
    }
    case AGG_V_CALL: {
        const struct agg_part *d = &parts[p->call];
        v = d->outcome == AGG_OK ? agg_json_field(ctx->arena, d->body, p->text)
                                 : (pt_slice){NULL, 0};
        if (!v.p)
            *missing = true;
        return v;
    }
    }
    return v;
}

pt_slice agg_path_render(const struct agg_path *p, const struct pt_filter_ctx *ctx,
                         const struct agg_part *parts, const char **missing)
{
    pt_slice vals[AGG_MAX_PATH_PARTS];
    size_t total = 0;
    *missing = NULL;
    if (p->nparts > PT_ARRAY_LEN(vals))
        return (pt_slice){NULL, 0};
    for (uint32_t i = 0; i < p->nparts; i++) {
        bool miss = false;
        vals[i] = var_value(&p->parts[i], ctx, parts, &miss);
        if (miss) {
            *missing = pt_arena_sprintf(ctx->arena, "call `%.*s` has no field `%.*s`",
                                        (int)p->parts[i].cname.len, p->parts[i].cname.p,
                                        (int)p->parts[i].text.len, p->parts[i].text.p);
            if (!*missing)
                *missing = "a call it depends on has no such field";
            return (pt_slice){NULL, 0};
        }
        if (!vals[i].p)
            return (pt_slice){NULL, 0};
        total += p->parts[i].kind == AGG_V_LITERAL ? vals[i].len : 3 * vals[i].len;
    }
    char *o = pt_arena_alloc(ctx->arena, total + 1);
    if (!o)
        return (pt_slice){NULL, 0};
    size_t n = 0;
    for (uint32_t i = 0; i < p->nparts; i++) {
        if (p->parts[i].kind == AGG_V_LITERAL) {
            memcpy(o + n, vals[i].p, vals[i].len);
            n += vals[i].len;
        } else {
            n += agg_pct_encode(o + n, vals[i]);
        }
    }
    return (pt_slice){o, n};
}
