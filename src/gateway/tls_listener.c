/*
 * tls_listener.c — a TLS listener's contexts (certificates by SNI, ALPN,
 * protocol and cipher policy, client certificates), its session-ticket
 * keys, and the accept step. See tls_listener.h for ownership.
 *
 * Policy (Mozilla "intermediate"): TLS 1.2 and 1.3 only; ECDHE (and DHE
 * with the built-in ffdhe groups) AEAD suites for 1.2, OpenSSL's default
 * suites for 1.3; groups X25519, P-256, P-384; the client's cipher order
 * (no server preference); no compression, no renegotiation; tickets only
 * (no server-side session cache: it would be per generation and locked).
 */
#include "gateway/tls_listener.h"

#include "core/log.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CIPHERS_TLS12                                                                              \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                                   \
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
#define GROUPS "X25519:P-256:P-384"

/* ---- ticket keys ---- */

struct tkey {
    unsigned char name[16], hmac[32], aes[32];
    uint64_t born; /* monotonic seconds */
};

/* An immutable set of keys: k[0] encrypts, all decrypt. */
struct tring {
    uint32_t n;
    struct tkey k[PT_TICKET_FILE_MAX_KEYS];
    struct tring *retired_next;
    uint64_t retired_at;
};

/* The process-wide store: published by pointer, replaced (never changed)
 * on rotation; a replaced set is freed 10 minutes later, long after any
 * handshake that loaded it finished with it. */
static _Atomic(struct tring *) auto_ring;
static pthread_mutex_t ring_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tring *ring_retired;

static uint64_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

static void ring_rotate(uint64_t now)
{
    pthread_mutex_lock(&ring_mu);
    struct tring *old = atomic_load(&auto_ring);
    if (old && now - old->k[0].born < PT_TICKET_ROTATE_S) {
        pthread_mutex_unlock(&ring_mu);
        return; /* another thread did it */
    }
    struct tring *r = calloc(1, sizeof(*r));
    if (r && RAND_bytes((unsigned char *)&r->k[0], 80) == 1) {
        r->k[0].born = now;
        r->n = 1;
        /* Keys keep decrypting until PT_TICKET_DECRYPT_S after the next
         * one took over. */
        for (uint32_t i = 0; old && i < old->n && r->n < PT_TICKET_FILE_MAX_KEYS; i++) {
            uint64_t stopped = i == 0 ? now : old->k[i - 1].born;
            if (now - stopped < PT_TICKET_DECRYPT_S)
                r->k[r->n++] = old->k[i];
        }
        atomic_store(&auto_ring, r);
        if (old) {
            old->retired_at = now;
            old->retired_next = ring_retired;
            ring_retired = old;
        }
    } else {
        free(r);
    }
    for (struct tring **p = &ring_retired; *p;) {
        if (now - (*p)->retired_at > 600 && *p != atomic_load(&auto_ring)) {
            struct tring *dead = *p;
            *p = dead->retired_next;
            OPENSSL_cleanse(dead, sizeof(*dead));
            free(dead);
        } else {
            p = &(*p)->retired_next;
        }
    }
    pthread_mutex_unlock(&ring_mu);
}

static const struct tring *auto_ring_get(void)
{
    uint64_t now = mono_s();
    struct tring *r = atomic_load(&auto_ring);
    if (!r || now - r->k[0].born >= PT_TICKET_ROTATE_S) {
        ring_rotate(now);
        r = atomic_load(&auto_ring);
    }
    return r;
}

/* ---- per-listener state ---- */

struct sni_entry {
    char *name;   /* lowercase; a wildcard keeps its "*." */
    SSL_CTX *ctx; /* a reference (NULL for the default context's names) */
};

struct tls_srv {
    bool http2;
    bool sni_guard; /* client_ca: a ticket resumes only under the SNI it was issued for */
    struct sni_entry *v;
    uint32_t n;
    struct tring *file_keys; /* ticket_key_file; NULL: the process-wide keys */
};

static int ctx_idx = -1, ssl_idx = -1, hello_idx = -1;
static pthread_once_t idx_once = PTHREAD_ONCE_INIT;

