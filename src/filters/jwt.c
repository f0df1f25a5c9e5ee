/*
 * jwt.c — the jwt filter: verifies a bearer JWT (JWS) at the edge and
 * tells the upstream who the caller is.
 *
 *   jwt:
 *     jwks_uri: http://idp.internal/.well-known/jwks.json   # one key source:
 *     # jwks_file: keys/jwks.json | secret: "..." | secret_base64: "..."
 *     issuer: https://idp.example.com      # iss must equal it (default: any)
 *     audiences: [api]                     # aud must hold one (default: any)
 *     algorithms: [RS256, ES256]           # allow-list (default below)
 *     clock_skew: 60s                      # exp / nbf leeway (default 60s)
 *     required_claims: [email]             # present and not null
 *     required_scopes: [read]              # in `scope` / `scp`, else 403
 *     claims_to_headers: { sub: X-User-ID }
 *     groups_claim: groups                 # default none
 *     consumer_claim: sub                  # default sub
 *     jwks_timeout: 2s                     # one JWKS fetch (default 2s)
 *     # or: providers: [ {jwks_uri: ..., issuer: ...}, {...} ] (first that verifies wins)
 *     cookie: session                      # also look for the token here
 *     query: access_token                  # and here
 *     hide_credentials: false              # strip the token before upstream
 *     optional: false                      # no token → pass on unauthenticated
 *     cache_bytes: 4MiB                    # verified-token cache (0: off)
 *
 * Default algorithms: every asymmetric one (RS*, PS*, ES*, EdDSA) for a
 * JWKS provider; HS256/384/512 for a secret. HMAC algorithms are only
 * allowed with a secret, and a secret only with HMAC algorithms, so a
 * public key can never be used as an HMAC secret.
 *
 * Ownership: the compiled config is in the generation arena; the JWKS
 * sources (jwks.h) and the token cache (jwt_cache.h) are outside it and
 * handed back through pt_arena_defer when the generation's arena goes.
 * The per-request state lives in the request arena.
 */
#include "filters/jwt_int.h"
#include "filters/registry.h"
#include "filters/template.h"
#include "core/units.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROVIDER_FIELDS(S, off)                                                                    \
    {"jwks_uri", PT_F_URL, off + offsetof(S, jwks_uri), NULL},                                     \
        {"tls_ca", PT_F_STRING, off + offsetof(S, tls_ca), NULL},                                  \
        {"jwks_file", PT_F_STRING, off + offsetof(S, jwks_file), NULL},                            \
        {"secret", PT_F_STRING, off + offsetof(S, secret), NULL},                                  \
        {"secret_base64", PT_F_STRING, off + offsetof(S, secret_base64), NULL},                    \
        {"issuer", PT_F_STRING, off + offsetof(S, issuer), NULL},                                  \
        {"audiences", PT_F_STRING_LIST, off + offsetof(S, audiences), NULL},                       \
        {"algorithms", PT_F_STRING_LIST, off + offsetof(S, algorithms), NULL},                     \
        {"required_claims", PT_F_STRING_LIST, off + offsetof(S, required_claims), NULL},           \
        {"required_scopes", PT_F_STRING_LIST, off + offsetof(S, required_scopes), NULL},           \
        {"clock_skew", PT_F_STRING, off + offsetof(S, clock_skew), NULL},                          \
        {"claims_to_headers", PT_F_STRING_MAP, off + offsetof(S, claims_to_headers), NULL},        \
        {"groups_claim", PT_F_STRING, off + offsetof(S, groups_claim), NULL},                      \
        {"consumer_claim", PT_F_STRING, off + offsetof(S, consumer_claim), NULL},                  \
    {                                                                                              \
        "jwks_timeout", PT_F_DURATION, off + offsetof(S, jwks_timeout_ms), NULL                    \
    }

static const struct pt_field provider_fields[] = {
    PROVIDER_FIELDS(struct jwt_provider, 0),
    {NULL, 0, sizeof(struct jwt_provider), NULL}, /* the item size (PT_F_OBJECT_LIST) */
};

static const struct pt_field jwt_fields[] = {
    PROVIDER_FIELDS(struct jwt_provider, offsetof(struct jwt_conf, one)),
    {"providers", PT_F_OBJECT_LIST, offsetof(struct jwt_conf, providers), provider_fields},
    {"cookie", PT_F_STRING, offsetof(struct jwt_conf, cookie), NULL},
    {"query", PT_F_STRING, offsetof(struct jwt_conf, query), NULL},
    {"hide_credentials", PT_F_BOOL, offsetof(struct jwt_conf, hide_credentials), NULL},
    {"optional", PT_F_BOOL, offsetof(struct jwt_conf, optional), NULL},
    {"cache_bytes", PT_F_STRING, offsetof(struct jwt_conf, cache_bytes), NULL},
    {NULL, 0, 0, NULL},
};

