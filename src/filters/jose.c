/*
 * jose.c — see jose.h. Keys are built with OpenSSL 3's EVP_PKEY_fromdata
 * from the JWK's raw numbers; signatures are checked with
 * EVP_DigestVerify (RSA PKCS#1 v1.5, RSA-PSS, ECDSA after turning JOSE's
 * fixed-size r||s into DER, Ed25519) or an HMAC compared in constant time.
 */
#include "filters/jose.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#define RSA_MIN_BITS 2048

static const char *const alg_names[PT_JOSE_ALG__COUNT] = {
#define PT_JOSE_ALG_NAME(n) #n,
    PT_JOSE_ALGS(PT_JOSE_ALG_NAME)
#undef PT_JOSE_ALG_NAME
};

const char *pt_jose_alg_name(int alg)
{
    return alg >= 0 && alg < PT_JOSE_ALG__COUNT ? alg_names[alg] : NULL;
}

int pt_jose_alg_parse(const char *name, size_t len)
{
    for (int i = 0; i < PT_JOSE_ALG__COUNT; i++)
        if (strlen(alg_names[i]) == len && memcmp(alg_names[i], name, len) == 0)
            return i;
    return -1;
}

/* ---- base64 ---- */

/* 0-63, or -1. `url`: the URL-safe alphabet; otherwise both. */
static int b64_value(unsigned char c, bool url_only)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    if (!url_only && c == '+')
        return 62;
    if (!url_only && c == '/')
        return 63;
    return -1;
}

static long b64_decode(const char *in, size_t len, uint8_t *out, size_t cap, bool url_only)
{
    if (len % 4 == 1 || cap < len / 4 * 3 + 3)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i], url_only);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    /* Leftover bits must be zero: one encoding per byte string. */
    if (bits && (acc & ((1u << bits) - 1)))
        return -1;
    return (long)n;
}

long pt_b64url_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    return b64_decode(in, len, out, cap, true);
}

long pt_b64_decode_any(const char *in, size_t len, uint8_t *out, size_t cap)
{
    while (len && in[len - 1] == '=')
        len--;
    return b64_decode(in, len, out, cap, false);
}

/* ---- one claim as text ---- */

pt_slice pt_jwt_claim_string(struct pt_arena *a, pt_slice claims, const char *name)
{
    pt_slice out = {"", 0};
    if (!claims.len)
        return out;
    size_t cap = claims.len * 3 / 4 + 3;
    uint8_t *buf = pt_arena_alloc(a, cap);
    if (!buf)
        return (pt_slice){NULL, 0};
    long n = pt_b64url_decode(claims.p, claims.len, buf, cap);
    json_t *doc =
        n < 0 ? NULL : json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    const json_t *v = json_is_object(doc) ? json_object_get(doc, name) : NULL;
    if (json_is_string(v)) {
        size_t len = json_string_length(v);
        out = (pt_slice){pt_arena_strndup(a, json_string_value(v), len), len};
    } else if (v && !json_is_null(v)) {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        out = (pt_slice){text ? pt_arena_strdup(a, text) : NULL, text ? strlen(text) : 0};
        free(text);
    }
    json_decref(doc);
    return out;
}

/* ---- JWK ---- */

/* A base64url member of o, decoded into a heap buffer (*out, freed by the
 * caller). Its length, or -1 when absent, not a string or not base64url. */
