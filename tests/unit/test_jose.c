/*
 * test_jose.c — the JWS/JWK core (filters/jose.c), the key sets
 * (filters/jwks.c) and the verified-token cache (filters/jwt_cache.c).
 *
 * RFC 7515 Appendix A: the A.2 (RS256), A.3 (ES256) and A.4 (ES512)
 * tokens verify with the RFC's keys, and A.5 (alg none) is refused. The
 * algorithm is bound to the key: an HS256 token whose secret is the RSA
 * public key's PEM never verifies. Malformed and mutated tokens are
 * refused without crashing.
 */
#include "filters/jose.h"
#include "filters/jwks.h"
#include "filters/jwt_cache.h"
#include "unit.h"

#include <openssl/hmac.h>
#include <openssl/pem.h>

/* RFC 7515 A.2: {"alg":"RS256"} over the A.1 claims, and its key. */
static const char *a2_token =
    "eyJhbGciOiJSUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlf"
    "Q"
    ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_"
    "O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQ"
    "BMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-"
    "eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9"
    "QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
static const char *a2_key =
    "{\"kty\":\"RSA\",\"kid\":\"a2\","
    "\"n\":\"ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-"
    "4qPCJrcS2mJPMEzP1Pt"
    "0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-"
    "bSf63kpaSHSXndS5z5r"
    "exMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_"
    "I5IhlJH7aGhyxXFv"
    "UK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ\",\"e\":\"AQAB\"}";

/* A.3: {"alg":"ES256"}, P-256. */
static const char *a3_token =
    "eyJhbGciOiJFUzI1NiJ9"
    ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlf"
    "Q"
    ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
static const char *a3_key = "{\"kty\":\"EC\",\"crv\":\"P-256\","
                            "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                            "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0\"}";

/* A.4: {"alg":"ES512"} over "Payload", P-521. */
static const char *a4_token =
    "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA"
    ".AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8G"
    "aSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
static const char *a4_key = "{\"kty\":\"EC\",\"crv\":\"P-521\","
                            "\"x\":\"AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_"
                            "NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk\","
                            "\"y\":\"ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-"
                            "x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2\"}";

/* A.5: {"alg":"none"}, empty signature. */
static const char *a5_token = "eyJhbGciOiJub25lIn0"
                              ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGx"
                              "lLmNvbS9pc19yb290Ijp0cnVlfQ"
                              ".";

static struct pt_arena arena;

static int load_key(const char *json, struct pt_jwk *k)
{
    json_t *o = json_loads(json, 0, NULL);
    char err[96];
    int rc = pt_jwk_parse(o, k, err, sizeof(err));
    json_decref(o);
    return rc;
}

/* Splits, reads the header and verifies with k: true only when all pass. */
static bool verifies(const char *token, const struct pt_jwk *k)
{
    struct pt_jws jws;
    int alg;
    const char *kid;
    if (pt_jws_split((pt_slice){token, strlen(token)}, &arena, &jws) != 0)
        return false;
    if (pt_jws_header(&jws, &arena, &alg, &kid) != 0 || alg < 0)
        return false;
    return pt_jose_verify(alg, k, (const uint8_t *)jws.signing_input.p, jws.signing_input.len,
                          jws.sig, jws.sig_len);
}