static void srv_free(struct tls_srv *s)
{
    if (!s)
        return;
    for (uint32_t i = 0; i < s->n; i++) {
        free(s->v[i].name);
        SSL_CTX_free(s->v[i].ctx);
    }
    free(s->v);
    if (s->file_keys) {
        OPENSSL_cleanse(s->file_keys, sizeof(*s->file_keys));
        free(s->file_keys);
    }
    free(s);
}

static void srv_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    srv_free(ptr);
}

static void hello_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    free(ptr);
}

static void idx_init(void)
{
    ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, srv_ex_free);
    ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    hello_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, hello_ex_free);
}

/* ---- callbacks (worker threads, during handshakes) ---- */

static bool name_matches(const char *pattern, const char *host)
{
    if (pattern[0] == '*' && pattern[1] == '.') {
        /* One label: *.example.com matches a.example.com, not a.b.example.com. */
        const char *dot = strchr(host, '.');
        return dot && dot != host && strcasecmp(dot + 1, pattern + 2) == 0;
    }
    return strcasecmp(pattern, host) == 0;
}

static int servername_cb(SSL *s, int *alert, void *arg)
{
    (void)alert, (void)arg;
    struct tls_srv *srv = SSL_get_ex_data(s, ssl_idx);
    const char *host = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (!srv || !host)
        return SSL_TLSEXT_ERR_OK; /* the default certificate */
    const struct sni_entry *hit = NULL;
    for (uint32_t pass = 0; pass < 2 && !hit; pass++) {
        for (uint32_t i = 0; i < srv->n; i++) {
            bool wild = srv->v[i].name[0] == '*';
            if (wild == (pass == 1) && name_matches(srv->v[i].name, host)) {
                hit = &srv->v[i];
                break;
            }
        }
    }
    if (hit && hit->ctx && !SSL_set_SSL_CTX(s, hit->ctx))
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

static const unsigned char alpn_h2[] = "\x02h2\x08http/1.1";
static const unsigned char alpn_h1[] = "\x08http/1.1";

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)arg;
    struct tls_srv *srv = SSL_get_ex_data(s, ssl_idx);
    bool h2 = srv && srv->http2;
    const unsigned char *ours = h2 ? alpn_h2 : alpn_h1;
    unsigned int ourslen = h2 ? sizeof(alpn_h2) - 1 : sizeof(alpn_h1) - 1;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, ourslen, in, inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* no common protocol: carry on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static int ticket_key_cb(SSL *s, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                         EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    struct tls_srv *srv = SSL_get_ex_data(s, ssl_idx);
    const struct tring *r = srv && srv->file_keys ? srv->file_keys : auto_ring_get();
    if (!r || r->n == 0)
        return 0; /* no key: no ticket / full handshake */
    const struct tkey *k = NULL;
    int rc = 1;
    if (enc) {
        k = &r->k[0];
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, k->name, 16);
    } else {
        for (uint32_t i = 0; i < r->n && !k; i++)
            if (memcmp(key_name, r->k[i].name, 16) == 0)
                k = &r->k[i];
        if (!k)
            return 0;
        if (k != &r->k[0])
            rc = 2; /* an older key: resume, and issue a ticket under the current one */
    }
    OSSL_PARAM params[3];
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, 32);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_CTX_set_params(hctx, params))
        return -1;
    int ok = enc ? EVP_EncryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv)
                 : EVP_DecryptInit_ex(ectx, EVP_aes_256_cbc(), NULL, k->aes, iv);
    return ok == 1 ? rc : -1;
}

/* On a client_ca listener: remembers the SNI of this ClientHello (before
 * any session is looked at), so that a ticket issued under another name
 * is not resumed (nginx CVE-2025-23419). */