/* ---- the request ---- */

static int jwt_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state_)
{
    const struct jwt_conf *conf = conf_;
    struct jwt_state *st = state_;
    st->conf = conf;
    /* Only a verified token may set these: whatever the client sent goes,
     * whether or not a token comes, is valid, or is needed. */
    for (uint32_t i = 0; i < conf->nstrip; i++)
        pt_headers_remove(ctx->req_headers, conf->strip[i]);

    pt_slice token;
    int found = pt_jwt_find_token(ctx, conf, &token);
    if (found < 0)
        return pt_auth_refuse(ctx, 401, "Bearer",
                              found == -2 ? PT_AUTH_INVALID_REQUEST : PT_AUTH_INVALID_TOKEN);
    if (token.len == 0)
        return conf->optional ? pt_auth_pass_anonymous(ctx, "Bearer")
                              : pt_auth_refuse(ctx, 401, "Bearer", NULL);
    if (conf->hide_credentials && pt_jwt_hide_token(ctx, conf) < 0)
        return PT_FILTER_ERROR;
    st->token = token; /* the token stays readable: hiding only marks it dead */
    return pt_jwt_verify(ctx, st);
}

static void jwt_on_cancel(struct pt_filter_ctx *ctx, const void *conf, void *state)
{
    (void)ctx;
    (void)conf;
    pt_jwt_cancel(state);
}

/* ---- compile ---- */

static bool provider_empty(const struct jwt_provider *p)
{
    return !p->jwks_uri && !p->jwks_file && !p->secret && !p->secret_base64 && !p->issuer &&
           !p->audiences.v && !p->algorithms.v && !p->required_claims.v && !p->required_scopes.v &&
           !p->clock_skew && !p->claims_to_headers.n && !p->groups_claim && !p->consumer_claim &&
           !p->jwks_timeout_ms;
}

/* The field name for errors: "providers" for a list item. */
struct where {
    struct pt_filter_errs *errs;
    const char *list; /* NULL: the single-provider form */
};

static const char *at(const struct where *w, const char *field)
{
    return w->list ? w->list : field;
}

static int compile_algorithms(const struct where *w, struct jwt_provider *p, bool hmac)
{
    int bad = 0;
    if (!p->algorithms.v) {
        p->algs = hmac ? PT_JOSE_HMAC : PT_JOSE_ASYMMETRIC;
        return 0;
    }
    if (p->algorithms.n == 0)
        return pt_filter_errorf(w->errs, at(w, "algorithms"), NULL, false,
                                "algorithms: the list is empty; leave it out for the default");
    for (uint32_t i = 0; i < p->algorithms.n; i++) {
        const char *name = p->algorithms.v[i];
        int a = pt_jose_alg_parse(name, strlen(name));
        if (a < 0) {
            bad |= pt_filter_errorf(w->errs, at(w, "algorithms"), w->list ? NULL : name, false,
                                    "algorithms: unknown algorithm \"%s\" (RS256/384/512, "
                                    "PS256/384/512, ES256/384/512, EdDSA, HS256/384/512; "
                                    "\"none\" is never accepted)",
                                    name);
            continue;
        }
        bool is_hmac = (PT_JOSE_BIT(a) & PT_JOSE_HMAC) != 0;
        if (is_hmac != hmac)
            bad |= pt_filter_errorf(
                w->errs, at(w, "algorithms"), w->list ? NULL : name, false,
                hmac ? "algorithms: %s needs a public key: a `secret` only verifies HS256/384/512"
                     : "algorithms: %s is an HMAC algorithm: it needs `secret` or "
                       "`secret_base64`, never a JWKS key",
                name);
        p->algs |= PT_JOSE_BIT(a);
    }
    return bad;
}

/* The JWKS file, read now (config load runs on the control thread). */
static struct pt_jwks_set *read_jwks_file(const struct where *w, const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0;
    struct pt_jwks_set *set = NULL;
    if (!f) {
        pt_filter_errorf(w->errs, at(w, "jwks_file"), NULL, true, "jwks_file: cannot read %s: %s",
                         path, strerror(errno));
        return NULL;
    }
    buf = malloc(PT_JWKS_MAX_BYTES + 1);
    if (buf)
        len = fread(buf, 1, PT_JWKS_MAX_BYTES + 1, f);
    fclose(f);
    char err[128];
    uint32_t skipped;
    if (!buf || len > PT_JWKS_MAX_BYTES)
        pt_filter_errorf(w->errs, at(w, "jwks_file"), NULL, true,
                         "jwks_file: %s is larger than %u bytes", path,
                         (unsigned)PT_JWKS_MAX_BYTES);
    else if (pt_jwks_parse(buf, len, false, &set, &skipped, err, sizeof(err)) < 0)
        pt_filter_errorf(w->errs, at(w, "jwks_file"), NULL, true, "jwks_file: %s: %s", path, err);
    free(buf);
    return set;
}

