/*
 * config_upstream_tls.c — client TLS settings the loader builds: `upstreams.*.tls`
 * and the TLS of https:// URLs (jwt.jwks_uri, introspection.endpoint,
 * ext_auth.url, tracing.otlp_endpoint).
 *
 *   tls: { verify: true, ca: certs/internal-ca.pem, sni: users.internal,
 *          cert: certs/gw.pem, key: certs/gw.key }
 *   tls: true            # the same as `tls: {}`: verify against the system store
 *
 * Each setting gets its own SSL_CTX (TLS 1.2+, ALPN http/1.1, the pools'
 * session cache), recorded in g->tls_ctxs and freed with the generation.
 * Files are read here, at load: an unreadable or invalid CA, certificate
 * or key is a `file:line:col` error with OpenSSL's reason.
 */
#include "control/config_int.h"

#include "proxy/pool.h"

#include <errno.h>
#include <openssl/err.h>
#include <stdlib.h>

static const char *const tls_keys[] = {"verify", "ca", "sni", "cert", "key", NULL};
enum { T_VERIFY, T_CA, T_SNI, T_CERT, T_KEY, T_N };

/* OpenSSL's reason for the last failure (its queue cleared). */
static const char *ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "invalid file");
    ERR_clear_error();
    return buf;
}

/* A path from the file, joined to the config's directory when relative;
 * NULL after reporting when it cannot be read. */
static const char *tls_path(struct cfg *c, const struct pt_ynode *n, const char *what)
{
    const char *p = pt_cfg_want_str(&c->w, n, what);
    if (!p)
        return NULL;
    const char *full = p[0] == '/' ? dup_str(c, p) : pt_arena_sprintf(c->a, "%s/%s", c->dir, p);
    if (!full)
        return NULL;
    FILE *f = fopen(full, "r");
    if (!f) {
        err_at(c, n, "%s: cannot read `%s`: %s", what, p, strerror(errno));
        return NULL;
    }
    fclose(f);
    return full;
}

static bool ctx_keep(struct cfg *c, SSL_CTX *ctx)
{
    struct pt_generation *g = c->g;
    if (g->ntls_ctxs == g->captls_ctxs) {
        uint32_t cap = g->captls_ctxs ? g->captls_ctxs * 2 : 4;
        SSL_CTX **v = realloc(g->tls_ctxs, cap * sizeof(*v));
        if (!v)
            return false;
        g->tls_ctxs = v;
        g->captls_ctxs = cap;
    }
    g->tls_ctxs[g->ntls_ctxs++] = ctx;
    return true;
}

/* What one setting is made of, for its SSL_CTX and pool key. */
struct tls_spec {
    bool verify;
    const char *ca, *sni, *cert, *key; /* full paths / the name; NULL: none */
    const struct pt_ynode *ca_at, *cert_at, *key_at, *at;
};

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; s && *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (h ^ 0xff) * 1099511628211ull; /* a separator: "ab","c" ≠ "a","bc" */
}

static SSL_CTX *build_ctx(struct cfg *c, const struct tls_spec *s, const char *what)
{
    char why[160];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || !ctx_keep(c, ctx)) {
        SSL_CTX_free(ctx);
        oom(c);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
    pt_outbound_tls_ctx_init(ctx);
    if (s->verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (s->ca ? SSL_CTX_load_verify_locations(ctx, s->ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(ctx) != 1) {
            err_at(c, s->ca ? s->ca_at : s->at, "%s: cannot load the CA%s%s: %s", what,
                   s->ca ? " file " : "s of the system store", s->ca ? s->ca_at->str : "",
                   ssl_reason(why, sizeof(why)));
            return NULL;
        }
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    if (s->cert) {
        if (SSL_CTX_use_certificate_chain_file(ctx, s->cert) != 1) {
            err_at(c, s->cert_at, "%s: cannot load the certificate `%s`: %s", what, s->cert_at->str,
                   ssl_reason(why, sizeof(why)));
            return NULL;
        }
        /* The key's file name is in the message, never its contents. */
        if (SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(ctx) != 1) {
            err_at(c, s->key_at, "%s: cannot use the private key `%s`: %s", what, s->key_at->str,
                   ssl_reason(why, sizeof(why)));
            return NULL;
        }
    }
    return ctx;
}

static const struct pt_upstream_tls *make_tls(struct cfg *c, const struct tls_spec *s,
                                              const char *what)
{
    SSL_CTX *ctx = build_ctx(c, s, what);
    if (!ctx)
        return NULL;
    struct pt_upstream_tls *t = pt_arena_zalloc(c->a, sizeof(*t));
    if (!t) {
        oom(c);
        return NULL;
    }
    t->ctx = ctx;
    t->verify = s->verify;
    t->sni = s->sni;
    uint64_t h = fnv(1469598103934665603ull, s->verify ? "v" : "n");
    h = fnv(fnv(fnv(fnv(h, s->ca), s->sni), s->cert), s->key);
    t->pool_key = h ? h : 1;
    return t;
}

const struct pt_upstream_tls *pt_cfg_walk_upstream_tls(struct cfg *c, const struct pt_ynode *n)
{
    struct tls_spec s = {.verify = true, .at = n};
    if (n->kind == PT_YSCALAR && !n->is_null) {
        bool on = false;
        if (!pt_cfg_want_bool(&c->w, n, "`tls` (a mapping, or true / false)", &on) || !on)
            return NULL;
        return make_tls(c, &s, "`tls`");
    }
    if (!pt_cfg_want_map(&c->w, n, "`tls`"))
        return NULL;
    const struct pt_ynode *v[T_N] = {0};
    if (pt_cfg_bind_keys(&c->w, n, tls_keys, NULL, "in tls", v, NULL))
        return NULL;
    if (v[T_VERIFY] && !pt_cfg_want_bool(&c->w, v[T_VERIFY], "`tls.verify`", &s.verify))
        return NULL;
    if (v[T_SNI] && !(s.sni = pt_cfg_want_str(&c->w, v[T_SNI], "`tls.sni`")))
        return NULL;
    if (s.sni && (strlen(s.sni) > 253 || strpbrk(s.sni, " /:@\t"))) {
        err_at(c, v[T_SNI], "`tls.sni`: `%s` is not a host name", s.sni);
        return NULL;
    }
    if (v[T_CA] && !(s.ca = tls_path(c, s.ca_at = v[T_CA], "`tls.ca`")))
        return NULL;
    if (!v[T_CERT] != !v[T_KEY]) {
        err_at(c, v[T_CERT] ? v[T_CERT] : v[T_KEY],
               "`tls.cert` and `tls.key` go together: the client certificate needs its key");
        return NULL;
    }
    if (v[T_CERT] && (!(s.cert = tls_path(c, s.cert_at = v[T_CERT], "`tls.cert`")) ||
                      !(s.key = tls_path(c, s.key_at = v[T_KEY], "`tls.key`"))))
        return NULL;
    if (s.sni)
        s.sni = dup_str(c, s.sni);
    return make_tls(c, &s, "`tls`");
}

const struct pt_upstream_tls *pt_cfg_url_tls(struct cfg *c, const struct pt_ynode *at,
                                             const struct pt_ynode *ca_at)
{
    struct tls_spec s = {.verify = true, .at = at};
    if (ca_at && !(s.ca = tls_path(c, s.ca_at = ca_at, "`tls_ca`")))
        return NULL;
    return make_tls(c, &s, "https URL");
}