static int client_hello_cb(SSL *s, int *alert, void *arg)
{
    (void)alert, (void)arg;
    const unsigned char *p = NULL;
    size_t len = 0;
    char *name = NULL;
    /* server_name: list length(2), type(1), name length(2), name */
    if (SSL_client_hello_get0_ext(s, TLSEXT_TYPE_server_name, &p, &len) && len > 5 &&
        p[2] == TLSEXT_NAMETYPE_host_name) {
        size_t n = ((size_t)p[3] << 8) | p[4];
        if (n <= len - 5 && n > 0 && !memchr(p + 5, 0, n))
            name = strndup((const char *)p + 5, n);
    }
    char *prev = SSL_get_ex_data(s, hello_idx);
    free(prev);
    SSL_set_ex_data(s, hello_idx, name);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static SSL_TICKET_RETURN ticket_dec_cb(SSL *s, SSL_SESSION *ss, const unsigned char *keyname,
                                       size_t keyname_len, SSL_TICKET_STATUS status, void *arg)
{
    (void)keyname, (void)keyname_len, (void)arg;
    switch (status) {
    case SSL_TICKET_SUCCESS:
    case SSL_TICKET_SUCCESS_RENEW:
        break;
    case SSL_TICKET_EMPTY:
    case SSL_TICKET_NO_DECRYPT:
    case SSL_TICKET_NONE:
        return SSL_TICKET_RETURN_IGNORE_RENEW;
    default:
        return SSL_TICKET_RETURN_ABORT;
    }
    struct tls_srv *srv = SSL_get_ex_data(s, ssl_idx);
    if (srv && srv->sni_guard) {
        const char *was = SSL_SESSION_get0_hostname(ss);
        const char *now = SSL_get_ex_data(s, hello_idx);
        bool same = (!was && !now) || (was && now && strcasecmp(was, now) == 0);
        if (!same)
            return SSL_TICKET_RETURN_IGNORE_RENEW; /* a full handshake, client cert checked */
    }
    return status == SSL_TICKET_SUCCESS_RENEW ? SSL_TICKET_RETURN_USE_RENEW : SSL_TICKET_RETURN_USE;
}

/* client_auth optional: any certificate (or none) lets the handshake
 * finish; SSL_get_verify_result keeps the verdict for the filters. */
static int verify_optional(int preverify_ok, X509_STORE_CTX *x)
{
    (void)preverify_ok, (void)x;
    return 1;
}

/* ---- building ---- */

static void fail(struct pt_tls_build_error *e, enum pt_tls_err_at at, uint32_t index,
                 const char *fmt, const char *arg)
{
    e->at = at;
    e->index = index;
    char reason[160] = "";
    unsigned long code = ERR_peek_last_error();
    if (code) {
        const char *r = ERR_reason_error_string(code);
        snprintf(reason, sizeof(reason), " (OpenSSL: %s)", r ? r : "unknown error");
    }
    ERR_clear_error();
    int n = snprintf(e->msg, sizeof(e->msg), fmt, arg);
    if (n >= 0 && (size_t)n < sizeof(e->msg))
        snprintf(e->msg + n, sizeof(e->msg) - (size_t)n, "%s", reason);
}

/* A readable regular file, or a message saying why not. */
static bool readable(const char *path, struct pt_tls_build_error *e, enum pt_tls_err_at at,
                     uint32_t index)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        e->at = at;
        e->index = index;
        snprintf(e->msg, sizeof(e->msg), "cannot read `%s`: %s", path, strerror(errno));
        return false;
    }
    fclose(f);
    return true;
}

/* SHA-256 over what decides trust in a resumed session: client_auth and
 * the client_ca file's bytes (not its path, nor the listener's name, so
 * instances in other directories or naming their listeners otherwise
 * resume each other's sessions with a shared ticket_key_file). False when
 * the file cannot be read. */