static struct pt_jwks_set *secret_set(const struct where *w, const struct jwt_provider *p)
{
    const char *field = p->secret ? "secret" : "secret_base64";
    const char *text = p->secret ? p->secret : p->secret_base64;
    size_t tl = strlen(text);
    uint8_t *buf = malloc(tl + 4);
    long n = !buf        ? -1
             : p->secret ? (memcpy(buf, text, tl), (long)tl)
                         : pt_b64_decode_any(text, tl, buf, tl + 4);
    struct pt_jwks_set *set = NULL;
    if (n < 0)
        pt_filter_errorf(w->errs, at(w, field), NULL, true, "%s: not valid base64", field);
    else if (n < 32)
        pt_filter_errorf(w->errs, at(w, field), NULL, true,
                         "%s: an HMAC secret needs at least 32 bytes (RFC 7518 §3.2), got %ld",
                         field, n);
    else
        set = pt_jwks_from_secret(buf, (size_t)n);
    if (buf) {
        memset(buf, 0, tl + 4);
        free(buf);
    }
    return set;
}

/* The provider's one key source. */
static int compile_source(const struct where *w, struct jwt_provider *p, struct pt_arena *a)
{
    int sources = !!p->jwks_uri + !!p->jwks_file + !!p->secret + !!p->secret_base64;
    if (sources != 1)
        return pt_filter_errorf(w->errs, w->list, NULL, false,
                                sources ? "give one key source: jwks_uri, jwks_file, secret or "
                                          "secret_base64, not several"
                                        : "a key source is required: jwks_uri, jwks_file, "
                                          "secret or secret_base64");
    if (p->jwks_uri) {
        p->src = pt_jwks_source_get(p->jwks_uri);
        p->label = p->jwks_uri;
    } else {
        struct pt_jwks_set *set = p->jwks_file ? read_jwks_file(w, p->jwks_file) : secret_set(w, p);
        if (!set)
            return -1;
        p->src = pt_jwks_source_static(set);
        if (!p->src)
            pt_jwks_set_unref(set);
        p->label = p->jwks_file ? p->jwks_file : "secret";
    }
    if (!p->src || pt_arena_defer(a, pt_jwks_source_put, p->src) < 0) {
        pt_jwks_source_put(p->src);
        p->src = NULL;
        return pt_filter_errorf(w->errs, NULL, NULL, false, "out of memory");
    }
    return 0;
}

/* Header names a claim must not set: the credentials the upstream may
 * read, and the identity the gateway vouches for (Host, framing and
 * hop-by-hop fields are refused by pt_header_name_check). */
static bool reserved_name(pt_slice n)
{
    static const pt_slice prefix = PT_SLICE("X-Consumer-");
    return pt_slice_ieq(n, PT_SLICE("Authorization")) || pt_slice_ieq(n, PT_SLICE("Cookie")) ||
           (n.len >= prefix.len && pt_slice_ieq((pt_slice){n.p, prefix.len}, prefix));
}

static int compile_provider(const struct where *w, struct jwt_provider *p, struct pt_arena *a)
{
    int bad = compile_source(w, p, a);
    bad |= compile_algorithms(w, p, p->secret || p->secret_base64);
    uint64_t skew = JWT_DEFAULT_SKEW_MS;
    if (p->clock_skew && pt_parse_duration_ms(p->clock_skew, &skew) < 0)
        bad |= pt_filter_errorf(w->errs, at(w, "clock_skew"), NULL, true,
                                "clock_skew: \"%s\" is not a duration (e.g. 60s)", p->clock_skew);
    if (skew > 3600 * 1000)
        bad |= pt_filter_errorf(w->errs, at(w, "clock_skew"), NULL, true, "clock_skew: at most 1h");
    p->skew_s = (int64_t)(skew / 1000);
    if (!p->jwks_timeout_ms)
        p->jwks_timeout_ms = JWT_DEFAULT_JWKS_TIMEOUT_MS;
    pt_slice *names = pt_arena_zalloc(a, sizeof(*names) * (p->claims_to_headers.n + 1));
    if (!names)
        return pt_filter_errorf(w->errs, NULL, NULL, false, "out of memory");
    for (uint32_t i = 0; i < p->claims_to_headers.n; i++) {
        const char *entry = w->list ? NULL : p->claims_to_headers.keys[i];
        int b = pt_header_name_check(w->errs, at(w, "claims_to_headers"), entry, true, true,
                                     p->claims_to_headers.values[i], &names[i]);
        if (b == 0 && reserved_name(names[i]))
            b = pt_filter_errorf(w->errs, at(w, "claims_to_headers"), entry, true,
                                 "claims_to_headers: header \"%s\" cannot carry a claim "
                                 "(Authorization, Cookie and X-Consumer-* are the client's "
                                 "credentials or the gateway's identity)",
                                 p->claims_to_headers.values[i]);
        bad |= b;
    }
    p->hdr_names = names;
    p->nhdr = p->claims_to_headers.n;
    return bad;
}

