/*
 * mtls_auth.c — the caller is who its client certificate says (Kong's
 * mtls-auth, Envoy's client-certificate identity with XFCC).
 *
 *   mtls_auth:
 *     consumer_from: subject_cn   # subject_cn | san_dns | san_uri (SPIFFE IDs)
 *     uri_prefix: spiffe://example.org/ns/prod/sa/  # san_uri: only URIs under it; stripped
 *     require_consumer: false     # true: the name must be a `consumers:` entry
 *     optional: false             # true: no certificate → passes on unauthenticated
 *     subject_header: X-Client-Subject          # default: not sent
 *     fingerprint_header: X-Client-Fingerprint  # default: not sent
 *     xfcc: false                 # true: X-Forwarded-Client-Cert (Envoy's form)
 *
 * The listener's client_ca and client_auth (tls-term) make the handshake
 * verify the chain; this filter reads the outcome from the connection's
 * TLS session (ctx->tls, pt_tls_get_info) and decides per route:
 *
 *   plain connection, or     401 "client certificate required" (no
 *   no certificate           challenge: mTLS has no WWW-Authenticate
 *                            scheme); with optional, passes on
 *                            unauthenticated (either-of auth, acl decides);
 *   certificate that failed  401 "invalid client certificate", optional or
 *   verification             not (client_auth: optional lets it through
 *                            the handshake; it never identifies anyone);
 *   verified                 the consumer is the chosen name (below):
 *                            ctx->identity, X-Consumer-Name and the
 *                            groups of the `consumers:` entry of that
 *                            name (none: no groups), as key_auth does.
 *
 * The name: subject_cn takes the subject's CN; san_dns the DNS SANs;
 * san_uri the URI SANs: without uri_prefix the whole URI is the name;
 * with it, only URIs that start with it count and the name is the rest
 * (`spiffe://example.org/ns/prod/sa/` + `api` → `api`): a consumers entry
 * name is letters, digits, `-_.`, so a whole SPIFFE ID can never be one,
 * and the prefix is where the trust domain is pinned. Of several SANs,
 * the first that names a consumers entry wins, else the first. Names compare exactly, byte for
 * byte. No name (no CN, no matching SAN), a name with a control
 * character, or, with require_consumer, a name no consumers entry has →
 * 401 "invalid client certificate".
 *
 * Whenever the filter runs, client-sent fields named subject_header,
 * fingerprint_header and (with xfcc) X-Forwarded-Client-Cert are removed
 * first, certificate or not: only the gateway's own reach the upstream.
 * The subject is the RFC 2253 string (OpenSSL escapes control and
 * non-ASCII bytes); the fingerprint is the SHA-256 of the certificate's
 * DER as 64 lowercase hex digits. xfcc sends
 * `Hash=<fingerprint>;Subject="<subject>"` then `;URI=<san>` and
 * `;DNS=<san>` per SAN (values with `,;="` quoted), Envoy's keys.
 *
 * Priority 1310: the first auth filter (jwt 1300, ...): its check was paid
 * for in the handshake, so with several on a route it costs nothing to ask
 * it first. Then acl (1200) reads its consumer and groups, rate_limit
 * counts per consumer, the access log shows it.
 *
 * Ownership: the config lives in the generation arena; the certificate's
 * facts belong to the connection's pt_tls (extracted once per
 * connection); a name copied for the identity, and the header values,
 * live in the request arena. No state per request.
 */
#include "core/tls.h"
#include "filters/auth.h"
#include "filters/consumers.h"
#include "filters/registry.h"
#include "filters/template.h"

#include <string.h>

enum mtls_from { FROM_SUBJECT_CN, FROM_SAN_DNS, FROM_SAN_URI };

struct mtls_conf {
    const char *consumer_from; /* NULL: subject_cn */
    const char *uri_prefix;    /* NULL: every URI SAN */
    const char *subject_header;
    const char *fingerprint_header;
    bool require_consumer;
    bool optional;
    bool xfcc;
    /* Filled by mtls_compile (not YAML keys). */
    enum mtls_from from;
    pt_slice prefix, subject_h, fingerprint_h; /* len 0: none */
};

static const struct pt_field mtls_fields[] = {
    {"consumer_from", PT_F_STRING, offsetof(struct mtls_conf, consumer_from), NULL},
    {"uri_prefix", PT_F_STRING, offsetof(struct mtls_conf, uri_prefix), NULL},
    {"require_consumer", PT_F_BOOL, offsetof(struct mtls_conf, require_consumer), NULL},
    {"optional", PT_F_BOOL, offsetof(struct mtls_conf, optional), NULL},
    {"subject_header", PT_F_STRING, offsetof(struct mtls_conf, subject_header), NULL},
    {"fingerprint_header", PT_F_STRING, offsetof(struct mtls_conf, fingerprint_header), NULL},
    {"xfcc", PT_F_BOOL, offsetof(struct mtls_conf, xfcc), NULL},
    {NULL, 0, 0, NULL},
};

