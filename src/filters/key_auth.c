/*
 * key_auth.c — API keys: the caller presents a key, the gateway finds the
 * consumer it belongs to among the generation's `consumers:` (Kong's
 * key-auth, APISIX's key-auth).
 *
 *   key_auth:
 *     header: X-API-Key        # where the key is looked for first (default X-API-Key)
 *     query: api_key           # then this query parameter (default: none, header only)
 *     hide_credentials: false  # true: the upstream gets neither the field nor the parameter
 *     optional: false          # true: a request without a key passes on unauthenticated
 *
 * The key comes from the header field, else from the query parameter
 * (form-decoded: %XX and '+'). It is hashed (SHA-256) and looked up by
 * digest in the generation's key table (consumers.h); keys are never kept,
 * logged or compared in clear. Then:
 *
 *   found             the consumer is the caller: ctx->identity and the
 *                     upstream's X-Consumer-Name / X-Consumer-Groups
 *                     (pt_auth_set_identity), unless an auth filter that
 *                     ran earlier identified the caller already (the
 *                     first identity stands, auth.h);
 *   no key at all     401 `WWW-Authenticate: ApiKey realm="portico"`, or,
 *                     with optional, the request passes on unauthenticated
 *                     (either-of auth: acl decides);
 *   unknown key       401 with error="invalid_token", optional or not;
 *   two keys, a bad   401 with error="invalid_request" (two header fields
 *   encoding, empty   or two parameters are ambiguous: refused, never
 *                     guessed between).
 *
 * A huge key is bounded before this filter sees it: the header by
 * limits.max_header_bytes (431), the query by the URI limit (414); what
 * arrives is hashed like any other, in constant memory.
 *
 * Priority 1250: after jwt (1300) and introspection (1280), before
 * ext_auth (1240, so a request with a bad key costs no call to the auth
 * service) and acl (1200), which reads the identity (registry.h).
 *
 * Ownership: the config lives in the generation arena; the consumer table
 * is the pinned generation's (ctx->consumers), so a reload that rotates a
 * key applies from the next request. A decoded key or a rewritten query
 * lives in the request arena. No state per request.
 */
#include "filters/auth.h"
#include "filters/consumers.h"
#include "filters/registry.h"
#include "filters/template.h"

#include <openssl/crypto.h>

#include <string.h>

#define KEY_AUTH_SCHEME "ApiKey"

struct key_auth_conf {
    const char *header; /* NULL: X-API-Key */
    const char *query;  /* NULL: no query parameter */
    bool hide_credentials;
    bool optional;
    /* Filled by key_auth_compile (not YAML keys). */
    pt_slice header_s;
    pt_slice query_s; /* len 0: none */
};

static const struct pt_field key_auth_fields[] = {
    {"header", PT_F_STRING, offsetof(struct key_auth_conf, header), NULL},
    {"query", PT_F_STRING, offsetof(struct key_auth_conf, query), NULL},
    {"hide_credentials", PT_F_BOOL, offsetof(struct key_auth_conf, hide_credentials), NULL},
    {"optional", PT_F_BOOL, offsetof(struct key_auth_conf, optional), NULL},
    {NULL, 0, 0, NULL},
};

/* ---- the query string (application/x-www-form-urlencoded) ---- */

/* Decodes one form-encoded byte of `s` at *i (advancing it); -1 on a bad
 * %-escape. */
static int form_byte(pt_slice s, size_t *i)
{
    char ch = s.p[(*i)++];
    if (ch == '+')
        return ' ';
    if (ch != '%')
        return (unsigned char)ch;
    if (*i + 2 > s.len)
        return -1;
    int hi = pt_hexval(s.p[*i]), lo = pt_hexval(s.p[*i + 1]);
    *i += 2;
    return hi < 0 || lo < 0 ? -1 : hi << 4 | lo;
}