static void test_rfc7515_appendix_a(void)
{
    struct pt_jwk rsa, p256, p521;
    CHECK(load_key(a2_key, &rsa) == 0);
    CHECK(load_key(a3_key, &p256) == 0);
    CHECK(load_key(a4_key, &p521) == 0);
    CHECK(verifies(a2_token, &rsa));
    CHECK(verifies(a3_token, &p256));
    CHECK(verifies(a4_token, &p521));
    CHECK_STR(rsa.kid, "a2");
    CHECK_EQ_INT(rsa.bits, 2048);

    /* Each key verifies only its own algorithm family / curve. */
    CHECK(!verifies(a2_token, &p256));
    CHECK(!verifies(a3_token, &p521));
    CHECK(!verifies(a4_token, &rsa));

    /* A.5: alg none is no algorithm at all, whatever the key. */
    struct pt_jws jws;
    int alg = 0;
    const char *kid;
    CHECK(pt_jws_split((pt_slice){a5_token, strlen(a5_token)}, &arena, &jws) != 0 ||
          (pt_jws_header(&jws, &arena, &alg, &kid) == 0 && alg < 0));
    CHECK(!verifies(a5_token, &rsa));
    CHECK(pt_jose_alg_parse("none", 4) < 0);
    CHECK(pt_jose_alg_parse("NONE", 4) < 0);
    CHECK(pt_jose_alg_parse("rs256", 5) < 0);
    CHECK_EQ_INT(pt_jose_alg_parse("EdDSA", 5), PT_JOSE_EdDSA);

    /* One bit changed in the signature: refused. */
    char *bad = strdup(a2_token);
    bad[strlen(bad) - 2] = bad[strlen(bad) - 2] == 'A' ? 'B' : 'A';
    CHECK(!verifies(bad, &rsa));
    free(bad);
    pt_jwk_clear(&rsa);
    pt_jwk_clear(&p256);
    pt_jwk_clear(&p521);
}

static void b64url(const uint8_t *in, size_t n, char *out)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                     (i + 2 < n ? in[i + 2] : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = a[v >> 6 & 63];
        if (i + 2 < n)
            out[o++] = a[v & 63];
    }
    out[o] = 0;
}

/* HS256 "signed" with the RSA public key's PEM as the HMAC secret: the
 * classic confusion. The RSA key never verifies HMAC, and a JWK that says
 * it is an oct key with that PEM is a different key entirely. */
static void test_hmac_with_public_key_pem_refused(void)
{
    struct pt_jwk rsa;
    CHECK(load_key(a2_key, &rsa) == 0);
    BIO *bio = BIO_new(BIO_s_mem());
    CHECK(PEM_write_bio_PUBKEY(bio, rsa.pkey) == 1);
    char *pem;
    long pem_len = BIO_get_mem_data(bio, &pem);
    const char *input = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4IiwiZXhwIjo0MTAyNDQ0ODAwfQ";
    uint8_t mac[32];
    unsigned int mlen = 0;
    HMAC(EVP_sha256(), pem, (int)pem_len, (const uint8_t *)input, strlen(input), mac, &mlen);
    char token[512], sig[64];
    b64url(mac, mlen, sig);
    snprintf(token, sizeof(token), "%s.%s", input, sig);
    CHECK(!verifies(token, &rsa));
    CHECK(!(rsa.algs & PT_JOSE_HMAC));
    /* The same bytes as a real HMAC secret would verify: the refusal
     * above comes from the key binding, not a broken MAC. */
    struct pt_jwk secret;
    CHECK(pt_jwk_from_secret((const uint8_t *)pem, (size_t)pem_len, &secret) == 0);
    CHECK(verifies(token, &secret));
    CHECK(!(secret.algs & PT_JOSE_ASYMMETRIC));
    pt_jwk_clear(&secret);
    BIO_free(bio);
    pt_jwk_clear(&rsa);
}