static long member_b64(const json_t *o, const char *name, uint8_t **out)
{
    const json_t *v = json_object_get(o, name);
    *out = NULL;
    if (!json_is_string(v))
        return -1;
    size_t len = json_string_length(v);
    uint8_t *buf = malloc(len / 4 * 3 + 3);
    if (!buf)
        return -1;
    long n = pt_b64url_decode(json_string_value(v), len, buf, len / 4 * 3 + 3);
    if (n <= 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    return n;
}

static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
    if (params && ctx && EVP_PKEY_fromdata_init(ctx) == 1 &&
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* Whether OpenSSL finds the public key sound (an EC point on its curve). */
static bool public_ok(EVP_PKEY *pkey)
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static int rsa_key(const json_t *o, struct pt_jwk *k, const char **why)
{
    uint8_t *n = NULL, *e = NULL;
    long nl = member_b64(o, "n", &n), el = member_b64(o, "e", &e);
    int rc = -1;
    BIGNUM *bn = NULL, *be = NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    *why = "an RSA key needs base64url `n` and `e`";
    if (nl <= 0 || el <= 0 || el > 8 || !bld)
        goto out;
    bn = BN_bin2bn(n, (int)nl, NULL);
    be = BN_bin2bn(e, (int)el, NULL);
    *why = "RSA keys shorter than 2048 bits are refused";
    if (!bn || !be || BN_num_bits(bn) < RSA_MIN_BITS)
        goto out;
    *why = "the RSA key could not be built";
    if (!OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        goto out;
    k->pkey = pkey_from_params("RSA", bld);
    if (!k->pkey)
        goto out;
    k->bits = BN_num_bits(bn);
    k->algs = PT_JOSE_BIT(PT_JOSE_RS256) | PT_JOSE_BIT(PT_JOSE_RS384) | PT_JOSE_BIT(PT_JOSE_RS512) |
              PT_JOSE_BIT(PT_JOSE_PS256) | PT_JOSE_BIT(PT_JOSE_PS384) | PT_JOSE_BIT(PT_JOSE_PS512);
    rc = 0;
out:
    BN_free(bn);
    BN_free(be);
    OSSL_PARAM_BLD_free(bld);
    free(n);
    free(e);
    return rc;
}

static const struct {
    const char *crv, *group;
    size_t size;
    int alg;
} curves[] = {
    {"P-256", "prime256v1", 32, PT_JOSE_ES256},
    {"P-384", "secp384r1", 48, PT_JOSE_ES384},
    {"P-521", "secp521r1", 66, PT_JOSE_ES512},
};

static int ec_key(const json_t *o, struct pt_jwk *k, const char **why)
{
    const char *crv = json_string_value(json_object_get(o, "crv"));
    size_t c = 0;
    while (crv && c < PT_ARRAY_LEN(curves) && strcmp(curves[c].crv, crv) != 0)
        c++;
    *why = "an EC key needs crv P-256, P-384 or P-521";
    if (!crv || c == PT_ARRAY_LEN(curves))
        return -1;
    uint8_t *x = NULL, *y = NULL, pub[1 + 2 * 66];
    long xl = member_b64(o, "x", &x), yl = member_b64(o, "y", &y);
    int rc = -1;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    *why = "an EC key needs `x` and `y` of its curve's size";
    if (xl != (long)curves[c].size || yl != (long)curves[c].size || !bld)
        goto out;
    pub[0] = 0x04; /* uncompressed point */
    memcpy(pub + 1, x, (size_t)xl);
    memcpy(pub + 1 + xl, y, (size_t)yl);
    *why = "the EC key is not a point on its curve";
    if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, curves[c].group, 0) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub,
                                          1 + 2 * curves[c].size))
        goto out;
    k->pkey = pkey_from_params("EC", bld);
    if (!k->pkey || !public_ok(k->pkey))
        goto out;
    k->bits = (int)curves[c].size * 8;
    k->algs = PT_JOSE_BIT(curves[c].alg);
    rc = 0;
out:
    OSSL_PARAM_BLD_free(bld);
    free(x);
    free(y);
    return rc;
}

static int okp_key(const json_t *o, struct pt_jwk *k, const char **why)
{
    const char *crv = json_string_value(json_object_get(o, "crv"));
    *why = "an OKP key needs crv Ed25519 and a 32-byte `x`";
    if (!crv || strcmp(crv, "Ed25519") != 0)
        return -1;
    uint8_t *x = NULL;
    long xl = member_b64(o, "x", &x);
    if (xl == 32)
        k->pkey = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, 32);
    free(x);
    if (!k->pkey)
        return -1;
    k->bits = 256;
    k->algs = PT_JOSE_BIT(PT_JOSE_EdDSA);
    return 0;
}

static int oct_key(const json_t *o, struct pt_jwk *k, const char **why)
{
    uint8_t *s = NULL;
    long sl = member_b64(o, "k", &s);
    *why = "an oct key needs a base64url `k`";
    if (sl <= 0)
        return -1;
    k->secret = s;
    k->secret_len = (size_t)sl;
    k->bits = (int)sl * 8;
    k->algs = PT_JOSE_HMAC;
    return 0;
}

/* `use` and `key_ops` (RFC 7517 §4.2, §4.3) allow verifying. */
static bool usable_for_verify(const json_t *o)
{
    const json_t *use = json_object_get(o, "use");
    if (use && (!json_is_string(use) || strcmp(json_string_value(use), "sig") != 0))
        return false;
    const json_t *ops = json_object_get(o, "key_ops");
    if (!ops)
        return true;
    size_t i;
    const json_t *op;
    json_array_foreach(ops, i, op) if (json_is_string(op) &&
                                       strcmp(json_string_value(op), "verify") == 0) return true;
    return false;
}