/* Whether the form-encoded `enc` decodes to exactly `plain`. */
static bool form_eq(pt_slice enc, pt_slice plain)
{
    size_t i = 0, k = 0;
    while (i < enc.len) {
        int b = form_byte(enc, &i);
        if (b < 0 || k >= plain.len || (unsigned char)plain.p[k++] != b)
            return false;
    }
    return k == plain.len;
}

/* The next `&`-separated segment of q at *pos: its name and, after the
 * first '=', its value. False at the end. */
static bool next_param(pt_slice q, size_t *pos, pt_slice *seg, pt_slice *name, pt_slice *value)
{
    if (*pos > q.len || !q.p)
        return false;
    const char *start = q.p + *pos;
    const char *amp = memchr(start, '&', q.len - *pos);
    size_t len = amp ? (size_t)(amp - start) : q.len - *pos;
    *seg = (pt_slice){start, len};
    *pos += len + 1;
    const char *eq = memchr(start, '=', len);
    *name = (pt_slice){start, eq ? (size_t)(eq - start) : len};
    *value = eq ? (pt_slice){eq + 1, len - name->len - 1} : (pt_slice){start + len, 0};
    return true;
}

/* The parameter `name`'s raw value; how many times it occurs in *count. */
static pt_slice find_param(pt_slice q, pt_slice name, int *count)
{
    pt_slice seg, n, v, found = {NULL, 0};
    *count = 0;
    for (size_t pos = 0; next_param(q, &pos, &seg, &n, &v);) {
        if (form_eq(n, name)) {
            if (!*count)
                found = v;
            (*count)++;
        }
    }
    return found;
}

/* The query without every `name` parameter, the others as they were, in
 * the request arena. {NULL, 0} when out of memory. */
static pt_slice query_without(struct pt_arena *a, pt_slice q, pt_slice name)
{
    char *out = pt_arena_alloc(a, q.len + 1);
    if (!out)
        return (pt_slice){NULL, 0};
    size_t n = 0;
    bool first = true;
    pt_slice seg, pn, pv;
    for (size_t pos = 0; next_param(q, &pos, &seg, &pn, &pv);) {
        if (form_eq(pn, name))
            continue;
        if (!first)
            out[n++] = '&';
        first = false;
        memcpy(out + n, seg.p, seg.len);
        n += seg.len;
    }
    return (pt_slice){out, n};
}

/* The form-decoded value in the request arena (as it is when there is
 * nothing to decode). *bad on a broken %-escape; {NULL, 0} and !*bad when
 * out of memory. */
static pt_slice form_decode(struct pt_arena *a, pt_slice v, bool *bad)
{
    *bad = false;
    if (!memchr(v.p, '%', v.len) && !memchr(v.p, '+', v.len))
        return v;
    char *out = pt_arena_alloc(a, v.len + 1);
    if (!out)
        return (pt_slice){NULL, 0};
    size_t n = 0;
    for (size_t i = 0; i < v.len;) {
        int b = form_byte(v, &i);
        if (b < 0) {
            *bad = true;
            return (pt_slice){NULL, 0};
        }
        out[n++] = (char)b;
    }
    return (pt_slice){out, n};
}

/* ---- the request ---- */

enum key_found { KEY_NONE, KEY_ONE, KEY_AMBIGUOUS, KEY_OOM };

/* The presented key: the header field, else the query parameter. */
static enum key_found find_key(struct pt_filter_ctx *ctx, const struct key_auth_conf *conf,
                               pt_slice *key)
{
    const struct pt_hfield *field = NULL;
    for (uint32_t i = 0; i < ctx->req_headers->n; i++) {
        const struct pt_hfield *f = &ctx->req_headers->f[i];
        if (f->dead || !pt_slice_ieq(f->name, conf->header_s))
            continue;
        if (field)
            return KEY_AMBIGUOUS;
        field = f;
    }
    if (field) {
        *key = field->value;
        return KEY_ONE;
    }
    if (!conf->query_s.len || !ctx->query.len)
        return KEY_NONE;
    int count;
    pt_slice raw = find_param(ctx->query, conf->query_s, &count);
    if (count == 0)
        return KEY_NONE;
    if (count > 1)
        return KEY_AMBIGUOUS;
    bool bad;
    *key = form_decode(ctx->arena, raw, &bad);
    if (bad)
        return KEY_AMBIGUOUS;
    return key->p ? KEY_ONE : KEY_OOM;
}

