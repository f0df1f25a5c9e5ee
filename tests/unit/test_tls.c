/* test_tls.c — core/tls.c over real loopback TCP on both I/O backends:
 * the handshake with ALPN and SNI, megabytes each way through small socket
 * buffers (so the BIO's side buffer and EAGAIN paths run), drained reads,
 * close_notify as EOF, the peer certificate's facts (CN, SANs, SHA-256
 * fingerprint, verification) and resumption with a session ticket.
 * Certificates are made here with OpenSSL's API (P-256). */
#include "core/tls.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/x509v3.h>
#include <sys/ioctl.h>

struct side {
    struct pt_io io;
    struct pt_tls *tls;
};

static void on_event(struct pt_loop *loop, struct pt_io *io, uint32_t ev)
{
    struct side *s = pt_container_of(io, struct side, io);
    (void)loop;
    if (s->tls)
        (void)pt_tls_events(s->tls, ev);
}

static EVP_PKEY *ca_key;
static X509 *ca_cert;
static int serial = 1;

static X509 *make_cert(EVP_PKEY *key, const char *cn, const char *san, bool is_ca)
{
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "O", MBSTRING_ASC, (const unsigned char *)"portico test", -1, -1,
                               0);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *issuer = is_ca ? x : ca_cert;
    X509_set_issuer_name(x, X509_get_subject_name(issuer));
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    const char *bc = is_ca ? "critical,CA:TRUE" : "CA:FALSE";
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, bc);
    X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    if (san) {
        e = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }
    X509_sign(x, is_ca ? key : ca_key, EVP_sha256());
    return x;
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x02h2\x08http/1.1";
    (void)ssl, (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, sizeof(ours) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

static SSL_CTX *server_ctx(bool want_client_cert)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *c = make_cert(k, "server.test", "DNS:server.test", false);
    CHECK(SSL_CTX_use_certificate(ctx, c) == 1);
    CHECK(SSL_CTX_use_PrivateKey(ctx, k) == 1);
    X509_free(c);
    EVP_PKEY_free(k);
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"test", 4);
    if (want_client_cert) {
        X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    }
    return ctx;
}

static SSL_CTX *client_ctx(bool with_cert)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca_cert);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_alpn_protos(ctx, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    if (with_cert) {
        EVP_PKEY *k = EVP_EC_gen("P-256");
        X509 *c = make_cert(k, "client-one",
                            "DNS:svc.internal, URI:spiffe://example.org/ns/prod/sa/web", false);
        CHECK(SSL_CTX_use_certificate(ctx, c) == 1);
        CHECK(SSL_CTX_use_PrivateKey(ctx, k) == 1);
        X509_free(c);
        EVP_PKEY_free(k);
    }
    return ctx;
}

/* A connected loopback pair, both non-blocking, with small buffers so
 * that megabytes take many EAGAINs. */
struct conn_pair {
    struct side cl, sv;
};

static void open_pair(struct pt_loop *loop, struct conn_pair *p)
{
    memset(p, 0, sizeof(*p));
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (bind(l, (struct sockaddr *)&sa, len) < 0 || listen(l, 4) < 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) < 0)
        abort();
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int small = 32768;
    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    if (connect(c, (struct sockaddr *)&sa, len) < 0)
        abort();
    int s = accept4(l, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (s < 0)
        abort();
    close(l);
    setsockopt(s, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
    setsockopt(s, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    int fl = 1;
    ioctl(c, FIONBIO, &fl);
    p->cl.io.fd = c;
    p->sv.io.fd = s;
    p->cl.io.cb = p->sv.io.cb = on_event;
    CHECK(pt_loop_add_stream(loop, &p->cl.io, false) == 0);
    CHECK(pt_loop_add_stream(loop, &p->sv.io, false) == 0);
}

static void close_pair(struct pt_loop *loop, struct conn_pair *p)
{
    pt_io_close(loop, &p->cl.io);
    pt_io_close(loop, &p->sv.io);
    pt_loop_run_once(loop, 0);
    pt_tls_free(p->cl.tls);
    pt_tls_free(p->sv.tls);
}

static bool handshake(struct pt_loop *loop, struct conn_pair *p)
{
    int a = 0, b = 0;
    for (int i = 0; i < 2000 && (a != 1 || b != 1); i++) {
        if (a != 1)
            a = pt_tls_handshake(p->cl.tls);
        if (b != 1)
            b = pt_tls_handshake(p->sv.tls);
        if (a < 0 || b < 0) {
            fprintf(stderr, "handshake failed: %s\n", pt_tls_last_error());
            return false;
        }
        pt_loop_run_once(loop, 1);
    }
    return a == 1 && b == 1;
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i * 7 + (i >> 11)) & 0xff);
}