int pt_jwk_parse(const json_t *o, struct pt_jwk *k, char *err, size_t errlen)
{
    memset(k, 0, sizeof(*k));
    const char *why = "a JWK is a JSON object with a string `kty`";
    const char *kty = json_string_value(json_object_get(o, "kty"));
    int rc = -1;
    if (!json_is_object(o) || !kty)
        goto out;
    if (!usable_for_verify(o)) {
        why = "its `use` / `key_ops` do not allow verifying signatures";
        goto out;
    }
    if (strcmp(kty, "RSA") == 0)
        rc = rsa_key(o, k, &why);
    else if (strcmp(kty, "EC") == 0)
        rc = ec_key(o, k, &why);
    else if (strcmp(kty, "OKP") == 0)
        rc = okp_key(o, k, &why);
    else if (strcmp(kty, "oct") == 0)
        rc = oct_key(o, k, &why);
    else
        why = "unsupported kty (RSA, EC, OKP, oct are)";
    if (rc < 0)
        goto out;
    rc = -1;
    const json_t *alg = json_object_get(o, "alg");
    if (alg) {
        int a = json_is_string(alg)
                    ? pt_jose_alg_parse(json_string_value(alg), json_string_length(alg))
                    : -1;
        why = "its `alg` is not one this key type can verify";
        if (a < 0 || !(k->algs & PT_JOSE_BIT(a)))
            goto out;
        k->algs = PT_JOSE_BIT(a); /* the JWK pins its algorithm */
    }
    const json_t *kid = json_object_get(o, "kid");
    why = "its `kid` is not a string";
    if (kid && !json_is_string(kid))
        goto out;
    /* A kid with a NUL would match another kid by its prefix. */
    why = "its `kid` contains a NUL character";
    if (kid && strlen(json_string_value(kid)) != json_string_length(kid))
        goto out;
    why = "out of memory";
    if (kid && !(k->kid = strdup(json_string_value(kid))))
        goto out;
    rc = 0;
out:
    if (rc < 0) {
        pt_jwk_clear(k);
        if (err)
            snprintf(err, errlen, "%s", why);
    }
    return rc;
}

int pt_jwk_from_secret(const uint8_t *secret, size_t len, struct pt_jwk *k)
{
    memset(k, 0, sizeof(*k));
    k->secret = malloc(len ? len : 1);
    if (!k->secret)
        return -ENOMEM;
    memcpy(k->secret, secret, len);
    k->secret_len = len;
    k->bits = (int)len * 8;
    k->algs = PT_JOSE_HMAC;
    return 0;
}

void pt_jwk_clear(struct pt_jwk *k)
{
    EVP_PKEY_free(k->pkey);
    if (k->secret)
        OPENSSL_cleanse(k->secret, k->secret_len);
    free(k->secret);
    free(k->kid);
    memset(k, 0, sizeof(*k));
}

/* ---- JWS ---- */

static int decode_part(const char *p, size_t len, struct pt_arena *a, uint8_t **out, size_t *outlen)
{
    size_t cap = len / 4 * 3 + 3;
    uint8_t *buf = pt_arena_alloc(a, cap + 1);
    if (!buf)
        return -ENOMEM;
    long n = pt_b64url_decode(p, len, buf, cap);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    *out = buf;
    *outlen = (size_t)n;
    return 0;
}

int pt_jws_split(pt_slice token, struct pt_arena *a, struct pt_jws *out)
{
    memset(out, 0, sizeof(*out));
    const char *d1 = memchr(token.p, '.', token.len);
    if (!d1)
        return -1;
    const char *d2 = memchr(d1 + 1, '.', token.len - (size_t)(d1 + 1 - token.p));
    if (!d2 || memchr(d2 + 1, '.', token.len - (size_t)(d2 + 1 - token.p)))
        return -1;
    uint8_t *h, *p, *s;
    int rc;
    if ((rc = decode_part(token.p, (size_t)(d1 - token.p), a, &h, &out->header_len)) < 0 ||
        (rc = decode_part(d1 + 1, (size_t)(d2 - d1 - 1), a, &p, &out->payload_len)) < 0 ||
        (rc = decode_part(d2 + 1, token.len - (size_t)(d2 + 1 - token.p), a, &s, &out->sig_len)) <
            0)
        return rc;
    out->signing_input = (pt_slice){token.p, (size_t)(d2 - token.p)};
    out->header = (const char *)h;
    out->payload = (const char *)p;
    out->sig = s;
    return 0;
}