static bool sid_context(const struct pt_tls_listener *tl, unsigned char *md, unsigned int *mdlen)
{
    EVP_MD_CTX *d = EVP_MD_CTX_new();
    char head[64];
    int n =
        snprintf(head, sizeof(head), "portico|%d|%d|", (int)tl->client_auth, tl->client_ca != NULL);
    bool ok = d && EVP_DigestInit_ex(d, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(d, head, (size_t)n) == 1;
    if (ok && tl->client_ca) {
        FILE *f = fopen(tl->client_ca, "rb");
        ok = f != NULL;
        char buf[4096];
        size_t got;
        while (ok && (got = fread(buf, 1, sizeof(buf), f)) > 0)
            ok = EVP_DigestUpdate(d, buf, got) == 1;
        if (f) {
            ok = ok && !ferror(f);
            fclose(f);
        }
    }
    ok = ok && EVP_DigestFinal_ex(d, md, mdlen) == 1;
    EVP_MD_CTX_free(d);
    return ok;
}

static SSL_CTX *ctx_new(const struct pt_tls_listener *tl, struct pt_tls_build_error *e)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        fail(e, PT_TLS_ERR_OTHER, 0, "%s", "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_IGNORE_UNEXPECTED_EOF);
    SSL_CTX_clear_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, (long)tl->session_timeout_s);
    SSL_CTX_set_dh_auto(ctx, 1);
    if (!SSL_CTX_set_cipher_list(ctx, CIPHERS_TLS12) || !SSL_CTX_set1_groups_list(ctx, GROUPS)) {
        fail(e, PT_TLS_ERR_OTHER, 0, "%s", "cannot set the cipher policy");
        SSL_CTX_free(ctx);
        return NULL;
    }
    /* Sessions resume only under the same client-auth set-up: the context
     * id names the mode and the CAs themselves (a reload that drops a CA
     * from the same file must not resume sessions it verified; a listener
     * without client_ca never hands its sessions to one with it). Across
     * SNI names on a client_ca listener, ticket_dec_cb refuses them. */
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (tl->client_ca && !readable(tl->client_ca, e, PT_TLS_ERR_CLIENT_CA, 0))
        goto bad;
    if (!sid_context(tl, md, &mdlen)) {
        fail(e, PT_TLS_ERR_CLIENT_CA, 0, "cannot read `%s`", tl->client_ca);
        goto bad;
    }
    SSL_CTX_set_session_id_context(ctx, md,
                                   mdlen > SSL_MAX_SID_CTX_LENGTH ? SSL_MAX_SID_CTX_LENGTH : mdlen);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    SSL_CTX_set_session_ticket_cb(ctx, NULL, ticket_dec_cb, NULL);
    if (tl->client_ca) {
        if (!readable(tl->client_ca, e, PT_TLS_ERR_CLIENT_CA, 0))
            goto bad;
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(tl->client_ca);
        if (!names || !SSL_CTX_load_verify_locations(ctx, tl->client_ca, NULL)) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            fail(e, PT_TLS_ERR_CLIENT_CA, 0, "`%s` holds no usable CA certificate", tl->client_ca);
            goto bad;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
        int mode = SSL_VERIFY_PEER;
        if (tl->client_auth == PT_CLIENT_AUTH_REQUIRED)
            mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
        /* optional: a certificate that fails verification does not fail
         * the handshake; the connection shows it unverified (core/tls.h). */
        SSL_CTX_set_verify(ctx, mode,
                           tl->client_auth == PT_CLIENT_AUTH_OPTIONAL ? verify_optional : NULL);
        SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
    }
    return ctx;
bad:
    SSL_CTX_free(ctx);
    return NULL;
}

/* Certificates with the same names share a context (one per key type). */
struct group {
    SSL_CTX *ctx;
    char **names;
    uint32_t nnames;
    int key_types[4];
    uint32_t nkeys;
};

static void names_free(char **v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static bool names_push(char ***v, uint32_t *n, const char *s, size_t len)
{
    char **nv = realloc(*v, (*n + 1) * sizeof(**v));
    if (!nv)
        return false;
    *v = nv;
    char *d = strndup(s, len);
    if (!d)
        return false;
    for (char *p = d; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    nv[(*n)++] = d;
    return true;
}

/* The names a certificate serves: its DNS SANs, else its subject CN. */
static bool cert_names(X509 *x, char ***v, uint32_t *n)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    bool ok = true;
    for (int i = 0; ok && sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS)
            continue;
        const char *d = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
        size_t len = (size_t)ASN1_STRING_length(g->d.dNSName);
        if (len && !memchr(d, 0, len))
            ok = names_push(v, n, d, len);
    }
    GENERAL_NAMES_free(sans);
    if (!ok || *n > 0)
        return ok;
    X509_NAME *subj = X509_get_subject_name(x);
    int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
    if (idx < 0)
        return true;
    unsigned char *u = NULL;
    int len = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx)));
    if (len > 0 && !memchr(u, 0, (size_t)len))
        ok = names_push(v, n, (const char *)u, (size_t)len);
    OPENSSL_free(u);
    return ok;
}

static bool same_names(char **a, uint32_t na, char **b, uint32_t nb)
{
    if (na != nb)
        return false;
    for (uint32_t i = 0; i < na; i++) {
        bool found = false;
        for (uint32_t j = 0; j < nb && !found; j++)
            found = strcmp(a[i], b[j]) == 0;
        if (!found)
            return false;
    }
    return true;
}

