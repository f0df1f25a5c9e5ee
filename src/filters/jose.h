/*
 * jose.h — the JWS / JWK core the jwt filter stands on (RFC 7515, 7517,
 * 7518, 8037): base64url, the compact serialization, JWKs turned into
 * OpenSSL 3 keys, and one signature check.
 *
 * The algorithm is bound to the key, never taken from the token alone: a
 * key knows which algorithms it may verify (its type, its curve, and its
 * own `alg` when the JWK has one), and pt_jose_verify refuses any other.
 * So an HMAC token can never verify against an RSA or EC key (the
 * "public key used as an HMAC secret" confusion), and `none` is not an
 * algorithm at all here.
 *
 * Ownership: a struct pt_jwk owns its EVP_PKEY / secret / kid (heap) until
 * pt_jwk_clear. pt_jws_split borrows from the token and writes the
 * decoded parts into the caller's arena. Nothing here keeps state: every
 * function may run on any thread.
 */
#ifndef PT_FILTERS_JOSE_H
#define PT_FILTERS_JOSE_H

#include "core/arena.h"

#include <jansson.h>
#include <openssl/evp.h>

/* The algorithms portico verifies (RFC 7518 §3.1, RFC 8037 §3.1). */
#define PT_JOSE_ALGS(X)                                                                            \
    X(RS256)                                                                                       \
    X(RS384)                                                                                       \
    X(RS512)                                                                                       \
    X(PS256) X(PS384) X(PS512) X(ES256) X(ES384) X(ES512) X(EdDSA) X(HS256) X(HS384) X(HS512)

enum pt_jose_alg {
#define PT_JOSE_ALG_ENUM(n) PT_JOSE_##n,
    PT_JOSE_ALGS(PT_JOSE_ALG_ENUM)
#undef PT_JOSE_ALG_ENUM
        PT_JOSE_ALG__COUNT
};

#define PT_JOSE_BIT(alg) (1u << (alg))
/* Every algorithm with a public key, and the HMAC ones. */
#define PT_JOSE_ASYMMETRIC                                                                         \
    (PT_JOSE_BIT(PT_JOSE_RS256) | PT_JOSE_BIT(PT_JOSE_RS384) | PT_JOSE_BIT(PT_JOSE_RS512) |        \
     PT_JOSE_BIT(PT_JOSE_PS256) | PT_JOSE_BIT(PT_JOSE_PS384) | PT_JOSE_BIT(PT_JOSE_PS512) |        \
     PT_JOSE_BIT(PT_JOSE_ES256) | PT_JOSE_BIT(PT_JOSE_ES384) | PT_JOSE_BIT(PT_JOSE_ES512) |        \
     PT_JOSE_BIT(PT_JOSE_EdDSA))
#define PT_JOSE_HMAC                                                                               \
    (PT_JOSE_BIT(PT_JOSE_HS256) | PT_JOSE_BIT(PT_JOSE_HS384) | PT_JOSE_BIT(PT_JOSE_HS512))

/* The JWA name ("RS256"), or NULL. */
const char *pt_jose_alg_name(int alg);
/* The algorithm named exactly `name` (case-sensitive, as JWA says), or -1
 * for anything else, "none" included. */
int pt_jose_alg_parse(const char *name, size_t len);

/* base64url without padding (RFC 7515 §2) into out (cap bytes: at least
 * len * 3 / 4 + 3). The decoded length, or -1 for a character outside the
 * alphabet, padding, or an impossible length. */
long pt_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap);
/* Standard base64 or base64url, padding optional (for secrets in config). */
long pt_b64_decode_any(const char *in, size_t len, uint8_t *out, size_t cap);

/*
 * One claim of a JWT's claims segment (`claims`: base64url JSON, as the
 * client sent it, e.g. ctx->identity->token_claims) as text in `a`: a
 * string claim as it is, a number, boolean, array or object as its
 * compact JSON text. Empty (not NULL) when the claim is absent or null,
 * or the segment does not decode; {NULL, 0} only when out of memory.
 * jansson allocates while parsing (freed before returning).
 */
pt_slice pt_jwt_claim_string(struct pt_arena *a, pt_slice claims, const char *name);

/* A verification key. */
struct pt_jwk {
    EVP_PKEY *pkey;  /* RSA, EC, Ed25519; NULL for a secret */
    uint8_t *secret; /* HMAC key (kty oct) */
    size_t secret_len;
    char *kid;     /* NULL: the JWK had none */
    uint32_t algs; /* PT_JOSE_BIT()s this key may verify */
    int bits;      /* key size, for logs */
};

/*
 * One JWK object (RFC 7517 §4) into *k: kty RSA (n, e; at least 2048
 * bits), EC (crv P-256 / P-384 / P-521, x, y on the curve), OKP (crv
 * Ed25519, x) or oct (k). A `use` other than "sig", `key_ops` without
 * "verify", or an `alg` the key type cannot do make the key unusable.
 * `x5c`, `x5u` and private members are ignored. 0, or -1 with a short
 * reason in err (never key material).
 */
int pt_jwk_parse(const json_t *o, struct pt_jwk *k, char *err, size_t errlen);
/* An HMAC key from raw bytes (copied). 0 or -ENOMEM. */
int pt_jwk_from_secret(const uint8_t *secret, size_t len, struct pt_jwk *k);
void pt_jwk_clear(struct pt_jwk *k);

/* A compact JWS split and decoded (RFC 7515 §7.1). */
struct pt_jws {
    pt_slice signing_input; /* "header.payload", as the token has it */
    const char *header;     /* decoded JSON text (arena), header_len bytes */
    size_t header_len;
    const char *payload; /* decoded JSON text (arena) */
    size_t payload_len;
    const uint8_t *sig; /* decoded signature (arena) */
    size_t sig_len;
};

/* Splits three base64url parts. 0, or -1 (not three parts, bad base64url,
 * an empty part other than... none allowed) or -ENOMEM. */
int pt_jws_split(pt_slice token, struct pt_arena *a, struct pt_jws *out);

/* The header's facts: alg (-1 when absent, "none" or unknown), kid (NULL
 * when absent). -1 for a header that is not a JSON object, whose alg/kid
 * are not strings, or that has `crit` (no extension is understood here,
 * RFC 7515 §4.1.11). jku, x5u, jwk, x5c are ignored. kid is copied into a. */
int pt_jws_header(const struct pt_jws *jws, struct pt_arena *a, int *alg, const char **kid);

/* Whether `sig` is a valid signature by `alg` with key k over msg: false
 * when the key may not verify alg, or the signature is wrong or has the
 * wrong size. */
bool pt_jose_verify(int alg, const struct pt_jwk *k, const uint8_t *msg, size_t len,
                    const uint8_t *sig, size_t sig_len);

#endif