/* hide_credentials: neither the field nor the parameter goes upstream. */
static bool hide(struct pt_filter_ctx *ctx, const struct key_auth_conf *conf)
{
    pt_headers_remove(ctx->req_headers, conf->header_s);
    if (!conf->query_s.len || !ctx->query.len)
        return true;
    int count;
    find_param(ctx->query, conf->query_s, &count);
    if (count == 0)
        return true;
    pt_slice q = query_without(ctx->arena, ctx->query, conf->query_s);
    if (!q.p)
        return false;
    ctx->query = q;
    return true;
}

static int key_auth_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state)
{
    const struct key_auth_conf *conf = conf_;
    pt_slice key = {NULL, 0};
    enum key_found found = find_key(ctx, conf, &key);
    if (found == KEY_OOM)
        return PT_FILTER_ERROR;
    if (found == KEY_NONE)
        return conf->optional ? pt_auth_pass_anonymous(ctx, KEY_AUTH_SCHEME)
                              : pt_auth_refuse(ctx, 401, KEY_AUTH_SCHEME, NULL);
    if (found == KEY_AMBIGUOUS || key.len == 0)
        return pt_auth_refuse(ctx, 401, KEY_AUTH_SCHEME, PT_AUTH_INVALID_REQUEST);

    uint8_t digest[PT_KEY_DIGEST_LEN];
    pt_key_digest(key.p, key.len, digest);
    const struct pt_consumer *c = pt_consumers_find(ctx->consumers, digest);
    OPENSSL_cleanse(digest, sizeof(digest));
    if (!c)
        return pt_auth_refuse(ctx, 401, KEY_AUTH_SCHEME, PT_AUTH_INVALID_TOKEN);
    if (conf->hide_credentials && !hide(ctx, conf))
        return PT_FILTER_ERROR;
    if (pt_auth_set_identity(ctx, c->name, c->groups, c->ngroups, "key_auth") < 0)
        return PT_FILTER_ERROR;
    return PT_FILTER_CONTINUE;
}

/* ---- compile ---- */

/* A query parameter name: visible ASCII without the characters that
 * delimit or encode parameters. */
static bool param_name_ok(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || strchr("&=#%+?", *s))
            return false;
    return true;
}

static int key_auth_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct key_auth_conf *conf = conf_;
    int bad = 0;
    if (!conf->header)
        conf->header = "X-API-Key";
    /* Read, and removed with hide_credentials: never produced. */
    bad |= pt_header_name_check(errs, "header", NULL, false, false, conf->header, &conf->header_s);
    if (conf->header_s.len >= 11 && strncasecmp(conf->header, "X-Consumer-", 11) == 0)
        bad |= pt_filter_errorf(errs, "header", NULL, false,
                                "header: \"%s\": X-Consumer-* fields are the gateway's own (the "
                                "client's are removed before authentication)",
                                conf->header);
    conf->query_s = (pt_slice){"", 0};
    if (conf->query) {
        if (param_name_ok(conf->query))
            conf->query_s = (pt_slice){conf->query, strlen(conf->query)};
        else
            bad |= pt_filter_errorf(errs, "query", NULL, false,
                                    "query: \"%s\" is not a query parameter name (visible "
                                    "ASCII without & = # %% + ?)",
                                    conf->query);
    }
    return bad ? -1 : 0;
}

const struct pt_filter_def pt_filter_key_auth = {
    .name = "key_auth",
    .priority = 1250,
    .auth = true,
    .fields = key_auth_fields,
    .config_size = sizeof(struct key_auth_conf),
    .compile = key_auth_compile,
    .on_request = key_auth_on_request,
};