static X509 *read_cert(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    return x;
}

static EVP_PKEY *read_key(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, (void *)"");
    fclose(f);
    return k;
}

/* Loads certificate i into its group's context (a new group when no
 * existing one has the same names and lacks this key type). */
static bool load_cert(const struct pt_tls_listener *tl, const char *name, uint32_t i,
                      struct group *gs, uint32_t *ngs, struct pt_tls_build_error *e)
{
    const struct pt_tls_cert_cfg *cc = &tl->certs[i];
    if (!readable(cc->cert, e, PT_TLS_ERR_CERT, i) || !readable(cc->key, e, PT_TLS_ERR_KEY, i))
        return false;
    X509 *x = read_cert(cc->cert);
    if (!x) {
        fail(e, PT_TLS_ERR_CERT, i, "`%s` holds no PEM certificate", cc->cert);
        return false;
    }
    EVP_PKEY *k = read_key(cc->key);
    bool ok = false;
    char **names = NULL;
    uint32_t nnames = 0;
    if (!k) {
        fail(e, PT_TLS_ERR_KEY, i, "`%s` holds no PEM private key (or it is encrypted)", cc->key);
        goto out;
    }
    if (X509_check_private_key(x, k) != 1) {
        fail(e, PT_TLS_ERR_KEY, i, "the key does not match the certificate `%s`", cc->cert);
        goto out;
    }
    if (!cert_names(x, &names, &nnames)) {
        fail(e, PT_TLS_ERR_OTHER, i, "%s", "out of memory");
        goto out;
    }
    int kt = EVP_PKEY_get_base_id(k);
    struct group *g = NULL;
    for (uint32_t j = 0; j < *ngs && !g; j++) {
        bool has = false;
        for (uint32_t t = 0; t < gs[j].nkeys; t++)
            has |= gs[j].key_types[t] == kt;
        if (!has && gs[j].nkeys < 4 && same_names(gs[j].names, gs[j].nnames, names, nnames))
            g = &gs[j];
    }
    if (!g) {
        g = &gs[*ngs];
        memset(g, 0, sizeof(*g));
        g->ctx = ctx_new(tl, e);
        if (!g->ctx)
            goto out;
        g->names = names;
        g->nnames = nnames;
        names = NULL;
        nnames = 0;
        (*ngs)++;
    }
    if (SSL_CTX_use_certificate_chain_file(g->ctx, cc->cert) != 1) {
        fail(e, PT_TLS_ERR_CERT, i, "cannot load the certificate chain `%s`", cc->cert);
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(g->ctx, k) != 1 || SSL_CTX_check_private_key(g->ctx) != 1) {
        fail(e, PT_TLS_ERR_KEY, i, "the key does not match the certificate `%s`", cc->cert);
        goto out;
    }
    g->key_types[g->nkeys++] = kt;
    ok = true;
out:
    names_free(names, nnames);
    X509_free(x);
    EVP_PKEY_free(k);
    return ok;
}

static bool load_ticket_keys(const struct pt_tls_listener *tl, struct tls_srv *srv,
                             struct pt_tls_build_error *e)
{
    if (!tl->ticket_key_file)
        return true;
    if (!readable(tl->ticket_key_file, e, PT_TLS_ERR_TICKETS, 0))
        return false;
    FILE *f = fopen(tl->ticket_key_file, "rb");
    unsigned char buf[PT_TICKET_KEY_BYTES * PT_TICKET_FILE_MAX_KEYS + 1];
    size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
    if (f)
        fclose(f);
    bool ok = n > 0 && n % PT_TICKET_KEY_BYTES == 0 && n < sizeof(buf);
    if (ok && (srv->file_keys = calloc(1, sizeof(*srv->file_keys))) != NULL) {
        srv->file_keys->n = (uint32_t)(n / PT_TICKET_KEY_BYTES);
        for (uint32_t i = 0; i < srv->file_keys->n; i++) {
            const unsigned char *p = buf + i * PT_TICKET_KEY_BYTES;
            memcpy(srv->file_keys->k[i].name, p, 16);
            memcpy(srv->file_keys->k[i].hmac, p + 16, 32);
            memcpy(srv->file_keys->k[i].aes, p + 48, 32);
        }
    }
    OPENSSL_cleanse(buf, sizeof(buf));
    if (!ok) {
        e->at = PT_TLS_ERR_TICKETS;
        e->index = 0;
        snprintf(e->msg, sizeof(e->msg),
                 "`%s` must hold 1 to %u keys of %u bytes each (e.g. `openssl rand 80 > %s`); "
                 "it has %zu bytes",
                 tl->ticket_key_file, PT_TICKET_FILE_MAX_KEYS, PT_TICKET_KEY_BYTES,
                 tl->ticket_key_file, n);
        return false;
    }
    if (!srv->file_keys) {
        fail(e, PT_TLS_ERR_OTHER, 0, "%s", "out of memory");
        return false;
    }
    return true;
}

