/*
 * tokens.h — interned header names and methods.
 *
 * One X-macro list feeds the enum, the name table and the flag table, so a
 * header is added in one place. Lookup is ASCII case-insensitive and does
 * not allocate; unknown names map to PT_TOK_UNKNOWN (0).
 */
#ifndef PT_HTTP_TOKENS_H
#define PT_HTTP_TOKENS_H

#include "core/common.h"

/* Per-token flags. */
enum {
    PT_TF_HOP = 1u << 0,   /* hop-by-hop (RFC 9110 §7.6.1): never forwarded */
    PT_TF_SINGLE = 1u << 1 /* must appear at most once (Host, Content-Length is special-cased) */
};

/* X(ENUM, "lowercase-name", flags) */
#define PT_TOKEN_LIST(X)                                                                           \
    X(HOST, "host", PT_TF_SINGLE)                                                                  \
    X(CONTENT_LENGTH, "content-length", 0)                                                         \
    X(TRANSFER_ENCODING, "transfer-encoding", PT_TF_HOP)                                           \
    X(CONNECTION, "connection", PT_TF_HOP)                                                         \
    X(KEEP_ALIVE, "keep-alive", PT_TF_HOP)                                                         \
    X(PROXY_CONNECTION, "proxy-connection", PT_TF_HOP)                                             \
    X(PROXY_AUTHENTICATE, "proxy-authenticate", PT_TF_HOP)                                         \
    X(PROXY_AUTHORIZATION, "proxy-authorization", PT_TF_HOP)                                       \
    X(TE, "te", PT_TF_HOP)                                                                         \
    X(TRAILER, "trailer", PT_TF_HOP)                                                               \
    X(UPGRADE, "upgrade", PT_TF_HOP)                                                               \
    X(EXPECT, "expect", 0)                                                                         \
    X(HTTP2_SETTINGS, "http2-settings", PT_TF_HOP)                                                 \
    X(X_FORWARDED_FOR, "x-forwarded-for", 0)                                                       \
    X(X_FORWARDED_PROTO, "x-forwarded-proto", 0)                                                   \
    X(X_FORWARDED_HOST, "x-forwarded-host", 0)                                                     \
    X(X_REQUEST_ID, "x-request-id", 0)                                                             \
    X(CONTENT_TYPE, "content-type", 0)                                                             \
    X(ACCEPT, "accept", 0)                                                                         \
    X(ACCEPT_ENCODING, "accept-encoding", 0)                                                       \
    X(ACCEPT_LANGUAGE, "accept-language", 0)                                                       \
    X(USER_AGENT, "user-agent", 0)                                                                 \
    X(AUTHORIZATION, "authorization", 0)                                                           \
    X(COOKIE, "cookie", 0)                                                                         \
    X(SET_COOKIE, "set-cookie", 0)                                                                 \
    X(DATE, "date", 0)                                                                             \
    X(SERVER, "server", 0)                                                                         \
    X(CACHE_CONTROL, "cache-control", 0)                                                           \
    X(ORIGIN, "origin", 0)                                                                         \
    X(TRACEPARENT, "traceparent", 0)                                                               \
    X(RETRY_AFTER, "retry-after", 0)                                                               \
    X(LOCATION, "location", 0)                                                                     \
    X(VARY, "vary", 0)                                                                             \
    X(ETAG, "etag", 0)                                                                             \
    X(LAST_MODIFIED, "last-modified", 0)                                                           \
    X(IF_NONE_MATCH, "if-none-match", 0)                                                           \
    X(IF_MODIFIED_SINCE, "if-modified-since", 0)                                                   \
    X(CONTENT_ENCODING, "content-encoding", 0)                                                     \
    X(X_API_KEY, "x-api-key", 0)

enum pt_token {
    PT_TOK_UNKNOWN = 0,
#define PT_X(e, s, f) PT_TOK_##e,
    PT_TOKEN_LIST(PT_X)
#undef PT_X
        PT_TOK__COUNT
};

/* Canonical lowercase name and flags of a token (index by enum pt_token). */
extern const pt_slice pt_token_names[PT_TOK__COUNT];
extern const uint8_t pt_token_flags[PT_TOK__COUNT];

/* Interns a header name (any case); PT_TOK_UNKNOWN when not in the list. */
int pt_token_lookup(const char *name, size_t len);

/* Methods. PT_METHOD_OTHER covers extension methods (valid tokens). */
#define PT_METHOD_LIST(X)                                                                          \
    X(GET) X(HEAD) X(POST) X(PUT) X(DELETE) X(CONNECT) X(OPTIONS) X(TRACE) X(PATCH)

enum pt_method {
    PT_METHOD_OTHER = 0,
#define PT_X(m) PT_METHOD_##m,
    PT_METHOD_LIST(PT_X)
#undef PT_X
        PT_METHOD__COUNT
};

extern const pt_slice pt_method_names[PT_METHOD__COUNT];
/* Case-sensitive (methods are case-sensitive, RFC 9110 §9.1). */
int pt_method_lookup(const char *name, size_t len);

#endif
