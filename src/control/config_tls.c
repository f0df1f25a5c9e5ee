/*
 * config_tls.c — a listener's `tls:` block (gateway/tls_listener.h):
 * certificates, client certificates, ticket keys and timeouts, checked and
 * then built into the listener's SSL_CTX at load time, so that an
 * unreadable file, a key that does not match its certificate or a bad
 * ticket key file is a `file:line:col` error and a reload carrying one
 * keeps the old config serving.
 */
#include "control/config_int.h"

#include <string.h>

static const char *const tls_keys[] = {
    "certificates",      "client_ca",       "client_auth", "ticket_key_file",
    "handshake_timeout", "session_timeout", NULL};
enum { T_CERTS, T_CA, T_AUTH, T_TICKETS, T_HANDSHAKE, T_SESSION, T_NKEYS };
static const char *const cert_keys[] = {"cert", "key", NULL};

#define DEFAULT_HANDSHAKE_TIMEOUT_MS 10000u
#define DEFAULT_SESSION_TIMEOUT_S 3600u

/* A file path from the config, relative ones against its directory. */
static const char *want_path(struct cfg *c, const struct pt_ynode *n, const char *what)
{
    const char *p = pt_cfg_want_str(&c->w, n, what);
    if (!p)
        return NULL;
    const char *r =
        p[0] == '/' ? pt_arena_strdup(c->a, p) : pt_arena_sprintf(c->a, "%s/%s", c->dir, p);
    if (!r)
        oom(c);
    return r;
}

static bool walk_certificates(struct cfg *c, const struct pt_ynode *n, struct pt_tls_listener *tl,
                              const struct pt_ynode ***at)
{
    if (!pt_cfg_want_seq(&c->w, n, "`certificates`"))
        return false;
    if (n->n == 0) {
        err_at(c, n, "`certificates` is empty: list at least one `{ cert: ..., key: ... }`");
        return false;
    }
    tl->certs = pt_arena_zalloc(c->a, sizeof(*tl->certs) * n->n);
    *at = pt_arena_zalloc(c->a, sizeof(**at) * n->n * 2);
    if (!tl->certs || !*at) {
        oom(c);
        return false;
    }
    bool ok = true;
    for (uint32_t i = 0; i < n->n; i++) {
        const struct pt_ynode *item = n->items[i];
        const struct pt_ynode *v[2] = {0};
        if (!pt_cfg_want_map(&c->w, item, "each certificate") ||
            pt_cfg_bind_keys(&c->w, item, cert_keys, NULL, "in a certificate", v, NULL)) {
            ok = false;
            continue;
        }
        if (!v[0] || !v[1]) {
            err_at(c, item, "a certificate needs both `cert` (PEM, with its chain) and `key`");
            ok = false;
            continue;
        }
        tl->certs[i].cert = want_path(c, v[0], "`cert`");
        tl->certs[i].key = want_path(c, v[1], "`key`");
        (*at)[2 * i] = v[0];
        (*at)[2 * i + 1] = v[1];
        ok &= tl->certs[i].cert && tl->certs[i].key;
    }
    tl->ncerts = n->n;
    return ok;
}

static bool walk_client_auth(struct cfg *c, const struct pt_ynode *n, struct pt_tls_listener *tl)
{
    if (!n) {
        tl->client_auth = tl->client_ca ? PT_CLIENT_AUTH_OPTIONAL : PT_CLIENT_AUTH_NONE;
        return true;
    }
    const char *s = pt_cfg_want_str(&c->w, n, "`client_auth`");
    if (!s)
        return false;
    if (strcmp(s, "optional") == 0)
        tl->client_auth = PT_CLIENT_AUTH_OPTIONAL;
    else if (strcmp(s, "required") == 0)
        tl->client_auth = PT_CLIENT_AUTH_REQUIRED;
    else {
        err_at(c, n, "`client_auth` must be `optional` or `required`, got `%s`", s);
        return false;
    }
    if (!tl->client_ca) {
        err_at(c, n,
               "`client_auth` needs `client_ca` (the CA bundle client certificates are "
               "verified against)");
        return false;
    }
    return true;
}

bool pt_cfg_walk_listener_tls(struct cfg *c, const struct pt_ynode *n, struct pt_listener_cfg *l)
{
    if (!pt_cfg_want_map(&c->w, n, "`tls`"))
        return false;
    const struct pt_ynode *v[T_NKEYS] = {0};
    if (pt_cfg_bind_keys(&c->w, n, tls_keys, NULL, "in listener tls", v, NULL))
        return false;
    struct pt_tls_listener *tl = pt_arena_zalloc(c->a, sizeof(*tl));
    if (!tl) {
        oom(c);
        return false;
    }
    tl->handshake_timeout_ms = DEFAULT_HANDSHAKE_TIMEOUT_MS;
    tl->session_timeout_s = DEFAULT_SESSION_TIMEOUT_S;
    const struct pt_ynode **at = NULL;
    bool ok = true;
    if (!v[T_CERTS]) {
        err_at(c, n,
               "`tls` needs `certificates` (e.g. `certificates: [{ cert: api.pem, key: "
               "api.key }]`)");
        ok = false;
    } else {
        ok &= walk_certificates(c, v[T_CERTS], tl, &at);
    }
    if (v[T_CA])
        ok &= (tl->client_ca = want_path(c, v[T_CA], "`client_ca`")) != NULL;
    ok &= walk_client_auth(c, v[T_AUTH], tl);
    if (v[T_TICKETS])
        ok &= (tl->ticket_key_file = want_path(c, v[T_TICKETS], "`ticket_key_file`")) != NULL;
    if (v[T_HANDSHAKE])
        ok &= pt_cfg_want_duration(&c->w, v[T_HANDSHAKE], "`handshake_timeout`", true,
                                   &tl->handshake_timeout_ms);
    if (v[T_SESSION]) {
        uint64_t ms = 0;
        ok &= pt_cfg_want_duration(&c->w, v[T_SESSION], "`session_timeout`", true, &ms);
        tl->session_timeout_s = ms < 1000 ? 1 : ms / 1000;
    }
    if (!ok)
        return false;
    struct pt_tls_build_error e;
    if (pt_tls_listener_build(tl, l->name, l->http2, &e) < 0) {
        const struct pt_ynode *where = n;
        if ((e.at == PT_TLS_ERR_CERT || e.at == PT_TLS_ERR_KEY) && at && e.index < tl->ncerts)
            where = at[2 * e.index + (e.at == PT_TLS_ERR_KEY)];
        else if (e.at == PT_TLS_ERR_CLIENT_CA && v[T_CA])
            where = v[T_CA];
        else if (e.at == PT_TLS_ERR_TICKETS && v[T_TICKETS])
            where = v[T_TICKETS];
        err_at(c, where, "%s", e.msg);
        return false;
    }
    l->tls = tl;
    return true;
}