/* The lookup table: every group's names, in certificate order. */
static bool srv_fill(struct tls_srv *srv, struct group *gs, uint32_t ngs)
{
    uint32_t total = 0;
    for (uint32_t j = 0; j < ngs; j++)
        total += gs[j].nnames;
    srv->v = calloc(total ? total : 1, sizeof(*srv->v));
    if (!srv->v)
        return false;
    for (uint32_t j = 0; j < ngs; j++) {
        for (uint32_t t = 0; t < gs[j].nnames; t++) {
            struct sni_entry *en = &srv->v[srv->n++];
            en->name = gs[j].names[t];
            gs[j].names[t] = NULL;
            if (j > 0) {
                SSL_CTX_up_ref(gs[j].ctx);
                en->ctx = gs[j].ctx;
            }
        }
    }
    return true;
}

int pt_tls_listener_build(struct pt_tls_listener *tl, const char *name, bool http2,
                          struct pt_tls_build_error *e)
{
    pt_tls_global_init();
    pthread_once(&idx_once, idx_init);
    memset(e, 0, sizeof(*e));
    ERR_clear_error();
    tl->ctx = NULL;
    if (ctx_idx < 0 || ssl_idx < 0 || hello_idx < 0 || tl->ncerts == 0) {
        fail(e, PT_TLS_ERR_OTHER, 0, "%s",
             tl->ncerts ? "cannot set up OpenSSL" : "no certificates");
        return -1;
    }
    struct group *gs = calloc(tl->ncerts, sizeof(*gs));
    struct tls_srv *srv = calloc(1, sizeof(*srv));
    uint32_t ngs = 0;
    bool ok = gs && srv;
    if (!ok)
        fail(e, PT_TLS_ERR_OTHER, 0, "%s", "out of memory");
    for (uint32_t i = 0; ok && i < tl->ncerts; i++)
        ok = load_cert(tl, name, i, gs, &ngs, e);
    if (ok) {
        srv->http2 = http2;
        srv->sni_guard = tl->client_ca != NULL;
        ok = load_ticket_keys(tl, srv, e);
    }
    if (ok && !srv_fill(srv, gs, ngs)) {
        fail(e, PT_TLS_ERR_OTHER, 0, "%s", "out of memory");
        ok = false;
    }
    if (ok && !SSL_CTX_set_ex_data(gs[0].ctx, ctx_idx, srv)) {
        fail(e, PT_TLS_ERR_OTHER, 0, "%s", "cannot set up OpenSSL");
        ok = false;
    }
    if (ok) {
        SSL_CTX_set_tlsext_servername_callback(gs[0].ctx, servername_cb);
        tl->ctx = gs[0].ctx;
        srv = NULL; /* the default context owns it now */
    }
    srv_free(srv);
    for (uint32_t j = 0; gs && j < ngs; j++) {
        names_free(gs[j].names, gs[j].nnames);
        if (j > 0 || !ok)
            SSL_CTX_free(gs[j].ctx); /* the table holds its references */
    }
    free(gs);
    return ok ? 0 : -1;
}

void pt_tls_listener_free(struct pt_tls_listener *tl)
{
    if (tl && tl->ctx) {
        SSL_CTX_free(tl->ctx);
        tl->ctx = NULL;
    }
}

struct pt_tls *pt_tls_listener_accept(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io)
{
    struct pt_tls *t = pt_tls_new_server(ctx, loop, io);
    if (t)
        SSL_set_ex_data(t->ssl, ssl_idx, SSL_CTX_get_ex_data(ctx, ctx_idx));
    return t;
}