/* Moves `total` bytes from `from` to `to`, two iovec pieces per send;
 * checks every byte. */
static void transfer(struct pt_loop *loop, struct side *from, struct side *to, size_t total)
{
    static char out[100000], in[16384];
    size_t sent = 0, got = 0;
    bool bad = false, short_seen = false;
    for (int i = 0; i < 2000000 && got < total; i++) {
        if (sent < total) {
            size_t n = total - sent < 70000 ? total - sent : 70000;
            for (size_t k = 0; k < n; k++)
                out[k] = (char)pattern(sent + k);
            size_t h = n < 100 ? n : 100;
            struct iovec iov[2] = {{out, h}, {out + h, n - h}};
            ssize_t w = pt_tls_sendv(from->tls, iov, n > h ? 2 : 1);
            if (w > 0)
                sent += (size_t)w;
            else if (errno != EAGAIN)
                CHECK_MSG(false, "send: %s", strerror(errno));
        }
        ssize_t r = pt_tls_recv(to->tls, in, sizeof(in));
        if (r > 0) {
            for (ssize_t k = 0; k < r; k++)
                if ((unsigned char)in[k] != pattern(got + (size_t)k))
                    bad = true;
            got += (size_t)r;
            if ((size_t)r < sizeof(in))
                short_seen = true;
        } else if (r == 0 || errno != EAGAIN) {
            CHECK_MSG(false, "recv: %zd %s", r, strerror(errno));
            break;
        }
        pt_loop_run_once(loop, 0);
    }
    CHECK_EQ_INT(got, total);
    CHECK(!bad);
    (void)short_seen;
}

