/*
 * pool_int.h — what pool.c and pool_tls.c share: a target's pool.
 */
#ifndef PT_PROXY_POOL_INT_H
#define PT_PROXY_POOL_INT_H

#include "proxy/pool.h"

struct pt_upool {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t tls_key; /* the upstream TLS setting's pool_key; 0: plain */
    /* TLS without `sni`: the target's host name the handshake sends and
     * verifies (pt_tls_target_name); NULL otherwise. Part of the key: a
     * connection or session verified for one name never serves another
     * that resolves to the same address. */
    char *tls_name;
    struct pt_uconn *idle; /* most recently used first */
    uint32_t nidle;
    /* TLS: the last session the target gave (a TLS 1.3 ticket or a 1.2
     * session), offered to the next new connection; replaced as new ones
     * arrive, freed with the pool. */
    SSL_SESSION *tls_session;
};

/* The name a TLS connection to `t` sends as SNI and verifies when the
 * setting has no `sni` of its own: the target's host name without its
 * port; (NULL, 0) for an IP literal, plain, or a fixed `sni` (already in
 * tls->pool_key). */
pt_slice pt_tls_target_name(const struct pt_upstream_tls *tls, const struct pt_target *t);

#endif