static void test_jwk_rules(void)
{
    struct pt_jwk k;
    /* A JWK's own alg pins it. */
    char buf[2048];
    snprintf(buf, sizeof(buf), "%.*s,\"alg\":\"PS256\"}", (int)strlen(a2_key) - 1, a2_key);
    CHECK(load_key(buf, &k) == 0);
    CHECK_EQ_INT(k.algs, PT_JOSE_BIT(PT_JOSE_PS256));
    CHECK(!verifies(a2_token, &k)); /* an RS256 token */
    pt_jwk_clear(&k);
    /* An alg the key type cannot do, use enc, short RSA, a point off the curve. */
    snprintf(buf, sizeof(buf), "%.*s,\"alg\":\"HS256\"}", (int)strlen(a2_key) - 1, a2_key);
    CHECK(load_key(buf, &k) < 0);
    snprintf(buf, sizeof(buf), "%.*s,\"use\":\"enc\"}", (int)strlen(a2_key) - 1, a2_key);
    CHECK(load_key(buf, &k) < 0);
    CHECK(load_key("{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQAB\"}", &k) < 0);
    CHECK(load_key("{\"kty\":\"EC\",\"crv\":\"P-256\","
                   "\"x\":\"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU\","
                   "\"y\":\"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a1\"}",
                   &k) < 0);
    CHECK(load_key("{\"kty\":\"EC\",\"crv\":\"P-192\",\"x\":\"AA\",\"y\":\"AA\"}", &k) < 0);
    CHECK(load_key("{\"kty\":\"OKP\",\"crv\":\"X25519\",\"x\":\"AA\"}", &k) < 0);
    CHECK(load_key("{\"kty\":\"RSA\"}", &k) < 0);
    CHECK(load_key("[]", &k) < 0);
    /* RFC 8037 A.2's Ed25519 public key. */
    CHECK(load_key("{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
                   "\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}",
                   &k) == 0);
    CHECK_EQ_INT(k.algs, PT_JOSE_BIT(PT_JOSE_EdDSA));
    pt_jwk_clear(&k);
}

static void test_base64url(void)
{
    uint8_t out[16];
    CHECK_EQ_INT(pt_b64url_decode("UGF5bG9hZA", 10, out, sizeof(out)), 7);
    CHECK(memcmp(out, "Payload", 7) == 0);
    CHECK_EQ_INT(pt_b64url_decode("UGF5bG9hZA==", 12, out, sizeof(out)), -1); /* no padding */
    CHECK_EQ_INT(pt_b64url_decode("UGF5bG9hZB", 10, out, sizeof(out)), -1);   /* stray bits */
    CHECK_EQ_INT(pt_b64url_decode("U", 1, out, sizeof(out)), -1);
    CHECK_EQ_INT(pt_b64url_decode("a+b/", 4, out, sizeof(out)), -1); /* not the URL alphabet */
    CHECK_EQ_INT(pt_b64_decode_any("a+b/", 4, out, sizeof(out)), 3);
    CHECK_EQ_INT(pt_b64_decode_any("UGF5bG9hZA==", 12, out, sizeof(out)), 7);
}

/* Malformed tokens, and every single-character mutation of A.3: nothing
 * crashes (the ASan build checks), nothing but the original verifies. */
