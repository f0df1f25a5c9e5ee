/*
 * proxy_protocol.h — the PROXY protocol header (v1 text, v2 binary) that an
 * L4 balancer (HAProxy `send-proxy`, AWS NLB, ...) writes before anything
 * else on a connection, to say whose connection it relays.
 *
 * Contract (as picohttpparser's): pt_pp_parse() returns the bytes the
 * header takes when buf holds a complete, valid one, PT_PP_INCOMPLETE when
 * buf is a valid prefix of one (call again with more bytes), PT_PP_ERROR
 * when buf can no longer become one. It is pure: no allocation, no state
 * between calls, and it reports an error as soon as a byte rules a header
 * out (a plain HTTP request fails at its first byte).
 */
#ifndef PT_HTTP_PROXY_PROTOCOL_H
#define PT_HTTP_PROXY_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PT_PP_ERROR (-1)
#define PT_PP_INCOMPLETE (-2)

/* v1: "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n", at most 107 bytes. */
#define PT_PP_V1_MAX 107
/* v2: the 12-byte signature, version/command, family, 2-byte length. */
#define PT_PP_V2_HEAD 16

struct pt_pp_header {
    uint8_t version; /* 1 or 2 */
    /* No client address carried: v2 LOCAL (a balancer's own health check),
     * v1 UNKNOWN, v2 UNSPEC or AF_UNIX. The socket's peer stands. */
    bool local;
    /* When !local: the client (src) and the address it connected to (dst),
     * AF_INET or AF_INET6 with their ports. */
    struct sockaddr_storage src, dst;
};

/* See the contract above; *out is filled only on success. */
int pt_pp_parse(const char *buf, size_t len, struct pt_pp_header *out);

#endif