int pt_jws_header(const struct pt_jws *jws, struct pt_arena *a, int *alg, const char **kid)
{
    *alg = -1;
    *kid = NULL;
    json_t *h = json_loadb(jws->header, jws->header_len, JSON_REJECT_DUPLICATES, NULL);
    int rc = -1;
    if (!json_is_object(h) || json_object_get(h, "crit"))
        goto out;
    const json_t *a_ = json_object_get(h, "alg"), *k = json_object_get(h, "kid");
    if (!json_is_string(a_) || (k && !json_is_string(k)))
        goto out;
    /* A kid with a NUL would match a key's kid by its prefix. */
    if (k && strlen(json_string_value(k)) != json_string_length(k))
        goto out;
    *alg = pt_jose_alg_parse(json_string_value(a_), json_string_length(a_));
    if (k && !(*kid = pt_arena_strndup(a, json_string_value(k), json_string_length(k)))) {
        rc = -ENOMEM;
        goto out;
    }
    rc = 0;
out:
    json_decref(h);
    return rc;
}

/* JOSE's r||s (RFC 7518 §3.4) as the DER ECDSA-Sig-Value OpenSSL checks.
 * The DER length, or 0. */
static size_t ecdsa_der(const uint8_t *sig, size_t half, uint8_t *der, size_t cap)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    size_t n = 0;
    if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto out;
    }
    int len = i2d_ECDSA_SIG(es, NULL);
    if (len > 0 && (size_t)len <= cap) {
        uint8_t *p = der;
        n = (size_t)i2d_ECDSA_SIG(es, &p);
    }
out:
    ECDSA_SIG_free(es);
    return n;
}

static const EVP_MD *alg_md(int alg)
{
    switch (alg) {
    case PT_JOSE_RS256:
    case PT_JOSE_PS256:
    case PT_JOSE_ES256:
    case PT_JOSE_HS256:
        return EVP_sha256();
    case PT_JOSE_RS384:
    case PT_JOSE_PS384:
    case PT_JOSE_ES384:
    case PT_JOSE_HS384:
        return EVP_sha384();
    case PT_JOSE_RS512:
    case PT_JOSE_PS512:
    case PT_JOSE_ES512:
    case PT_JOSE_HS512:
        return EVP_sha512();
    default:
        return NULL; /* EdDSA: the algorithm has its own hash */
    }
}

static bool hmac_ok(int alg, const struct pt_jwk *k, const uint8_t *msg, size_t len,
                    const uint8_t *sig, size_t sig_len)
{
    uint8_t mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0;
    if (!HMAC(alg_md(alg), k->secret, (int)k->secret_len, msg, len, mac, &mlen))
        return false;
    return sig_len == mlen && CRYPTO_memcmp(mac, sig, mlen) == 0;
}

bool pt_jose_verify(int alg, const struct pt_jwk *k, const uint8_t *msg, size_t len,
                    const uint8_t *sig, size_t sig_len)
{
    if (alg < 0 || alg >= PT_JOSE_ALG__COUNT || !(k->algs & PT_JOSE_BIT(alg)))
        return false;
    if (PT_JOSE_BIT(alg) & PT_JOSE_HMAC)
        return k->secret && hmac_ok(alg, k, msg, len, sig, sig_len);
    if (!k->pkey)
        return false;
    uint8_t der[160];
    if (alg == PT_JOSE_ES256 || alg == PT_JOSE_ES384 || alg == PT_JOSE_ES512) {
        size_t half = alg == PT_JOSE_ES256 ? 32 : alg == PT_JOSE_ES384 ? 48 : 66;
        if (sig_len != 2 * half || !(sig_len = ecdsa_der(sig, half, der, sizeof(der))))
            return false;
        sig = der;
    }
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = md && EVP_DigestVerifyInit(md, &pctx, alg_md(alg), NULL, k->pkey) == 1;
    if (ok && (alg == PT_JOSE_PS256 || alg == PT_JOSE_PS384 || alg == PT_JOSE_PS512))
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    ok = ok && EVP_DigestVerify(md, sig, sig_len, msg, len) == 1;
    EVP_MD_CTX_free(md);
    return ok;
}