static void test_transfer_both_ways(enum pt_io_backend be)
{
    struct pt_loop loop;
    CHECK(pt_loop_init_backend(&loop, be) == 0);
    pt_loop_thread_start(&loop);
    SSL_CTX *sctx = server_ctx(false), *cctx = client_ctx(false);
    struct conn_pair p;
    open_pair(&loop, &p);
    p.sv.tls = pt_tls_new_server(sctx, &loop, &p.sv.io);
    p.cl.tls = pt_tls_new_client(cctx, &loop, &p.cl.io, "server.test", NULL);
    CHECK(p.sv.tls && p.cl.tls);
    CHECK(handshake(&loop, &p));
    CHECK_STR(pt_tls_alpn(p.sv.tls), "h2");
    const struct pt_tls_info *in = pt_tls_get_info(p.sv.tls);
    CHECK(in != NULL);
    if (in) {
        CHECK_STR(in->sni, "server.test");
        CHECK_STR(in->version, "TLSv1.3");
        CHECK(!in->cert_present && !in->resumed);
    }
    transfer(&loop, &p.cl, &p.sv, 4u << 20);
    transfer(&loop, &p.sv, &p.cl, 3u << 20);
    /* close_notify, then the socket's FIN: the server reads EOF. */
    CHECK(pt_tls_shutdown_wr(p.cl.tls) == 0);
    char buf[64];
    ssize_t r = -1;
    for (int i = 0; i < 500 && r != 0; i++) {
        r = pt_tls_recv(p.sv.tls, buf, sizeof(buf));
        pt_loop_run_once(&loop, 1);
    }
    CHECK_EQ_INT(r, 0);
    CHECK(pt_tls_closed_cleanly(p.sv.tls));
    close_pair(&loop, &p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    pt_loop_destroy(&loop);
}

/* A FIN without close_notify reads as EOF too, but not as a clean close:
 * whoever cut the TCP stream, it was not the TLS peer. */
static void test_bare_fin_is_eof_but_not_clean(enum pt_io_backend be)
{
    struct pt_loop loop;
    CHECK(pt_loop_init_backend(&loop, be) == 0);
    pt_loop_thread_start(&loop);
    SSL_CTX *sctx = server_ctx(false), *cctx = client_ctx(false);
    struct conn_pair p;
    open_pair(&loop, &p);
    p.sv.tls = pt_tls_new_server(sctx, &loop, &p.sv.io);
    p.cl.tls = pt_tls_new_client(cctx, &loop, &p.cl.io, "server.test", NULL);
    CHECK(handshake(&loop, &p));
    transfer(&loop, &p.sv, &p.cl, 1000);
    CHECK(pt_io_shutdown_wr(&loop, &p.sv.io) == 0); /* the socket's FIN only */
    char buf[64];
    ssize_t r = -1;
    for (int i = 0; i < 500 && r != 0; i++) {
        r = pt_tls_recv(p.cl.tls, buf, sizeof(buf));
        pt_loop_run_once(&loop, 1);
    }
    CHECK_EQ_INT(r, 0);
    CHECK(p.cl.tls->eof);
    CHECK(!pt_tls_closed_cleanly(p.cl.tls));
    close_pair(&loop, &p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    pt_loop_destroy(&loop);
}

static void test_client_cert_and_resumption(enum pt_io_backend be)
{
    struct pt_loop loop;
    CHECK(pt_loop_init_backend(&loop, be) == 0);
    pt_loop_thread_start(&loop);
    SSL_CTX *sctx = server_ctx(true), *cctx = client_ctx(true);
    struct conn_pair p;
    open_pair(&loop, &p);
    p.sv.tls = pt_tls_new_server(sctx, &loop, &p.sv.io);
    p.cl.tls = pt_tls_new_client(cctx, &loop, &p.cl.io, "server.test", NULL);
    CHECK(handshake(&loop, &p));
    const struct pt_tls_info *in = pt_tls_get_info(p.sv.tls);
    CHECK(in && in->cert_present && in->cert_verified);
    if (in && in->cert_present) {
        CHECK_STR(in->subject_cn, "client-one");
        CHECK_STR(in->subject, "CN=client-one,O=portico test");
        CHECK_EQ_INT(strlen(in->fingerprint), 64);
        CHECK_EQ_INT(in->nsan_dns, 1);
        CHECK_EQ_INT(in->nsan_uri, 1);
        if (in->nsan_dns == 1 && in->nsan_uri == 1) {
            CHECK_STR(in->san_dns[0], "svc.internal");
            CHECK_STR(in->san_uri[0], "spiffe://example.org/ns/prod/sa/web");
        }
    }
    /* TLS 1.3 tickets come after the handshake: one byte each way lets the
     * client read them. */
    transfer(&loop, &p.sv, &p.cl, 1);
    transfer(&loop, &p.cl, &p.sv, 1);
    SSL_SESSION *sess = SSL_get1_session(p.cl.tls->ssl);
    CHECK(sess != NULL && SSL_SESSION_is_resumable(sess));
    close_pair(&loop, &p);

    open_pair(&loop, &p);
    p.sv.tls = pt_tls_new_server(sctx, &loop, &p.sv.io);
    p.cl.tls = pt_tls_new_client(cctx, &loop, &p.cl.io, "server.test", sess);
    CHECK(handshake(&loop, &p));
    in = pt_tls_get_info(p.sv.tls);
    CHECK(in && in->resumed);
    /* A resumed session still carries the verified client certificate. */
    CHECK(in && in->cert_present && in->cert_verified && strcmp(in->subject_cn, "client-one") == 0);
    SSL_SESSION_free(sess);
    close_pair(&loop, &p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    pt_loop_destroy(&loop);
}

static void test_handshake_failure(enum pt_io_backend be)
{
    struct pt_loop loop;
    CHECK(pt_loop_init_backend(&loop, be) == 0);
    pt_loop_thread_start(&loop);
    SSL_CTX *sctx = server_ctx(false), *cctx = client_ctx(false);
    SSL_CTX_set_max_proto_version(cctx, TLS1_1_VERSION);
    SSL_CTX_set_security_level(cctx, 0);
    struct conn_pair p;
    open_pair(&loop, &p);
    p.sv.tls = pt_tls_new_server(sctx, &loop, &p.sv.io);
    p.cl.tls = pt_tls_new_client(cctx, &loop, &p.cl.io, NULL, NULL);
    int a = 0, b = 0;
    for (int i = 0; i < 500 && (a == 0 || b == 0); i++) {
        if (a == 0)
            a = pt_tls_handshake(p.cl.tls);
        if (b == 0)
            b = pt_tls_handshake(p.sv.tls);
        pt_loop_run_once(&loop, 1);
    }
    CHECK_EQ_INT(b, -1); /* the server refuses TLS 1.1 */
    CHECK(strlen(pt_tls_last_error()) > 0);
    close_pair(&loop, &p);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    pt_loop_destroy(&loop);
}

int main(void)
{
    pt_tls_global_init();
    ca_key = EVP_EC_gen("P-256");
    ca_cert = make_cert(ca_key, "portico test CA", NULL, true);
    enum pt_io_backend backends[] = {PT_IO_EPOLL, PT_IO_URING};
    for (int b = 0; b < 2; b++) {
        struct pt_loop probe;
        if (pt_loop_init_backend(&probe, backends[b]) < 0) {
            CHECK(backends[b] == PT_IO_URING);
            fprintf(stderr, "test_tls: io_uring cases SKIPPED: the kernel refuses it\n");
            continue;
        }
        pt_loop_destroy(&probe);
        test_transfer_both_ways(backends[b]);
        test_bare_fin_is_eof_but_not_clean(backends[b]);
        test_client_cert_and_resumption(backends[b]);
        test_handshake_failure(backends[b]);
    }
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    return unit_report("test_tls");
}
