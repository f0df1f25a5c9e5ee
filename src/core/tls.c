/*
 * tls.c — TLS over a loop stream socket: a BIO whose I/O is the loop's,
 * a side buffer for ciphertext the socket cannot take yet, and the
 * connection facts (SNI, ALPN, peer certificate) a filter may ask for.
 * See tls.h for the contract.
 */
#include "core/tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <pthread.h>

static BIO_METHOD *io_method;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static __thread char last_error[256];

static void set_last_error(const char *fallback)
{
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, last_error, sizeof(last_error));
    else
        snprintf(last_error, sizeof(last_error), "%s", fallback);
    ERR_clear_error();
}

const char *pt_tls_last_error(void)
{
    return last_error[0] ? last_error : "no TLS error";
}

/* ---- the BIO: ciphertext through pt_io ---- */

static bool wpend_append(struct pt_tls *t, const char *p, size_t n)
{
    if (t->wpend_off > 0 && t->wpend_off == t->wpend_len)
        t->wpend_off = t->wpend_len = 0;
    if ((size_t)t->wpend_cap - t->wpend_len < n) {
        /* Slide what is left to the front before growing. */
        if (t->wpend_off > 0) {
            memmove(t->wpend, t->wpend + t->wpend_off, t->wpend_len - t->wpend_off);
            t->wpend_len -= t->wpend_off;
            t->wpend_off = 0;
        }
        if ((size_t)t->wpend_cap - t->wpend_len < n) {
            size_t cap = t->wpend_cap ? t->wpend_cap : 4096;
            while (cap - t->wpend_len < n)
                cap *= 2;
            if (cap > UINT32_MAX)
                return false;
            char *nb = realloc(t->wpend, cap);
            if (!nb)
                return false;
            t->wpend = nb;
            t->wpend_cap = (uint32_t)cap;
        }
    }
    memcpy(t->wpend + t->wpend_len, p, n);
    t->wpend_len += (uint32_t)n;
    return true;
}

/* Sends queued ciphertext: 1 when the queue is empty, 0 when the socket
 * is full, -1 on a socket error (t->werr set). */