/* Every provider's claims_to_headers names, for the anti-spoofing strip. */
static int collect_strip(struct jwt_conf *conf, struct pt_arena *a)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < conf->npv; i++)
        n += conf->pv[i].nhdr;
    pt_slice *s = pt_arena_zalloc(a, sizeof(*s) * (n + 1));
    if (!s)
        return -ENOMEM;
    for (uint32_t i = 0; i < conf->npv; i++)
        for (uint32_t k = 0; k < conf->pv[i].nhdr; k++)
            s[conf->nstrip++] = conf->pv[i].hdr_names[k];
    conf->strip = s;
    return 0;
}

static int compile_common(struct jwt_conf *conf, struct pt_arena *a, struct pt_filter_errs *errs)
{
    int bad = 0;
    uint64_t bytes = JWT_DEFAULT_CACHE_BYTES;
    if (conf->cache_bytes && pt_parse_size(conf->cache_bytes, &bytes) < 0)
        bad |= pt_filter_errorf(errs, "cache_bytes", NULL, true,
                                "cache_bytes: \"%s\" is not a size (e.g. 4MiB, 0 for none)",
                                conf->cache_bytes);
    if (!bad && bytes) {
        conf->cache = pt_jwt_cache_new(bytes < 64 * 1024 ? 64 * 1024 : bytes);
        if (!conf->cache || pt_arena_defer(a, pt_jwt_cache_free, conf->cache) < 0) {
            pt_jwt_cache_free(conf->cache);
            conf->cache = NULL;
            bad |= pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
        }
    }
    if (conf->cookie) {
        conf->cookie_s = (pt_slice){conf->cookie, strlen(conf->cookie)};
        if (!conf->cookie_s.len || strpbrk(conf->cookie, " ;=,\t\""))
            bad |= pt_filter_errorf(errs, "cookie", NULL, true,
                                    "cookie: \"%s\" is not a cookie name", conf->cookie);
    }
    if (conf->query) {
        conf->query_s = (pt_slice){conf->query, strlen(conf->query)};
        if (!conf->query_s.len || strpbrk(conf->query, "&=#? "))
            bad |= pt_filter_errorf(errs, "query", NULL, true,
                                    "query: \"%s\" is not a query parameter name", conf->query);
    }
    return bad;
}

static int jwt_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    struct jwt_conf *conf = conf_;
    int bad = compile_common(conf, a, errs);
    if (conf->providers.v) {
        if (!provider_empty(&conf->one))
            return pt_filter_errorf(errs, "providers", NULL, false,
                                    "providers: with a list, put every provider key (jwks_uri, "
                                    "issuer, ...) inside its entries, not beside it");
        if (conf->providers.n == 0 || conf->providers.n > JWT_MAX_PROVIDERS)
            return pt_filter_errorf(errs, "providers", NULL, false,
                                    "providers: between 1 and %d entries", JWT_MAX_PROVIDERS);
        conf->pv = conf->providers.v;
        conf->npv = conf->providers.n;
    } else {
        conf->pv = &conf->one;
        conf->npv = 1;
    }
    struct where w = {errs, conf->providers.v ? "providers" : NULL};
    for (uint32_t i = 0; i < conf->npv; i++)
        bad |= compile_provider(&w, &conf->pv[i], a);
    if (collect_strip(conf, a) < 0)
        bad |= pt_filter_errorf(errs, NULL, NULL, false, "out of memory");
    return bad ? -1 : 0;
}

const struct pt_filter_def pt_filter_jwt = {
    .name = "jwt",
    .priority = 1300,
    .auth = true,
    .fields = jwt_fields,
    .config_size = sizeof(struct jwt_conf),
    .compile = jwt_compile,
    .state_size = sizeof(struct jwt_state),
    .on_request = jwt_on_request,
    .on_cancel = jwt_on_cancel,
};
