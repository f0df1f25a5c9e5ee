/*
 * pool_int.h — what pool.c and pool_tls.c share: a target's pool.
 */
#ifndef PT_PROXY_POOL_INT_H
#define PT_PROXY_POOL_INT_H

#include "proxy/pool.h"

struct pt_upool {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    uint64_t tls_key;      /* the upstream TLS setting's pool_key; 0: plain */
    struct pt_uconn *idle; /* most recently used first */
    uint32_t nidle;
    /* TLS: the last session the target gave (a TLS 1.3 ticket or a 1.2
     * session), offered to the next new connection; replaced as new ones
     * arrive, freed with the pool. */
    SSL_SESSION *tls_session;
};

#endif