#define XFCC PT_SLICE("X-Forwarded-Client-Cert")

static int refuse(struct pt_filter_ctx *ctx, const char *why, const char *note)
{
    pt_filter_note(ctx, "mtls", note);
    int r = pt_auth_refuse(ctx, 401, NULL, NULL);
    ctx->respond_error = why;
    return r;
}

/* A name fit for X-Consumer-Name and the logs: no control characters. */
static bool name_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

/* The caller's name (see the top); *c is its consumers entry or NULL.
 * NULL when the certificate names nobody usable. */
static const char *pick_name(const struct pt_filter_ctx *ctx, const struct mtls_conf *conf,
                             const struct pt_tls_info *in, const struct pt_consumer **c)
{
    *c = NULL;
    if (conf->from == FROM_SUBJECT_CN) {
        if (!name_ok(in->subject_cn))
            return NULL;
        *c = pt_consumers_named(ctx->consumers, (pt_slice){in->subject_cn, strlen(in->subject_cn)});
        return in->subject_cn;
    }
    const char *const *v = conf->from == FROM_SAN_DNS ? in->san_dns : in->san_uri;
    uint32_t n = conf->from == FROM_SAN_DNS ? in->nsan_dns : in->nsan_uri;
    const char *first = NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (!name_ok(v[i]) ||
            (conf->prefix.len && strncmp(v[i], conf->prefix.p, conf->prefix.len) != 0))
            continue;
        const char *name = v[i] + conf->prefix.len; /* the prefix is stripped */
        if (!*name)
            continue;
        *c = pt_consumers_named(ctx->consumers, (pt_slice){name, strlen(name)});
        if (*c)
            return name;
        if (!first)
            first = name;
    }
    return first;
}

/* ---- X-Forwarded-Client-Cert ---- */

/* Appends `key=value` (quoted, `"` and `\` escaped, when the value holds
 * a delimiter) to out at *n; the caller sized out for the worst case. */
static void xfcc_put(char *out, size_t *n, const char *key, const char *v, bool quote)
{
    if (*n)
        out[(*n)++] = ';';
    size_t kl = strlen(key);
    memcpy(out + *n, key, kl);
    *n += kl;
    out[(*n)++] = '=';
    quote = quote || strpbrk(v, ",;=\"") != NULL;
    if (quote)
        out[(*n)++] = '"';
    for (; *v; v++) {
        if (quote && (*v == '"' || *v == '\\'))
            out[(*n)++] = '\\';
        out[(*n)++] = *v;
    }
    if (quote)
        out[(*n)++] = '"';
}

static int add_xfcc(struct pt_filter_ctx *ctx, const struct pt_tls_info *in)
{
    /* Each byte may double when escaped, plus key, '=', quotes and ';'. */
    size_t cap = 2 * strlen(in->fingerprint) + 2 * strlen(in->subject) + 32;
    for (uint32_t i = 0; i < in->nsan_uri; i++)
        cap += 2 * strlen(in->san_uri[i]) + 8;
    for (uint32_t i = 0; i < in->nsan_dns; i++)
        cap += 2 * strlen(in->san_dns[i]) + 8;
    char *v = pt_arena_alloc(ctx->arena, cap);
    if (!v)
        return -1;
    size_t n = 0;
    xfcc_put(v, &n, "Hash", in->fingerprint, false);
    xfcc_put(v, &n, "Subject", in->subject, true);
    for (uint32_t i = 0; i < in->nsan_uri; i++)
        if (name_ok(in->san_uri[i]))
            xfcc_put(v, &n, "URI", in->san_uri[i], false);
    for (uint32_t i = 0; i < in->nsan_dns; i++)
        if (name_ok(in->san_dns[i]))
            xfcc_put(v, &n, "DNS", in->san_dns[i], false);
    return pt_headers_add(ctx->req_headers, ctx->arena, XFCC, (pt_slice){v, n});
}

/* ---- the request ---- */

static int forward_facts(struct pt_filter_ctx *ctx, const struct mtls_conf *conf,
                         const struct pt_tls_info *in)
{
    if (conf->subject_h.len && name_ok(in->subject) &&
        pt_headers_add(ctx->req_headers, ctx->arena, conf->subject_h,
                       (pt_slice){in->subject, strlen(in->subject)}) < 0)
        return -1;
    if (conf->fingerprint_h.len && *in->fingerprint &&
        pt_headers_add(ctx->req_headers, ctx->arena, conf->fingerprint_h,
                       (pt_slice){in->fingerprint, strlen(in->fingerprint)}) < 0)
        return -1;
    if (conf->xfcc && add_xfcc(ctx, in) < 0)
        return -1;
    return 0;
}