static int wpend_flush(struct pt_tls *t)
{
    while (t->wpend_off < t->wpend_len) {
        struct iovec iov = {t->wpend + t->wpend_off, t->wpend_len - t->wpend_off};
        ssize_t n = pt_io_sendv(t->loop, t->io, &iov, 1);
        if (n > 0) {
            t->wpend_off += (uint32_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 0;
        t->werr = n < 0 ? errno : EPIPE;
        return -1;
    }
    t->wpend_off = t->wpend_len = 0;
    if (t->wpend_cap > 16384) { /* a congested burst is over: give it back */
        free(t->wpend);
        t->wpend = NULL;
        t->wpend_cap = 0;
    }
    if (t->shut_sent && !t->eof && t->io->fd >= 0)
        (void)pt_io_shutdown_wr(t->loop, t->io);
    return 1;
}

static int bio_write_ex(BIO *b, const char *p, size_t n, size_t *written)
{
    struct pt_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->werr)
        return 0;
    size_t off = 0;
    if (t->wpend_off == t->wpend_len) {
        while (off < n) {
            struct iovec iov = {(void *)(p + off), n - off};
            ssize_t s = pt_io_sendv(t->loop, t->io, &iov, 1);
            if (s > 0) {
                off += (size_t)s;
                continue;
            }
            if (s < 0 && errno == EINTR)
                continue;
            if (s < 0 && errno == EAGAIN)
                break;
            t->werr = s < 0 ? errno : EPIPE;
            return 0;
        }
    }
    /* Never a retry for OpenSSL: what the socket did not take waits here
     * (bounded by PT_TLS_WRITE_CHUNK per sendv, plus handshake flights). */
    if (off < n && !wpend_append(t, p + off, n - off)) {
        t->werr = ENOMEM;
        return 0;
    }
    *written = n;
    return 1;
}

static int bio_read_ex(BIO *b, char *p, size_t n, size_t *got)
{
    struct pt_tls *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (t->pre) {
        size_t k = t->pre_len - t->pre_off < n ? t->pre_len - t->pre_off : n;
        memcpy(p, t->pre + t->pre_off, k);
        t->pre_off += (uint32_t)k;
        t->bytes += k;
        if (t->pre_off == t->pre_len) {
            free(t->pre);
            t->pre = NULL;
        }
        *got = k;
        return 1;
    }
    for (;;) {
        ssize_t r = pt_io_recv(t->loop, t->io, p, n);
        if (r > 0) {
            t->bytes += (uint64_t)r;
            t->short_read = (size_t)r < n;
            *got = (size_t)r;
            return 1;
        }
        if (r == 0) {
            t->eof = t->tcp_eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            t->read_blocked = true;
            BIO_set_retry_read(b);
            return 0;
        }
        t->err = errno;
        return 0;
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b, (void)num, (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1;
    case BIO_CTRL_PUSH:
    case BIO_CTRL_POP:
        return 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void init_once_fn(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    io_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "portico-loop");
    if (!io_method)
        return;
    BIO_meth_set_write_ex(io_method, bio_write_ex);
    BIO_meth_set_read_ex(io_method, bio_read_ex);
    BIO_meth_set_ctrl(io_method, bio_ctrl);
    BIO_meth_set_create(io_method, bio_create);
}

void pt_tls_global_init(void)
{
    pthread_once(&init_once, init_once_fn);
}

/* ---- connections ---- */

static struct pt_tls *tls_new(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io)
{
    pt_tls_global_init();
    if (!io_method)
        return NULL;
    struct pt_tls *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->loop = loop;
    t->io = io;
    t->ssl = SSL_new(ctx);
    t->bio = BIO_new(io_method);
    if (!t->ssl || !t->bio) {
        SSL_free(t->ssl);
        BIO_free(t->bio);
        free(t);
        return NULL;
    }
    BIO_set_data(t->bio, t);
    SSL_set_bio(t->ssl, t->bio, t->bio);
    /* A peer's TCP FIN without close_notify is an end of input like any
     * other: HTTP framing decides whether a message was cut, and where a
     * message ends at close, pt_tls_closed_cleanly says whether the peer
     * (not someone in between) ended it. */
    SSL_set_options(t->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
    SSL_set_mode(t->ssl, SSL_MODE_RELEASE_BUFFERS);
    /* Read whole socket bursts, not a record header then its body: one
     * recv per burst instead of two per record. */
    SSL_set_read_ahead(t->ssl, 1);
    return t;
}

struct pt_tls *pt_tls_new_server(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io)
{
    struct pt_tls *t = tls_new(ctx, loop, io);
    if (t)
        SSL_set_accept_state(t->ssl);
    return t;
}

struct pt_tls *pt_tls_new_client(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io,
                                 const char *sni, SSL_SESSION *session)
{
    struct pt_tls *t = tls_new(ctx, loop, io);
    if (!t)
        return NULL;
    SSL_set_connect_state(t->ssl);
    if ((sni && sni[0] && !SSL_set_tlsext_host_name(t->ssl, sni)) ||
        (session && !SSL_set_session(t->ssl, session))) {
        pt_tls_free(t);
        return NULL;
    }
    return t;
}

int pt_tls_push_input(struct pt_tls *t, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    if (t->pre || n > UINT32_MAX)
        return -1;
    t->pre = malloc(n);
    if (!t->pre)
        return -1;
    memcpy(t->pre, p, n);
    t->pre_len = (uint32_t)n;
    t->pre_off = 0;
    return 0;
}

void pt_tls_free(struct pt_tls *t)
{
    if (!t)
        return;
    /* OpenSSL forgets (marks not resumable) the session of a connection
     * freed without a shutdown; a connection that worked and is simply
     * closed keeps its session for the next handshake. */
    if (t->handshake_done && !t->err && !t->werr) {
        SSL_set_quiet_shutdown(t->ssl, 1);
        (void)SSL_shutdown(t->ssl);
    }
    ERR_clear_error();
    free(t->pre);
    SSL_free(t->ssl); /* frees the BIO too */
    free(t->wpend);
    free(t->info);
    free(t);
}

/* Maps an OpenSSL failure to errno semantics; `got` bytes already moved. */
static ssize_t ssl_fail(struct pt_tls *t, int rc, size_t got, bool writing)
{
    int e = SSL_get_error(t->ssl, rc);
    switch (e) {
    case SSL_ERROR_WANT_READ:
        if (writing)
            t->write_wants_read = true;
        if (got)
            return (ssize_t)got;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_WANT_WRITE: /* our BIO never asks, but be safe */
        if (got)
            return (ssize_t)got;
        errno = EAGAIN;
        return -1;
    case SSL_ERROR_ZERO_RETURN:
        /* SSL_OP_IGNORE_UNEXPECTED_EOF reports a bare FIN this way too:
         * only a close_notify read before the socket's EOF is clean. */
        if (!t->tcp_eof)
            t->close_notify = true;
        t->eof = true;
        return (ssize_t)got;
    default:
        break;
    }
    if (e == SSL_ERROR_SYSCALL && t->werr && !t->err) {
        /* The socket refused our bytes: the write side is broken, but
         * what the peer sent (an answer, an alert saying why) can still
         * be read. Reading code sees the read side's own fate. */
        ERR_clear_error();
        if (!writing && !t->handshake_done)
            t->err = t->werr;
        if (got)
            return (ssize_t)got;
        errno = t->werr;
        return -1;
    }
    if (!t->err) {
        if (e == SSL_ERROR_SYSCALL && t->eof && ERR_peek_error() == 0) {
            ERR_clear_error();
            return (ssize_t)got; /* plain EOF */
        }
        set_last_error(e == SSL_ERROR_SYSCALL ? "connection lost" : "TLS protocol error");
        t->err = EPROTO;
    } else {
        ERR_clear_error();
    }
    if (got)
        return (ssize_t)got;
    errno = t->err;
    return -1;
}

int pt_tls_handshake(struct pt_tls *t)
{
    if (t->handshake_done)
        return 1;
    if (t->err || t->werr) {
        errno = t->err ? t->err : t->werr;
        return -1;
    }
    if (pt_tls_write_pending(t) && wpend_flush(t) < 0) {
        errno = t->werr;
        return -1;
    }
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->handshake_done = true;
        return wpend_flush(t) < 0 ? (errno = t->werr, -1) : 1;
    }
    ssize_t r = ssl_fail(t, rc, 0, false);
    if (r < 0 && errno == EAGAIN)
        return 0;
    if (r == 0 && !t->err) {
        set_last_error("connection closed during the handshake");
        t->err = ECONNRESET;
    }
    errno = t->err ? t->err : t->werr ? t->werr : EPROTO;
    return -1;
}

ssize_t pt_tls_recv(struct pt_tls *t, void *buf, size_t len)
{
    if (t->err) {
        errno = t->err;
        return -1;
    }
    /* A queued flight goes first; a broken write side does not stop us
     * reading what the peer already sent. */
    if (pt_tls_write_pending(t))
        (void)wpend_flush(t);
    size_t got = 0;
    t->read_blocked = false;
    t->short_read = false;
    /* Fill until the socket would block: a short result then means
     * drained, as the codecs' edge-triggered reads assume. */
    while (got < len) {
        size_t n = 0;
        int rc = SSL_read_ex(t->ssl, (char *)buf + got, len - got, &n);
        if (rc == 1) {
            got += n;
            t->handshake_done = true;
            /* The socket gave less than asked and nothing is left inside
             * OpenSSL: drained, so skip the read that would say EAGAIN. */
            if (t->short_read && !SSL_has_pending(t->ssl))
                break;
            continue;
        }
        ssize_t r = ssl_fail(t, rc, got, false);
        int saved = errno;
        /* A handshake flight or a session ticket may be queued. */
        if (pt_tls_write_pending(t))
            (void)wpend_flush(t);
        errno = saved;
        return r;
    }
    return (ssize_t)got;
}

ssize_t pt_tls_sendv(struct pt_tls *t, const struct iovec *iov, int n)
{
    if (t->err || t->werr) {
        errno = t->werr ? t->werr : t->err;
        return -1;
    }
    if (pt_tls_write_pending(t)) {
        int f = wpend_flush(t);
        if (f < 0) {
            errno = t->werr;
            return -1;
        }
        if (f == 0) {
            errno = EAGAIN;
            return -1;
        }
    }
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += iov[i].iov_len;
    if (total > PT_TLS_WRITE_CHUNK)
        total = PT_TLS_WRITE_CHUNK;
    /* Small pieces (a head and a short body) go as one record: one
     * encryption and one send instead of one per piece. */
    char small[4096];
    if (n > 1 && total <= sizeof(small)) {
        size_t off = 0;
        for (int i = 0; i < n && off < total; i++) {
            size_t k = iov[i].iov_len < total - off ? iov[i].iov_len : total - off;
            memcpy(small + off, iov[i].iov_base, k);
            off += k;
        }
        size_t w = 0;
        int rc = SSL_write_ex(t->ssl, small, total, &w);
        if (rc == 1) {
            t->handshake_done = true;
            return (ssize_t)w;
        }
        return ssl_fail(t, rc, 0, true);
    }
    size_t done = 0;
    for (int i = 0; i < n && done < total; i++) {
        size_t k = iov[i].iov_len < total - done ? iov[i].iov_len : total - done;
        if (k == 0)
            continue;
        size_t w = 0;
        int rc = SSL_write_ex(t->ssl, iov[i].iov_base, k, &w);
        if (rc != 1)
            return ssl_fail(t, rc, done, true);
        t->handshake_done = true;
        done += w;
        if (pt_tls_write_pending(t))
            break; /* the socket is full: report what was taken */
    }
    return (ssize_t)done;
}

int pt_tls_shutdown_wr(struct pt_tls *t)
{
    if (t->shut_sent)
        return 0;
    t->shut_sent = true;
    if (!t->err && !t->werr && t->handshake_done) {
        (void)SSL_shutdown(t->ssl); /* queues close_notify through the BIO */
        ERR_clear_error();
    }
    if (t->err || t->werr)
        return -1;
    if (pt_tls_write_pending(t))
        return wpend_flush(t) < 0 ? -1 : 0; /* shuts the socket when drained */
    return pt_io_shutdown_wr(t->loop, t->io);
}

uint32_t pt_tls_events(struct pt_tls *t, uint32_t events)
{
    if (t->write_wants_read && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) {
        t->write_wants_read = false;
        events |= EPOLLOUT;
    }
    if (pt_tls_write_pending(t) && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) {
        int f = wpend_flush(t);
        if (f == 0)
            events &= ~(uint32_t)EPOLLOUT; /* still full: nothing to write yet */
        else
            events |= EPOLLIN | EPOLLOUT; /* a read may have waited on this flight */
    }
    return events;
}

bool pt_tls_has_buffered(const struct pt_tls *t)
{
    return SSL_has_pending(t->ssl) != 0 || t->pre != NULL;
}

const char *pt_tls_alpn(const struct pt_tls *t)
{
    const unsigned char *p = NULL;
    unsigned int n = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    if (n == 2 && memcmp(p, "h2", 2) == 0)
        return "h2";
    if (n == 8 && memcmp(p, "http/1.1", 8) == 0)
        return "http/1.1";
    return "";
}

/* ---- connection facts ---- */

#define INFO_POOL 8192

struct info_block {
    struct pt_tls_info info;
    uint32_t used;
    char pool[INFO_POOL];
};

static const char *pool_put(struct info_block *b, const char *s, size_t n)
{
    if (n >= INFO_POOL - b->used)
        return NULL;
    char *d = b->pool + b->used;
    memcpy(d, s, n);
    d[n] = 0;
    b->used += (uint32_t)n + 1;
    return d;
}

static const char *pool_str(struct info_block *b, const char *s)
{
    const char *r = s ? pool_put(b, s, strlen(s)) : NULL;
    return r ? r : "";
}

static void info_names(struct info_block *b, X509 *cert)
{
    struct pt_tls_info *in = &b->info;
    X509_NAME *name = X509_get_subject_name(cert);
    BIO *mem = BIO_new(BIO_s_mem());
    if (mem && name) {
        X509_NAME_print_ex(mem, name, 0, XN_FLAG_RFC2253);
        char *p = NULL;
        long n = BIO_get_mem_data(mem, &p);
        if (n > 0)
            in->subject = pool_put(b, p, (size_t)n);
    }
    BIO_free(mem);
    int idx = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (idx >= 0) {
        ASN1_STRING *d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
        unsigned char *u = NULL;
        int n = ASN1_STRING_to_UTF8(&u, d);
        /* A CN with an embedded NUL would compare as something else. */
        if (n > 0 && memchr(u, 0, (size_t)n) == NULL)
            in->subject_cn = pool_put(b, (const char *)u, (size_t)n);
        OPENSSL_free(u);
    }
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type != GEN_DNS && g->type != GEN_URI)
            continue;
        const ASN1_IA5STRING *s =
            g->type == GEN_DNS ? g->d.dNSName : g->d.uniformResourceIdentifier;
        const char *d = (const char *)ASN1_STRING_get0_data(s);
        size_t n = (size_t)ASN1_STRING_length(s);
        if (memchr(d, 0, n))
            continue;
        const char *v = pool_put(b, d, n);
        if (!v)
            break;
        if (g->type == GEN_DNS && in->nsan_dns < PT_TLS_MAX_SANS)
            in->san_dns[in->nsan_dns++] = v;
        else if (g->type == GEN_URI && in->nsan_uri < PT_TLS_MAX_SANS)
            in->san_uri[in->nsan_uri++] = v;
    }
    GENERAL_NAMES_free(sans);
}

const struct pt_tls_info *pt_tls_get_info(struct pt_tls *t)
{
    if (t->info)
        return t->info;
    if (!t->handshake_done)
        return NULL;
    struct info_block *b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    struct pt_tls_info *in = &b->info;
    in->sni = pool_str(b, SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name));
    in->alpn = pt_tls_alpn(t);
    in->version = SSL_get_version(t->ssl);
    in->cipher = SSL_get_cipher_name(t->ssl);
    in->resumed = SSL_session_reused(t->ssl) != 0;
    in->client_auth = SSL_is_server(t->ssl) && (SSL_get_verify_mode(t->ssl) & SSL_VERIFY_PEER);
    in->subject = in->subject_cn = in->fingerprint = "";
    X509 *cert = SSL_get0_peer_certificate(t->ssl);
    if (cert) {
        in->cert_present = true;
        in->cert_verified = SSL_get_verify_result(t->ssl) == X509_V_OK;
        info_names(b, cert);
        if (!in->subject)
            in->subject = "";
        if (!in->subject_cn)
            in->subject_cn = "";
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        if (X509_digest(cert, EVP_sha256(), md, &mdlen) == 1) {
            char hex[2 * EVP_MAX_MD_SIZE + 1];
            for (unsigned int i = 0; i < mdlen; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
            in->fingerprint = pool_put(b, hex, 2 * mdlen);
            if (!in->fingerprint)
                in->fingerprint = "";
        }
    }
    t->info = in;
    return in;
}