static void test_malformed_tokens(void)
{
    struct pt_jwk k;
    CHECK(load_key(a3_key, &k) == 0);
    const char *bad[] = {
        "",
        ".",
        "..",
        "...",
        "a.b",
        "a.b.c.d",
        "eyJhbGciOiJFUzI1NiJ9..",
        "e30.e30.AA",                                     /* {} header: no alg */
        "eyJhbGciOjF9.e30.AA",                            /* alg is a number */
        "eyJhbGciOiJFUzI1NiIsImNyaXQiOlsieCJdfQ.e30.AA",  /* crit */
        "bnVsbA.e30.AA",                                  /* null header */
        "eyJhbGciOiJFUzI1NiIsImFsZyI6IkhTMjU2In0.e30.AA", /* duplicate alg */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_MSG(!verifies(bad[i], &k), "%s", bad[i]);
    size_t n = strlen(a3_token);
    char *t = strdup(a3_token);
    int verified = 0;
    static const char subst[] = "A_-.=z0";
    for (size_t i = 0; i < n; i++) {
        char orig = t[i];
        for (const char *c = subst; *c; c++) {
            if (*c == orig)
                continue;
            t[i] = *c;
            verified += verifies(t, &k);
            pt_arena_reset(&arena);
        }
        t[i] = orig;
    }
    /* A base64url character's last bits may be spare only where decoding
     * rejects them: no mutation may verify. */
    CHECK_EQ_INT(verified, 0);
    free(t);
    pt_jwk_clear(&k);
}

static void test_jwks_sets(void)
{
    char doc[4096];
    snprintf(doc, sizeof(doc),
             "{\"keys\":[%s,%s,{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"},{\"kty\":\"XX\"},%s]}", a2_key,
             a3_key, a4_key);
    struct pt_jwks_set *s;
    uint32_t skipped;
    char err[128];
    CHECK(pt_jwks_parse(doc, strlen(doc), false, &s, &skipped, err, sizeof(err)) == 0);
    CHECK_EQ_INT(s->n, 3);
    CHECK_EQ_INT(skipped, 2); /* the oct key (no secrets from a JWKS) and kty XX */
    uint32_t i = 0;
    CHECK(pt_jwks_next(s, "a2", PT_JOSE_RS256, &i) == &s->keys[0]);
    CHECK(pt_jwks_next(s, "a2", PT_JOSE_RS256, &i) == NULL);
    i = 0;
    CHECK(pt_jwks_next(s, "A2", PT_JOSE_RS256, &i) == NULL); /* exact match only */
    i = 0;
    CHECK(pt_jwks_next(s, "a2", PT_JOSE_HS256, &i) == NULL);
    i = 0;
    CHECK(pt_jwks_next(s, NULL, PT_JOSE_ES512, &i) == &s->keys[2]);
    CHECK(pt_jwks_has_kid(s, "a2"));
    CHECK(!pt_jwks_has_kid(s, "zz"));
    /* A kid no key has falls back to the keys without a kid, never to a
     * key with another kid; a kid some key has matches only that key. */
    i = 0;
    CHECK(pt_jwks_next(s, "zz", PT_JOSE_ES256, &i) == &s->keys[1]);
    i = 0;
    CHECK(pt_jwks_next(s, "zz", PT_JOSE_RS256, &i) == NULL);
    i = 0;
    CHECK(pt_jwks_next(s, "a2", PT_JOSE_ES256, &i) == NULL);
    pt_jwks_set_unref(s);
    /* A secret has no kid: a token naming one still verifies with it. */
    s = pt_jwks_from_secret((const uint8_t *)"0123456789abcdef0123456789abcdef", 32);
    i = 0;
    CHECK(s && pt_jwks_next(s, "k1", PT_JOSE_HS256, &i) == &s->keys[0]);
    pt_jwks_set_unref(s);
    CHECK(pt_jwks_parse("{\"keys\":[]}", 11, false, &s, &skipped, err, sizeof(err)) < 0);
    CHECK(pt_jwks_parse("[1", 2, false, &s, &skipped, err, sizeof(err)) < 0);
}

/* A kid with an embedded NUL would match another kid by its prefix: the
 * token's header and a JWK carrying one are refused. */
static void test_kid_with_nul_refused(void)
{
    struct pt_jws jws;
    int alg;
    const char *kid;
    CHECK(pt_jws_split(PT_SLICE("eyJhbGciOiJFUzI1NiIsImtpZCI6ImEifQ.e30.AA"), &arena, &jws) == 0);
    CHECK(pt_jws_header(&jws, &arena, &alg, &kid) == 0 && kid && strcmp(kid, "a") == 0);
    CHECK(pt_jws_split(PT_SLICE("eyJhbGciOiJFUzI1NiIsImtpZCI6ImFcdTAwMDBiIn0.e30.AA"), &arena,
                       &jws) == 0);
    CHECK(pt_jws_header(&jws, &arena, &alg, &kid) < 0);
    char key[1024];
    struct pt_jwk k;
    snprintf(key, sizeof(key), "{\"kid\":\"a\\u0000b\",%s", a3_key + 1);
    CHECK(load_key(key, &k) < 0);
    snprintf(key, sizeof(key), "{\"kid\":\"ab\",%s", a3_key + 1);
    CHECK(load_key(key, &k) == 0 && strcmp(k.kid, "ab") == 0);
    pt_jwk_clear(&k);
    pt_arena_reset(&arena);
}

static void test_jwks_source_bookkeeping(void)
{
    struct pt_jwks_source *a = pt_jwks_source_get("http://127.0.0.1:1/jwks");
    struct pt_jwks_source *b = pt_jwks_source_get("http://127.0.0.1:1/jwks");
    CHECK(a == b); /* one per URI, shared across generations */
    CHECK_EQ_INT(pt_jwks_need(a, false, false, 1000), PT_JWKS_NEED_FIRST);
    CHECK(pt_jwks_begin_fetch(a, PT_JWKS_NEED_FIRST, 1000));
    CHECK(!pt_jwks_begin_fetch(a, PT_JWKS_NEED_FIRST, 1000)); /* single flight */
    char err[128], doc[1024];
    snprintf(doc, sizeof(doc), "{\"keys\":[%s]}", a3_key);
    CHECK(pt_jwks_end_fetch(a, 1000, 200, (pt_slice){doc, strlen(doc)},
                            PT_SLICE("public, max-age=600"), err, sizeof(err)) == 0);
    CHECK_EQ_INT(pt_jwks_need(a, false, true, 1000), PT_JWKS_NEED_NONE);
    CHECK_EQ_INT(pt_jwks_need(a, false, false, 1000), PT_JWKS_NEED_NONE);
    CHECK_EQ_INT(pt_jwks_need(a, false, true, 1000 + 540000), PT_JWKS_NEED_REFRESH);
    /* A token that does not verify while a refresh is due refreshes too:
     * the IdP may have rotated keys that have no kid, or reused one. */
    CHECK_EQ_INT(pt_jwks_need(a, false, false, 1000 + 540000), PT_JWKS_NEED_REFRESH);
    CHECK_EQ_INT(pt_jwks_need(a, false, false, 1000 + 539999), PT_JWKS_NEED_NONE);
    /* Unknown kid: one refetch, then none for 30 s. */
    CHECK_EQ_INT(pt_jwks_need(a, true, false, 2000), PT_JWKS_NEED_KID);
    CHECK(pt_jwks_begin_fetch(a, PT_JWKS_NEED_KID, 2000));
    CHECK(pt_jwks_end_fetch(a, 2000, 503, (pt_slice){NULL, 0}, (pt_slice){NULL, 0}, err,
                            sizeof(err)) < 0);
    struct pt_jwks_set *s = pt_jwks_acquire(a);
    CHECK(s && s->n == 1); /* the last good set is kept */
    pt_jwks_set_unref(s);
    CHECK_EQ_INT(pt_jwks_need(a, true, false, 2000 + 29000), PT_JWKS_NEED_NONE);
    CHECK_EQ_INT(pt_jwks_need(a, true, false, 2000 + 30000), PT_JWKS_NEED_KID);
    /* A kid fetch whose request goes away is lost: the next request that
     * needs it takes it over without the kid budget (which stays spent),
     * at most once per PT_JWKS_TAKEOVER_MS. */
    uint64_t t = 100000;
    CHECK(pt_jwks_begin_fetch(a, PT_JWKS_NEED_KID, t));
    pt_jwks_abort_fetch(a);
    CHECK_EQ_INT(pt_jwks_need(a, true, false, t + 10), PT_JWKS_NEED_TAKEOVER);
    CHECK_EQ_INT(pt_jwks_need(a, false, false, t + 10), PT_JWKS_NEED_NONE); /* known kid */
    CHECK(!pt_jwks_begin_fetch(a, PT_JWKS_NEED_KID, t + 10));
    CHECK(pt_jwks_begin_fetch(a, PT_JWKS_NEED_TAKEOVER, t + 10));
    CHECK(!pt_jwks_begin_fetch(a, PT_JWKS_NEED_TAKEOVER, t + 10)); /* single flight */
    pt_jwks_abort_fetch(a);
    CHECK(!pt_jwks_begin_fetch(a, PT_JWKS_NEED_TAKEOVER, t + 10 + PT_JWKS_TAKEOVER_MS - 1));
    CHECK(pt_jwks_begin_fetch(a, PT_JWKS_NEED_TAKEOVER, t + 10 + PT_JWKS_TAKEOVER_MS));
    CHECK(pt_jwks_end_fetch(a, t + 20 + PT_JWKS_TAKEOVER_MS, 200, (pt_slice){doc, strlen(doc)},
                            (pt_slice){NULL, 0}, err, sizeof(err)) == 0);
    /* Done: nothing is owed any more, and the kid budget is as spent. */
    CHECK_EQ_INT(pt_jwks_need(a, true, false, t + 5000), PT_JWKS_NEED_NONE);
    CHECK(!pt_jwks_begin_fetch(a, PT_JWKS_NEED_TAKEOVER, t + 5000));
    CHECK_EQ_INT(pt_jwks_need(a, true, false, t + 30000), PT_JWKS_NEED_KID);
    pt_jwks_source_put(b);
    pt_jwks_source_put(a);

    CHECK_EQ_INT(pt_jwks_ttl_ms(PT_SLICE("max-age=10")), PT_JWKS_MIN_TTL_MS);
    CHECK_EQ_INT(pt_jwks_ttl_ms(PT_SLICE("max-age=999999999")), PT_JWKS_MAX_TTL_MS);
    CHECK_EQ_INT(pt_jwks_ttl_ms(PT_SLICE("public, max-age=3600")), 3600000);
    CHECK_EQ_INT(pt_jwks_ttl_ms(PT_SLICE("s-maxage=3600")), PT_JWKS_MIN_TTL_MS);
    CHECK_EQ_INT(pt_jwks_ttl_ms((pt_slice){NULL, 0}), PT_JWKS_MIN_TTL_MS);
}

static void test_token_cache(void)
{
    struct pt_jwt_cache *c = pt_jwt_cache_new(64 * 1024);
    uint8_t key[PT_JWT_CACHE_KEY] = {1, 2, 3};
    struct pt_jwt_cached v = {.not_before = INT64_MIN,
                              .expire_at = 100,
                              .provider = 1,
                              .set_seq = 7,
                              .blob = PT_SLICE("outcome")};
    struct pt_jwt_cached out;
    CHECK(!pt_jwt_cache_get(c, key, 50, &arena, &out));
    pt_jwt_cache_put(c, key, &v);
    CHECK(pt_jwt_cache_get(c, key, 50, &arena, &out));
    CHECK_EQ_INT(out.provider, 1);
    CHECK_EQ_INT(out.set_seq, 7);
    CHECK(out.blob.len == 7 && memcmp(out.blob.p, "outcome", 7) == 0);
    CHECK(!pt_jwt_cache_get(c, key, 100, &arena, &out)); /* expired: dropped */
    size_t entries, bytes;
    pt_jwt_cache_usage(c, &entries, &bytes);
    CHECK_EQ_INT(entries, 0);
    /* The budget holds: many more entries than fit. */
    for (uint32_t i = 0; i < 20000; i++) {
        memcpy(key, &i, sizeof(i));
        key[0] = (uint8_t)i;
        pt_jwt_cache_put(c, key, &(struct pt_jwt_cached){.expire_at = 1000, .blob = v.blob});
    }
    pt_jwt_cache_usage(c, &entries, &bytes);
    CHECK(bytes <= 64 * 1024);
    CHECK(entries > 100);
    pt_jwt_cache_free(c);
}

int main(void)
{
    pt_arena_init(&arena, 4096);
    test_rfc7515_appendix_a();
    test_hmac_with_public_key_pem_refused();
    test_jwk_rules();
    test_base64url();
    test_malformed_tokens();
    test_jwks_sets();
    test_kid_with_nul_refused();
    test_jwks_source_bookkeeping();
    test_token_cache();
    pt_arena_destroy(&arena);
    return unit_report("jose");
}