static int mtls_on_request(struct pt_filter_ctx *ctx, const void *conf_, void *state)
{
    (void)state;
    const struct mtls_conf *conf = conf_;
    /* Only the gateway's own copies go upstream, certificate or not. */
    if (conf->subject_h.len)
        pt_headers_remove(ctx->req_headers, conf->subject_h);
    if (conf->fingerprint_h.len)
        pt_headers_remove(ctx->req_headers, conf->fingerprint_h);
    if (conf->xfcc)
        pt_headers_remove(ctx->req_headers, XFCC);

    const struct pt_tls_info *in = ctx->tls ? pt_tls_get_info(ctx->tls) : NULL;
    if (ctx->tls && !in)
        return PT_FILTER_ERROR; /* out of memory (the handshake is done by now) */
    if (!in || !in->cert_present) {
        if (conf->optional) {
            pt_filter_note(ctx, "mtls", "none");
            return pt_auth_pass_anonymous(ctx, NULL);
        }
        return refuse(ctx, "client certificate required", "none");
    }
    if (!in->cert_verified)
        return refuse(ctx, "invalid client certificate", "unverified");

    const struct pt_consumer *c;
    const char *name = pick_name(ctx, conf, in, &c);
    if (!name)
        return refuse(ctx, "invalid client certificate", "no_name");
    if (!c && conf->require_consumer)
        return refuse(ctx, "invalid client certificate", "unknown_consumer");
    pt_slice consumer;
    if (c) {
        consumer = c->name; /* generation memory */
    } else {
        /* The connection's info may outlive no request, but the identity
         * must outlive the request's log: the request arena. */
        size_t len = strlen(name);
        char *copy = pt_arena_alloc(ctx->arena, len + 1);
        if (!copy)
            return PT_FILTER_ERROR;
        memcpy(copy, name, len + 1);
        consumer = (pt_slice){copy, len};
    }
    if (forward_facts(ctx, conf, in) < 0 ||
        pt_auth_set_identity(ctx, consumer, c ? c->groups : NULL, c ? c->ngroups : 0, "mtls_auth") <
            0)
        return PT_FILTER_ERROR;
    pt_filter_note(ctx, "mtls", c ? "consumer" : "name");
    return PT_FILTER_CONTINUE;
}

/* ---- compile ---- */

static int header_field(struct pt_filter_errs *errs, const char *key, const char *name,
                        pt_slice *out)
{
    *out = (pt_slice){"", 0};
    if (!name)
        return 0;
    int bad = pt_header_name_check(errs, key, NULL, false, true, name, out);
    if (!bad && strncasecmp(name, "X-Consumer-", 11) == 0)
        bad = pt_filter_errorf(errs, key, NULL, false,
                               "%s: \"%s\": X-Consumer-* fields are the gateway's own identity "
                               "fields",
                               key, name);
    if (!bad && pt_slice_ieq(*out, XFCC))
        bad = pt_filter_errorf(errs, key, NULL, false,
                               "%s: \"%s\" is the field `xfcc: true` writes", key, name);
    return bad;
}

static int mtls_compile(void *conf_, struct pt_arena *a, struct pt_filter_errs *errs)
{
    (void)a;
    struct mtls_conf *conf = conf_;
    int bad = 0;
    const char *from = conf->consumer_from ? conf->consumer_from : "subject_cn";
    if (strcmp(from, "subject_cn") == 0)
        conf->from = FROM_SUBJECT_CN;
    else if (strcmp(from, "san_dns") == 0)
        conf->from = FROM_SAN_DNS;
    else if (strcmp(from, "san_uri") == 0)
        conf->from = FROM_SAN_URI;
    else
        bad |= pt_filter_errorf(errs, "consumer_from", NULL, false,
                                "consumer_from: \"%s\": expected subject_cn, san_dns or san_uri",
                                from);
    conf->prefix = (pt_slice){"", 0};
    if (conf->uri_prefix) {
        if (conf->from != FROM_SAN_URI)
            bad |= pt_filter_errorf(errs, "uri_prefix", NULL, false,
                                    "uri_prefix picks among URI SANs: it needs "
                                    "`consumer_from: san_uri`");
        else if (!*conf->uri_prefix)
            bad |= pt_filter_errorf(errs, "uri_prefix", NULL, false, "uri_prefix is empty");
        conf->prefix = (pt_slice){conf->uri_prefix, strlen(conf->uri_prefix)};
    }
    bad |= header_field(errs, "subject_header", conf->subject_header, &conf->subject_h);
    bad |= header_field(errs, "fingerprint_header", conf->fingerprint_header, &conf->fingerprint_h);
    if (!bad && conf->subject_h.len && pt_slice_ieq(conf->subject_h, conf->fingerprint_h))
        bad |= pt_filter_errorf(errs, "fingerprint_header", NULL, false,
                                "fingerprint_header: \"%s\" is subject_header too",
                                conf->fingerprint_header);
    return bad ? -1 : 0;
}

const struct pt_filter_def pt_filter_mtls_auth = {
    .name = "mtls_auth",
    .priority = 1310,
    .auth = true,
    .fields = mtls_fields,
    .config_size = sizeof(struct mtls_conf),
    .compile = mtls_compile,
    .on_request = mtls_on_request,
};
