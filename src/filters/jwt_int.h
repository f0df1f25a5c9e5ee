/*
 * jwt_int.h — what the jwt filter's files share: the compiled config, the
 * per-request state, and the functions each file gives the others.
 *
 *   jwt.c         the filter: config fields, compile, the request hook
 *   jwt_verify.c  one token against the providers: keys, signature,
 *                 claims, what goes upstream, JWKS fetches and waits
 *   jwt_token.c   where the token is (Authorization, cookie, query) and
 *                 taking it out of the request (hide_credentials)
 *   jwks.c        key sources shared by workers; jwt_cache.c verdicts
 */
#ifndef PT_FILTERS_JWT_INT_H
#define PT_FILTERS_JWT_INT_H

#include "filters/auth.h"
#include "filters/jwks.h"
#include "filters/jwt_cache.h"

/* A token longer than this is refused (401) before anything is decoded. */
#define JWT_MAX_TOKEN 16384
#define JWT_DEFAULT_SKEW_MS 60000
#define JWT_DEFAULT_CACHE_BYTES (4u * 1024 * 1024)
#define JWT_DEFAULT_JWKS_TIMEOUT_MS 2000
/* Providers per filter: a bit each in the per-request state. */
#define JWT_MAX_PROVIDERS 16

struct jwt_provider {
    /* YAML keys */
    const char *jwks_uri;               /* http:// or https:// JWKS endpoint */
    const char *tls_ca;                 /* https: the CA file (else the system store); loader's */
    const char *jwks_file;              /* a JWKS document on disk, read at load */
    const char *secret;                 /* HMAC secret, raw text */
    const char *secret_base64;          /* HMAC secret, base64 (standard or url) */
    const char *issuer;                 /* required `iss` */
    struct pt_strlist audiences;        /* one of them in `aud` */
    struct pt_strlist algorithms;       /* allow-list */
    struct pt_strlist required_claims;  /* present, not null */
    struct pt_strlist required_scopes;  /* all in `scope` / `scp`, else 403 */
    const char *clock_skew;             /* duration text; default 60s */
    struct pt_strmap claims_to_headers; /* claim → upstream header */
    const char *groups_claim;           /* default none */
    const char *consumer_claim;         /* default "sub" */
    uint64_t jwks_timeout_ms;           /* one JWKS fetch; default 2s */
    /* compiled */
    struct pt_jwks_source *src;
    uint32_t algs; /* PT_JOSE_BIT()s */
    int64_t skew_s;
    const pt_slice *hdr_names; /* claims_to_headers values, checked */
    uint32_t nhdr;
    const char *label; /* for logs: the URI, the file, or "secret" */
};

struct jwt_conf {
    struct jwt_provider one;     /* the single-provider form: keys at the top */
    struct pt_objlist providers; /* or a list of them */
    const char *cookie;          /* token in this cookie */
    const char *query;           /* token in this query parameter */
    bool hide_credentials;
    bool optional;
    const char *cache_bytes; /* size text; default 4MiB, 0 = no cache */
    /* compiled */
    struct jwt_provider *pv;
    uint32_t npv;
    struct pt_jwt_cache *cache; /* NULL: off */
    const pt_slice *strip;      /* every provider's claims_to_headers names */
    uint32_t nstrip;
    pt_slice cookie_s, query_s;
};

enum jwt_phase {
    JWT_IDLE,
    JWT_FETCHING,   /* this request runs the source's fetch, then re-verifies */
    JWT_REFRESHING, /* this request runs a refresh; its outcome is decided */
    JWT_WAITING,    /* another request's fetch is in flight: polling */
};

struct jwt_state {
    const struct jwt_conf *conf;
    pt_slice token;
    uint8_t key[PT_JWT_CACHE_KEY]; /* SHA-256 of the token */
    enum jwt_phase phase;
    struct jwt_provider *pv; /* the provider fetched / waited for */
    uint64_t seen_seq;       /* its source's done_seq when the wait began */
    uint64_t wait_until_ms;
    uint32_t fetched; /* providers already fetched or waited for */
    int outcome;      /* JWT_REFRESHING: the result to resume with */
};

/* jwt_verify.c: verifies st->token (cache, then providers) and applies
 * the outcome; may start a fetch or a wait and return SUSPEND. */
int pt_jwt_verify(struct pt_filter_ctx *ctx, struct jwt_state *st);
void pt_jwt_cancel(struct jwt_state *st);

/* jwt_token.c */
/* The token (empty: none); -1 for one that is there but malformed (bad
 * characters, too long); -2 for a carrier given twice (two Bearer
 * fields, the cookie or the query parameter twice). */
int pt_jwt_find_token(struct pt_filter_ctx *ctx, const struct jwt_conf *conf, pt_slice *token);
/* Takes every configured carrier of the token out of the request. 0 or
 * -ENOMEM. */
int pt_jwt_hide_token(struct pt_filter_ctx *ctx, const struct jwt_conf *conf);

#endif
