/*
 * pool_tls.c — TLS on pooled upstream connections: the handshake's set-up
 * (SNI, the name or address the certificate must match, the session
 * offered), its failure reasons, and the per-pool session cache.
 *
 * Session cache: an upstream SSL_CTX keeps no sessions itself
 * (SSL_SESS_CACHE_NO_INTERNAL_STORE); OpenSSL hands each new session (a
 * TLS 1.2 session after the handshake, each TLS 1.3 ticket as it arrives)
 * to new_session(), which keeps a copy as the pool's last one. The pool is
 * per worker and per (address, TLS setting), so no lock; a session made
 * under an older generation's SSL_CTX is still offered (it carries its
 * own parameters; the server decides).
 */
#include "proxy/pool_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdio.h>

static int app_index = -1;
static pthread_once_t app_once = PTHREAD_ONCE_INIT;

static void app_index_init(void)
{
    app_index = SSL_get_ex_new_index(0, "portico uconn", NULL, NULL, NULL);
}

static int new_session(SSL *ssl, SSL_SESSION *sess)
{
    struct pt_uconn *uc = app_index >= 0 ? SSL_get_ex_data(ssl, app_index) : NULL;
    if (!uc || uc->closed || !SSL_SESSION_is_resumable(sess))
        return 0;
    /* A copy: the SSL's own session is marked not resumable when the
     * connection is later closed without a close_notify (as pooled ones
     * are), which would spoil it for the next connection. */
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    if (!copy)
        return 0;
    struct pt_upool *p = uc->pool;
    if (p->tls_session)
        SSL_SESSION_free(p->tls_session);
    p->tls_session = copy;
    return 0; /* OpenSSL keeps its reference to `sess` */
}

void pt_outbound_tls_ctx_init(SSL_CTX *ctx)
{
    pt_tls_global_init();
    pthread_once(&app_once, app_index_init);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session);
}

/* The target's address without the port, for an IP SAN check. */
static bool target_ip(const struct pt_target *t, char *out, size_t len)
{
    if (t->addr.ss_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)&t->addr)->sin_addr, out,
                         (socklen_t)len) != NULL;
    if (t->addr.ss_family == AF_INET6)
        return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&t->addr)->sin6_addr, out,
                         (socklen_t)len) != NULL;
    return false;
}

static bool is_ip_literal(const char *s)
{
    unsigned char b[16];
    return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

pt_slice pt_tls_target_name(const struct pt_upstream_tls *tls, const struct pt_target *t)
{
    if (!tls || tls->sni || !t->name)
        return (pt_slice){NULL, 0};
    /* A host-name target's name is as written, with its port. */
    return (pt_slice){t->name, strcspn(t->name, ":")};
}

int pt_uconn_start_tls(struct pt_uconn *uc, const struct pt_upstream_tls *tls,
                       const struct pt_target *t)
{
    char host[256];
    const char *name = tls->sni;
    pt_slice tn = pt_tls_target_name(tls, t);
    if (!name && tn.len) {
        if (tn.len >= sizeof(host))
            return -EINVAL;
        memcpy(host, tn.p, tn.len);
        host[tn.len] = 0;
        name = host;
    }
    /* SNI carries host names only (RFC 6066 §3). */
    const char *sni = name && !is_ip_literal(name) ? name : NULL;
    struct pt_tls *s =
        pt_tls_new_client(tls->ctx, uc->ob->loop, &uc->io, sni, uc->pool->tls_session);
    if (!s)
        return -ENOMEM;
    SSL_set_ex_data(s->ssl, app_index, uc);
    if (tls->verify) {
        char ip[INET6_ADDRSTRLEN];
        bool ok;
        /* `f*.example.com` matches nothing (RFC 6125 §7.2 discourages
         * partial wildcards; browsers refuse them). */
        SSL_set_hostflags(s->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (sni)
            ok = SSL_set1_host(s->ssl, sni) == 1;
        else if (name)
            ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), name) == 1;
        else
            ok = target_ip(t, ip, sizeof(ip)) &&
                 X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), ip) == 1;
        if (!ok) {
            pt_tls_free(s);
            return -ENOMEM;
        }
    }
    uc->tls = s;
    return 0;
}

static __thread char why_buf[320];

int pt_uconn_handshake(struct pt_uconn *uc, const char **why)
{
    int r = pt_tls_handshake(uc->tls);
    if (r >= 0)
        return r;
    long v = SSL_get_verify_result(uc->tls->ssl);
    const char *reason;
    if (v != X509_V_OK)
        reason = X509_verify_cert_error_string(v); /* "hostname mismatch", ... */
    else if (uc->tls->err == EPROTO)
        reason = pt_tls_last_error();
    else
        reason = uc->tls->err ? strerror(uc->tls->err) : "connection closed";
    snprintf(why_buf, sizeof(why_buf), "upstream TLS handshake failed: %s", reason);
    *why = why_buf;
    return -1;
}
