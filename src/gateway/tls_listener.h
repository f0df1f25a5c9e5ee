/*
 * tls_listener.h — TLS termination on a listener (`listeners[].tls`):
 * the SSL_CTX a generation builds per TLS listener, and the accept step
 * that puts a server-side pt_tls (core/tls.h) on a client connection.
 *
 * One listener's contexts: the first certificate's SSL_CTX is the
 * listener's ("default") context; every other certificate whose names
 * differ gets a context of its own, and a servername callback switches a
 * connection to the context whose names match its SNI (exact first, then
 * a `*.` wildcard, else the default). Certificates with the same names and
 * different key types (RSA and ECDSA) share one context: OpenSSL picks by
 * the client's signature algorithms.
 *
 * Ownership: the generation holds one reference on the default context
 * (pt_tls_listener_free); every SSL holds its own, so a connection keeps
 * its certificates, callbacks and ticket keys after a reload freed the
 * generation. The listener's lookup table hangs off the default context
 * (ex_data) and goes with its last reference.
 *
 * Session tickets: keys from `ticket_key_file` (read with the config; the
 * first key encrypts, all decrypt), else the process-wide store below,
 * outside generations (a reload keeps sessions resumable): a new random
 * encrypting key every PT_TICKET_ROTATE_S, each key still decrypting for
 * PT_TICKET_DECRYPT_S after it stopped encrypting.
 */
#ifndef PT_GATEWAY_TLS_LISTENER_H
#define PT_GATEWAY_TLS_LISTENER_H

#include "core/tls.h"

#define PT_TICKET_ROTATE_S (12u * 3600u)
#define PT_TICKET_DECRYPT_S (24u * 3600u)
/* One key in ticket_key_file: 16 bytes name, 32 HMAC-SHA256, 32 AES-256
 * (nginx's 80-byte ssl_session_ticket_key format). */
#define PT_TICKET_KEY_BYTES 80u
#define PT_TICKET_FILE_MAX_KEYS 16u

enum pt_client_auth { PT_CLIENT_AUTH_NONE = 0, PT_CLIENT_AUTH_OPTIONAL, PT_CLIENT_AUTH_REQUIRED };

struct pt_tls_cert_cfg {
    const char *cert; /* PEM: the certificate, then its chain */
    const char *key;  /* PEM private key (never logged) */
};

/* `listeners[].tls` as loaded (paths resolved against the config's
 * directory), and the context built from it. */
struct pt_tls_listener {
    struct pt_tls_cert_cfg *certs;
    uint32_t ncerts;
    const char *client_ca;           /* NULL: no client certificate requested */
    enum pt_client_auth client_auth; /* default: optional with client_ca, else none */
    const char *ticket_key_file;     /* NULL: the process-wide rotating keys */
    uint64_t handshake_timeout_ms;   /* default 10 s */
    uint64_t session_timeout_s;      /* default 3600: ticket lifetime */
    SSL_CTX *ctx;                    /* built by pt_tls_listener_build */
};

/* Where a build failed, for the config's file:line:col. */
enum pt_tls_err_at {
    PT_TLS_ERR_CERT,
    PT_TLS_ERR_KEY,
    PT_TLS_ERR_CLIENT_CA,
    PT_TLS_ERR_TICKETS,
    PT_TLS_ERR_OTHER
};
struct pt_tls_build_error {
    enum pt_tls_err_at at;
    uint32_t index; /* the certificate, for CERT and KEY */
    char msg[320];
};

/* Builds tl->ctx (listener `name`; `http2`: offer h2 in ALPN). 0, or -1
 * with `e` filled. Reads the files now: call on the control thread. */
int pt_tls_listener_build(struct pt_tls_listener *tl, const char *name, bool http2,
                          struct pt_tls_build_error *e);
/* Drops the generation's reference (NULL-safe). */
void pt_tls_listener_free(struct pt_tls_listener *tl);

/* A server-side TLS connection on `ctx` (a listener's default context). */
struct pt_tls *pt_tls_listener_accept(SSL_CTX *ctx, struct pt_loop *loop, struct pt_io *io);

#endif
