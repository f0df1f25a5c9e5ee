/*
 * tls.h — TLS over a loop stream socket (OpenSSL 3), on either I/O backend.
 *
 * A pt_tls sits between a codec and its pt_io: the codec calls
 * pt_tls_recv / pt_tls_sendv / pt_tls_shutdown_wr where a plain connection
 * calls pt_io_recv / pt_io_sendv / pt_io_shutdown_wr, with the same
 * semantics (bytes, 0 at EOF, -1 with errno; EAGAIN: wait for the next
 * event). The ciphertext goes through a BIO whose read and write are
 * pt_io_recv and pt_io_sendv, so io_uring's batching and epoll's direct
 * syscalls both work unchanged and nothing else touches the fd.
 *
 * Readiness: a codec's event handler passes its events through
 * pt_tls_events() first. TLS can need the other direction (a handshake
 * read that must write, ciphertext waiting for room): that function
 * flushes what is queued and adds the readiness the codec must act on.
 *
 * Reads drain: pt_tls_recv fills `buf` until the socket would block (or
 * `buf` is full), so "fewer bytes than asked" still means "the socket is
 * drained", as edge-triggered codecs assume. Writes never make OpenSSL
 * retry: a record the socket cannot take now is kept in a side buffer
 * (at most PT_TLS_WRITE_CHUNK plaintext plus framing per connection,
 * allocated only while the socket is full); until it is out, pt_tls_sendv
 * answers EAGAIN.
 *
 * Memory: the SSL object (about 6 KiB with TLS 1.3) plus OpenSSL's
 * record buffers, which SSL_MODE_RELEASE_BUFFERS frees whenever the
 * connection is idle.
 */
#ifndef PT_CORE_TLS_H
#define PT_CORE_TLS_H

#include "core/loop.h"

#include <openssl/ssl.h>

/* Plaintext encrypted per pt_tls_sendv call at most: bounds the side
 * buffer a congested connection holds. */
#define PT_TLS_WRITE_CHUNK (64u * 1024u)

/* What a peer's certificate and the session say, extracted once after the
 * handshake (pt_tls_info). Strings are NUL-terminated, owned by the
 * pt_tls, valid until pt_tls_free. */
#define PT_TLS_MAX_SANS 16
struct pt_tls_info {
    const char *sni;     /* server name the client asked for, or "" */
    const char *alpn;    /* "h2", "http/1.1" or "" */
    const char *version; /* "TLSv1.3" ... */
    const char *cipher;
    bool resumed;
    /* Server side: the server asked the client for a certificate
     * (SSL_VERIFY_PEER: a listener with client_ca), whatever the client
     * sent. What the 421 check keys on. */
    bool client_auth;
    /* The peer certificate: present and verified against the CA (a
     * server's client_ca, a client's upstream ca). A certificate that
     * failed verification under client_auth: optional shows as
     * cert_present && !cert_verified. */
    bool cert_present, cert_verified;
    const char *subject;     /* RFC 2253 one-line form */
    const char *subject_cn;  /* "" when none */
    const char *fingerprint; /* SHA-256 of the DER, 64 lowercase hex */
    const char *san_dns[PT_TLS_MAX_SANS];
    uint32_t nsan_dns;
    const char *san_uri[PT_TLS_MAX_SANS];
    uint32_t nsan_uri;
};

struct pt_tls {
    SSL *ssl;
    BIO *bio;
    struct pt_loop *loop;
    struct pt_io *io;
    char *wpend; /* ciphertext the socket has not taken yet */
    uint32_t wpend_len, wpend_off, wpend_cap;
    bool handshake_done;
    bool write_wants_read; /* a write (handshake) waits for the peer's bytes */
    bool read_blocked;     /* the last read stopped on EAGAIN */
    bool short_read;       /* the socket's last read gave less than asked */
    bool shut_sent;
    bool eof;          /* the peer closed (close_notify or TCP EOF) */
    bool tcp_eof;      /* the socket said EOF (a FIN) */
    bool close_notify; /* the peer's close_notify came before any FIN */
    int err;           /* sticky errno of a failed connection (EPROTO for TLS errors) */
    int werr;          /* sticky errno of a failed write: reads go on (the peer's
                          answer or alert may still be there) */
    uint64_t bytes;    /* ciphertext received, for handshake-only accounting */
    char *pre;         /* ciphertext read before the TLS layer existed (pt_tls_push_input) */
    uint32_t pre_len, pre_off;
    struct pt_tls_info *info;
};

/* Library set-up, once per process (idempotent, thread-safe). */
void pt_tls_global_init(void);

/* A server- or client-side TLS connection over `io` on `loop`, with an
 * SSL from `ctx`. Client side: `sni` (may be NULL) is sent and, when
 * `session` is given, offered for resumption. NULL on OOM. */
struct pt_tls *pt_tls_new_server(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io);
struct pt_tls *pt_tls_new_client(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io,
                                 const char *sni, SSL_SESSION *session);
/* Bytes already read from the socket that belong to the TLS stream (a
 * ClientHello that came in the same read as a PROXY header): the BIO
 * serves them before the socket's. Copied; 0, or -1 on OOM. */
int pt_tls_push_input(struct pt_tls *t, const void *p, size_t n);
/* Frees the SSL and buffers; does not touch the fd (close the pt_io). */
void pt_tls_free(struct pt_tls *t);

/* Drives the handshake: 1 done, 0 in progress (wait for events), -1 failed
 * (errno: EPROTO for a TLS error, with the reason in pt_tls_last_error, or
 * the socket's). */
int pt_tls_handshake(struct pt_tls *t);

ssize_t pt_tls_recv(struct pt_tls *t, void *buf, size_t len);
ssize_t pt_tls_sendv(struct pt_tls *t, const struct iovec *iov, int n);
/* Sends close_notify, then shuts the socket's write side once the queued
 * ciphertext is out. 0 or -1. */
int pt_tls_shutdown_wr(struct pt_tls *t);

/* Filters a codec's events (see above). Returns the events to act on. */
uint32_t pt_tls_events(struct pt_tls *t, uint32_t events);
/* Decrypted or undecrypted bytes are buffered inside the TLS layer. */
bool pt_tls_has_buffered(const struct pt_tls *t);
/* Ciphertext is queued for the socket. */
static inline bool pt_tls_write_pending(const struct pt_tls *t)
{
    return t->wpend_len > t->wpend_off;
}

/* The peer ended its stream with close_notify. A FIN without it reads as
 * EOF all the same (many servers never send one), but where a message
 * ends at close, only this says it was not cut by someone in between. */
static inline bool pt_tls_closed_cleanly(const struct pt_tls *t)
{
    return t->close_notify;
}

/* The connection's facts (extracted on first call after the handshake;
 * NULL before it or on OOM). */
const struct pt_tls_info *pt_tls_get_info(struct pt_tls *t);
/* The negotiated ALPN protocol ("" when none); after the handshake. */
const char *pt_tls_alpn(const struct pt_tls *t);

/* The reason of the thread's last TLS failure (static, for logs). */
const char *pt_tls_last_error(void);

#endif
